"""A torque-controlled robot described by a URDF: joints, limits, links."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pybullet

from envs.session import PyBulletSession

ACTUATED_TYPES = (pybullet.JOINT_REVOLUTE, pybullet.JOINT_PRISMATIC)


def clamp_joint_speeds(client: pybullet, body: int, joint_indices: Sequence[int]) -> None:
    """Clamp each joint's speed at its URDF velocity limit (rad/s or m/s), the motor's rated speed.

    PyBullet ignores URDF velocity limits and clamps every joint at 100 rad/s. Joints without a
    limit (0) keep PyBullet's clamp.
    """
    for index in joint_indices:
        limit = client.getJointInfo(body, index)[11]
        if limit > 0:
            client.changeDynamics(body, index, maxJointVelocity=limit)


class Robot:
    """Reads joints, limits and links from a URDF and applies joint torques.

    :param session: the PyBullet session that owns the client.
    :param urdf: URDF path (see ``envs.session.resolve_urdf``).
    :param joints: names of the joints to actuate; ``None`` means every revolute/prismatic joint. The
        other movable joints hold their pose at load (a stiff position motor at the URDF effort limit),
        as a robot's unused limbs do, instead of swinging free.
    :param fixed_base: bolt the base to the world (arms) or let it float (humanoid).
    :param base_position: base position in the world, metres.
    """

    def __init__(
        self,
        session: PyBulletSession,
        urdf: str | os.PathLike,
        joints: Sequence[str] | None = None,
        fixed_base: bool = True,
        base_position: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> None:
        self.session = session
        self.client = session.client
        self.body = session.load_urdf(urdf, base_position=tuple(base_position), fixed_base=fixed_base)
        self.urdf = urdf
        self.fixed_base = fixed_base

        infos = [self.client.getJointInfo(self.body, i) for i in range(self.client.getNumJoints(self.body))]
        self.link_indices: dict[str, int] = {info[12].decode(): info[0] for info in infos}
        self.link_indices[self.client.getBodyInfo(self.body)[0].decode()] = -1  # the base link
        joint_by_name = {info[1].decode(): info for info in infos}
        movable = [name for name, info in joint_by_name.items() if info[2] in ACTUATED_TYPES]
        if joints is None:
            joints = movable
        for name in joints:
            if name not in movable:
                raise ValueError(f"unknown or non-actuated joint '{name}' in {urdf}; choose from {movable}.")
        if not joints:
            raise ValueError(f"URDF {urdf} has no revolute or prismatic joint to actuate.")
        if len(set(joints)) < len(joints):
            twice = sorted({name for name in joints if list(joints).count(name) > 1})
            raise ValueError(f"joints {twice} are listed more than once; name each joint once in env.joints.")
        self._parents = {info[0]: info[16] for info in infos}  # link index -> parent link index (-1: base)

        self.joint_names: list[str] = list(joints)
        self.joint_indices = [joint_by_name[name][0] for name in joints]
        self.revolute = np.array([joint_by_name[name][2] == pybullet.JOINT_REVOLUTE for name in joints])
        lower = np.array([joint_by_name[name][8] for name in joints], dtype=np.float64)
        upper = np.array([joint_by_name[name][9] for name in joints], dtype=np.float64)
        # URDF convention: lower > upper means the joint has no limit (continuous).
        unlimited = lower > upper
        lower[unlimited], upper[unlimited] = -np.pi, np.pi
        self.limited_revolute = self.revolute & ~unlimited  # angles whose two stops are distinct poses
        self.joint_limits = np.stack([lower, upper])  # (2, n_joints): rad or m
        self.torque_limits = np.array([joint_by_name[name][10] for name in joints], dtype=np.float64)  # N m or N
        if np.any(self.torque_limits <= 0):
            zero = [n for n, f in zip(joints, self.torque_limits) if f <= 0]
            raise ValueError(f"joints {zero} in {urdf} have no effort limit; set <limit effort=...> in the URDF.")
        self.velocity_limits = np.array([joint_by_name[name][11] for name in joints], dtype=np.float64)  # rad/s or m/s
        self.joint_damping = np.array([joint_by_name[name][6] for name in joints], dtype=np.float64)  # URDF, N m s/rad
        self.all_actuated = [joint_by_name[name][0] for name in movable]
        self.held = [joint_by_name[name] for name in movable if name not in joints]
        clamp_joint_speeds(self.client, self.body, self.all_actuated)
        # Hot-path calls bound once: BulletClient looks every attribute up again and wraps it per call.
        self._set_motors = self.client.setJointMotorControlArray
        self._get_joint_states = self.client.getJointStates
        self._get_link_state = self.client.getLinkState
        self.release_motors()

    @property
    def n_joints(self) -> int:
        return len(self.joint_indices)

    def link_index(self, name: str) -> int:
        """Index of a link by name (-1 for the base); a clear error for an unknown name."""
        if name not in self.link_indices:
            raise ValueError(f"unknown link '{name}' in {self.urdf}; choose from {sorted(self.link_indices)}.")
        return self.link_indices[name]

    def moved_by_actuated_joints(self, link: int) -> bool:
        """Whether an actuated joint lies between the base and ``link`` (a link's index is its joint's)."""
        actuated = set(self.joint_indices)
        while link != -1:
            if link in actuated:
                return True
            link = self._parents[link]
        return False

    def add_joint_damping(self, extra: np.ndarray) -> None:
        """Add ``extra`` (n_joints,) N m s/rad (or N s/m) to the joints' viscous damping (PyBullet's joint damping)."""
        self.joint_damping = self.joint_damping + extra
        for index, damping in zip(self.joint_indices, self.joint_damping):
            self.client.changeDynamics(self.body, index, jointDamping=float(damping))

    def release_motors(self) -> None:
        """Turn off PyBullet's default velocity motors, which would otherwise resist every torque; joints
        outside ``joint_names`` hold their current position instead."""
        self.client.setJointMotorControlArray(
            self.body, self.all_actuated, pybullet.VELOCITY_CONTROL, forces=[0.0] * len(self.all_actuated)
        )
        if self.held:
            indices = [info[0] for info in self.held]
            self.client.setJointMotorControlArray(
                self.body,
                indices,
                pybullet.POSITION_CONTROL,
                targetPositions=[s[0] for s in self.client.getJointStates(self.body, indices)],
                forces=[info[10] for info in self.held],
            )

    def apply_torques(self, torques: Sequence[float] | np.ndarray) -> None:
        """Joint torques (n_joints,), N m (N for prismatic); must be re-sent every simulation step.

        A list is the fastest form for PyBullet to read.
        """
        self._set_motors(self.body, self.joint_indices, pybullet.TORQUE_CONTROL, forces=torques)

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions (n_joints,) and velocities (n_joints,) of the actuated joints."""
        states = self._get_joint_states(self.body, self.joint_indices)
        positions, velocities = np.array([s[:2] for s in states]).T
        return positions, velocities

    def gravity_torques(self) -> np.ndarray:
        """Torques (n_joints,) that hold the current pose against gravity (inverse dynamics).

        A floating base is treated as unaccelerated in its current pose (right for a robot
        standing still on its feet): PyBullet then takes the base pose (x, y, z, quaternion) before
        the joint positions and 6 base velocity terms before the joint ones, and returns 6 base
        wrench terms first.
        """
        states = self.client.getJointStates(self.body, self.all_actuated)
        q = [s[0] for s in states]
        n_base = 0
        if not self.fixed_base:
            position, orientation = self.client.getBasePositionAndOrientation(self.body)
            q = [*position, *orientation, *q]
            n_base = 6
        zeros = [0.0] * (n_base + len(states))
        tau = self.client.calculateInverseDynamics(self.body, q, zeros, zeros)
        by_index = dict(zip(self.all_actuated, tau[n_base:]))
        return np.array([by_index[i] for i in self.joint_indices])

    def set_joint_positions(self, positions: np.ndarray) -> None:
        """Teleport the actuated joints to ``positions`` with zero velocity."""
        for index, q in zip(self.joint_indices, positions):
            self.client.resetJointState(self.body, index, float(q), 0.0)

    def link_position(self, link: int) -> np.ndarray:
        """World position (3,) of a link's frame origin, metres."""
        if link == -1:
            return np.array(self.client.getBasePositionAndOrientation(self.body)[0])
        return np.array(self._get_link_state(self.body, link, computeForwardKinematics=True)[4])
