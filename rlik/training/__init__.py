"""Training: the config schema, the algorithm registry, callbacks, checkpoints and resume."""
