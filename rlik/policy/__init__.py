"""The trained policy: SB3 policy classes, loading a run's policy, the numpy policy and its ONNX export."""
