"""Static balance of a legged body: centre of mass, support polygon, COM margin, centre of pressure.

The functions are pure numpy; ``BalanceSensor`` reads their inputs from a PyBullet body.
Ground-plane quantities are 2-D (x, y) in the world frame, metres; the ground is z = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pybullet_utils.bullet_client import BulletClient


def center_of_mass(masses: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Mass-weighted mean (3,) of link centres of mass ``positions`` (n, 3), m; ``masses`` (n,), kg."""
    masses = np.asarray(masses, dtype=np.float64)
    if masses.sum() <= 0:
        raise ValueError(f"total mass must be > 0 kg, got masses {masses}; give the links their URDF masses.")
    return masses @ np.asarray(positions, dtype=np.float64) / masses.sum()


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (h, 2) of 2-D ``points`` (m, 2), counter-clockwise, without collinear or repeated points.

    Andrew's monotone chain; fewer than 3 distinct points come back as they are (a point or a segment).
    """
    unique = np.unique(np.round(np.asarray(points, dtype=np.float64).reshape(-1, 2), 9), axis=0)  # sorted by x, y
    if len(unique) < 3:
        return unique

    def half(ordered: list[tuple[float, float]]) -> list[tuple[float, float]]:
        chain: list[tuple[float, float]] = []
        for x, y in ordered:
            # Pop while the last two chain points and this one do not turn left (plain floats: this
            # runs every step, and numpy's per-call overhead would dominate).
            while len(chain) >= 2 and (
                (chain[-1][0] - chain[-2][0]) * (y - chain[-2][1]) - (chain[-1][1] - chain[-2][1]) * (x - chain[-2][0])
                <= 0
            ):
                chain.pop()
            chain.append((x, y))
        return chain[:-1]  # the last point starts the other half

    ordered = [tuple(p) for p in unique.tolist()]
    return np.array(half(ordered) + half(ordered[::-1]))


def support_polygon(contact_points: np.ndarray) -> np.ndarray:
    """Support polygon (h, 2): convex hull of the ground projections of contact points (m, 3), m."""
    return convex_hull(np.asarray(contact_points, dtype=np.float64).reshape(-1, 3)[:, :2])


def _distances_to_segments(point: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Distances (k,) from a point (2,) to segments ``starts`` (k, 2) -> ``ends`` (k, 2)."""
    edges = ends - starts
    lengths_sq = np.einsum("ij,ij->i", edges, edges)
    along = np.einsum("ij,ij->i", point - starts, edges) / np.where(lengths_sq > 0, lengths_sq, 1.0)
    nearest = starts + np.clip(along, 0.0, 1.0)[:, None] * edges
    return np.linalg.norm(point - nearest, axis=1)


def com_margin(point: np.ndarray, polygon: np.ndarray) -> float:
    """Signed distance (m) from a ground point (2,) to the edge of a convex CCW ``polygon`` (h, 2).

    Positive inside, negative outside. A degenerate polygon (a point or a segment, h < 3) has no
    inside, so the margin is minus the distance to it.
    """
    point = np.asarray(point, dtype=np.float64)[:2]
    polygon = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(polygon) == 0:
        raise ValueError("support polygon is empty (no contact point); com_margin needs at least one point.")
    ends = np.roll(polygon, -1, axis=0)
    distance = float(_distances_to_segments(point, polygon, ends).min())
    if len(polygon) < 3:
        return -distance
    edges = ends - polygon
    # Cross product >= 0: the point is left of (or on) every edge, i.e. inside a CCW polygon.
    inside = np.all(edges[:, 0] * (point[1] - polygon[:, 1]) - edges[:, 1] * (point[0] - polygon[:, 0]) >= 0)
    return distance if inside else -distance


def center_of_pressure(contact_points: np.ndarray, normal_forces: np.ndarray) -> np.ndarray:
    """Centre of pressure (2,), m: contact points (m, 3) weighted by their normal forces (m,), N.

    On flat ground it is the zero moment point (ZMP).
    """
    forces = np.asarray(normal_forces, dtype=np.float64)
    if forces.sum() <= 0:
        raise ValueError("no normal force on the contacts (total <= 0 N); the centre of pressure is undefined.")
    return forces @ np.asarray(contact_points, dtype=np.float64).reshape(-1, 3)[:, :2] / forces.sum()


@dataclass(frozen=True)
class BalanceState:
    """One reading: ``com`` (3,) m, ``polygon`` (h, 2) m, ``com_margin`` m, ``zmp`` (2,) m."""

    com: np.ndarray
    polygon: np.ndarray
    com_margin: float
    zmp: np.ndarray


class BalanceSensor:
    """Reads the whole-body COM and the feet's ground contacts of one PyBullet body.

    Link masses are read once here, since they never change.

    :param client: the body's PyBullet client.
    :param body: body id of the robot.
    :param foot_links: link indices whose contacts with ``ground`` support the robot.
    :param ground: body id of the floor.
    :param contact_tolerance: a contact point counts when its separation is below this, m
        (PyBullet also reports near-contacts up to its contact breaking threshold).
    """

    def __init__(
        self,
        client: BulletClient,
        body: int,
        foot_links: Sequence[int],
        ground: int,
        contact_tolerance: float = 0.002,
    ) -> None:
        self.client = client
        self.body = body
        self.foot_links = list(foot_links)
        self.ground = ground
        self.contact_tolerance = contact_tolerance
        self.link_indices = list(range(client.getNumJoints(body)))
        self.masses = np.array([client.getDynamicsInfo(body, link)[0] for link in [-1, *self.link_indices]])
        self.total_mass = float(self.masses.sum())

    def link_com_positions(self) -> np.ndarray:
        """World positions (n_links + 1, 3) of the base's and every link's centre of mass, m."""
        base = self.client.getBasePositionAndOrientation(self.body)[0]
        # computeForwardKinematics so that the reading is right after resetJointState, too.
        links = self.client.getLinkStates(self.body, self.link_indices, computeForwardKinematics=True)
        return np.array([base, *(state[0] for state in links)])

    def center_of_mass(self) -> np.ndarray:
        """Whole-body centre of mass (3,), world frame, m."""
        return center_of_mass(self.masses, self.link_com_positions())

    def foot_contacts(self) -> tuple[np.ndarray, np.ndarray]:
        """Feet-ground contact points (m, 3) on the ground, m, and their normal forces (m,), N."""
        contacts = [
            c
            for c in self.client.getContactPoints(bodyA=self.body, bodyB=self.ground)
            if c[3] in self.foot_links and c[8] < self.contact_tolerance
        ]
        points = np.array([c[6] for c in contacts], dtype=np.float64).reshape(-1, 3)
        return points, np.array([c[9] for c in contacts], dtype=np.float64)

    def measure(self) -> BalanceState:
        """COM, support polygon, COM margin and ZMP now.

        Without any foot contact (airborne) the polygon shrinks to the segment between the foot
        links' origins, so the margin stays a finite, negative distance. Without normal force
        (right after a reset, before the solver has run) the ZMP is the COM's ground projection,
        which it equals at rest.
        """
        com = self.center_of_mass()
        points, forces = self.foot_contacts()
        if len(points) == 0:
            feet = self.client.getLinkStates(self.body, self.foot_links, computeForwardKinematics=True)
            points = np.array([state[4] for state in feet])
        polygon = support_polygon(points)
        zmp = center_of_pressure(points, forces) if forces.sum() > 0 else com[:2].copy()
        return BalanceState(com=com, polygon=polygon, com_margin=com_margin(com[:2], polygon), zmp=zmp)
