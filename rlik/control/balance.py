"""The balance-aware Jacobian controller: the humanoid's hands reaching in the null space of a balance task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from rlik.control.base import JointTorqueController, damped_pseudo_inverse, error_scaled_damping
from rlik.control.geometry import unit
from rlik.envs.balance import com_margin
from rlik.envs.humanoid_env import HumanoidReachEnv

if TYPE_CHECKING:
    from rlik.evaluation.episodes import Observation


@dataclass
class BalancedJacobianConfig:
    """``BalancedJacobianController``'s gains: its defaults, and evaluate.py's ``jacobian_balance`` config node."""

    kp: float = 100.0  # stiffness, 1/s^2
    kd: float = 20.0  # damping, 1/s
    damping: float = 0.05  # least DLS damping of the reach task, m
    error_damping: float = 0.5  # its damping per metre of error
    com_damping: float = 0.02  # DLS damping of the balance task, m
    # Optional, not "float | None": OmegaConf reads the annotation of this config node.
    margin: Optional[float] = None  # noqa: UP045  COM margin (m) below which balance pulls back; null: the env's
    band: float = 0.05  # margin range (m) above it over which the balance task fades out


class BalancedJacobianController(JointTorqueController):
    """The humanoid's hands reaching in the null space of a balance task: task-priority differential IK.

    Per control step, at velocity level (a joint displacement ``dq``, rad, for this step), with damped
    pseudo-inverses ``#`` (``damped_pseudo_inverse``):

        dq = J1# e1 + N1 (J2 N1)# (e2 - J2 J1# e1),    N1 = I - J1# J1

    Task 1, balance: the whole-body centre of mass's horizontal position (2,), m. ``J1`` (2, n_joints) is the
    mass-weighted mean of every link's COM Jacobian (calculateJacobian at each link's centre of mass; the
    pelvis and the rigid legs do not move with the joints, since the planted feet pin them, so their terms are
    zero and only count in the total mass). ``e1`` pushes the COM toward the centre of the planted feet's
    footprint (``env.robot.footprint``, the polygon of the env's fall rule) by the shortfall of its margin
    (``rlik.envs.balance.com_margin``) below ``margin``. The task is weighted by an activation ``h`` in [0, 1], 1 at
    a margin of ``margin`` or less, 0 from ``margin + band`` on, linear between (``J1`` and ``e1`` both times
    ``h``): well inside the feet the hands move the COM freely; nearer the edge the task first holds the COM
    (``e1`` is 0 there, so it only blocks motion), then pulls it back.

    Task 2, reach: the stacked hand errors ``e2`` (3k,), m, and their Jacobian ``J2`` (3k, n_joints), damped as
    in ``JacobianController`` (``max(damping, error_damping * |e2|)``), so far from the goal the step tends
    to a gradient step.

    Torque: ``JointTorqueController``'s ``M (kp * dq - kd * qdot) + g(q)``.

    :param env: the unwrapped standing humanoid (``HumanoidReachEnv``).
    :param kp: stiffness, 1/s^2 (times the mass matrix).
    :param kd: joint damping, 1/s (times the mass matrix).
    :param damping: least damping of the reach task, m.
    :param error_damping: the reach task's damping per metre of error (dimensionless).
    :param com_damping: damping of the balance task, m; small next to the COM Jacobian's ~0.2 m/rad of the
        waist, large next to the arms' ~0.02 m/rad, so that balance is kept with the torso, not by flailing arms.
    :param margin: COM margin (m) below which the balance task pulls the COM back; ``None``:
        ``env.task.com_margin_target`` (every sampled goal's pose has at least this margin).
    :param band: margin range (m) above ``margin`` over which the balance task fades out.
    :raises ValueError: for an env without feet (not a ``HumanoidReachEnv``).
    """

    def __init__(
        self,
        env: HumanoidReachEnv,
        kp: float = BalancedJacobianConfig.kp,
        kd: float = BalancedJacobianConfig.kd,
        damping: float = BalancedJacobianConfig.damping,
        error_damping: float = BalancedJacobianConfig.error_damping,
        com_damping: float = BalancedJacobianConfig.com_damping,
        margin: float | None = BalancedJacobianConfig.margin,
        band: float = BalancedJacobianConfig.band,
    ) -> None:
        if not isinstance(env, HumanoidReachEnv):
            raise ValueError(
                f"jacobian_balance balances a standing humanoid (env=humanoid or humanoid_bimanual), got "
                f"{type(env).__name__}; use controller=jacobian."
            )
        super().__init__(env, kp, kd)
        self.damping, self.error_damping, self.com_damping = damping, error_damping, com_damping
        self.margin = env.task.com_margin_target if margin is None else margin
        self.band = band
        self.hands = self.end_effector_points()
        # Links that move with the env's joints: those with one of them above.
        balance = env.robot.balance
        moving = [link for link in balance.link_indices if self.robot.moved_by_actuated_joints(link)]
        self.com_links = [(link, [0.0, 0.0, 0.0]) for link in moving]
        mass_by_link = dict(zip([-1, *balance.link_indices], balance.masses))
        self.com_weights = np.array([mass_by_link[link] for link, _ in self.com_links]) / balance.total_mass
        self.centre = env.robot.footprint.mean(axis=0)  # (2,), m

    def __call__(self, observation: Observation = None) -> np.ndarray:
        """Normalised action (n_joints,) in [-1, 1] for the env's current state; ``observation`` is unused."""
        env, n = self.env, len(self.columns)
        q_all = self.positions()
        jacobians = self.jacobians(self.hands + self.com_links, q_all)
        k = len(self.hands)
        reach_jacobian = jacobians[:k].reshape(-1, n)
        com_jacobian = np.tensordot(self.com_weights, jacobians[k:, :2], axes=1)  # (2, n_joints)
        com = env.robot.balance.center_of_mass()[:2]
        margin = com_margin(com, env.robot.footprint)
        activation = float(np.clip((self.margin + self.band - margin) / self.band, 0.0, 1.0))
        com_error = unit(self.centre - com) * max(0.0, self.margin - margin)
        balance_jacobian = activation * com_jacobian
        balance_inverse = damped_pseudo_inverse(balance_jacobian, self.com_damping)
        dq_balance = balance_inverse @ (activation * com_error)
        null_space = np.eye(n) - balance_inverse @ balance_jacobian
        reach_error = env.task.goal - env.task.achieved_goal()
        damping = error_scaled_damping(reach_error, self.damping, self.error_damping)
        projected = reach_jacobian @ null_space
        dq_reach = null_space @ damped_pseudo_inverse(projected, damping) @ (reach_error - reach_jacobian @ dq_balance)
        return self.action(dq_balance + dq_reach, q_all)
