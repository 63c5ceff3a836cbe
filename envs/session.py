"""One PyBullet physics client per env: the only code of the envs that calls PyBullet.

``PyBulletSession`` wraps the client: connection, URDF loading (with the URDF checked first, so a broken
file fails with its own cause instead of PyBullet's generic one), joints, links, contacts, the base, motors,
state and camera. Results come back as arrays or as the named tuples below, never as PyBullet's bare tuples.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

from rlik.paths import URDF_DIR


def display_available() -> bool:
    """Whether PyBullet's GUI can open a window: an X display on Linux (``$DISPLAY``); macOS and Windows have one."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY"))


ACTUATED_TYPES = (pybullet.JOINT_REVOLUTE, pybullet.JOINT_PRISMATIC)
MESH_SUFFIXES = (".obj", ".stl", ".dae", ".cdf")  # the mesh formats PyBullet's URDF importer reads
# Fields of getLinkState(s) that the envs read (PyBullet returns a bare tuple).
_LINK_COM_POSITION = 0  # linkWorldPosition: the link's centre of mass, world frame
_LINK_FRAME_POSITION = 4  # worldLinkFramePosition: the link's URDF frame origin, world frame


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
    """A base's pose: ``position`` (3,) m and ``orientation`` quaternion (x, y, z, w), world frame."""

    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]


class Velocity(NamedTuple):
    """A base's velocity: ``linear`` (3,) m/s and ``angular`` (3,) rad/s, world frame."""

    linear: tuple[float, float, float]
    angular: tuple[float, float, float]


PACKAGE_SCHEME = "package://"


def package_folders(package: str, urdf: Path | None = None) -> list[Path]:
    """Folders that may hold the ROS package ``package``, in the order a ``package://<package>/...`` path is
    looked up: the URDF's own folders (a folder above it named ``package``, or one holding ``package``), the
    ``ROS_PACKAGE_PATH`` entries, ``share/<package>`` of the ``AMENT_PREFIX_PATH`` and ``CMAKE_PREFIX_PATH`` prefixes,
    and description packages installed with pip (``example-robot-data``'s ``cmeel.prefix/share``)."""
    above = list(urdf.parents) if urdf is not None else []
    folders = [folder for folder in above if folder.name == package] + [folder / package for folder in above]
    for entry in filter(None, os.environ.get("ROS_PACKAGE_PATH", "").split(os.pathsep)):
        folders += [Path(entry)] if Path(entry).name == package else [Path(entry) / package]
    for variable in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH"):
        folders += [
            Path(entry) / "share" / package for entry in filter(None, os.environ.get(variable, "").split(os.pathsep))
        ]
    folders += [Path(entry) / "cmeel.prefix" / "share" / package for entry in sys.path if entry]
    return folders


def resolve_package_path(uri: str, urdf: Path | None = None) -> Path | None:
    """The file a ``package://<package>/<path>`` URI names (see ``package_folders``), or None if none exists."""
    package, _, rest = uri[len(PACKAGE_SCHEME) :].partition("/")
    for folder in package_folders(package, urdf):
        if (folder / rest).is_file():
            return (folder / rest).resolve()
    return None


def resolve_urdf(path: str | os.PathLike) -> Path:
    """Find a URDF: as given, else in this project's ``urdf/``, else in ``pybullet_data``; a ``package://`` URI
    through the ROS package folders (``package_folders``).

    Raises ``FileNotFoundError`` naming every place looked in.
    """
    if str(path).startswith(PACKAGE_SCHEME):
        found = resolve_package_path(str(path))
        if found is None:
            raise FileNotFoundError(
                f"URDF '{path}' not found: no package '{str(path)[len(PACKAGE_SCHEME) :].split('/')[0]}' holds it "
                "(looked in ROS_PACKAGE_PATH, AMENT_PREFIX_PATH, CMAKE_PREFIX_PATH and pip-installed description "
                "packages); install the package (pip install -e '.[robots]' for example-robot-data) or add its "
                "folder to ROS_PACKAGE_PATH."
            )
        return found
    candidates = [Path(path)]
    if not Path(path).is_absolute():
        candidates += [URDF_DIR / path, Path(pybullet_data.getDataPath()) / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"URDF '{path}' not found (looked in: {looked}); pass an existing file path, "
        f"a name under {URDF_DIR}, a path inside pybullet_data or a package:// URI."
    )


