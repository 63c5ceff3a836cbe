"""A torque-controlled robot described by a URDF: joints, limits, links."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from rlik.envs.session import JointInfo, PyBulletSession
from rlik.envs.urdf_files import check_urdf_xml, resolve_urdf

if TYPE_CHECKING:
    from pybullet_utils.bullet_client import BulletClient


class Robot:
    """Reads joints, limits and links from a URDF and applies joint torques, through its session.

    :param session: the PyBullet session that owns the client.
    :param urdf: URDF path (see ``rlik.envs.urdf_files.resolve_urdf``).
    :param joints: names of the joints to actuate; ``None`` means every revolute/prismatic joint, or with
        ``reaching_links`` those on the chains from the base to them. The other movable joints hold their pose at
        load (a stiff position motor at the URDF effort limit), as a robot's unused limbs (or fingers) do, instead
        of swinging free.
    :param reaching_links: with ``joints=None``, actuate only the movable joints that move these links.
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
        reaching_links: Sequence[str] | None = None,
    ) -> None:
        self.session = session
        self.body = session.load_urdf(urdf, base_position=tuple(base_position), fixed_base=fixed_base)
        self.urdf = urdf
        self.fixed_base = fixed_base

        infos = session.joint_infos(self.body)
        self.link_indices: dict[str, int] = {info.link_name: info.index for info in infos}
        self.link_indices[session.base_link_name(self.body)] = -1  # the base link
        joint_by_name = {info.name: info for info in infos}
        movable = [info.name for info in infos if info.actuated]
        if not movable:
            raise ValueError(f"URDF {urdf} has no revolute or prismatic joint to actuate.")
        self._parents = {info.index: info.parent_index for info in infos}  # link index -> parent link index
        if joints is None:
            joints = movable if reaching_links is None else self.chain_joints(reaching_links, infos)
        for name in joints:
            if name not in movable:
                raise ValueError(f"unknown or non-actuated joint '{name}' in {urdf}; choose from {movable}.")
        if not joints:
            raise ValueError(f"URDF {urdf} has no revolute or prismatic joint to actuate.")
        if len(set(joints)) < len(joints):
            twice = sorted({name for name in joints if list(joints).count(name) > 1})
            raise ValueError(f"joints {twice} are listed more than once; name each joint once in env.joints.")
        self._children: defaultdict[int, list[int]] = defaultdict(list)  # link index -> child link indices
        for info in infos:
            self._children[info.parent_index].append(info.index)

        chosen = [joint_by_name[name] for name in joints]
        self.joint_names: list[str] = list(joints)
        self.joint_indices = [info.index for info in chosen]
        self.revolute = np.array([info.revolute for info in chosen])
        lower = np.array([info.lower_limit for info in chosen], dtype=np.float64)
        upper = np.array([info.upper_limit for info in chosen], dtype=np.float64)
        # URDF convention: lower > upper means the joint has no limit (continuous).
        unlimited = lower > upper
        lower[unlimited], upper[unlimited] = -np.pi, np.pi
        self.limited_revolute = self.revolute & ~unlimited  # angles whose two stops are distinct poses
        self.joint_limits = np.stack([lower, upper])  # (2, n_joints): rad or m
        # The limited angles' lower stops and ranges, which observation() scales them by at every step.
        self._limited_lower = lower[self.limited_revolute]
        self._limited_range = (upper - lower)[self.limited_revolute]
        self.torque_limits = np.array([info.max_force for info in chosen], dtype=np.float64)  # N m or N
        if np.any(self.torque_limits <= 0):
            zero = [n for n, f in zip(joints, self.torque_limits) if f <= 0]
            raise ValueError(f"joints {zero} in {urdf} have no effort limit; set <limit effort=...> in the URDF.")
        self.velocity_limits = np.array([info.max_velocity for info in chosen], dtype=np.float64)  # URDF, 0: none
        self.joint_damping = np.array([info.damping for info in chosen], dtype=np.float64)  # URDF, N m s/rad
        self.all_actuated = [joint_by_name[name].index for name in movable]
        self.held = [joint_by_name[name] for name in movable if name not in joints]
        session.clamp_joint_speeds(self.body, self.joint_indices)
        self.release_motors()

    def chain_joints(self, links: Sequence[str], infos: Sequence[JointInfo]) -> list[str]:
        """Names of the movable joints between the base and any of ``links``, in the URDF's joint order."""
        movable = {info.index: info.name for info in infos if info.actuated}
        on_chain: set[int] = set()
        for name in links:
            link = self.link_index(name)
            if link == -1:
                raise ValueError(
                    f"end effector '{name}' is the base link of {self.urdf}, which no joint moves; choose a link at "
                    f"the arm's tip, e.g. '{self.tip_link_name(infos)}'."
                )
            chain = set()
            while link != -1:
                chain.add(link)
                link = self._parents[link]
            if not chain & movable.keys():
                raise ValueError(
                    f"end effector '{name}' is not moved by any joint of {self.urdf} (only fixed joints lie between "
                    f"it and the base); choose a link beyond the arm's joints, e.g. '{self.tip_link_name(infos)}'."
                )
            on_chain |= chain
        return [movable[index] for index in sorted(on_chain & movable.keys())]

    def tip_link_name(self, infos: Sequence[JointInfo]) -> str:
        """The link with the most movable joints above it: an arm's tip, for error messages."""

        def depth(link: int) -> int:
            count = 0
            while link != -1:
                count += infos[link].actuated
                link = self._parents[link]
            return count

        return max(infos, key=lambda info: (depth(info.index), -info.index)).link_name

    @property
    def client(self) -> BulletClient:
        """The session's client, for code outside the envs that needs a PyBullet call the session does not wrap."""
        return self.session.client

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

    def limb_root(self, link: int) -> int:
        """The first link of ``link``'s limb: the child of its topmost movable joint (a hand's shoulder link, whose
        frame origin is the shoulder joint). The limb is the chain of movable joints above ``link`` up to the link
        where another limb with a movable joint branches off, or up to the base; ``link`` itself when no movable
        joint lies on it."""
        movable = set(self.all_actuated)

        def moves(child: int) -> bool:
            return child in movable or any(moves(grandchild) for grandchild in self._children[child])

        root = link
        while link != -1:
            if link in movable:
                root = link
            parent = self._parents[link]
            if any(moves(sibling) for sibling in self._children[parent] if sibling != link):
                break
            link = parent
        return root

    def limb_length(self, link: int) -> float:
        """Distance (m) from ``limb_root(link)``'s frame to ``link``'s with the limb stretched straight: the sum of the
        URDF joint offsets between them (a hand's reach from its shoulder joint)."""
        urdf = check_urdf_xml(resolve_urdf(self.urdf))
        joints = {joint.find("child").get("link"): joint for joint in urdf.iter("joint")}  # by child link
        names = {index: name for name, index in self.link_indices.items()}
        top, name, length = names[self.limb_root(link)], names[link], 0.0
        while name != top:
            joint = joints[name]
            origin = joint.find("origin")
            offset = [0.0, 0.0, 0.0] if origin is None else [float(v) for v in origin.get("xyz", "0 0 0").split()]
            length += float(np.linalg.norm(offset))
            name = joint.find("parent").get("link")
        return length

    def per_joint(self, name: str, value: float | Sequence[float]) -> np.ndarray:
        """``value``, one for all joints or one per joint, as an array (n_joints,).

        :param name: the setting's name, for the error.
        :raises ValueError: another number of values than joints, naming them.
        """
        values = np.asarray(value, dtype=np.float64)
        if values.ndim and values.shape != (self.n_joints,):
            raise ValueError(
                f"{name} has {values.size} values for {self.n_joints} joints {self.joint_names}; give one, or one per joint."
            )
        return np.broadcast_to(values, (self.n_joints,))

    def start_pose(self, positions: Sequence[float] | None) -> np.ndarray:
        """``positions`` (n_joints,), rad or m, clipped to the joint limits; ``None``: zeros, clipped.

        :raises ValueError: another number of values than joints, naming them.
        """
        n = self.n_joints
        pose = np.zeros(n) if positions is None else np.asarray(positions, dtype=np.float64)
        if pose.shape != (n,):
            raise ValueError(f"initial_joint_positions has {pose.size} values for {n} joints {self.joint_names}.")
        return np.clip(pose, *self.joint_limits)

    def observation(self, scaled_positions: bool) -> tuple[np.ndarray, np.ndarray]:
        """The robot's part of an observation, and the joint velocities it read (n_joints,), rad/s or m/s.

        Joint terms: cos and sin of the revolute angles (positions of the prismatic joints), velocities, then (with
        ``scaled_positions``) the limited revolute angles scaled to [-1, 1] between their limits.
        """
        q, qdot = self.joint_state()
        rev = self.revolute
        terms = [np.cos(q[rev]), np.sin(q[rev]), q[~rev], qdot]
        if scaled_positions:
            limited = q[self.limited_revolute]
            terms.append(2.0 * (limited - self._limited_lower) / self._limited_range - 1.0)
        return np.concatenate(terms), qdot

    def camera(self, distance: float) -> dict[str, Any]:
        """Where a camera looks from (``PyBulletSession.render``'s keywords): the base, from ``distance`` m above."""
        return {"target": self.link_position(-1), "distance": distance}

    def add_joint_damping(self, extra: np.ndarray) -> None:
        """Add ``extra`` (n_joints,) N m s/rad (or N s/m) to the joints' viscous damping (PyBullet's joint damping)."""
        self.set_joint_damping(self.joint_damping + extra)

    def set_joint_damping(self, damping: np.ndarray) -> None:
        """The joints' viscous damping (n_joints,), N m s/rad (or N s/m), in place of the URDF's."""
        self.joint_damping = np.array(damping, dtype=np.float64)
        for index, value in zip(self.joint_indices, self.joint_damping):
            self.session.set_joint_damping(self.body, index, float(value))

    def release_motors(self) -> None:
        """Turn off PyBullet's default velocity motors, which would otherwise resist every torque; joints
        outside ``joint_names`` hold their current position instead."""
        self.session.disable_velocity_motors(self.body, self.all_actuated)
        if self.held:
            held = [info.index for info in self.held]
            self.session.hold_joint_positions(self.body, held, forces=[info.max_force for info in self.held])

    def apply_torques(self, torques: Sequence[float] | np.ndarray) -> None:
        """Joint torques (n_joints,), N m (N for prismatic); must be re-sent every simulation step.

        A list is the fastest form for PyBullet to read.
        """
        self.session.set_joint_torques(self.body, self.joint_indices, torques)

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions (n_joints,) and velocities (n_joints,) of the actuated joints."""
        return self.session.joint_states(self.body, self.joint_indices)

    def gravity_torques(self) -> np.ndarray:
        """Torques (n_joints,) that hold the current pose against gravity (inverse dynamics).

        A floating base is treated as unaccelerated in its current pose (right for a robot
        standing still on its feet): PyBullet then takes the base pose (x, y, z, quaternion) before
        the joint positions and 6 base velocity terms before the joint ones, and returns 6 base
        wrench terms first.
        """
        q = self.session.joint_positions(self.body, self.all_actuated)
        n_base = 0
        if not self.fixed_base:
            position, orientation = self.session.base_pose(self.body)
            q = [*position, *orientation, *q]
            n_base = 6
        zeros = [0.0] * (n_base + len(self.all_actuated))
        tau = self.session.inverse_dynamics(self.body, q, zeros, zeros)
        by_index = dict(zip(self.all_actuated, tau[n_base:]))
        return np.array([by_index[i] for i in self.joint_indices])

    def set_joint_positions(self, positions: np.ndarray) -> None:
        """Teleport the actuated joints to ``positions`` with zero velocity."""
        for index, q in zip(self.joint_indices, positions):
            self.session.reset_joint(self.body, index, float(q), 0.0)

    def reset(self, positions: np.ndarray) -> None:
        """Start an episode in the pose ``positions`` (n_joints,), rad or m (the state already restored to the start)."""
        self.set_joint_positions(positions)

    def link_position(self, link: int) -> np.ndarray:
        """World position (3,) of a link's frame origin, metres."""
        if link == -1:
            return np.array(self.session.base_pose(self.body).position)
        return self.session.link_frame_position(self.body, link)
