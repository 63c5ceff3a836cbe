"""Static balance of a legged body: centre of mass, support polygon, COM margin, centre of pressure.

The functions are pure (arrays in, arrays out); ``BalanceSensor`` reads their inputs from a body through its
``PyBulletSession``.
Ground-plane quantities are 2-D (x, y) in the world frame, metres; the ground is z = 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rlik.envs.session import PyBulletSession


def center_of_mass(masses: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Mass-weighted mean (3,) of link centres of mass ``positions`` (n, 3), m; ``masses`` (n,), kg."""
    masses = np.asarray(masses, dtype=np.float64)
    if masses.sum() <= 0:
        raise ValueError(f"total mass must be > 0 kg, got masses {masses}; give the links their URDF masses.")
    return masses @ np.asarray(positions, dtype=np.float64) / masses.sum()


# The ground polygons have a handful of vertices (4 per flat foot) and are rebuilt every step,
# so the geometry below runs on Python floats: numpy's per-call overhead would dominate.
Point = tuple[float, float]


def _cross(origin: Point, a: Point, b: Point) -> float:
    """z of (a - origin) x (b - origin): > 0 when origin -> a -> b turns left."""
    return (a[0] - origin[0]) * (b[1] - origin[1]) - (a[1] - origin[1]) * (b[0] - origin[0])


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (h, 2) of 2-D ``points`` (m, 2), counter-clockwise, without collinear or repeated points.

    Andrew's monotone chain; fewer than 3 distinct points come back as they are (a point or a segment).
    """
    flat = np.asarray(points, dtype=np.float64).reshape(-1, 2).tolist()
    ordered: list[Point] = sorted({(round(x, 9), round(y, 9)) for x, y in flat})
    if len(ordered) < 3:
        return np.array(ordered, dtype=np.float64).reshape(-1, 2)

    def half(sequence: list[Point]) -> list[Point]:
        chain: list[Point] = []
        for p in sequence:
            while len(chain) >= 2 and _cross(chain[-2], chain[-1], p) <= 0:
                chain.pop()
            chain.append(p)
        return chain[:-1]  # the last point starts the other half

    return np.array(half(ordered) + half(ordered[::-1]))


def support_polygon(contact_points: np.ndarray) -> np.ndarray:
    """Support polygon (h, 2): convex hull of the ground projections of contact points (m, 3), m."""
    return convex_hull(np.asarray(contact_points, dtype=np.float64).reshape(-1, 3)[:, :2])


def _distance_to_segment(p: Point, a: Point, b: Point) -> float:
    ex, ey = b[0] - a[0], b[1] - a[1]
    length_sq = ex * ex + ey * ey
    t = 0.0 if length_sq == 0.0 else min(1.0, max(0.0, ((p[0] - a[0]) * ex + (p[1] - a[1]) * ey) / length_sq))
    return math.hypot(p[0] - a[0] - t * ex, p[1] - a[1] - t * ey)


def com_margin(point: np.ndarray, polygon: np.ndarray) -> float:
    """Signed distance (m) from a ground point (2,) to the edge of a convex CCW ``polygon`` (h, 2).

    Positive inside, negative outside. A degenerate polygon (a point or a segment, h < 3) has no
    inside, so the margin is minus the distance to it.
    """
    p: Point = (float(point[0]), float(point[1]))
    vertices: list[Point] = [tuple(v) for v in np.asarray(polygon, dtype=np.float64).reshape(-1, 2).tolist()]
    if not vertices:
        raise ValueError("support polygon is empty (no contact point); com_margin needs at least one point.")
    edges = list(zip(vertices, vertices[1:] + vertices[:1]))
    distance = min(_distance_to_segment(p, a, b) for a, b in edges)
    # Left of (or on) every edge of a CCW polygon means inside.
    inside = len(vertices) >= 3 and all(_cross(a, b, p) >= 0 for a, b in edges)
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
    """Reads the whole-body COM and the feet's ground contacts of one body, through its session.

    Link masses are read once here, since they never change.

    :param session: the body's PyBullet session.
    :param body: body id of the robot.
    :param foot_links: link indices whose contacts with ``ground`` support the robot.
    :param ground: body id of the floor.
    :param contact_tolerance: a contact point counts when its separation is below this, m
        (PyBullet also reports near-contacts up to its contact breaking threshold).
    """

    def __init__(
        self,
        session: PyBulletSession,
        body: int,
        foot_links: Sequence[int],
        ground: int,
        contact_tolerance: float = 0.002,
    ) -> None:
        self.session = session
        self.body = body
        self.foot_links = list(foot_links)
        self.ground = ground
        self.contact_tolerance = contact_tolerance
        self.link_indices = [info.index for info in session.joint_infos(body)]
        self.masses = np.array([session.link_mass(body, link) for link in [-1, *self.link_indices]])
        self.total_mass = float(self.masses.sum())

    def link_com_positions(self) -> np.ndarray:
        """World positions (n_links + 1, 3) of the base's and every link's centre of mass, m."""
        base = self.session.base_pose(self.body).position
        return np.array([base, *self.session.link_com_positions(self.body, self.link_indices)])

    def center_of_mass(self) -> np.ndarray:
        """Whole-body centre of mass (3,), world frame, m."""
        return center_of_mass(self.masses, self.link_com_positions())

    def foot_contacts(self) -> tuple[np.ndarray, np.ndarray]:
        """Feet-ground contact points (m, 3) on the ground, m, and their normal forces (m,), N."""
        contacts = [
            c
            for c in self.session.contact_points(self.body, self.ground)
            if c.link_a in self.foot_links and c.distance < self.contact_tolerance
        ]
        points = np.array([c.position_on_b for c in contacts], dtype=np.float64).reshape(-1, 3)
        return points, np.array([c.normal_force for c in contacts], dtype=np.float64)

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
            points = self.session.link_frame_positions(self.body, self.foot_links)
        polygon = support_polygon(points)
        zmp = center_of_pressure(points, forces) if forces.sum() > 0 else com[:2].copy()
        return BalanceState(com=com, polygon=polygon, com_margin=com_margin(com[:2], polygon), zmp=zmp)
