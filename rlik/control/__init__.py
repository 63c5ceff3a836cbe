"""Classical controllers: Jacobian iteration, FABRIK, balance-aware Jacobian, PyBullet IK (baselines of the policy)."""
