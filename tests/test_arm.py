"""``ArmReach-v0``: any arm from its URDF and end-effector link alone (issue 33), with real PyBullet physics."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import rlik.envs  # noqa: F401  (registers the ids)
from rlik.envs.arm_tuning import CRUISE_SPEED, SETTLE_TIME

from tests.conftest import REPO, error_lines, read_json, run_train

ROS_PACKAGES = REPO / "tests" / "data" / "ros"
DEMO_ARM = ROS_PACKAGES / "demo_arm_description" / "urdf" / "demo_arm.urdf"  # 3 joints, package:// meshes
KUKA = {"urdf": "kuka_iiwa/model.urdf", "end_effector": "lbr_iiwa_link_7"}
PANDA = {"urdf": "franka_panda/panda.urdf", "end_effector": "panda_grasptarget"}
INERTIA = '<inertial><mass value="1"/><inertia ixx="0.01" iyy="0.01" izz="0.01" ixy="0" ixz="0" iyz="0"/></inertial>'
# A frame without a body, as real URDFs write their tool frames.
MASSLESS = '<inertial><mass value="0"/><inertia ixx="0" iyy="0" izz="0" ixy="0" ixz="0" iyz="0"/></inertial>'
LIMIT = '<limit lower="-1" upper="1" effort="10" velocity="2"/>'


@pytest.fixture
def make_env() -> Iterator[Callable[..., gym.Env]]:
    """``gym.make("ArmReach-v0", ...)`` that closes every env it made when the test ends."""
    made: list[gym.Env] = []

    def make(**kwargs: Any) -> gym.Env:
        env = gym.make("ArmReach-v0", **kwargs)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()


def position_jacobian(env: Any) -> np.ndarray:
    """The end effector's position Jacobian (3, n) over the env's joints at the current pose."""
    robot = env.robot
    q_all = robot.session.joint_positions(robot.body, robot.all_actuated)
    columns = [robot.all_actuated.index(index) for index in robot.joint_indices]
    return robot.session.link_jacobian(robot.body, env.task.end_effector_links[0], q_all)[:, columns]


# --- the derivation -------------------------------------------------------------------------------------


def test_kuka_derivation_chain_start_pose_and_equal_step_responses(make_env: Callable[..., gym.Env]) -> None:
    """All 7 joints on the chain; a start pose away from the straight-up singular one; a full action on any one
    joint, heavy shoulder or light wrist, brings it to the same cruising speed, the heaviest joint within
    SETTLE_TIME (its time constant), a lighter one faster, in proportion to the square root of its inertia."""
    env = make_env(**KUKA).unwrapped
    assert env.robot.joint_names == [f"lbr_iiwa_joint_{i}" for i in range(1, 8)]
    lower, upper = env.robot.joint_limits
    start = env.initial_joint_positions
    assert np.all(start > lower) and np.all(start < upper)
    env.robot.set_joint_positions(start)
    sigma_start = np.linalg.svd(position_jacobian(env), compute_uv=False)
    env.robot.set_joint_positions(np.zeros(7))
    sigma_zero = np.linalg.svd(position_jacobian(env), compute_uv=False)
    assert sigma_zero[-1] < 1e-6 < 0.1 < sigma_start[-1]  # straight up: rank 2; the start pose: full rank
    assert env.task.success_threshold == 0.02 and env.episode_steps > 20
    assert 0 < env.action_torques.max() < 300  # far below the URDF's 300 N m on every joint

    # After 0.25 s (6 env steps) at full action joint i runs at 1 - exp(-0.25 s / tau_i) of its speed, its time
    # constant tau_i = SETTLE_TIME sqrt(M_ii / M_max) (longer where the physics step caps a light wrist's damping):
    # the wrist already cruises, the shoulder is two thirds of the way there.
    inertia = np.diag(env.robot.session.mass_matrix(env.robot.body, list(start)))
    time_constants = inertia / env.settings.velocity_damping
    assert time_constants.max() == pytest.approx(SETTLE_TIME, rel=1e-3) and time_constants.argmax() == inertia.argmax()
    assert np.all(time_constants >= SETTLE_TIME * np.sqrt(inertia / inertia.max()) * (1 - 1e-6))
    speeds = []
    for joint in range(7):
        env.reset(seed=0)
        env.robot.reset(start)
        action = np.zeros(7)
        action[joint] = 1.0
        for _ in range(6):
            env.step(action)
        speeds.append(env.robot.joint_state()[1][joint])
    np.testing.assert_allclose(speeds, CRUISE_SPEED * (1.0 - np.exp(-6 * env.dt / time_constants)), rtol=0.2)


def test_panda_fingers_hold_and_derived_settings_are_config_keys(make_env: Callable[..., gym.Env]) -> None:
    env = make_env(**PANDA).unwrapped
    assert env.robot.joint_names == [f"panda_joint{i}" for i in range(1, 8)]
    assert [info.name for info in env.robot.held] == ["panda_finger_joint1", "panda_finger_joint2"]
    derived = env.derived_settings()
    assert set(derived) == {
        "env.joints",
        "env.success_threshold",
        "env.episode_steps",
        "env.action_scale",
        "env.velocity_damping",
        "env.initial_joint_positions",
    }
    assert all(0 < s <= 1 for s in derived["env.action_scale"])
    # Given keys are used as they are, and no longer listed as derived.
    given = make_env(**PANDA, success_threshold=0.01, episode_steps=7, action_scale=0.5).unwrapped
    assert given.task.success_threshold == 0.01 and given.episode_steps == 7
    np.testing.assert_allclose(given.action_torques, 0.5 * given.robot.torque_limits)
    assert not {"env.success_threshold", "env.episode_steps", "env.action_scale"} & set(given.derived_settings())


def test_the_env_ends_its_own_episodes(make_env: Callable[..., gym.Env]) -> None:
    """ArmReach-v0 registers no TimeLimit: it truncates at its episode_steps."""
    env = make_env(**KUKA, episode_steps=5)
    env.reset(seed=0)
    ends = [env.step(env.action_space.sample())[3] for _ in range(5)]
    assert ends == [False] * 4 + [True]
    env.reset(seed=1)
    assert not env.step(env.action_space.sample())[3]


def test_derivation_is_deterministic(make_env: Callable[..., gym.Env]) -> None:
    first, second = make_env(**KUKA).unwrapped, make_env(**KUKA).unwrapped
    assert first.derived_settings() == second.derived_settings()


# --- ROS-style URDFs --------------------------------------------------------------------------------


def test_package_uri_urdf_loads_with_its_meshes(
    make_env: Callable[..., gym.Env], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """package:// meshes resolve through the URDF's own folders, ROS_PACKAGE_PATH, and a package:// URDF path."""
    env = make_env(urdf=str(DEMO_ARM), end_effector="tool0").unwrapped
    assert env.robot.joint_names == ["joint1", "joint2", "joint3"]
    meshes = {shape[4].decode() for shape in env.robot.client.getVisualShapeData(env.robot.body)}
    assert meshes == {str((DEMO_ARM.parents[1] / "meshes" / "link.stl").resolve())}

    copy = tmp_path / "elsewhere" / "demo_arm.urdf"
    copy.parent.mkdir()
    shutil.copy(DEMO_ARM, copy)
    with pytest.raises(ValueError, match="mesh file 'package://demo_arm_description/meshes/link.stl' of link 'link1'"):
        make_env(urdf=str(copy), end_effector="tool0")
    monkeypatch.setenv("ROS_PACKAGE_PATH", str(ROS_PACKAGES))
    assert make_env(urdf=str(copy), end_effector="tool0").unwrapped.robot.n_joints == 3
    uri = make_env(urdf="package://demo_arm_description/urdf/demo_arm.urdf", end_effector="tool0")
    assert uri.unwrapped.robot.n_joints == 3


