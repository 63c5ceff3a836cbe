"""PyBullet's own IK as a controller, and the timing of one PyBullet IK solve."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rlik.control.base import JointTargetController
from rlik.envs.reach_env import UrdfReachEnv

if TYPE_CHECKING:
    from rlik.evaluation.episodes import Observation


@dataclass
class PyBulletIKConfig:
    """``PyBulletIKController``'s settings: its defaults, and evaluate.py's ``pybullet_ik`` config node."""

    kp: float = 400.0  # stiffness, 1/s^2
    kd: float = 40.0  # damping, 1/s
    max_iterations: int = 100  # PyBullet's IK iterations per solve
    residual: float = 1e-4  # PyBullet's IK stops this close to the goal, m


class PyBulletIKController(JointTargetController):
    """PyBullet's own IK (``calculateInverseKinematics``: damped least squares, started from the current pose)
    solved once per goal, its joint solution tracked by PD in joint space, as ``FabrikController`` tracks FABRIK's.

    The solve runs ``max_iterations`` steps or until ``residual`` (m); the solution is clipped to the URDF limits,
    and joints outside the env's keep their pose. ``mean_solve_time_us``: the mean wall time of one solve.

    :param env: the unwrapped reach env, with one end effector.
    :param kp: stiffness, 1/s^2 (times the mass matrix).
    :param kd: joint damping, 1/s (times the mass matrix).
    :param max_iterations: PyBullet's most IK iterations per solve.
    :param residual: PyBullet's IK stops when the end effector is this close to the goal, m.
    :raises ValueError: for several end effectors.
    """

    def __init__(
        self,
        env: UrdfReachEnv,
        kp: float = PyBulletIKConfig.kp,
        kd: float = PyBulletIKConfig.kd,
        max_iterations: int = PyBulletIKConfig.max_iterations,
        residual: float = PyBulletIKConfig.residual,
    ) -> None:
        super().__init__(env, kp, kd, "pybullet_ik")
        self.max_iterations, self.residual = max_iterations, residual

    def solve(self, goal: np.ndarray) -> np.ndarray:
        """Joint targets (n_joints,), rad or m, within the limits, for the end effector at ``goal`` (3,), m. Timed."""
        with self.timed_solve():
            q_all = self.session.inverse_kinematics(
                self.body, [self.end_effector], [list(goal)], max_iterations=self.max_iterations, residual=self.residual
            )
            self._targets = np.clip(q_all[self.columns], *self.robot.joint_limits)
            self._goal = np.array(goal, dtype=np.float64)
        return self._targets

    def __call__(self, observation: Observation = None) -> np.ndarray:
        """Normalised action (n_joints,) in [-1, 1] for the env's current state; ``observation`` is unused."""
        goal = self.env.task.goal
        if self.goal_changed(goal):
            self.solve(goal)
        return self.track()


def inverse_kinematics_time_us(env: UrdfReachEnv, goals: list[np.ndarray]) -> float:
    """Mean wall time of one PyBullet IK solve (microseconds) for each goal (3k,), m.

    Same session and robot as the controllers; one end effector: ``calculateInverseKinematics``, several:
    ``calculateInverseKinematics2`` (``PyBulletSession.inverse_kinematics``). The robot stays in its current
    state (IK does not move it).
    """
    session, body, links = env.session, env.robot.body, env.task.end_effector_links
    elapsed = 0.0
    for goal in goals:
        targets = np.asarray(goal, dtype=np.float64).reshape(-1, 3).tolist()
        start = time.perf_counter()
        session.inverse_kinematics(body, links, targets)
        elapsed += time.perf_counter() - start
    return 1e6 * elapsed / max(len(goals), 1)
