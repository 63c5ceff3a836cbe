"""FabrikController and BalancedJacobianController on the real envs (PyBullet, no mocks)."""

from __future__ import annotations

from collections.abc import Iterator

import gymnasium as gym
import numpy as np
import pytest
import rlik.envs  # noqa: F401  (registers the ids)
from rlik.envs.reach_env import UrdfReachEnv

from rlik.control import BalancedJacobianController, FabrikController, JacobianController

# Planar-arm goals (m): ahead, lower left, and behind the base, where the shoulder's stops at +-pi meet.
PLANAR_GOALS = [(0.3, 0.5, 0.1), (-0.6, -0.2, 0.1), (-0.75, 0.05, 0.1)]
# Evaluation goal 138 (goal seed 1000003): 0.77 m from the right shoulder, beyond the arm's 0.64 m, so the torso
# must lean toward it; the Jacobian controller, which ignores balance, falls on it.
LEAN_SEED = 1_000_141
ARM_LENGTH = 0.64  # the humanoid's shoulder to palm, m (see the URDF)


@pytest.fixture
def planar() -> Iterator[gym.Env]:
    env = gym.make("PlanarArmReach-v0")  # 1 cm success, 50 steps
    yield env
    env.close()


def run(env: gym.Env, controller: object, **reset: object) -> list[dict]:
    """The infos of one episode, from the reset on."""
    observation, info = env.reset(**reset)
    infos, done = [info], False
    while not done:
        observation, _, terminated, truncated, info = env.step(controller(observation))
        infos.append(info)
        done = terminated or truncated
    return infos


def test_fabrik_solution_reaches_planar_goals_within_limits(planar: gym.Env) -> None:
    env = planar.unwrapped
    controller = FabrikController(env)
    chain = controller.chain
    lower, upper = env.robot.joint_limits
    for goal in PLANAR_GOALS:
        env.reset(seed=0, options={"goal": goal})
        rotation, origin = chain.root_frame()
        local = rotation.T @ (np.array(goal) - origin)
        points = chain.fabrik(chain.pivot_points(chain.angles()), local, controller.tolerance, 100)
        assert np.linalg.norm(points[-1] - local) <= controller.tolerance
        np.testing.assert_allclose(np.linalg.norm(np.diff(points, axis=0), axis=1), chain.lengths, atol=1e-9)

        targets = controller.solve(np.array(goal))
        assert np.all(targets >= lower) and np.all(targets <= upper), targets
        env.robot.set_joint_positions(targets)
        assert np.linalg.norm(env.task.achieved_goal() - goal) < 1e-3
    assert controller.solve_count == len(PLANAR_GOALS) and controller.mean_solve_time_us > 0


def test_fabrik_stops_an_unreachable_goal_at_the_joint_limits(planar: gym.Env) -> None:
    """A goal 5 cm from the shoulder needs the elbow folded past its 2.6 rad stop: the solution stops there, with
    the fingertip turned toward the goal."""
    env = planar.unwrapped
    controller = FabrikController(env)
    env.reset(seed=0)
    goal = np.array([0.05, 0.0, 0.1])
    targets = controller.solve(goal)
    lower, upper = env.robot.joint_limits
    assert np.all(targets >= lower) and np.all(targets <= upper), targets
    assert abs(targets[1]) == pytest.approx(2.6)
    env.robot.set_joint_positions(targets)
    nearest = np.sqrt(0.5**2 + 0.4**2 + 2 * 0.5 * 0.4 * np.cos(2.6)) - 0.05  # the folded arm's reach, minus the goal's
    assert np.linalg.norm(env.task.achieved_goal() - goal) == pytest.approx(nearest, abs=1e-3)


def test_fabrik_episode_ends_within_1_cm(planar: gym.Env) -> None:
    controller = FabrikController(planar.unwrapped)
    for goal in PLANAR_GOALS[1:]:
        infos = run(planar, controller, seed=1, options={"goal": goal})
        assert infos[-1]["distance"] < 0.01, (goal, infos[-1]["distance"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: UrdfReachEnv(urdf="kuka_iiwa/model.urdf", end_effector="lbr_iiwa_link_7"), "not parallel"),
        (lambda: gym.make("HumanoidBimanualReach-v0").unwrapped, "one end effector"),
    ],
    ids=["kuka", "bimanual"],
)
def test_fabrik_rejects_what_it_cannot_solve(make: object, message: str) -> None:
    env = make()
    try:
        with pytest.raises(ValueError, match="controller=jacobian") as error:
            FabrikController(env)
        assert message in str(error.value)
    finally:
        env.close()


def test_balanced_jacobian_keeps_the_com_over_the_feet_on_a_goal_that_needs_a_lean() -> None:
    env = gym.make("HumanoidReach-v0")  # 2 cm success, 100 steps
    humanoid = env.unwrapped
    try:
        controller = BalancedJacobianController(humanoid)
        infos = run(env, controller, seed=LEAN_SEED)
        shoulder = humanoid.robot.link_index("right_shoulder_pitch_link")
        env.reset(seed=LEAN_SEED)
        assert np.linalg.norm(humanoid.task.goal - humanoid.robot.link_position(shoulder)) > ARM_LENGTH + 0.1
        margins = [info["footprint_margin"] for info in infos]
        assert len(infos) == 101 and not any(info["fell"] for info in infos)
        assert min(margins) > 0.04, min(margins)  # the balance task holds it near its 5 cm
        assert infos[-1]["is_success"], infos[-1]["distance"]

        # Without the balance task, the same gains tip the robot over on this goal.
        plain = run(env, JacobianController(humanoid, kp=controller.kp, kd=controller.kd), seed=LEAN_SEED)
        assert plain[-1]["fell"] and min(info["footprint_margin"] for info in plain) < 0
    finally:
        env.close()