def test_missing_package_urdf_is_one_line(make_env: Callable[..., gym.Env]) -> None:
    with pytest.raises(FileNotFoundError, match="no package 'no_such_description' holds it") as excinfo:
        make_env(urdf="package://no_such_description/urdf/arm.urdf", end_effector="tool0")
    assert "\n" not in str(excinfo.value)


# --- bad input: one line each ---------------------------------------------------------------------------


def two_link_urdf(tmp_path: Path, link_inertial: str = INERTIA, joint_type: str = "revolute") -> str:
    path = tmp_path / "arm.urdf"
    path.write_text(
        f'<robot name="r"><link name="base">{INERTIA}</link><link name="arm">{link_inertial}</link>'
        f'<link name="tip">{MASSLESS}</link><joint name="j" type="{joint_type}"><parent link="base"/><child link="arm"/>'
        f'<axis xyz="0 1 0"/>{LIMIT if joint_type != "fixed" else ""}</joint>'
        '<joint name="t" type="fixed"><parent link="arm"/><child link="tip"/><origin xyz="0 0 0.3"/></joint></robot>'
    )
    return str(path)


@pytest.mark.parametrize(
    ("case", "end_effector", "message"),
    [
        ("fine", "hand", "unknown link 'hand'"),
        ("fine", "base", "end effector 'base' is the base link .* e.g. 'arm'"),
        ("no inertial", "tip", "link 'arm' of .* has no <inertial>, so PyBullet would give it 1 kg"),
        ("zero mass", "tip", "joint 'j' of .* moves no mass: the links beyond it have zero mass or no <inertial>"),
        ("fixed only", "tip", "has no revolute or prismatic joint"),
    ],
)
def test_bad_arms_are_one_line(
    make_env: Callable[..., gym.Env], tmp_path: Path, case: str, end_effector: str, message: str
) -> None:
    inertial = {"no inertial": "", "zero mass": MASSLESS}.get(case, INERTIA)
    urdf = two_link_urdf(tmp_path, inertial, "fixed" if case == "fixed only" else "revolute")
    with pytest.raises(ValueError, match=message) as excinfo:
        make_env(urdf=urdf, end_effector=end_effector)
    assert "\n" not in str(excinfo.value)


