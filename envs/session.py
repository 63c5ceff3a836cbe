"""One PyBullet physics client per env: the only code of the package that calls PyBullet.

``PyBulletSession`` wraps the client: connection, URDF loading (with the URDF checked first, so a broken
file fails with its own cause instead of PyBullet's generic one), joints, links, contacts, the base, motors,
state, IK and camera. Results come back as arrays or as the named tuples below, never as PyBullet's bare tuples.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient
from rlik.envs.urdf_files import loadable_urdf


def display_available() -> bool:
    """Whether PyBullet's GUI can open a window: an X display on Linux (``$DISPLAY``); macOS and Windows have one."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY"))


ACTUATED_TYPES = (pybullet.JOINT_REVOLUTE, pybullet.JOINT_PRISMATIC)
# Fields of getLinkState(s) read here (PyBullet returns a bare tuple).
_LINK_COM_POSITION = 0  # linkWorldPosition: the link's centre of mass, world frame
_LINK_INERTIAL_FRAME = slice(2, 4)  # localInertialFramePosition, -Orientation: the COM frame in the link frame
_LINK_FRAME_POSITION = 4  # worldLinkFramePosition: the link's URDF frame origin, world frame
_LINK_FRAME_ORIENTATION = 5  # worldLinkFrameOrientation: the URDF frame's orientation, world frame


class JointInfo(NamedTuple):
    """``getJointInfo``'s fields, in its order, names decoded. Limits in rad or m, efforts in N m or N."""

    index: int
    name: str
    type: int
    q_index: int
    u_index: int
    flags: int
    damping: float  # viscous joint damping, N m s/rad or N s/m
    friction: float
    lower_limit: float
    upper_limit: float
    max_force: float  # the URDF effort limit
    max_velocity: float  # the URDF velocity limit, rad/s or m/s (0: none)
    link_name: str  # the joint's child link, whose index is the joint's
    axis: tuple[float, float, float]  # in the child link's frame
    parent_frame_position: tuple[float, float, float]
    parent_frame_orientation: tuple[float, float, float, float]
    parent_index: int  # the parent link's index, -1 for the base

    @classmethod
    def read(cls, raw: tuple) -> JointInfo:
        """From ``getJointInfo``'s tuple, with the joint and link names decoded from bytes."""
        info = cls(*raw)
        return info._replace(name=info.name.decode(), link_name=info.link_name.decode())

    @property
    def actuated(self) -> bool:
        """Revolute or prismatic: a joint a torque (or force) can drive."""
        return self.type in ACTUATED_TYPES

    @property
    def revolute(self) -> bool:
        return self.type == pybullet.JOINT_REVOLUTE


class ContactPoint(NamedTuple):
    """``getContactPoints``'s fields, in its order. Positions in m (world frame), forces in N."""

    contact_flag: int
    body_a: int
    body_b: int
    link_a: int
    link_b: int
    position_on_a: tuple[float, float, float]
    position_on_b: tuple[float, float, float]
    normal_on_b: tuple[float, float, float]
    distance: float  # separation, m (negative: penetration)
    normal_force: float
    lateral_friction_1: float
    lateral_friction_direction_1: tuple[float, float, float]
    lateral_friction_2: float
    lateral_friction_direction_2: tuple[float, float, float]


class Pose(NamedTuple):
    """A base's or a link frame's pose: ``position`` (3,) m and ``orientation`` quaternion (x, y, z, w), world frame."""

    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]


class Velocity(NamedTuple):
    """A base's velocity: ``linear`` (3,) m/s and ``angular`` (3,) rad/s, world frame."""

    linear: tuple[float, float, float]
    angular: tuple[float, float, float]


