"""Classical baselines for the learned-IK policies: a Jacobian operational-space controller and IK timing."""

from __future__ import annotations

import time

import numpy as np

from envs.reach_env import UrdfReachEnv
from pipeline.evaluation import Observation


class JacobianController:
    """Task-space PD on every end effector, mapped to joint torques through the Jacobian; ignores balance.

    Per control step: the stacked end-effector error ``e`` (3k, m) becomes a joint displacement by damped
    least squares, ``dq = J^T (J J^T + lambda^2 I)^-1 e`` (rad), and the torque is

        tau = M (kp * dq - kd * qdot) + g(q)

    with ``M`` the joint-space mass matrix (kg m^2) and ``g`` the gravity torques from inverse dynamics
    (left out when the env already adds them). It returns the normalised action ``tau / action_torques``
    clipped to [-1, 1], so it runs through the same ``env.step`` as a policy.

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
        self, env: UrdfReachEnv, kp: float = 400.0, kd: float = 40.0, damping: float = 0.05, error_damping: float = 0.5
    ) -> None:
        self.env, self.kp, self.kd = env, kp, kd
        self.damping, self.error_damping = damping, error_damping
        robot = env.robot
        self.client, self.body = robot.client, robot.body
        # Jacobian and mass-matrix columns: 6 base terms first on a floating base, then every movable joint.
        n_base = 0 if robot.fixed_base else 6
        dof = {index: n_base + i for i, index in enumerate(robot.all_actuated)}
        self.columns = [dof[index] for index in robot.joint_indices]
        # calculateJacobian takes the point in the link's centre-of-mass frame; goals are at the link frame origin.
        self.offsets = []
        for link in env.task.end_effector_links:
            inertial_position, inertial_orientation = self.client.getLinkState(self.body, link)[2:4]
            origin = self.client.invertTransform(inertial_position, inertial_orientation)[0]
            self.offsets.append(list(origin))

    def __call__(self, observation: Observation = None) -> np.ndarray:
        """Normalised action (n_joints,) in [-1, 1] for the env's current state; ``observation`` is unused."""
        env, robot = self.env, self.env.robot
        states = self.client.getJointStates(self.body, robot.all_actuated)
        q_all = [s[0] for s in states]
        zeros = [0.0] * len(q_all)
        error = env.task.goal - env.task.achieved_goal()
        jacobian = np.vstack(
            [
                np.asarray(self.client.calculateJacobian(self.body, link, offset, q_all, zeros, zeros)[0])
                for link, offset in zip(env.task.end_effector_links, self.offsets)
            ]
        )[:, self.columns]
        damping = max(self.damping, self.error_damping * float(np.linalg.norm(error)))
        dq = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + damping**2 * np.eye(len(jacobian)), error)
        mass = np.asarray(self.client.calculateMassMatrix(self.body, q_all))[np.ix_(self.columns, self.columns)]
        _, qdot = robot.joint_state()
        torques = mass @ (self.kp * dq - self.kd * qdot)
        if not env.gravity_compensation:  # the env adds g(q) itself when it compensates
            torques = torques + robot.gravity_torques()
        return np.clip(torques / env.action_torques, -1.0, 1.0)


def inverse_kinematics_time_us(env: UrdfReachEnv, goals: list[np.ndarray]) -> float:
    """Mean wall time of one ``calculateInverseKinematics`` solve (microseconds) for each goal (3k,), m.

    Same client and robot as the controllers; one end effector: ``calculateInverseKinematics``, several:
    ``calculateInverseKinematics2``. The robot stays in its current state (IK does not move it).
    """
    client, body, links = env.robot.client, env.robot.body, env.task.end_effector_links
    elapsed = 0.0
    for goal in goals:
        targets = np.asarray(goal, dtype=np.float64).reshape(-1, 3).tolist()
        start = time.perf_counter()
        if len(links) == 1:
            client.calculateInverseKinematics(body, links[0], targets[0])
        else:
            client.calculateInverseKinematics2(body, links, targets)
        elapsed += time.perf_counter() - start
    return 1e6 * elapsed / max(len(goals), 1)