def test_end_effector_on_the_base_side_of_every_joint(make_env: Callable[..., gym.Env], tmp_path: Path) -> None:
    """A link fixed to the base (no movable joint between them) cannot reach anything."""
    path = tmp_path / "arm.urdf"
    path.write_text(
        f'<robot name="r"><link name="base">{INERTIA}</link><link name="arm">{INERTIA}</link><link name="plate"/>'
        f'<joint name="j" type="revolute"><parent link="base"/><child link="arm"/><axis xyz="0 1 0"/>{LIMIT}</joint>'
        '<joint name="p" type="fixed"><parent link="base"/><child link="plate"/></joint></robot>'
    )
    with pytest.raises(ValueError, match="end effector 'plate' is not moved by any joint .* e.g. 'arm'"):
        make_env(urdf=str(path), end_effector="plate")


def test_train_py_prints_the_derived_settings_and_needs_a_urdf(tmp_path: Path) -> None:
    """``env=arm`` with the two keys trains, printing each derived key; without env.urdf it is one line."""
    result = run_train(
        tmp_path,
        "env=arm",
        f"env.urdf={DEMO_ARM}",
        "env.end_effector=tool0",
        "algo=ddpg",
        "n_envs=1",
        "total_timesteps=120",
        "algo.learning_starts=60",
        "algo.net_arch=[16,16]",
        "eval.freq=0",
        "eval.final_goals=2",
        "checkpoint.freq=0",
        "wandb.mode=disabled",
        "wandb.video_episodes=0",
        "hydra.run.dir=run",
    )
    assert result.returncode == 0, result.stderr
    assert f"derived from {DEMO_ARM} (each key overrides its value):" in result.stdout
    assert "  env.joints=[joint1,joint2,joint3]" in result.stdout
    for key in ("success_threshold", "episode_steps", "action_scale", "velocity_damping", "initial_joint_positions"):
        assert f"  env.{key}=" in result.stdout
    assert read_json(tmp_path / "run" / "derived.json")["env.joints"] == ["joint1", "joint2", "joint3"]
    # HER's first update must wait for the derived episode length (58 steps here) in each of the 4 default envs.
    early = run_train(
        tmp_path,
        "env=arm",
        f"env.urdf={DEMO_ARM}",
        "env.end_effector=tool0",
        "algo.learning_starts=100",
        "hydra.run.dir=early",
    )
    assert early.returncode == 2 and "(4 env(s) x 58 env steps per episode)" in error_lines(early.stderr)[0]
    assert not (tmp_path / "early").exists()
    missing = run_train(tmp_path, "env=arm", "env.end_effector=tool0", "hydra.run.dir=missing")
    assert missing.returncode == 2
    assert error_lines(missing.stderr) == [
        "error: env.urdf has no value and ArmReach-v0 needs one; give it on the command line, env.urdf=<value>."
    ]
    assert not (tmp_path / "missing").exists()
