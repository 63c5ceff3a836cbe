"""HumanoidReach-v0 with another humanoid's URDF: the Unitree G1 presets (env=g1, env=g1_bimanual, issue 35)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from rlik.envs.humanoid_env import BALANCING_SPEED, HumanoidReachEnv
from rlik.envs.urdf_files import resolve_urdf

from rlik.training.config import compose_train_config
from rlik.training.factory import make_env

G1_URDF = "package://example-robot-data/robots/g1_description/urdf/g1_29dof_rev_1_0.urdf"
try:
    resolve_urdf(G1_URDF)
except FileNotFoundError:
    pytestmark = pytest.mark.skip(reason="example-robot-data is not installed (pip install -e '.[robots]')")

STEPS_PER_SECOND = 24  # default control rate: frame_skip 10 at 240 Hz
FEET = ["left_ankle_roll_link", "right_ankle_roll_link"]


def make_g1(preset: str = "g1", **overrides) -> HumanoidReachEnv:
    """The env of ``train.py env=<preset>``, with ``overrides`` of its env keys."""
    cfg = compose_train_config([f"env={preset}"])
    return make_env(cfg.env, **overrides).unwrapped


@pytest.fixture(scope="module")
def g1() -> Iterator[HumanoidReachEnv]:
    env = make_g1(initial_joint_noise=0.0)
    yield env
    env.close()


@pytest.mark.parametrize(("preset", "n_joints", "hands"), [("g1", 10, 1), ("g1_bimanual", 17, 2)])
def test_g1_presets_build(preset: str, n_joints: int, hands: int) -> None:
    env = make_g1(preset)
    try:
        obs, info = env.reset(seed=0)
        assert env.action_space.shape == (n_joints,)
        assert obs["desired_goal"].shape == (3 * hands,)
        assert env.robot.joint_names[:3] == ["waist_yaw_joint", "waist_roll_joint", "waist_pitch_joint"]
        assert not info["fell"] and info["footprint_margin"] > env.task.com_margin_target
    finally:
        env.close()


def test_g1_stands_on_its_feet_upright(g1: HumanoidReachEnv) -> None:
    """The env finds the standing height: the feet's lowest collision point rests on the floor, the pelvis upright."""
    g1.reset(seed=0)
    clearance = min(g1.session.clearance(g1.robot.body, link, g1.robot.ground) for link in g1.robot.foot_links)
    assert abs(clearance) < 2e-4
    assert g1.session.base_pose(g1.robot.body).position[2] == pytest.approx(0.716, abs=0.002)
    assert g1.robot.pelvis_tilt() < 0.01
    assert len(g1.robot.footprint) == 4  # both soles flat: a rectangle around the two feet


def test_g1_stands_still_for_5_s_with_zero_action(g1: HumanoidReachEnv) -> None:
    g1.reset(seed=0)
    start = g1.robot.balance.link_com_positions()
    for _ in range(5 * STEPS_PER_SECOND):
        _, _, terminated, truncated, info = g1.step(np.zeros(g1.action_space.shape))
        assert not (terminated or truncated or info["fell"])
        assert info["com_margin"] > 0.0 and info["footprint_margin"] > 0.0  # COM inside the feet
    drift = np.linalg.norm(g1.robot.balance.link_com_positions() - start, axis=1).max()
    assert drift < 0.02, f"a link moved {drift:.4f} m"
    assert g1.robot.pelvis_tilt() < 0.02


def test_g1_goals_are_hand_positions_of_balanced_poses(g1: HumanoidReachEnv) -> None:
    """Each sampled goal is the hand position of the pose the sampler leaves the robot in, whose COM lies at least
    com_margin_target inside the planted feet's polygon: a pose that reaches it without falling exists."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        g1.session.restore_state(g1._initial_state)
        goal = g1.task.sample_goal(rng, g1.initial_joint_positions, g1.goal_range)
        np.testing.assert_array_equal(goal, g1.task.achieved_goal())
        assert g1.robot.footprint_com_margin() >= g1.task.com_margin_target
        assert not np.allclose(goal, g1.task.neutral_goal)  # a balanced pose turned up, not the fallback


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"foot_links": ["left_ankle_roll_lnk", "right_ankle_roll_link"]}, "'left_ankle_roll_lnk'"),
        ({"end_effector": "right_rubber_hnd"}, "'right_rubber_hnd'"),
    ],
)
def test_wrong_link_name_is_one_line_naming_it(overrides: dict, named: str) -> None:
    with pytest.raises(ValueError) as error:
        make_g1(**overrides)
    message = str(error.value)
    assert "\n" not in message and named in message
    assert "right_rubber_hand" in message and "left_ankle_roll_link" in message  # valid names to choose from


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        # Leaning back as far as the waist goes: the COM comes within 3 cm of the heels.
        ({"initial_joint_positions": [0.0, 0.0, -0.52] + [0.0] * 7}, "the start pose is not balanced (COM margin"),
        # Held up in the air, the feet touch nothing.
        ({"base_position": [0.0, 0.0, 1.0]}, "the feet do not stand flat"),
        # Hands have no collision shape: nothing to stand on.
        ({"foot_links": ["left_rubber_hand", "right_rubber_hand"]}, "have no collision shape"),
    ],
)
def test_start_pose_that_cannot_stand_is_one_line(overrides: dict, says: str) -> None:
    with pytest.raises(ValueError, match=r"^[^\n]*$") as error:
        make_g1(**overrides)
    assert says in str(error.value)


def test_g1_torques_and_damping_are_derived_for_1_5_rad_per_s(g1: HumanoidReachEnv) -> None:
    """The G1's URDF gives no damping: the env derives damping and torque scales from its mass matrix, so that a full
    action drives each joint at BALANCING_SPEED (or its effort limit's share), as our hand-tuned humanoid's."""
    derived = g1.derived_settings()
    assert set(derived) == {"env.action_scale", "env.velocity_damping"}
    damping = g1.robot.joint_damping
    assert np.all(damping > 0) and damping.argmax() in (1, 2)  # the waist's roll and pitch carry the torso
    np.testing.assert_allclose(g1.action_torques / damping, BALANCING_SPEED, rtol=1e-6)
    # A full action on the elbow settles at that speed within the episode's first second.
    g1.reset(seed=0)
    elbow = g1.robot.joint_names.index("right_elbow_joint")
    action = np.zeros(g1.action_space.shape)
    action[elbow] = 1.0
    for _ in range(STEPS_PER_SECOND // 4):
        g1.step(action)
    assert g1.robot.joint_state()[1][elbow] == pytest.approx(BALANCING_SPEED, rel=0.1)


def test_g1_rarely_falls_under_random_actions() -> None:
    """Without damping a random policy toppled the G1 in every episode, within a second: a policy could learn
    nothing but to fall. With the derived damping random actions keep it standing."""
    env = make_g1()
    rng = np.random.default_rng(0)
    falls = 0
    try:
        for episode in range(5):
            env.reset(seed=episode)
            for _ in range(2 * STEPS_PER_SECOND):
                _, _, terminated, _, _ = env.step(rng.uniform(-1.0, 1.0, env.action_space.shape))
                if terminated:
                    falls += 1
                    break
    finally:
        env.close()
    assert falls <= 1
