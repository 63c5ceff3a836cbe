"""``missed_goal_replay``: training episodes that retry the goals the policy missed (rlik/training/goal_replay.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rlik.training.config import compose_train_config, validate_config
from rlik.training.factory import make_env, make_training_env
from rlik.training.goal_replay import MissedGoalReplay

CONFIG = ["env=planar_arm", "n_envs=1"]


def run_episode(env: MissedGoalReplay, **reset_options: np.ndarray) -> tuple[np.ndarray, bool]:
    """One episode with zero torque; its goal and whether it succeeded."""
    env.reset(options=reset_options or None)
    goal = env.unwrapped.task.goal.copy()
    while True:
        _, _, terminated, truncated, info = env.step(np.zeros(env.action_space.shape))
        if terminated or truncated:
            return goal, info["is_success"]


def test_missed_goals_come_back_and_reached_ones_do_not() -> None:
    env = MissedGoalReplay(make_env(compose_train_config(CONFIG).env, initial_joint_noise=0.0), probability=0.999)
    try:
        env.reset(seed=0)
        missed, success = run_episode(env)
        assert not success and len(env.missed) == 1
        retried, success = run_episode(env)  # the reset took the missed goal, and zero torque misses it again
        np.testing.assert_array_equal(retried, missed)
        assert not success and len(env.missed) == 1
        # A goal at the fingertip in the start pose is reached with zero torque: not kept. The reset asked for a goal
        # of its own, so the missed one stays for a later episode.
        env.unwrapped.session.restore_state(env.unwrapped._initial_state)
        _, success = run_episode(env, goal=env.unwrapped.task.achieved_goal())
        assert success and len(env.missed) == 1
        np.testing.assert_array_equal(env.missed[0], missed)
    finally:
        env.close()


def test_only_the_training_envs_replay() -> None:
    """The training config wraps each training env; the evaluation env (make_env) samples its held-out goals as
    without replay."""
    cfg = compose_train_config([*CONFIG, "missed_goal_replay=0.5"])
    train_env = make_training_env(cfg.env, 2, seed=0, missed_goal_replay=cfg.missed_goal_replay)
    try:
        assert all(isinstance(env, MissedGoalReplay) and env.probability == 0.5 for env in train_env.envs)
        assert not isinstance(make_env(cfg.env), MissedGoalReplay)
        plain = make_training_env(compose_train_config(CONFIG).env, 1, seed=0)
        assert not isinstance(plain.envs[0], MissedGoalReplay)
    finally:
        train_env.close()


@pytest.mark.parametrize("value", [1.0, -0.1])
def test_replay_share_outside_0_1_is_one_line(value: float) -> None:
    with pytest.raises(ValueError, match=r"^missed_goal_replay must be in \[0, 1\)[^\n]*$"):
        validate_config(compose_train_config([*CONFIG, f"missed_goal_replay={value}"]))
