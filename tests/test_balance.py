"""Balance module: pure geometry, and the PyBullet readings on the humanoid."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import gymnasium as gym
import numpy as np
import pytest
import rlik.envs  # noqa: F401  (registers the ids)
from rlik.envs.balance import center_of_mass, center_of_pressure, com_margin, convex_hull, support_polygon
from rlik.envs.urdf_files import resolve_urdf

SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def test_convex_hull_drops_interior_collinear_and_repeated_points() -> None:
    points = np.vstack([SQUARE, [[0.5, 0.5], [0.5, 0.0], [1.0, 1.0], [0.2, 0.7]]])
    hull = convex_hull(np.random.default_rng(0).permutation(points))
    assert len(hull) == 4
    assert {tuple(p) for p in hull} == {tuple(p) for p in SQUARE}
    x, y = hull[:, 0], hull[:, 1]
    assert 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) == pytest.approx(1.0)  # CCW: positive area


def test_support_polygon_projects_contact_points_to_the_ground() -> None:
    points = np.array([[0.0, 0.0, 0.001], [0.2, 0.0, 0.0], [0.2, 0.1, -0.001], [0.0, 0.1, 0.0]])
    assert support_polygon(points).shape == (4, 2)


@pytest.mark.parametrize(
    ("point", "expected"),
    [((0.5, 0.5), 0.5), ((0.9, 0.5), 0.1), ((1.0, 0.3), 0.0), ((1.3, 0.5), -0.3), ((1.3, 1.4), -0.5)],
)
def test_com_margin_is_signed_distance_to_the_edge(point: tuple[float, float], expected: float) -> None:
    assert com_margin(np.array(point), SQUARE) == pytest.approx(expected)


def test_com_margin_on_degenerate_polygons_is_minus_the_distance() -> None:
    assert com_margin(np.array([3.0, 4.0]), np.array([[0.0, 0.0]])) == pytest.approx(-5.0)
    assert com_margin(np.array([0.5, 2.0]), np.array([[0.0, 0.0], [1.0, 0.0]])) == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="empty"):
        com_margin(np.zeros(2), np.zeros((0, 2)))


def test_center_of_mass_and_center_of_pressure_are_weighted_means() -> None:
    positions = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    np.testing.assert_allclose(center_of_mass(np.array([3.0, 1.0]), positions), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(center_of_pressure(positions, np.array([1.0, 3.0])), [0.75, 1.5])
    with pytest.raises(ValueError, match="mass"):
        center_of_mass(np.zeros(2), positions)
    with pytest.raises(ValueError, match="normal force"):
        center_of_pressure(positions, np.zeros(2))


def urdf_neutral_com(base_height: float) -> tuple[float, np.ndarray]:
    """Total mass and COM of the humanoid with every joint at 0, straight from the URDF's XML.

    At zero joint angles every joint frame is unrotated (all origins have no rpy), so a link's
    frame is the sum of the joint origins from the base.
    """
    root = ET.parse(resolve_urdf("humanoid_upper_body.urdf")).getroot()
    parent_joint = {j.find("child").get("link"): j for j in root.iter("joint")}

    def frame(link: str) -> np.ndarray:
        if link not in parent_joint:
            return np.array([0.0, 0.0, base_height])
        joint = parent_joint[link]
        return frame(joint.find("parent").get("link")) + np.array(joint.find("origin").get("xyz").split(), float)

    masses, positions = [], []
    for link in root.iter("link"):
        inertial = link.find("inertial")
        masses.append(float(inertial.find("mass").get("value")))
        positions.append(frame(link.get("name")) + np.array(inertial.find("origin").get("xyz").split(), float))
    masses_array = np.array(masses)
    return masses_array.sum(), masses_array @ np.array(positions) / masses_array.sum()


def test_center_of_mass_matches_independent_mass_weighted_sums() -> None:
    env = gym.make("HumanoidReach-v0", initial_joint_noise=0.0).unwrapped
    try:
        env.reset(seed=0)
        sensor, client, body = env.robot.balance, env.session.client, env.robot.body
        total, expected = urdf_neutral_com(base_height=env.session.client.getBasePositionAndOrientation(body)[0][2])
        assert sensor.total_mass == pytest.approx(total) == pytest.approx(70.0)
        np.testing.assert_allclose(sensor.center_of_mass(), expected, atol=1e-9)

        # A random pose: COM from each link's URDF frame plus its rotated inertial offset.
        env.robot.set_joint_positions(np.random.default_rng(1).uniform(*env.robot.joint_limits))
        weighted = np.zeros(3)
        for link in range(-1, client.getNumJoints(body)):
            mass, _, _, local_com = client.getDynamicsInfo(body, link)[:4]
            if link == -1:
                position, orientation = client.getBasePositionAndOrientation(body)  # already the COM
                offset = np.zeros(3)
            else:
                state = client.getLinkState(body, link, computeForwardKinematics=True)
                position, orientation = state[4], state[5]
                offset = np.array(client.getMatrixFromQuaternion(orientation)).reshape(3, 3) @ local_com
            weighted += mass * (np.array(position) + offset)
        np.testing.assert_allclose(sensor.center_of_mass(), weighted / total, atol=1e-9)
    finally:
        env.close()


@pytest.mark.parametrize(
    "pose",
    [
        None,  # neutral
        [0.3, 0.1, 0.2, 1.5, 0.3, 0.0, 0.5, 1.2, 0.6, 0.3, 1.0],  # leaning, arms forward: COM off-centre
    ],
)
def test_at_rest_com_projection_equals_center_of_pressure(pose: list[float] | None) -> None:
    env = gym.make(
        "HumanoidReach-v0", initial_joint_positions=pose, initial_joint_noise=0.0, gravity_compensation=True
    ).unwrapped
    try:
        env.reset(seed=0)
        for _ in range(24):  # 1 s at rest
            _, _, terminated, _, info = env.step(np.zeros(env.action_space.shape))
        state = env.robot.balance.measure()
        assert not terminated
        assert np.linalg.norm(state.com[:2] - info["zmp"]) < 0.01
        assert len(state.polygon) >= 4 and state.com_margin == pytest.approx(info["com_margin"])
    finally:
        env.close()