def check_urdf_xml(path: Path) -> ET.Element:
    """Parse the URDF as XML so a malformed file fails with the parser's line and column."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"URDF '{path}' is malformed XML ({err}); fix the file.") from None
    if root.tag != "robot":
        raise ValueError(f"URDF '{path}' has root <{root.tag}>, expected <robot>; fix the file.")
    return root


def find_mesh(path: Path, filename: str) -> Path | None:
    """The mesh file ``filename`` of the URDF at ``path``: a ``package://`` URI through the ROS package folders,
    else where PyBullet looks (``model://`` dropped): as given, below the URDF's folder and each folder above it,
    the working directory and the two above it, and ``pybullet_data``."""
    if filename.startswith(PACKAGE_SCHEME) and (found := resolve_package_path(filename, path)) is not None:
        return found
    for scheme in (PACKAGE_SCHEME, "model://"):
        if filename.startswith(scheme):
            filename = filename[len(scheme) :]
            break
    name = Path(filename)
    folders = [*Path(path).parents, Path("."), Path(".."), Path("../.."), Path(pybullet_data.getDataPath())]
    return next(
        (candidate for candidate in [name, *(folder / name for folder in folders)] if candidate.is_file()), None
    )


def check_urdf_contents(path: Path, root: ET.Element) -> None:
    """Raise ``ValueError`` for what makes PyBullet refuse a well-formed URDF with only a generic error: a revolute
    or prismatic joint without ``<limit>``, or a mesh file it cannot find or read."""
    for joint in root.iter("joint"):
        kind = joint.get("type")
        if kind in ("revolute", "prismatic") and joint.find("limit") is None:
            hint = ' (a revolute joint without stops is type="continuous")' if kind == "revolute" else ""
            raise ValueError(
                f"URDF '{path}': {kind} joint '{joint.get('name')}' has no <limit>; add "
                f'<limit lower="..." upper="..." effort="..." velocity="..."/> to it{hint}.'
            )
    for link in root.iter("link"):
        for mesh in link.iter("mesh"):
            filename = mesh.get("filename", "")
            if Path(filename).suffix.lower() not in MESH_SUFFIXES:
                raise ValueError(
                    f"URDF '{path}': link '{link.get('name')}' has mesh '{filename}', a format PyBullet cannot "
                    f"read; convert it to one of {', '.join(MESH_SUFFIXES)}."
                )
            if find_mesh(path, filename) is None:
                raise ValueError(
                    f"URDF '{path}': mesh file '{filename}' of link '{link.get('name')}' not found (looked beside "
                    "the URDF, in the folders above it, in ROS_PACKAGE_PATH, AMENT_PREFIX_PATH and pip-installed "
                    "description packages, and in pybullet_data); fix the filename or put the mesh there."
                )


def with_package_meshes_resolved(path: Path, root: ET.Element) -> str | None:
    """The URDF's text with every ``package://`` mesh replaced by its absolute path, or None if it has none.

    PyBullet drops ``package://`` and searches only relative to the URDF and the working directory, which misses
    packages found through ``ROS_PACKAGE_PATH`` or installed elsewhere. Call after ``check_urdf_contents``.
    """
    meshes = [mesh for mesh in root.iter("mesh") if mesh.get("filename", "").startswith(PACKAGE_SCHEME)]
    if not meshes:
        return None
    for mesh in meshes:
        mesh.set("filename", str(find_mesh(path, mesh.get("filename"))))
    return ET.tostring(root, encoding="unicode")


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

    ``client`` stays public for code outside the envs that needs PyBullet calls this class does not wrap
    (the Jacobians and mass matrices of ``rlik/control/controllers.py``, tests); the envs call only the methods here.

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

        The file is checked first (``check_urdf_xml``, ``check_urdf_contents``): PyBullet reports those causes
        only on its own stderr and raises a generic error.
        """
        resolved = resolve_urdf(path)
        root = check_urdf_xml(resolved)
        check_urdf_contents(resolved, root)
        rewritten = with_package_meshes_resolved(resolved, root)
        # A rewritten copy beside nothing else: its meshes are absolute paths, and PyBullet reads them all at load.
        with tempfile.TemporaryDirectory(prefix="rlik-urdf-") as folder:
            loaded = resolved
            if rewritten is not None:
                loaded = Path(folder) / resolved.name
                loaded.write_text(rewritten)
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

    def link_jacobian(self, body: int, link: int, positions: list[float]) -> np.ndarray:
        """Linear Jacobian (3, n), m/rad (or m/m), of ``link``'s URDF frame origin at ``positions`` of every movable
        joint (PyBullet's order), for a fixed base. PyBullet takes the point in the link's centre-of-mass frame."""
        inertial_position, inertial_orientation = self._get_link_state(body, link)[2:4]
        origin = self.client.invertTransform(inertial_position, inertial_orientation)[0]
        zeros = [0.0] * len(positions)
        return np.asarray(self.client.calculateJacobian(body, link, list(origin), positions, zeros, zeros)[0])

    def link_frame_position(self, body: int, link: int) -> np.ndarray:
        """World position (3,) of a link's URDF frame origin, m (forward kinematics of the current joint positions)."""
        return np.array(self._get_link_state(body, link, computeForwardKinematics=True)[_LINK_FRAME_POSITION])

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
