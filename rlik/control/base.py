"""What the classical controllers share: the torque law (``JointTorqueController``), the tracking of joint targets
from an IK solve (``JointTargetController``), and the damped least squares of their IK steps."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

import numpy as np

from rlik.envs.reach_env import UrdfReachEnv


def damped_pseudo_inverse(jacobian: np.ndarray, damping: float) -> np.ndarray:
    """``J^T (J J^T + damping^2 I)^-1`` (n, m) of a Jacobian (m, n); ``damping`` in the task's units (m)."""
    return jacobian.T @ np.linalg.inv(jacobian @ jacobian.T + damping**2 * np.eye(len(jacobian)))


def error_scaled_damping(error: np.ndarray, damping: float, error_damping: float) -> float:
    """``max(damping, error_damping * |error|)``, m, for a task error (3k,), m: far from the goal the damped
    least-squares step tends to the Jacobian transpose's (a gradient step on the distance), near it to the exact
    least-squares step.

    :param damping: the least damping, m.
    :param error_damping: damping per metre of error (dimensionless).
    """
    return max(damping, error_damping * float(np.linalg.norm(error)))


class JointTorqueController:
    """What the controllers share: the robot's state, world-frame point Jacobians and the torque law

        tau = M (kp * dq - kd * qdot) + g(q)

    for a joint displacement ``dq`` (rad) toward the controller's target, with ``M`` the joint-space mass
    matrix (kg m^2) and ``g`` the gravity torques from inverse dynamics (left out when the env already adds
    them). The action is ``tau / action_torques`` clipped to [-1, 1], so it runs through the same ``env.step``
    as a policy.

    :param env: the unwrapped reach env whose robot it drives (it reads the state from the env, not the observation).
    :param kp: stiffness, 1/s^2 (times the mass matrix).
    :param kd: joint damping, 1/s (times the mass matrix).
    """

    def __init__(self, env: UrdfReachEnv, kp: float, kd: float) -> None:
        self.env, self.kp, self.kd = env, kp, kd
        robot = self.robot = env.robot
        self.session, self.body = robot.session, robot.body
        # Jacobian and mass-matrix columns: 6 base terms first on a floating base, then every movable joint.
        n_base = 0 if robot.fixed_base else 6
        dof = {index: n_base + i for i, index in enumerate(robot.all_actuated)}
        self.columns = [dof[index] for index in robot.joint_indices]

    def end_effector_points(self) -> list[tuple[int, np.ndarray]]:
        """``(link, point)`` of every end effector: the point (3,), m, is its link frame's origin (where goals
        are) in the link's centre-of-mass frame (where PyBullet's Jacobian takes its point)."""
        return [
            (link, self.session.link_origin_in_com_frame(self.body, link)) for link in self.env.task.end_effector_links
        ]

    def positions(self) -> list[float]:
        """Every movable joint's position (rad or m), PyBullet's order: what calculateJacobian and the mass matrix take."""
        return self.session.joint_positions(self.body, self.robot.all_actuated)

    def jacobians(self, points: Sequence[tuple[int, Sequence[float]]], q_all: list[float]) -> np.ndarray:
        """Linear Jacobians (k, 3, n_joints), m/rad, world frame, of k ``(link, point)``, the point in the link's
        centre-of-mass frame (m), over the env's joints (a floating base's own 6 velocities left out)."""
        session, body = self.session, self.body
        blocks = np.array([session.point_jacobian(body, link, point, q_all) for link, point in points])[
            :, :, self.columns
        ]
        if not self.robot.fixed_base:
            # PyBullet's Jacobian does not take the base's pose: a floating base's Jacobians are in the base frame.
            blocks = session.rotation_matrix(session.base_pose(body).orientation) @ blocks
        return blocks

    def action(self, dq: np.ndarray, q_all: list[float]) -> np.ndarray:
        """Normalised action (n_joints,) in [-1, 1] for the joint displacement ``dq`` (n_joints,), rad (or m)."""
        mass = self.session.mass_matrix(self.body, q_all)[np.ix_(self.columns, self.columns)]
        _, qdot = self.robot.joint_state()
        torques = mass @ (self.kp * dq - self.kd * qdot)
        if not self.env.gravity_compensation:  # the env adds g(q) itself when it compensates
            torques = torques + self.robot.gravity_torques()
        return np.clip(torques / self.env.action_torques, -1.0, 1.0)


class JointTargetController(JointTorqueController):
    """What the IK-then-track controllers share: one end effector, joint targets (from the subclass's ``solve``)
    tracked by PD in joint space, ``dq = q_target - q`` in the torque law, and the count and wall time of the solves.

    :param env: the unwrapped reach env, with one end effector.
    :param kp: stiffness, 1/s^2 (times the mass matrix).
    :param kd: joint damping, 1/s (times the mass matrix).
    :param name: the controller's name in the error for several end effectors.
    :raises ValueError: for several end effectors.
    """

    def __init__(self, env: UrdfReachEnv, kp: float, kd: float, name: str) -> None:
        links = env.task.end_effector_links
        if len(links) != 1:
            raise ValueError(
                f"{name} here drives one end effector, got {env.task.end_effector_names}; use controller=jacobian."
            )
        super().__init__(env, kp, kd)
        self.end_effector = links[0]
        self.solve_count, self.solve_seconds = 0, 0.0
        self._goal: np.ndarray | None = None  # world goal (3,) of the last solve, m
        self._targets = env.initial_joint_positions.copy()  # (n_joints,), rad or m

    @property
    def mean_solve_time_us(self) -> float:
        """Mean wall time of one ``solve`` so far, microseconds (NaN before the first)."""
        return 1e6 * self.solve_seconds / self.solve_count if self.solve_count else float("nan")

    @contextlib.contextmanager
    def timed_solve(self) -> Iterator[None]:
        """Count the solve run inside, and add its wall time to ``solve_seconds``."""
        start = time.perf_counter()
        yield
        self.solve_seconds += time.perf_counter() - start
        self.solve_count += 1

    def goal_changed(self, goal: np.ndarray) -> bool:
        """Whether ``goal`` (3,), m, differs from the last solve's (true before the first)."""
        return self._goal is None or not np.array_equal(goal, self._goal)

    def track(self) -> np.ndarray:
        """Normalised action (n_joints,) in [-1, 1] toward the last solve's joint targets."""
        q, _ = self.robot.joint_state()
        return self.action(self._targets - q, self.positions())
