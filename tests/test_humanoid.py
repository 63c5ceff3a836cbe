"""HumanoidReach-v0 / HumanoidBimanualReach-v0: API, balance physics, falls and goals."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import rlik.envs  # noqa: F401  (registers the ids)
from gymnasium.utils.env_checker import check_env as gym_check_env
from rlik.envs.humanoid_env import HumanoidReachEnv
from rlik.envs.robot import Robot
from rlik.envs.session import PyBulletSession
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from rlik.training.config import compose_train_config

IDS = ["HumanoidReach-v0", "HumanoidBimanualReach-v0"]
ARM_LENGTH = 0.64  # shoulder to palm, m (see the URDF)
STEPS_PER_SECOND = 24  # default control rate: frame_skip 10 at 240 Hz


def make(env_id: str = "HumanoidReach-v0", **kwargs) -> HumanoidReachEnv:
    return gym.make(env_id, **kwargs).unwrapped


@pytest.mark.parametrize("goal_conditioned", [False, True])
@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id: str, goal_conditioned: bool) -> None:
    env = make(env_id, goal_conditioned=goal_conditioned)
    try:
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(env, warn=True)
    finally:
        env.close()


def test_info_has_balance_quantities_and_reward_matches_compute_reward() -> None:
    env = make(goal_conditioned=True)
    try:
        obs, info = env.reset(seed=0)
        assert info["fell"] is False and info["com_margin"] > 0.03 and info["zmp"].shape == (2,)
        obs, reward, _, _, info = env.step(env.action_space.sample())
        assert reward == pytest.approx(env.compute_reward(obs["achieved_goal"], obs["desired_goal"], info))
    finally:
        env.close()


def test_gravity_compensation_holds_neutral_pose_for_5_s() -> None:
    env = make(gravity_compensation=True, initial_joint_noise=0.0)
    try:
        env.reset(seed=0)
        start = env.robot.balance.link_com_positions()
        for _ in range(5 * STEPS_PER_SECOND):
            _, _, terminated, truncated, _ = env.step(np.zeros(env.action_space.shape))
            assert not (terminated or truncated)
        drift = np.linalg.norm(env.robot.balance.link_com_positions() - start, axis=1).max()
        assert drift < 0.01, f"a link moved {drift:.4f} m"
    finally:
        env.close()


def test_joints_left_to_the_policy_move_and_the_others_hold_their_pose() -> None:
    right_and_waist = [name for name in make().robot.joint_names if not name.startswith("left_")]
    env = make(joints=right_and_waist, initial_joint_noise=0.0)
    client, body = env.robot.client, env.robot.body
    left = [info[0] for info in env.robot.held]
    try:
        assert env.action_space.shape == (7,) and len(left) == 4
        env.reset(seed=0)
        start = np.array([s[0] for s in client.getJointStates(body, left)])
        moved = 0.0
        for step in range(2 * STEPS_PER_SECOND):  # swing the waist and right arm back and forth
            env.step(np.full(7, 1.0 if step < STEPS_PER_SECOND else -1.0))
            moved = max(moved, np.abs(env.robot.joint_state()[0]).max())
            held = np.array([s[0] for s in client.getJointStates(body, left)])
            assert np.abs(held - start).max() < 0.01, f"step {step}: the left arm moved to {held}"
        assert moved > 0.3
    finally:
        env.close()


def test_floating_base_gravity_torques_equal_fixed_base_inverse_dynamics() -> None:
    floating = make(initial_joint_noise=0.0)
    session = PyBulletSession()
    try:
        fixed = Robot(session, "humanoid_upper_body.urdf", fixed_base=True, base_position=(0.0, 0.0, 0.94))
        pose = np.random.default_rng(0).uniform(*fixed.joint_limits)
        floating.robot.set_joint_positions(pose)
        fixed.set_joint_positions(pose)
        np.testing.assert_allclose(floating.robot.gravity_torques(), fixed.gravity_torques(), atol=1e-6)
    finally:
        floating.close()
        session.close()


def test_forced_forward_lean_falls_and_ends_the_episode() -> None:
    env = make(initial_joint_noise=0.0)
    try:
        env.reset(seed=0)
        action = np.zeros(env.action_space.shape)
        action[env.robot.joint_names.index("waist_pitch")] = 1.0  # maximum forward torque
        for _ in range(4 * STEPS_PER_SECOND):
            _, reward, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        assert terminated and not truncated and info["fell"]
        assert info["com_margin"] < 0 and reward < -env.task.fall_penalty
    finally:
        env.close()


def lean_until_the_end(env: HumanoidReachEnv) -> tuple[int, list[float], float]:
    """Full forward waist torque from the neutral pose: steps until the episode ends, footprint margins, tilt."""
    env.reset(seed=0)
    action = np.zeros(env.action_space.shape)
    action[env.robot.joint_names.index("waist_pitch")] = 1.0
    margins = []
    for step in range(4 * STEPS_PER_SECOND):
        _, _, terminated, _, info = env.step(action)
        margins.append(info["footprint_margin"])
        if terminated:
            assert info["fell"]
            return step, margins, env.robot.pelvis_tilt()
    raise AssertionError("the lean never ended the episode")


def test_com_leaving_the_footprint_is_a_fall_before_the_robot_tips() -> None:
    tilt_rule, com_rule = make(initial_joint_noise=0.0, fall_com_margin=None), make(initial_joint_noise=0.0)
    try:
        tilt_end, margins, _ = lean_until_the_end(tilt_rule)
        com_end, com_margins, tilt = lean_until_the_end(com_rule)
        # The footprint margin shrinks smoothly (no jump when a foot rocks) until the COM leaves the feet.
        assert margins[0] > 0.06 and np.all(np.abs(np.diff(margins[: com_end + 1])) < 0.03)  # m, per 42 ms step
        assert com_margins[-1] < 0.0 <= com_margins[-2]
        assert com_end < tilt_end and tilt < 0.1  # ended while still nearly upright (rad)
    finally:
        tilt_rule.close()
        com_rule.close()


def test_zero_torque_on_neutral_pose_does_not_explode() -> None:
    env = make(gravity_compensation=False, initial_joint_noise=0.0)
    try:
        env.reset(seed=0)
        for _ in range(3 * STEPS_PER_SECOND):  # long enough to slump, and fall if it does
            obs, reward, _, truncated, info = env.step(np.zeros(env.action_space.shape))
            _, joint_speeds = env.robot.joint_state()
            linear, angular = env.session.client.getBaseVelocity(env.robot.body)
            assert np.all(np.isfinite(obs)) and np.isfinite(reward) and not info["unstable"] and not truncated
            assert np.abs(joint_speeds).max() < 20.0  # rad/s
            assert np.linalg.norm(linear) < 5.0 and np.linalg.norm(angular) < 10.0  # m/s, rad/s
    finally:
        env.close()


def test_same_seed_same_trajectory() -> None:
    def rollout() -> np.ndarray:
        env = make()
        try:
            observations = [env.reset(seed=3)[0]]
            env.action_space.seed(3)
            for _ in range(15):
                observations.append(env.step(env.action_space.sample())[0])
            return np.array(observations)
        finally:
            env.close()

    np.testing.assert_array_equal(rollout(), rollout())


def test_goals_are_balanced_and_some_need_a_lean() -> None:
    env = make()
    try:
        env.reset(seed=0)
        shoulder = env.robot.link_position(env.robot.link_index("right_shoulder_pitch_link"))
        beyond_arm = 0
        for seed in range(40):
            env.reset(seed=seed)
            assert not np.array_equal(env.task.goal, env.task.neutral_goal), "goal sampling fell back to neutral"
            beyond_arm += np.linalg.norm(env.task.goal - shoulder) > ARM_LENGTH
        assert beyond_arm >= 4, "no goal requires leaning the torso"
    finally:
        env.close()


def test_reset_with_goal_option_and_errors() -> None:
    env = make("HumanoidBimanualReach-v0")
    try:
        goal = [0.4, 0.2, 1.1, 0.4, -0.2, 1.1]
        obs, _ = env.reset(seed=0, options={"goal": goal})
        np.testing.assert_allclose(env.task.goal, goal)
        with pytest.raises(ValueError, match="options\\['goal'\\]"):
            env.reset(options={"goal": [0.4, 0.2]})
    finally:
        env.close()
    with pytest.raises(ValueError, match="fall_tilt"):
        make(fall_tilt=2.0)
    with pytest.raises(ValueError, match="not balanced"):
        make(base_position=(0.0, 0.0, 1.5))


@pytest.mark.parametrize(
    ("overrides", "algo", "total_timesteps"),
    [(["env=humanoid"], "crossq", 160_000), (["env=humanoid", "algo=ddpg"], "ddpg", 500_000), ([], "ddpg", 50_000)],
)
def test_humanoid_env_chooses_crossq_and_the_command_line_still_wins(
    overrides: list[str], algo: str, total_timesteps: int
) -> None:
    """conf/env/humanoid.yaml picks CrossQ (and so conf/tuned/humanoid_crossq.yaml); algo= on the command line wins."""
    cfg = compose_train_config(overrides)
    assert (cfg.algo.name, cfg.total_timesteps) == (algo, total_timesteps)
    if algo == "crossq":
        assert not cfg.normalize_goals and list(cfg.algo.goal_error_scales) == [0.1, 0.02]


def test_derived_damping_matches_the_hand_tuned_urdf() -> None:
    """Our humanoid was tuned by hand (its URDF's damping, 0.15 of the effort limits: 1.5 rad/s under a full action
    on every joint). Derived from the mass matrix instead, as for a URDF without damping (the G1), the damping comes
    out close to those hand-tuned values and the torques give the same speed."""
    hand_tuned = gym.make("HumanoidReach-v0").unwrapped
    derived = gym.make("HumanoidReach-v0", action_scale=None, velocity_damping=None).unwrapped
    try:
        assert hand_tuned.derived_settings() == {}
        assert set(derived.derived_settings()) == {"env.action_scale", "env.velocity_damping"}
        urdf_damping = [20.0, 15.0, 8.0, 6.0, 6.0, 1.5, 2.5, 6.0, 6.0, 1.5, 2.5]
        np.testing.assert_allclose(hand_tuned.robot.joint_damping, urdf_damping)  # velocity_damping="urdf"
        np.testing.assert_allclose(derived.robot.joint_damping, urdf_damping, rtol=0.4)
        np.testing.assert_allclose(hand_tuned.action_torques / hand_tuned.robot.joint_damping, 1.5)
        np.testing.assert_allclose(derived.action_torques / derived.robot.joint_damping, 1.5)
    finally:
        hand_tuned.close()
        derived.close()
