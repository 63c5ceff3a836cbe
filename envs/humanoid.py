"""A humanoid standing free on rigid legs: its balance (centre of mass, feet, centre of pressure), tilt and falls."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from rlik.envs.balance import BalanceSensor, BalanceState, com_margin, support_polygon
from rlik.envs.robot import Robot
from rlik.envs.session import PyBulletSession
from rlik.envs.urdf_files import check_urdf_xml, resolve_urdf

MASSLESS_LINK_MASS = 0.001  # kg, for a link the URDF gives no <inertial>


class HumanoidRobot(Robot):
    """A ``Robot`` on a floating base that stands on its feet on the floor.

    ``footprint``: the feet's support polygon (h, 2), m, as planted in the start pose (``plant_feet``). The legs are
    rigid and the feet stay put, so, unlike the contact polygon (which shrinks to an edge as soon as a foot rocks),
    the COM's margin in it (``footprint_margin``) changes smoothly with the pose and warns before the robot tips.

    :param session: the PyBullet session that owns the client.
    :param urdf: URDF path (see ``rlik.envs.urdf_files.resolve_urdf``).
    :param ground: body id of the floor the feet stand on.
    :param joints: names of the joints to actuate, as ``Robot``'s.
    :param fixed_base: bolt the pelvis to the world (it then cannot fall).
    :param base_position: pelvis position in the world, m; ``None``: stand at the origin on the floor, the pelvis
        upright at the height that rests the feet's lowest collision point on it (``stand_on_floor``).
    :param foot_links: links whose floor contacts form the support polygon.
    :param fall_tilt: pelvis tilt from vertical that counts as a fall, rad, in (0, pi/2).
    :param fall_height: pelvis height below which the robot has fallen, m.
    """

    def __init__(
        self,
        session: PyBulletSession,
        urdf: str | os.PathLike,
        ground: int,
        foot_links: Sequence[str],
        fall_tilt: float,
        fall_height: float,
        joints: Sequence[str] | None = None,
        fixed_base: bool = False,
        base_position: Sequence[float] | None = None,
    ) -> None:
        if not 0.0 < fall_tilt < np.pi / 2:
            raise ValueError(f"fall_tilt must be in (0, pi/2) rad, got {fall_tilt}.")
        origin = (0.0, 0.0, 0.0) if base_position is None else base_position
        super().__init__(session, urdf, joints=joints, fixed_base=fixed_base, base_position=origin)
        self.fall_tilt = fall_tilt
        self.fall_height = fall_height
        self.ground = ground
        self.foot_links = [self.link_index(name) for name in foot_links]
        self._weigh_massless_links()
        self.balance = BalanceSensor(session, self.body, self.foot_links, ground)
        if base_position is None:
            self.stand_on_floor()
        self.footprint = np.zeros((0, 2))  # set by plant_feet
        # The latest reading (balance_observation), which the task's info reuses.
        self.balance_state: BalanceState | None = None
        self.footprint_margin = float("nan")

    def _weigh_massless_links(self) -> None:
        """PyBullet gives a link without ``<inertial>`` (a sensor frame, such as the G1's IMUs) 1 kg and an inertia of
        1 kg m^2, which would shift the COM and stiffen the torso: give such links 1 g instead."""
        root = check_urdf_xml(resolve_urdf(self.urdf))
        for link in root.iter("link"):
            if link.find("inertial") is None and link.get("name") in self.link_indices:
                self.session.set_link_mass(self.body, self.link_indices[link.get("name")], MASSLESS_LINK_MASS)

    def stand_on_floor(self) -> None:
        """Lift or lower the robot, as loaded (upright, at the origin), until the feet's lowest collision point touches
        the floor (the height rounded to 0.1 mm), the joints as they are: the robot dropped onto its feet."""
        clearance = min(self.session.clearance(self.body, link, self.ground) for link in self.foot_links)
        if clearance == float("inf"):
            names = [name for name, index in self.link_indices.items() if index in self.foot_links]
            raise ValueError(
                f"the foot links {names} of {self.urdf} have no collision shape to stand on; name the links of the soles."
            )
        (x, y, z), orientation = self.session.base_pose(self.body)  # as loaded: upright, at the origin
        self.session.reset_base_pose(self.body, (x, y, round(z - clearance, 4)), orientation)

    def plant_feet(self) -> None:
        """Take the feet's floor contacts now (the start pose, just restored) as the ``footprint``.

        Raises ``ValueError`` when they do not span a polygon (the soles are not flat on the floor).
        """
        self.session.detect_collisions()
        polygon = support_polygon(self.balance.foot_contacts()[0])
        if len(polygon) < 3:
            raise ValueError(
                "the start pose is not balanced (the feet do not stand flat on the floor); leave base_position None "
                "to stand the robot on its feet, or check foot_links and the legs' pose."
            )
        self.footprint = polygon

    def footprint_com_margin(self) -> float:
        """The COM's ground projection's margin in the ``footprint`` now, m (``rlik.envs.balance.com_margin``)."""
        return com_margin(self.balance.center_of_mass()[:2], self.footprint)

    def balance_observation(self) -> np.ndarray:
        """Pelvis height (m), gravity direction in the pelvis frame (3), pelvis linear (3, m/s) and angular (3, rad/s)
        velocity, COM minus the support polygon's centre (x, y, m), COM height (m), COM margin (m), ZMP minus the
        polygon's centre (2, m), footprint margin (m): (17,).

        Measures the balance once and keeps it (``balance_state``, ``footprint_margin``) for the step's info.
        """
        state = self.balance_state = self.balance.measure()
        self.footprint_margin = com_margin(state.com[:2], self.footprint)
        position, orientation = self.session.base_pose(self.body)
        linear, angular = self.session.base_velocity(self.body)
        rotation = self.session.rotation_matrix(orientation)
        centre = state.polygon.mean(axis=0)
        return np.concatenate(
            [
                [position[2]],
                rotation.T @ np.array([0.0, 0.0, -1.0]),  # gravity direction in the pelvis frame
                linear,
                angular,
                state.com[:2] - centre,
                [state.com[2], state.com_margin],
                state.zmp - centre,
                [self.footprint_margin],
            ]
        )

    def observation(self, scaled_positions: bool) -> tuple[np.ndarray, np.ndarray]:
        """``Robot.observation``'s joint terms, then ``balance_observation``'s (17,)."""
        joints, velocities = super().observation(scaled_positions)
        return np.concatenate([joints, self.balance_observation()]), velocities

    def camera(self, distance: float) -> dict[str, Any]:
        """The standing robot, seen from ``distance`` m at the front left at chest height."""
        chest = self.link_position(-1) + np.array([0.0, 0.0, 0.3])
        return {"target": chest, "distance": distance, "yaw": 50.0, "pitch": -15.0}

    def reset(self, positions: np.ndarray) -> None:
        """Start an episode in the pose ``positions``, with the contact points of that pose and no older ones."""
        self.forget_contacts()
        super().reset(positions)
        # Contacts for the new pose, so the first observation has a support polygon.
        self.session.detect_collisions()

    def forget_contacts(self) -> None:
        """Drop the contact points (and their solver warm start) left by the previous episode.

        restoreState keeps them when the saved state has none, which makes a seeded episode
        depend on the one before. Lifting the robot out of reach makes the broadphase delete them.
        """
        position, orientation = self.session.base_pose(self.body)
        self.session.reset_base_pose(self.body, [position[0], position[1], position[2] + 100.0], orientation)
        self.session.detect_collisions()
        self.session.reset_base_pose(self.body, position, orientation)

    def pelvis_tilt(self) -> float:
        """Angle between the pelvis's z axis and the world vertical, rad."""
        return self._tilt(self.session.base_pose(self.body).orientation)

    def fell(self) -> bool:
        """Pelvis tilted beyond ``fall_tilt`` or lower than ``fall_height``."""
        position, orientation = self.session.base_pose(self.body)
        return self._tilt(orientation) > self.fall_tilt or position[2] < self.fall_height

    def _tilt(self, orientation: Sequence[float]) -> float:
        up_z = self.session.rotation_matrix(orientation)[2, 2]  # z of the pelvis's z axis
        return float(np.arccos(np.clip(up_z, -1.0, 1.0)))
