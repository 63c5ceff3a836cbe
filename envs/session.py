"""One PyBullet physics client per env: connection, URDF loading, camera."""

from __future__ import annotations

import contextlib
import os
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

URDF_DIR = Path(__file__).resolve().parent.parent / "urdf"


def resolve_urdf(path: str | os.PathLike) -> Path:
    """Find a URDF: as given, else in this project's ``urdf/``, else in ``pybullet_data``.

    Raises ``FileNotFoundError`` naming every place looked in.
    """
    candidates = [Path(path)]
    if not Path(path).is_absolute():
        candidates += [URDF_DIR / path, Path(pybullet_data.getDataPath()) / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"URDF '{path}' not found (looked in: {looked}); pass an existing file path, "
        f"a name under {URDF_DIR} or a path inside pybullet_data."
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


class PyBulletSession:
    """Owns one ``BulletClient`` (DIRECT, or GUI for ``render_mode="human"``).

    :param timestep: physics step in seconds.
    :param gravity: gravity along -z in m/s^2.
    :param gui: open the PyBullet GUI instead of a headless DIRECT client.
    """

    def __init__(self, timestep: float = 1.0 / 240.0, gravity: float = 9.81, gui: bool = False) -> None:
        self.timestep = timestep
        if gui and not os.environ.get("DISPLAY"):
            # PyBullet's GUI blocks forever without an X server; stay headless instead.
            warnings.warn("render_mode='human' needs a display (DISPLAY is unset); running headless.", stacklevel=3)
            gui = False
        self.client = BulletClient(connection_mode=pybullet.GUI if gui else pybullet.DIRECT)
        self.client.setAdditionalSearchPath(pybullet_data.getDataPath())
        self.client.setTimeStep(timestep)
        self.client.setGravity(0.0, 0.0, -gravity)
        self._step_simulation = self.client.stepSimulation  # bound once: BulletClient re-wraps per lookup

    def load_urdf(
        self,
        path: str | os.PathLike,
        base_position: tuple[float, float, float] = (0.0, 0.0, 0.0),
        fixed_base: bool = True,
    ) -> int:
        """Load a URDF with the inertias written in the file; return its body id."""
        resolved = resolve_urdf(path)
        check_urdf_xml(resolved)
        try:
            return self.client.loadURDF(
                str(resolved),
                basePosition=base_position,
                useFixedBase=fixed_base,
                flags=pybullet.URDF_USE_INERTIA_FROM_FILE,
            )
        except pybullet.error as err:
            raise ValueError(
                f"PyBullet could not load URDF '{resolved}' ({err}); check links, joints and mesh paths."
            ) from None

    def load_ground(self) -> int:
        """Add the flat ground plane of pybullet_data at z = 0."""
        return self.client.loadURDF("plane.urdf")

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

    def add_marker(self, position: np.ndarray, radius: float = 0.02, rgba: tuple = (0.1, 0.8, 0.1, 0.7)) -> int:
        """A visual-only sphere (no collision, no mass) used to show goals."""
        shape = self.client.createVisualShape(pybullet.GEOM_SPHERE, radius=radius, rgbaColor=rgba)
        return self.client.createMultiBody(baseMass=0.0, baseVisualShapeIndex=shape, basePosition=list(position))

    def move_marker(self, marker: int, position: np.ndarray) -> None:
        self.client.resetBasePositionAndOrientation(marker, list(position), [0.0, 0.0, 0.0, 1.0])

    def close(self) -> None:
        with contextlib.suppress(pybullet.error):  # already disconnected
            self.client.disconnect()
