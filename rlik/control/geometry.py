"""Rotations and angles of 3-vectors: what FABRIK's positions-to-angles conversion and the balance task need."""

from __future__ import annotations

import math

import numpy as np

TWO_PI = 2.0 * math.pi


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix (3, 3) of ``angle`` (rad) about the unit vector ``axis`` (3,) (Rodrigues)."""
    x, y, z = axis
    c, s = math.cos(angle), math.sin(angle)
    t = 1.0 - c
    return np.array(
        [
            [c + x * x * t, x * y * t - z * s, x * z * t + y * s],
            [y * x * t + z * s, c + y * y * t, y * z * t - x * s],
            [z * x * t - y * s, z * y * t + x * s, c + z * z * t],
        ]
    )


def signed_angle(start: np.ndarray, end: np.ndarray, axis: np.ndarray) -> float:
    """Angle (rad, in (-pi, pi]) that turns ``start`` (3,) toward ``end`` (3,) about the unit ``axis`` (3,).

    Only the components perpendicular to ``axis`` count.
    """
    (sx, sy, sz), (ex, ey, ez), (ax, ay, az) = start.tolist(), end.tolist(), axis.tolist()
    turn = ax * (sy * ez - sz * ey) + ay * (sz * ex - sx * ez) + az * (sx * ey - sy * ex)  # axis . (start x end)
    along = (sx * ax + sy * ay + sz * az) * (ex * ax + ey * ay + ez * az)
    return math.atan2(turn, sx * ex + sy * ey + sz * ez - along)


def unit(vector: np.ndarray) -> np.ndarray:
    """``vector`` (3,) scaled to length 1 (a zero vector stays zero)."""
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0.0 else vector


def nearest_turn(angle: float, now: float, lower: float, upper: float) -> tuple[float, bool]:
    """``angle`` (rad) turned by a whole turn or not: of the choices within [lower, upper], the nearest to ``now``
    (rad), else the one nearest the limits; and whether it is within them."""
    choices = (angle - TWO_PI, angle, angle + TWO_PI)
    inside = [c for c in choices if lower - 1e-9 <= c <= upper + 1e-9]
    if inside:
        return min(inside, key=lambda c: abs(c - now)), True
    return min(choices, key=lambda c: max(lower - c, c - upper)), False


def xyz_euler_angles(matrix: np.ndarray, first: float) -> list[tuple[float, float, float]]:
    """Both ``(a, b, c)`` (rad) with ``matrix`` (3, 3) = Rx(a) Ry(b) Rz(c); at the gimbal lock (cos b = 0), the
    one with ``a = first`` (the first joint keeps its angle, since only a + c or c - a is then determined)."""
    sin_b = float(np.clip(matrix[0, 2], -1.0, 1.0))
    cos_b = math.hypot(matrix[1, 2], matrix[2, 2])
    if cos_b < 1e-9:
        b = math.copysign(math.pi / 2, sin_b)
        combined = math.atan2(matrix[1, 0], matrix[1, 1])  # a + c at b = pi/2, c - a at b = -pi/2
        return [(first, b, combined - first if sin_b > 0 else combined + first)]
    a, c = math.atan2(-matrix[1, 2], matrix[2, 2]), math.atan2(-matrix[0, 1], matrix[0, 0])
    b = math.atan2(sin_b, cos_b)
    # The other branch: cos b < 0, which turns a and c by pi.
    return [(a, b, c), (a - math.copysign(math.pi, a), math.copysign(math.pi, b) - b, c - math.copysign(math.pi, c))]
