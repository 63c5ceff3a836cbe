"""Classical controllers: Jacobian iteration, FABRIK, balance-aware Jacobian, PyBullet IK (baselines of the policy).

- ``JacobianController`` (``jacobian``): task-space PD through the damped least-squares Jacobian; ignores balance.
- ``FabrikController`` (``fabrik``, on ``fabrik_chain.FabrikChain``): FABRIK (Aristidou & Lasenby 2011) on the
  reaching limb, joint-space PD on its solution.
- ``BalancedJacobianController`` (``balance``): the humanoid's hand in the null space of a centre-of-mass task.
- ``PyBulletIKController`` (``pybullet_ik``): PyBullet's ``calculateInverseKinematics`` once per goal, joint-space
  PD on its solution.

All four are callables ``observation -> normalised action`` in [-1, 1] (``torque / env.action_torques``) that
read the state from the unwrapped env, and share one torque law (``base.JointTorqueController``). Each one's
gains dataclass (``JacobianConfig``, ...) sits beside it: its constructor's defaults and evaluate.py's config node.
"""

from rlik.control.balance import BalancedJacobianConfig, BalancedJacobianController
from rlik.control.fabrik import FabrikConfig, FabrikController
from rlik.control.jacobian import JacobianConfig, JacobianController
from rlik.control.pybullet_ik import PyBulletIKConfig, PyBulletIKController, inverse_kinematics_time_us

__all__ = [
    "BalancedJacobianConfig",
    "BalancedJacobianController",
    "FabrikConfig",
    "FabrikController",
    "JacobianConfig",
    "JacobianController",
    "PyBulletIKConfig",
    "PyBulletIKController",
    "inverse_kinematics_time_us",
]