def clamp_joint_speeds(client: BulletClient, body: int, joint_indices: Sequence[int]) -> None:
    """Clamp the joints' speeds at the slowest of their URDF velocity limits (rad/s or m/s), the motors' rated speed.

    PyBullet ignores URDF velocity limits and clamps every joint at 100 rad/s; its ``maxJointVelocity`` is one value
    per body, whichever joint it is set through, so the slowest actuated joint's limit holds them all (no joint
    beyond its rating). Held joints (a Panda finger's 0.2 m/s) are not passed in. Bodies with a joint without a
    limit (0) keep PyBullet's clamp. A free function of the client, for a bare PyBullet loop to copy the env's
    limits (benchmarks/env_throughput.py).
    """
    limits = [JointInfo.read(client.getJointInfo(body, index)).max_velocity for index in joint_indices]
    if limits and min(limits) > 0:
        client.changeDynamics(body, joint_indices[0], maxJointVelocity=min(limits))


class PyBulletSession:
    """Owns one ``BulletClient`` (DIRECT, or GUI for ``render_mode="human"``).

    ``client`` stays public for tests and for ``benchmarks/env_throughput.py``'s bare PyBullet loop; the envs and
    the controllers of ``rlik.control`` call only the methods here.

    :param timestep: physics step in seconds.
    :param gravity: gravity along -z in m/s^2.
    :param gui: open the PyBullet GUI instead of a headless DIRECT client.
    """

    def __init__(self, timestep: float = 1.0 / 240.0, gravity: float = 9.81, gui: bool = False) -> None:
        self.timestep = timestep
        if gui and not display_available():
            # PyBullet's GUI blocks forever without an X server; stay headless instead.
            warnings.warn("render_mode='human' needs a display (DISPLAY is unset); running headless.", stacklevel=3)
            gui = False
        self.client = BulletClient(connection_mode=pybullet.GUI if gui else pybullet.DIRECT)
        self.closed = False
        self.client.setAdditionalSearchPath(pybullet_data.getDataPath())
        self.client.setTimeStep(timestep)
        self.client.setGravity(0.0, 0.0, -gravity)
        # Calls made every env step, bound once: BulletClient looks every attribute up again and wraps it per call.
        client = self.client
        self._step_simulation = client.stepSimulation
        self._set_motors = client.setJointMotorControlArray
        self._get_joint_states = client.getJointStates
        self._get_link_state = client.getLinkState
        self._get_link_states = client.getLinkStates
        self._get_base_pose = client.getBasePositionAndOrientation
        self._get_base_velocity = client.getBaseVelocity
        self._get_contact_points = client.getContactPoints
        self._get_rotation_matrix = client.getMatrixFromQuaternion
        self._inverse_dynamics = client.calculateInverseDynamics

    # --- bodies --------------------------------------------------------------------------------------

    def load_urdf(
        self,
        path: str | os.PathLike,
        base_position: tuple[float, float, float] = (0.0, 0.0, 0.0),
        fixed_base: bool = True,
    ) -> int:
        """Load a URDF with the inertias written in the file; return its body id.

        The file is found and checked first (``rlik.envs.urdf_files.loadable_urdf``), so that a broken one fails
        with its own cause.
        """
        with loadable_urdf(path) as (resolved, loaded):
            try:
                return self.client.loadURDF(
                    str(loaded),
                    basePosition=base_position,
                    useFixedBase=fixed_base,
                    flags=pybullet.URDF_USE_INERTIA_FROM_FILE,
                )
            except pybullet.error as err:
                raise ValueError(
                    f"PyBullet could not load URDF '{resolved}' ({err}); check links, joints and mesh paths."
                ) from None

    def load_ground(self, collide: bool = True) -> int:
        """Add the flat ground plane of pybullet_data at z = 0; with ``collide=False`` only to be seen."""
        plane = self.client.loadURDF("plane.urdf")
        if not collide:
            self.client.setCollisionFilterGroupMask(plane, -1, 0, 0)
        return plane

    def joint_infos(self, body: int) -> list[JointInfo]:
        """Every joint of ``body``, in index order (a joint's index is its child link's)."""
        client = self.client
        return [JointInfo.read(client.getJointInfo(body, index)) for index in range(client.getNumJoints(body))]

    def base_link_name(self, body: int) -> str:
        return self.client.getBodyInfo(body)[0].decode()  # getBodyInfo: (base link name, body name)

    def link_mass(self, body: int, link: int) -> float:
        """A link's mass (-1: the base), kg."""
        return self.client.getDynamicsInfo(body, link)[0]  # getDynamicsInfo's first field is the mass

    def set_link_mass(self, body: int, link: int, mass: float) -> None:
        """A link's mass, kg, its inertia that of a 1 cm sphere of that mass."""
        inertia = 0.4 * mass * 0.01**2
        self.client.changeDynamics(body, link, mass=mass, localInertiaDiagonal=[inertia] * 3)

    # --- joints and motors ---------------------------------------------------------------------------

    def clamp_joint_speeds(self, body: int, joints: Sequence[int]) -> None:
        """``clamp_joint_speeds`` on this session's client."""
        clamp_joint_speeds(self.client, body, joints)

    def set_joint_damping(self, body: int, joint: int, damping: float) -> None:
        """A joint's viscous damping, N m s/rad (or N s/m)."""
        self.client.changeDynamics(body, joint, jointDamping=damping)

    def disable_velocity_motors(self, body: int, joints: Sequence[int]) -> None:
        """Turn off PyBullet's default velocity motors, which would otherwise resist every torque."""
        self._set_motors(body, joints, pybullet.VELOCITY_CONTROL, forces=[0.0] * len(joints))

    def hold_joint_positions(self, body: int, joints: Sequence[int], forces: Sequence[float]) -> None:
        """Hold ``joints`` at their current positions with position motors of at most ``forces`` (N m or N)."""
        targets = self.joint_positions(body, joints)
        self._set_motors(body, joints, pybullet.POSITION_CONTROL, targetPositions=targets, forces=forces)

    def set_joint_torques(self, body: int, joints: Sequence[int], torques: Sequence[float]) -> None:
        """Joint torques (N m, N for prismatic) for the next physics step; a list is the fastest for PyBullet to read."""
        self._set_motors(body, joints, pybullet.TORQUE_CONTROL, forces=torques)

    def joint_states(self, body: int, joints: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Positions (n,) (rad or m) and velocities (n,) (rad/s or m/s) of ``joints``."""
        # getJointStates: (position, velocity, reaction forces, applied torque) per joint.
        positions, velocities = np.array([state[:2] for state in self._get_joint_states(body, joints)]).T
        return positions, velocities

    def joint_positions(self, body: int, joints: Sequence[int]) -> list[float]:
        """Positions of ``joints``, rad or m, as a list (what PyBullet's dynamics calls take)."""
        return [state[0] for state in self._get_joint_states(body, joints)]

    def reset_joint(self, body: int, joint: int, position: float, velocity: float = 0.0) -> None:
        """Teleport a joint to ``position`` (rad or m) with ``velocity`` (rad/s or m/s)."""
        self.client.resetJointState(body, joint, position, velocity)

    def inverse_dynamics(self, body: int, positions: list[float], velocities: list[float], accelerations: list[float]):
        """Generalised forces for the given state and accelerations (PyBullet's order: a floating base first)."""
        return self._inverse_dynamics(body, positions, velocities, accelerations)

    # --- links, base and contacts --------------------------------------------------------------------

    def mass_matrix(self, body: int, positions: list[float]) -> np.ndarray:
        """The joint-space mass matrix (n, n) at ``positions`` of every movable joint (PyBullet's order), kg m^2 or kg."""
        return np.asarray(self.client.calculateMassMatrix(body, positions))

    def link_origin_in_com_frame(self, body: int, link: int) -> np.ndarray:
        """A link's URDF frame origin (3,), m, in the link's centre-of-mass frame, where PyBullet's Jacobian takes
        its point (goals are at link frame origins)."""
        inertial_position, inertial_orientation = self._get_link_state(body, link)[_LINK_INERTIAL_FRAME]
        return np.array(self.client.invertTransform(inertial_position, inertial_orientation)[0])

    def point_jacobian(self, body: int, link: int, point: Sequence[float], positions: list[float]) -> np.ndarray:
        """Linear Jacobian (3, n), m/rad (or m/m), of ``point`` (3,), m, fixed in ``link``'s centre-of-mass frame, at
        ``positions`` of every movable joint (PyBullet's order). A floating base's is in the base frame, its own 6
        velocities' columns first (PyBullet does not take the base's pose)."""
        zeros = [0.0] * len(positions)
        return np.asarray(self.client.calculateJacobian(body, link, list(point), positions, zeros, zeros)[0])

    def link_jacobian(self, body: int, link: int, positions: list[float]) -> np.ndarray:
        """``point_jacobian`` (3, n) of ``link``'s URDF frame origin, for a fixed base."""
        return self.point_jacobian(body, link, self.link_origin_in_com_frame(body, link), positions)

    def inverse_kinematics(
        self,
        body: int,
        links: list[int],
        targets: list[list[float]],
        max_iterations: int | None = None,
        residual: float | None = None,
    ) -> np.ndarray:
        """Positions (n,), rad or m, of every movable joint (PyBullet's order) that put each of ``links`` on its
        world target (3,), m: PyBullet's damped least squares from the current pose, which it leaves as it is;
        at most ``max_iterations``, until within ``residual`` (m) of the targets (None: PyBullet's defaults)."""
        named = {"maxNumIterations": max_iterations, "residualThreshold": residual}
        options = {name: value for name, value in named.items() if value is not None}
        if len(links) == 1:  # calculateInverseKinematics2 is the call for several end effectors
            return np.asarray(self.client.calculateInverseKinematics(body, links[0], targets[0], **options))
        return np.asarray(self.client.calculateInverseKinematics2(body, links, targets, **options))

    def link_frame_position(self, body: int, link: int) -> np.ndarray:
        """World position (3,) of a link's URDF frame origin, m (forward kinematics of the current joint positions)."""
        return np.array(self._get_link_state(body, link, computeForwardKinematics=True)[_LINK_FRAME_POSITION])

    def link_frame_pose(self, body: int, link: int) -> Pose:
        """World pose of a link's URDF frame, forward kinematics of the current joint positions."""
        state = self._get_link_state(body, link, computeForwardKinematics=True)
        return Pose(state[_LINK_FRAME_POSITION], state[_LINK_FRAME_ORIENTATION])

    def link_frame_positions(self, body: int, links: Sequence[int]) -> np.ndarray:
        """World positions (k, 3) of links' URDF frame origins, m."""
        states = self._get_link_states(body, links, computeForwardKinematics=True)
        return np.array([state[_LINK_FRAME_POSITION] for state in states])

    def link_com_positions(self, body: int, links: Sequence[int]) -> list[tuple[float, float, float]]:
        """World positions of links' centres of mass, m, one 3-tuple per link."""
        # computeForwardKinematics so that the reading is right after resetJointState, too.
        states = self._get_link_states(body, links, computeForwardKinematics=True)
        return [state[_LINK_COM_POSITION] for state in states]

    def base_pose(self, body: int) -> Pose:
        """Position (m) and orientation (quaternion) of the base's centre of mass, world frame."""
        return Pose(*self._get_base_pose(body))

    def base_velocity(self, body: int) -> Velocity:
        return Velocity(*self._get_base_velocity(body))

    def reset_base_pose(self, body: int, position: Sequence[float], orientation: Sequence[float]) -> None:
        """Teleport the base to ``position`` (m) and ``orientation`` (quaternion)."""
        self.client.resetBasePositionAndOrientation(body, list(position), list(orientation))

    def rotation_matrix(self, quaternion: Sequence[float]) -> np.ndarray:
        """The rotation matrix (3, 3) of a quaternion (x, y, z, w)."""
        return np.array(self._get_rotation_matrix(quaternion)).reshape(3, 3)

    def contact_points(self, body_a: int, body_b: int) -> list[ContactPoint]:
        """Contact points between two bodies from the last physics step or ``detect_collisions``."""
        return [ContactPoint(*point) for point in self._get_contact_points(bodyA=body_a, bodyB=body_b)]

    def clearance(self, body_a: int, link_a: int, body_b: int, max_distance: float = 10.0) -> float:
        """Smallest distance (m) from ``link_a``'s collision shapes to ``body_b`` (negative: penetration); inf when
        none lies within ``max_distance`` or the link has no collision shape."""
        points = self.client.getClosestPoints(body_a, body_b, max_distance, linkIndexA=link_a)
        return min((ContactPoint(*point).distance for point in points), default=float("inf"))

    def detect_collisions(self) -> None:
        """Recompute the contact points for the current positions without stepping."""
        self.client.performCollisionDetection()

    # --- state, stepping, camera ---------------------------------------------------------------------

    def save_state(self) -> int:
        return self.client.saveState()

    def restore_state(self, state_id: int) -> None:
        """Restore positions, velocities and contact caches, so resets are deterministic."""
        self.client.restoreState(stateId=state_id)

    def step(self) -> None:
        self._step_simulation()

    def render(
        self,
        target: np.ndarray,
        distance: float = 1.6,
        yaw: float = 0.0,
        pitch: float = -60.0,
        width: int = 480,
        height: int = 360,
    ) -> np.ndarray:
        """RGB image (height, width, 3) uint8 from TinyRenderer, which needs no display."""
        view = self.client.computeViewMatrixFromYawPitchRoll(
            cameraTargetPosition=list(target), distance=distance, yaw=yaw, pitch=pitch, roll=0.0, upAxisIndex=2
        )
        projection = self.client.computeProjectionMatrixFOV(fov=60.0, aspect=width / height, nearVal=0.05, farVal=20.0)
        _, _, rgba, _, _ = self.client.getCameraImage(
            width, height, viewMatrix=view, projectionMatrix=projection, renderer=pybullet.ER_TINY_RENDERER
        )
        return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3]

    def add_marker(self, position: np.ndarray, radius: float = 0.03, rgba: tuple = (0.1, 0.9, 0.2, 1.0)) -> int:
        """A visual-only sphere (no collision, no mass) used to show goals: 3 cm, bright green, opaque (TinyRenderer
        draws no transparency), so that it shows in a 480 x 360 video of a whole arm."""
        shape = self.client.createVisualShape(pybullet.GEOM_SPHERE, radius=radius, rgbaColor=rgba)
        return self.client.createMultiBody(baseMass=0.0, baseVisualShapeIndex=shape, basePosition=list(position))

    def move_marker(self, marker: int, position: np.ndarray) -> None:
        self.reset_base_pose(marker, position, [0.0, 0.0, 0.0, 1.0])

    def aim_gui_camera(self, target: np.ndarray, distance: float, yaw: float = 0.0, pitch: float = -60.0) -> None:
        """Point the GUI window's camera as ``render`` points TinyRenderer's, and hide the window's side panels."""
        self.client.configureDebugVisualizer(pybullet.COV_ENABLE_GUI, 0)
        self.client.resetDebugVisualizerCamera(distance, yaw, pitch, list(target))

    def gui_text(self, text: str, position: np.ndarray, rgb: tuple = (0.0, 0.0, 0.0), replace: int = -1) -> int:
        """Text shown in the GUI window at ``position`` (m), facing the camera; ``replace``: the id of a text it
        replaces. Returns its id."""
        return self.client.addUserDebugText(
            text, list(position), textColorRGB=list(rgb), textSize=1.4, replaceItemUniqueId=replace
        )

    @property
    def connected(self) -> bool:
        """False once closed, or once the user closed the GUI window."""
        return not self.closed and bool(self.client.isConnected())

    def close(self) -> None:
        """Disconnect; calling it again does nothing."""
        self.closed = True
        with contextlib.suppress(pybullet.error):  # already disconnected
            self.client.disconnect()
