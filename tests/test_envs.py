"""Behaviour of ``PlanarArmReach-v0`` and ``UrdfReach-v0`` with real PyBullet physics (issue 2)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import rlik.envs  # noqa: F401  (registers the ids)
from gymnasium.utils.env_checker import check_env as gym_check_env
from rlik.envs.urdf_files import check_urdf_xml
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from rlik.paths import URDF_DIR


def planar_arm_constants() -> dict[str, Any]:
    """Lengths (m), masses (kg), inertias (kg m^2), efforts (N m) and damping (N m s/rad) from the URDF file."""
    root = check_urdf_xml(URDF_DIR / "planar_arm_2link.urdf")
    joint = {j.get("name"): j for j in root.iter("joint")}
    link = {k.get("name"): k.find("inertial") for k in root.iter("link")}

    def xyz(element: Any) -> list[float]:
        return [float(v) for v in element.find("origin").get("xyz").split()]

    return {
        "z": xyz(joint["shoulder"])[2],
        "l1": xyz(joint["elbow"])[0],
        "l2": xyz(joint["fingertip_joint"])[0],
        "m": [float(link[n].find("mass").get("value")) for n in ("upper_link", "fore_link", "fingertip")],
        "izz": [float(link[n].find("inertia").get("izz")) for n in ("upper_link", "fore_link", "fingertip")],
        "lc": [xyz(link[n])[0] for n in ("upper_link", "fore_link")],
        "effort": np.array([float(joint[n].find("limit").get("effort")) for n in ("shoulder", "elbow")]),
        "damping": np.array([float(joint[n].find("dynamics").get("damping")) for n in ("shoulder", "elbow")]),
    }


ARM = planar_arm_constants()
L1, L2, Z_TIP = ARM["l1"], ARM["l2"], ARM["z"]
M1, M2, M3 = ARM["m"]
I1, I2, I3 = ARM["izz"]
LC1, LC2 = ARM["lc"]
EFFORT, DAMPING = ARM["effort"], ARM["damping"]
TIMESTEP = 1.0 / 240.0

KUKA = {"urdf": "kuka_iiwa/model.urdf", "end_effector": "lbr_iiwa_link_7"}
KUKA_POSE = [0.3, 0.5, -0.2, -1.0, 0.4, 0.6, 0.1]


@pytest.fixture
def make_env() -> Iterator[Callable[..., gym.Env]]:
    """``gym.make`` that closes every env it made when the test ends."""
    made: list[gym.Env] = []

    def make(env_id: str = "PlanarArmReach-v0", **kwargs: Any) -> gym.Env:
        env = gym.make(env_id, **kwargs)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()


def fingertip_fk(q: np.ndarray) -> np.ndarray:
    """Analytic planar 2-link forward kinematics, (..., 2) joint angles -> (..., 3) metres."""
    q1, q12 = q[..., 0], q[..., 0] + q[..., 1]
    x = L1 * np.cos(q1) + L2 * np.cos(q12)
    y = L1 * np.sin(q1) + L2 * np.sin(q12)
    return np.stack([x, y, np.full_like(x, Z_TIP)], axis=-1)


def mass_matrix(q2: float) -> np.ndarray:
    """Analytic 2x2 joint-space inertia of the planar arm (rods plus fingertip point mass), kg m^2."""
    c = np.cos(q2)
    m11 = I1 + M1 * LC1**2 + I2 + M2 * (L1**2 + LC2**2 + 2 * L1 * LC2 * c) + I3 + M3 * (L1**2 + L2**2 + 2 * L1 * L2 * c)
    m12 = I2 + M2 * (LC2**2 + L1 * LC2 * c) + I3 + M3 * (L2**2 + L1 * L2 * c)
    m22 = I2 + M2 * LC2**2 + I3 + M3 * L2**2
    return np.array([[m11, m12], [m12, m22]])


def planar_parts(obs: np.ndarray) -> dict[str, np.ndarray]:
    """Split a PlanarArmReach observation into the documented fields."""
    return {
        "q": np.arctan2(obs[2:4], obs[0:2]),
        "qdot": obs[4:6],
        "tip": obs[6:9],
        "goal": obs[9:12],
        "delta": obs[12:15],
    }


# --- API conformance -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("PlanarArmReach-v0", {}),
        ("PlanarArmReach-v0", {"goal_conditioned": True, "render_mode": "rgb_array"}),
        ("UrdfReach-v0", KUKA),
        ("UrdfReach-v0", {**KUKA, "goal_conditioned": True}),
    ],
)
def test_gymnasium_and_sb3_check_env(make_env: Callable[..., gym.Env], env_id: str, kwargs: dict[str, Any]) -> None:
    env = make_env(env_id, **kwargs).unwrapped
    gym_check_env(env)
    sb3_check_env(env, warn=False)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (env.robot.n_joints,), np.float32)


def test_spaces_scaling_and_timing(make_env: Callable[..., gym.Env]) -> None:
    planar = make_env().unwrapped
    assert planar.observation_space.shape == (15,)
    assert planar.frame_skip == 10 and planar.dt == pytest.approx(10 * TIMESTEP)
    np.testing.assert_allclose(planar.torques(np.ones(2)), EFFORT)
    np.testing.assert_allclose(planar.torques(np.array([-3.0, 0.5])), [-EFFORT[0], 0.5 * EFFORT[1]])  # clipped
    kuka = make_env("UrdfReach-v0", **KUKA).unwrapped
    assert kuka.observation_space.shape == (7 * 3 + 9,)
    np.testing.assert_allclose(kuka.torques(np.ones(7)), np.full(7, 300.0))
    scaled = make_env(action_scale=0.25).unwrapped
    np.testing.assert_allclose(scaled.torques(np.array([1.0, -0.5])), [0.25 * EFFORT[0], -0.125 * EFFORT[1]])
    # Only goal-conditioned envs expose compute_reward: SB3 treats any env that has it as a GoalEnv.
    assert not hasattr(planar, "compute_reward")


def test_joint_positions_observed_scaled_to_the_limits(make_env: Callable[..., gym.Env]) -> None:
    """At the shoulder's two stops (+-pi) cos and sin agree; the scaled angle tells them apart."""
    env = make_env(observe_joint_positions=True).unwrapped
    assert env.observation_space.shape == (15 + 2,)
    lower, upper = env.robot.joint_limits
    seen = {}
    for name, pose in (("lower", lower), ("upper", upper), ("middle", (lower + upper) / 2)):
        env.robot.set_joint_positions(pose)
        seen[name] = env._robot_observation()
    np.testing.assert_allclose(seen["lower"][[0, 2]], seen["upper"][[0, 2]], atol=1e-4)  # shoulder cos, sin: one pose
    np.testing.assert_allclose(seen["lower"][-2:], [-1.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(seen["upper"][-2:], [1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(seen["middle"][-2:], [0.0, 0.0], atol=1e-6)
    kuka = make_env("UrdfReach-v0", **KUKA, observe_joint_positions=True).unwrapped
    assert kuka.observation_space.shape == (7 * 4 + 9,)


# --- physics -----------------------------------------------------------------------------------------


def test_fingertip_matches_analytic_forward_kinematics(make_env: Callable[..., gym.Env]) -> None:
    env = make_env().unwrapped
    rng = np.random.default_rng(0)
    lower, upper = env.robot.joint_limits
    for q in rng.uniform(lower, upper, size=(50, 2)):
        env.robot.set_joint_positions(q)
        np.testing.assert_allclose(env.task.achieved_goal(), fingertip_fk(q), atol=1e-9)

    # And along a torque-driven trajectory, read from the observation alone.
    obs, _ = env.reset(seed=1)
    env.action_space.seed(1)
    for _ in range(30):
        obs, *_ = env.step(env.action_space.sample())
        parts = planar_parts(obs)
        np.testing.assert_allclose(parts["tip"], fingertip_fk(parts["q"]), atol=1e-5)
        np.testing.assert_allclose(parts["delta"], parts["goal"] - parts["tip"], atol=1e-6)


@pytest.mark.parametrize("q0", [(0.0, 0.0), (0.3, 1.2), (-1.0, -2.0)])
@pytest.mark.parametrize("action", [(1.0, 0.0), (0.0, 1.0), (-0.5, 0.7)])
def test_torque_from_rest_gives_analytic_acceleration(
    make_env: Callable[..., gym.Env], q0: tuple[float, float], action: tuple[float, float]
) -> None:
    """One physics step from rest: qdot = dt * M(q)^-1 * tau, with tau = action * effort limit."""
    env = make_env(frame_skip=1, initial_joint_positions=q0, initial_joint_noise=0.0).unwrapped
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(planar_parts(obs)["qdot"], 0.0)
    obs, *_ = env.step(np.array(action, dtype=np.float32))
    q, qdot = env.robot.joint_state()
    expected = TIMESTEP * np.linalg.solve(mass_matrix(q0[1]), np.array(action) * EFFORT)
    np.testing.assert_allclose(qdot, expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(q - np.array(q0), TIMESTEP * expected, rtol=1e-6, atol=1e-12)  # semi-implicit Euler


def test_joint_damping_from_the_urdf(make_env: Callable[..., gym.Env]) -> None:
    """At q = 0 (no Coriolis terms) with zero torque, one step changes qdot by -dt * M^-1 * D * qdot."""
    env = make_env(frame_skip=1, initial_joint_noise=0.0).unwrapped
    env.reset(seed=0)
    qdot0 = np.array([2.0, -1.5])
    for index, velocity in zip(env.robot.joint_indices, qdot0):
        env.robot.client.resetJointState(env.robot.body, index, 0.0, velocity)
    env.step(np.zeros(2, dtype=np.float32))
    expected = -TIMESTEP * np.linalg.solve(mass_matrix(0.0), DAMPING * qdot0)
    np.testing.assert_allclose(env.robot.joint_state()[1] - qdot0, expected, rtol=0.01)


def test_velocity_damping_adds_to_the_urdf_damping(make_env: Callable[..., gym.Env]) -> None:
    """The same one-step decay as the URDF's damping, with the added gains on top."""
    extra = np.array([3.0, 0.5])
    env = make_env(frame_skip=1, initial_joint_noise=0.0, velocity_damping=extra.tolist()).unwrapped
    env.reset(seed=0)
    qdot0 = np.array([2.0, -1.5])
    for index, velocity in zip(env.robot.joint_indices, qdot0):
        env.robot.client.resetJointState(env.robot.body, index, 0.0, velocity)
    env.step(np.zeros(2, dtype=np.float32))
    expected = -TIMESTEP * np.linalg.solve(mass_matrix(0.0), (DAMPING + extra) * qdot0)
    np.testing.assert_allclose(env.robot.joint_state()[1] - qdot0, expected, rtol=0.01)


def test_action_scale_per_joint(make_env: Callable[..., gym.Env]) -> None:
    env = make_env(action_scale=[0.5, 0.25]).unwrapped
    np.testing.assert_allclose(env.action_torques, [0.5 * EFFORT[0], 0.25 * EFFORT[1]])
    for key, value in (("action_scale", [0.5, 0.5, 0.5]), ("velocity_damping", [1.0, 2.0, 3.0])):
        with pytest.raises(ValueError, match=f"{key} has 3 values for 2 joints"):
            make_env(**{key: value})
    with pytest.raises(ValueError, match="velocity_damping must be >= 0"):
        make_env(velocity_damping=-1.0)


def test_urdf_velocity_limit_is_the_motor_speed_limit(make_env: Callable[..., gym.Env]) -> None:
    """Full torque on KUKA's light wrist would pass 100 rad/s in a step; the URDF's 10 rad/s clamps it."""
    env = make_env("UrdfReach-v0", **KUKA).unwrapped
    env.reset(seed=0)
    fastest = 0.0
    for _ in range(20):
        _, _, _, truncated, info = env.step(np.ones(7, dtype=np.float32))
        fastest = max(fastest, np.abs(env.robot.joint_state()[1]).max())
        assert not truncated and not info["unstable"]
    assert fastest == pytest.approx(10.0)


@pytest.mark.parametrize("joint", [0, 1])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_joint_torque_from_rest_moves_that_joint_its_way(
    make_env: Callable[..., gym.Env], joint: int, sign: float
) -> None:
    env = make_env(initial_joint_positions=(0.2, 0.5), initial_joint_noise=0.0)
    q_start = planar_parts(env.reset(seed=0)[0])["q"]
    action = np.zeros(2, dtype=np.float32)
    action[joint] = sign
    for _ in range(5):
        obs, *_ = env.step(action)
        parts = planar_parts(obs)
        assert sign * (parts["q"][joint] - q_start[joint]) > 1e-3
        assert sign * parts["qdot"][joint] > 0.0


def test_kuka_gravity_compensation_and_positive_torque(make_env: Callable[..., gym.Env]) -> None:
    """With gravity cancelled, the arm holds still at zero action and each joint's torque drives it."""
    env = make_env("UrdfReach-v0", **KUKA, frame_skip=1, gravity_compensation=True, initial_joint_positions=KUKA_POSE)
    robot = env.unwrapped.robot
    env.reset(seed=0)
    for _ in range(10):
        env.step(np.zeros(7, dtype=np.float32))
    np.testing.assert_allclose(robot.joint_state()[1], 0.0, atol=1e-6)

    for joint in range(7):
        env.reset(seed=0)
        q_start, _ = robot.joint_state()
        action = np.zeros(7, dtype=np.float32)
        action[joint] = 0.005  # 1.5 N m: the wrist's speed stays under its 10 rad/s URDF limit (the clamp)
        env.step(action)
        q, qdot = robot.joint_state()
        mass = np.array(robot.client.calculateMassMatrix(robot.body, list(q_start)))
        np.testing.assert_allclose(qdot, TIMESTEP * np.linalg.solve(mass, action * robot.torque_limits), atol=1e-9)
        assert q[joint] > q_start[joint]


def test_no_compensation_means_the_kuka_sags(make_env: Callable[..., gym.Env]) -> None:
    env = make_env("UrdfReach-v0", **KUKA, initial_joint_positions=KUKA_POSE)
    env.reset(seed=0)
    env.step(np.zeros(7, dtype=np.float32))
    assert np.abs(env.unwrapped.robot.joint_state()[1]).max() > 0.1


def test_frame_skip_is_physics_steps_per_env_step(make_env: Callable[..., gym.Env]) -> None:
    action = np.array([0.8, -0.6], dtype=np.float32)
    coarse = make_env(frame_skip=10, initial_joint_noise=0.0)
    fine = make_env(frame_skip=5, initial_joint_noise=0.0)
    coarse.reset(seed=0)
    fine.reset(seed=0)
    obs_coarse, *_ = coarse.step(action)
    fine.step(action)
    obs_fine, *_ = fine.step(action)
    np.testing.assert_array_equal(obs_coarse, obs_fine)
    assert coarse.unwrapped.dt == pytest.approx(2 * fine.unwrapped.dt)


# --- seeding and goals -----------------------------------------------------------------------------


def rollout(env: gym.Env, seed: int, steps: int = 60) -> np.ndarray:
    """Observations of a seeded random-action rollout, resetting on episode end."""
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    trajectory = [obs]
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, 2).astype(np.float32))
        trajectory.append(obs)
        if terminated or truncated:
            trajectory.append(env.reset()[0])
    return np.array(trajectory)


def test_same_seed_same_trajectory(make_env: Callable[..., gym.Env]) -> None:
    first, second = make_env(), make_env()
    reference = rollout(first, seed=7)  # 60 steps cross the 50-step time limit: includes an unseeded reset
    np.testing.assert_array_equal(rollout(second, seed=7), reference)
    np.testing.assert_array_equal(rollout(first, seed=7), reference)  # same env, after other steps
    assert not np.allclose(rollout(second, seed=8)[0], reference[0])  # the seed sets start pose and goal


def test_goal_range_keeps_goals_near_the_start_pose(make_env: Callable[..., gym.Env]) -> None:
    """goal_range r: the goal pose is r of the way to a uniform draw, so goals shrink towards the start tip."""
    env = make_env(initial_joint_noise=0.0)
    start_tip = fingertip_fk(env.unwrapped.initial_joint_positions)

    def spread(goal_range: float) -> float:
        env.unwrapped.set_goal_range(goal_range)
        goals = [planar_parts(env.reset(seed=seed)[0])["goal"] for seed in range(30)]
        return float(np.max(np.linalg.norm(np.array(goals) - start_tip, axis=1)))

    wide, narrow = spread(1.0), spread(0.05)
    assert narrow < 0.2 < 0.6 < wide  # metres; the arm reaches 0.9 m, a 0.05 range turns a joint <= 0.3 rad
    # The goal pose is the start pose moved half way to the reset's first uniform draw (gymnasium seeds
    # np_random as numpy's default_rng).
    env.unwrapped.set_goal_range(0.5)
    start = env.unwrapped.initial_joint_positions
    draw = np.random.default_rng(3).uniform(*env.unwrapped.robot.joint_limits)
    np.testing.assert_allclose(
        planar_parts(env.reset(seed=3)[0])["goal"], fingertip_fk(start + 0.5 * (draw - start)), atol=1e-6
    )
    with pytest.raises(ValueError, match="goal_range must be in"):
        env.unwrapped.set_goal_range(0.0)


def test_sampled_goals_are_reachable(make_env: Callable[..., gym.Env]) -> None:
    env = make_env()
    for seed in range(20):
        goal = planar_parts(env.reset(seed=seed)[0])["goal"]
        assert goal[2] == pytest.approx(Z_TIP, abs=1e-6)
        assert 0.2 <= np.hypot(goal[0], goal[1]) <= L1 + L2 + 1e-6


def test_explicit_goal_is_the_one_used(make_env: Callable[..., gym.Env]) -> None:
    env = make_env(initial_joint_noise=0.0)
    goal = np.array([0.3, -0.4, 0.1])
    obs, info = env.reset(seed=0, options={"goal": goal})
    np.testing.assert_allclose(planar_parts(obs)["goal"], goal, atol=1e-7)
    # Start pose is q = 0: the fingertip is at (0.9, 0, 0.1).
    assert info["distance"] == pytest.approx(np.linalg.norm([0.9, 0.0, 0.1] - goal), abs=1e-6)
    assert info["is_success"] is False
    for _ in range(3):
        obs, reward, _, _, info = env.step(np.array([-0.5, 0.2], dtype=np.float32))
        parts = planar_parts(obs)
        np.testing.assert_allclose(parts["goal"], goal, atol=1e-7)
        assert info["distance"] == pytest.approx(np.linalg.norm(parts["tip"] - goal), abs=1e-5)
        assert reward == pytest.approx(-info["distance"], abs=1e-5)  # dense, no torque cost
    marker = env.unwrapped.goal_markers[0]
    np.testing.assert_allclose(env.unwrapped.session.client.getBasePositionAndOrientation(marker)[0], goal)

    _, info = env.reset(seed=0, options={"goal": [0.9, 0.0, 0.1]})  # the fingertip itself
    assert info["is_success"] is True and info["distance"] < 1e-6
    assert not np.allclose(planar_parts(env.reset(seed=0)[0])["goal"], goal)  # no option: sampled again

    with pytest.raises(ValueError, match=r"options\['goal'\] must be 3 finite numbers"):
        env.reset(options={"goal": [0.1, 0.2]})


def test_explicit_goal_goal_conditioned(make_env: Callable[..., gym.Env]) -> None:
    env = make_env(goal_conditioned=True, initial_joint_noise=0.0)
    obs, _ = env.reset(seed=0, options={"goal": [0.1, 0.5, 0.1]})
    np.testing.assert_allclose(obs["desired_goal"], [0.1, 0.5, 0.1], atol=1e-7)
    np.testing.assert_allclose(obs["achieved_goal"], [0.9, 0.0, 0.1], atol=1e-6)
    np.testing.assert_allclose(obs["observation"][-3:], obs["achieved_goal"])


# --- goal-conditioned reward (HER) -------------------------------------------------------------------


@pytest.mark.parametrize("reward_type", ["dense", "sparse"])
@pytest.mark.parametrize("torque_cost", [0.0, 0.1])
def test_vectorised_compute_reward_matches_step_rewards(
    make_env: Callable[..., gym.Env], reward_type: str, torque_cost: float
) -> None:
    env = make_env(goal_conditioned=True, reward_type=reward_type, torque_cost=torque_cost, success_threshold=0.05)
    env.reset(seed=3)
    env.action_space.seed(3)
    achieved, desired, infos, rewards = [], [], [], []
    for _ in range(20):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        achieved.append(obs["achieved_goal"])
        desired.append(obs["desired_goal"])
        infos.append(info)
        rewards.append(reward)
    achieved, desired, infos = np.array(achieved), np.array(desired), np.array(infos)
    compute_reward = env.unwrapped.compute_reward

    np.testing.assert_allclose(compute_reward(achieved, desired, infos), rewards, rtol=1e-6, atol=1e-7)
    if torque_cost == 0.0:  # the form: one info repeated
        np.testing.assert_allclose(compute_reward(achieved, desired, np.array([info] * 20)), rewards, atol=1e-7)
    # HER relabelling with the achieved goal itself: success, so only the torque penalty remains.
    penalties = np.array([i["penalty"] for i in infos])
    assert np.all(penalties >= 0) and (torque_cost == 0.0) == np.all(penalties == 0)
    np.testing.assert_allclose(compute_reward(achieved, achieved, infos), -penalties, atol=1e-9)
    if reward_type == "sparse":
        far = achieved + np.array([1.0, 0.0, 0.0], dtype=np.float32)
        np.testing.assert_allclose(compute_reward(achieved, far, infos), -1.0 - penalties, atol=1e-9)


# --- rendering ---------------------------------------------------------------------------------------


def test_rgb_array_render_shows_the_arm_moving(make_env: Callable[..., gym.Env]) -> None:
    env = make_env(render_mode="rgb_array", initial_joint_noise=0.0)
    env.reset(seed=0)
    before = env.render()
    assert before.dtype == np.uint8 and before.ndim == 3 and before.shape[2] == 3
    assert before.std() > 10.0 and len(np.unique(before.reshape(-1, 3), axis=0)) > 20  # not blank
    for _ in range(10):
        env.step(np.array([1.0, 1.0], dtype=np.float32))
    after = env.render()
    assert after.shape == before.shape
    changed = np.any(after != before, axis=-1).mean()
    assert changed > 0.005, f"only {changed:.2%} of pixels changed after the arm moved"


# --- bad input ---------------------------------------------------------------------------------------


def assert_single_error(excinfo: pytest.ExceptionInfo) -> None:
    """The error stands alone: no chained traceback from PyBullet or the XML parser."""
    err = excinfo.value
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_nan_action_raises(make_env: Callable[..., gym.Env]) -> None:
    env = make_env()
    env.reset(seed=0)
    for bad in ([np.nan, 0.0], [0.0, np.inf]):
        with pytest.raises(ValueError, match="NaN or inf"):
            env.step(np.array(bad, dtype=np.float32))


def test_instability_guard_truncates_with_finite_output(make_env: Callable[..., gym.Env]) -> None:
    env = make_env(max_joint_speed=1e-3)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(np.ones(2, dtype=np.float32))
    assert truncated is True and terminated is False
    assert info["unstable"] is True
    assert np.all(np.isfinite(obs)) and np.isfinite(reward)
    _, info = env.reset(seed=0)
    assert info["unstable"] is False
    _, _, _, truncated, info = env.step(np.zeros(2, dtype=np.float32))  # at rest: stable
    assert truncated is False and info["unstable"] is False


def test_missing_urdf(make_env: Callable[..., gym.Env], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no_such_robot.urdf") as excinfo:
        make_env("UrdfReach-v0", urdf="no_such_robot.urdf", end_effector="tip")
    assert_single_error(excinfo)
    missing = tmp_path / "gone.urdf"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        make_env("UrdfReach-v0", urdf=str(missing), end_effector="tip")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('<robot name="broken"><link name="base">', "malformed XML"),  # truncated file
        ('<?xml version="1.0"?><link name="base"/>', "expected <robot>"),
        (  # well-formed XML, but the joint's child link does not exist
            '<robot name="r"><link name="base"/><joint name="j" type="revolute"><parent link="base"/>'
            '<child link="ghost"/><limit lower="-1" upper="1" effort="1" velocity="1"/></joint></robot>',
            "could not load URDF",
        ),
    ],
)
def test_malformed_urdf(make_env: Callable[..., gym.Env], tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "broken.urdf"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as excinfo:
        make_env("UrdfReach-v0", urdf=str(path), end_effector="base")
    assert str(path) in str(excinfo.value)
    assert_single_error(excinfo)


def test_unknown_end_effector_link(make_env: Callable[..., gym.Env]) -> None:
    with pytest.raises(ValueError, match="unknown link 'hand'.*fingertip") as excinfo:
        make_env(end_effector="hand")
    assert_single_error(excinfo)


@pytest.mark.parametrize("joint", ["wrist", "fingertip_joint"])  # absent; present but fixed
def test_unknown_or_fixed_joint(make_env: Callable[..., gym.Env], joint: str) -> None:
    with pytest.raises(ValueError, match=f"joint '{joint}'.*'shoulder', 'elbow'") as excinfo:
        make_env(joints=["shoulder", joint])
    assert_single_error(excinfo)


# --- issues 23, 24, 26: the numbers stay, goal kinds, env-level messages ---------------------------------

REFERENCE = Path(__file__).parent / "data" / "env_rollouts.npz"
# name -> (id, kwargs, action bias): every registered id, both observation kinds, a KUKA under gravity, and
# forward-biased actions that make the humanoid fall (terminations).
REFERENCE_CASES: dict[str, tuple[str, dict[str, Any], float]] = {
    "planar": ("PlanarArmReach-v0", {}, 0.0),
    "planar_her": (
        "PlanarArmReach-v0",
        {"goal_conditioned": True, "reward_type": "mixed", "torque_cost": 0.1, "observe_joint_positions": True},
        0.0,
    ),
    "kuka": ("UrdfReach-v0", {**KUKA, "gravity_compensation": True, "velocity_damping": 5.0}, 0.0),
    "humanoid": ("HumanoidReach-v0", {}, 0.0),
    "humanoid_falls": ("HumanoidReach-v0", {}, 0.7),
    "bimanual_her": ("HumanoidBimanualReach-v0", {"goal_conditioned": True, "reward_type": "mixed"}, 0.0),
}


def reference_rollout(env_id: str, kwargs: dict[str, Any], bias: float, steps: int = 60) -> dict[str, np.ndarray]:
    """Observations (flattened, Dict keys in order), rewards, ends, distances (m) and penalties of a seeded
    rollout with uniform random actions plus ``bias`` (clipped), resetting at each episode end."""
    env = gym.make(env_id, **kwargs)
    rng = np.random.default_rng(5)
    record: dict[str, list] = {
        "obs": [],
        "reward": [],
        "terminated": [],
        "truncated": [],
        "distance": [],
        "penalty": [],
    }

    def keep(obs: Any, info: dict[str, Any], reward: float = 0.0, terminated: bool = False, truncated: bool = False):
        flat = np.concatenate(list(obs.values())) if isinstance(obs, dict) else obs
        for key, value in zip(record, (flat, reward, terminated, truncated, info["distance"], info["penalty"])):
            record[key].append(value)

    try:
        keep(*env.reset(seed=3))
        for _ in range(steps):
            action = np.clip(rng.uniform(-1.0, 1.0, env.action_space.shape) + bias, -1.0, 1.0).astype(np.float32)
            obs, reward, terminated, truncated, info = env.step(action)
            keep(obs, info, reward, terminated, truncated)
            if terminated or truncated:
                keep(*env.reset())
    finally:
        env.close()
    return {key: np.array(values) for key, values in record.items()}


def write_reference() -> None:
    """Rewrite the reference, only for a change meant to alter the numbers:
    ``python -c "from tests.test_envs import write_reference; write_reference()"``."""
    arrays = {
        f"{name}/{key}": values
        for name, case in REFERENCE_CASES.items()
        for key, values in reference_rollout(*case).items()
    }
    REFERENCE.parent.mkdir(exist_ok=True)
    np.savez_compressed(REFERENCE, **arrays)


@pytest.mark.parametrize("name", list(REFERENCE_CASES))
def test_rollouts_match_the_reference(name: str) -> None:
    """Observations, rewards and ends of every registered id as recorded before the robot/task split (issue 23)."""
    reference = np.load(REFERENCE)
    for key, values in reference_rollout(*REFERENCE_CASES[name]).items():
        np.testing.assert_allclose(values, reference[f"{name}/{key}"], rtol=1e-6, atol=1e-7, err_msg=f"{name}: {key}")
    if name == "humanoid_falls":
        assert reference[f"{name}/terminated"].sum() >= 1


def test_humanoid_goal_kind_says_whether_the_goal_needs_a_lean(make_env: Callable[..., gym.Env]) -> None:
    """A goal beyond the arm's reach from its shoulder (start pose) is "lean", else "upright" (issue 24)."""
    env = make_env("HumanoidReach-v0", initial_joint_noise=0.0).unwrapped
    _, info = env.reset(seed=0)
    # The start pose hangs the arm straight down: the reach is the shoulder joint's distance to the hand there.
    shoulder = env.robot.link_position(env.robot.link_index("right_shoulder_pitch_link"))
    reach = float(np.linalg.norm(env.task.achieved_goal() - shoulder))
    assert reach == pytest.approx(0.64, abs=1e-6) and env.task.reaches == pytest.approx([reach])
    kinds = []
    for seed in range(30):
        _, info = env.reset(seed=seed)
        expected = "lean" if np.linalg.norm(env.task.goal - shoulder) > reach else "upright"
        assert info["goal_kind"] == expected
        kinds.append(expected)
        assert env.step(np.zeros(env.action_space.shape, dtype=np.float32))[-1]["goal_kind"] == expected
    assert set(kinds) == {"lean", "upright"}
    for offset, kind in ((0.5, "upright"), (0.7, "lean")):  # m ahead of the shoulder
        _, info = env.reset(seed=0, options={"goal": shoulder + [offset, 0.0, 0.0]})
        assert info["goal_kind"] == kind

    both = make_env("HumanoidBimanualReach-v0", initial_joint_noise=0.0).unwrapped
    both.reset(seed=0)
    left, right = (
        both.robot.link_position(both.robot.link_index(f"{side}_shoulder_pitch_link")) for side in ("left", "right")
    )
    for left_offset, right_offset, kind in ((0.5, 0.5, "upright"), (0.5, 0.7, "lean"), (0.7, 0.5, "lean")):
        goal = np.concatenate([left + [left_offset, 0.0, 0.0], right + [right_offset, 0.0, 0.0]])
        assert both.reset(seed=0, options={"goal": goal})[1]["goal_kind"] == kind
    assert "goal_kind" not in make_env().reset(seed=0)[1]  # an arm has no torso to lean


def test_evaluation_reports_rates_per_goal_kind(make_env: Callable[..., gym.Env]) -> None:
    """summarise splits success and falls by goal kind where the env gives one; episode rows carry it."""
    from rlik.evaluation.episodes import episode_rows, evaluate, summarise

    env = make_env("HumanoidReach-v0", max_episode_steps=3)
    results = evaluate(env, lambda observation: np.zeros(env.action_space.shape, dtype=np.float32), 8, 0)
    summary, rows = summarise(results), episode_rows(results)
    for kind in ("lean", "upright"):
        chosen = [row for row in rows if row["goal_kind"] == kind]
        assert summary[f"goals_{kind}"] == len(chosen) > 0
        assert summary[f"success_rate_{kind}"] == np.mean([row["success"] for row in chosen])
        assert summary[f"fall_rate_{kind}"] == np.mean([row["fell"] for row in chosen])
    planar = summarise(evaluate(make_env(max_episode_steps=3), lambda observation: np.zeros(2), 2, 0))
    assert not any(key.endswith(("_lean", "_upright")) for key in planar) and "success_rate" in planar


def test_evaluation_reports_each_end_effectors_success(make_env: Callable[..., gym.Env]) -> None:
    """With two hands a goal counts when both are within the threshold; summarise also gives each hand's success
    alone (``reached_<link>``), and evaluate.py prints it under the success rate."""
    from rlik.evaluation.episodes import evaluate, summarise
    from rlik.evaluation.report import comparison_table, table_rows

    env = make_env("HumanoidBimanualReach-v0", max_episode_steps=3, initial_joint_noise=0.0)
    robot = env.unwrapped.robot
    env.reset(seed=0)
    left, right = (robot.link_position(robot.link_index(f"{side}_hand")) for side in ("left", "right"))
    goal = np.concatenate([left, right + [0.0, 0.0, 0.5]])  # the left hand is there, the right one 0.5 m below

    class FixedGoal(gym.Wrapper):
        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
            return self.env.reset(seed=seed, options={"goal": goal})

    results = evaluate(FixedGoal(env), lambda observation: np.zeros(11, dtype=np.float32), 3, 0)
    summary = summarise(results)
    assert (summary["success_rate"], summary["reached_left_hand"], summary["reached_right_hand"]) == (0.0, 1.0, 0.0)
    assert results[0].reached == {"left_hand": True, "right_hand": False}
    table = comparison_table(Path("/nonexistent"), 0, 3, {"policy": summary})
    assert [row[0] for row in table_rows(table)[:3]] == [
        "success rate",
        "success, left_hand alone",
        "success, right_hand alone",
    ]
    planar = summarise(evaluate(make_env(max_episode_steps=3), lambda observation: np.zeros(2), 2, 0))
    assert not any(key.startswith("reached_") for key in planar)


def test_wrong_shaped_action_names_the_action_space(make_env: Callable[..., gym.Env]) -> None:
    env = make_env()
    env.reset(seed=0)
    for bad in ([0.1, 0.2, 0.3], [0.5], np.zeros((2, 2))):
        with pytest.raises(ValueError, match=r"action has shape .*, but the action space's shape is \(2,\)") as excinfo:
            env.step(np.array(bad, dtype=np.float32))
        assert "'shoulder', 'elbow'" in str(excinfo.value)
        assert_single_error(excinfo)


INERTIA = '<inertial><mass value="1"/><inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/></inertial>'
LIMIT = '<limit lower="-1" upper="1" effort="1" velocity="1"/>'


@pytest.mark.parametrize(
    ("joint", "limit", "mesh", "message"),
    [
        ("revolute", "", "", r"revolute joint 'j' has no <limit>; add <limit lower=.*continuous"),
        ("prismatic", "", "", r"prismatic joint 'j' has no <limit>; add <limit"),
        ("revolute", LIMIT, "meshes/arm.stl", r"mesh file 'meshes/arm.stl' of link 'arm' not found"),
        ("revolute", LIMIT, "package://arm/arm.stl", r"mesh file 'package://arm/arm.stl' of link 'arm' not found"),
        ("revolute", LIMIT, "arm.ply", r"mesh 'arm.ply', a format PyBullet cannot read"),
    ],
)
def test_urdf_joint_without_limit_or_missing_mesh_is_named(
    make_env: Callable[..., gym.Env],
    tmp_path: Path,
    capfd: pytest.CaptureFixture,
    joint: str,
    limit: str,
    mesh: str,
    message: str,
) -> None:
    """Named from the URDF before PyBullet sees it (PyBullet would print the cause and raise a generic error)."""
    visual = f'<visual><geometry><mesh filename="{mesh}"/></geometry></visual>' if mesh else ""
    path = tmp_path / "arm.urdf"
    path.write_text(
        f'<robot name="r"><link name="base">{INERTIA}</link><link name="arm">{INERTIA}{visual}</link>'
        f'<joint name="j" type="{joint}"><parent link="base"/><child link="arm"/><axis xyz="0 0 1"/>{limit}</joint>'
        "</robot>"
    )
    capfd.readouterr()
    with pytest.raises(ValueError, match=message) as excinfo:
        make_env("UrdfReach-v0", urdf=str(path), end_effector="arm")
    assert str(path) in str(excinfo.value) and "\n" not in str(excinfo.value)
    assert_single_error(excinfo)
    assert "b3Error" not in capfd.readouterr().err  # PyBullet never parsed it


@pytest.mark.parametrize("env_id", ["PlanarArmReach-v0", "HumanoidReach-v0"])
def test_step_or_reset_after_close_says_the_env_is_closed(make_env: Callable[..., gym.Env], env_id: str) -> None:
    env = make_env(env_id)
    env.reset(seed=0)
    env.close()
    for call in (lambda: env.step(env.action_space.sample()), lambda: env.reset(seed=0), env.render):
        with pytest.raises(ValueError, match=r"is closed \(close\(\) was called\); make a new env with gym.make"):
            call()
    env.close()  # closing twice is harmless
