"""The Jacobian controller: task-space PD through the damped least-squares Jacobian; ignores balance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rlik.control.base import JointTorqueController, damped_pseudo_inverse, error_scaled_damping
from rlik.envs.reach_env import UrdfReachEnv

if TYPE_CHECKING:
    from rlik.evaluation.episodes import Observation


@dataclass
class JacobianConfig:
    """``JacobianController``'s gains: its defaults, and evaluate.py's ``jacobian`` config node."""

    kp: float = 400.0  # stiffness, 1/s^2
    kd: float = 40.0  # damping, 1/s
    damping: float = 0.05  # least DLS damping, m
    error_damping: float = 0.5  # DLS damping per metre of error


class JacobianController(JointTorqueController):
    """Task-space PD on every end effector, mapped to joint torques through the Jacobian; ignores balance.

    Per control step: the stacked end-effector error ``e`` (3k, m) becomes a joint displacement by damped
    least squares, ``dq = J^T (J J^T + lambda^2 I)^-1 e`` (rad), and the torque is ``JointTorqueController``'s
    ``M (kp * dq - kd * qdot) + g(q)``.

    The damping grows with the error, ``lambda = max(damping, error_damping * |e|)``: far from the goal
    the step tends to the Jacobian transpose's (a gradient step on the distance, which turns the planar
    arm the short way round instead of folding it through the base into a joint limit), near it to the
    exact least-squares step (fast, precise convergence).

    :param env: the unwrapped reach env whose robot it drives (it reads the state from the env, not the observation).
    :param kp: stiffness, 1/s^2 (times the mass matrix).
    :param kd: joint damping, 1/s (times the mass matrix).
    :param damping: least damping, m; keeps ``dq`` bounded near singularities.
    :param error_damping: damping per metre of error (dimensionless).
    """

    def __init__(
        self,
        env: UrdfReachEnv,
        kp: float = JacobianConfig.kp,
        kd: float = JacobianConfig.kd,
        damping: float = JacobianConfig.damping,
        error_damping: float = JacobianConfig.error_damping,
    ) -> None:
        super().__init__(env, kp, kd)
        self.damping, self.error_damping = damping, error_damping
        self.points = self.end_effector_points()

    def __call__(self, observation: Observation = None) -> np.ndarray:
        """Normalised action (n_joints,) in [-1, 1] for the env's current state; ``observation`` is unused."""
        q_all = self.positions()
        error = self.env.task.goal - self.env.task.achieved_goal()
        jacobian = self.jacobians(self.points, q_all).reshape(-1, len(self.columns))
        damping = error_scaled_damping(error, self.damping, self.error_damping)
        return self.action(damped_pseudo_inverse(jacobian, damping) @ error, q_all)
