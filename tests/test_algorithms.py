"""The algorithms beside DDPG (sb3-contrib's TQC and CrossQ, with HER) and the goal-error features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sb3_contrib import TQC

from rlik.policy.networks import GoalErrorExtractor
from rlik.training.algorithms import ALGORITHMS
from rlik.training.config import compose_train_config, validate_config
from rlik.training.crossq import ConcatenableObservations, MultiInputCrossQ
from rlik.training.factory import PenaltyHerReplayBuffer, make_env, make_model, make_training_env

SMALL = ["algo.net_arch=[32,32]", "algo.learning_starts=100", "algo.batch_size=32"]


def planar_model(*overrides: str):
    cfg = compose_train_config([*SMALL, *overrides])
    return make_model(cfg, make_training_env(cfg.env, n_envs=1, seed=0))


@pytest.mark.parametrize(("algo", "cls"), [("tqc", TQC), ("crossq", MultiInputCrossQ)])
def test_contrib_algorithm_trains_with_her_saves_and_reloads(algo: str, cls: type, tmp_path: Path) -> None:
    model = planar_model(f"algo={algo}")
    assert isinstance(model, cls) and isinstance(model.replay_buffer, PenaltyHerReplayBuffer)
    assert isinstance(model.actor.features_extractor, GoalErrorExtractor)  # the planar preset's features
    weights = [p.detach().clone() for p in model.actor.parameters()]
    model.learn(300)  # 200 updates on HER's Dict samples
    assert any(not torch.equal(a, b) for a, b in zip(weights, model.actor.parameters()))
    model.save(tmp_path / "model.zip")
    loaded = ALGORITHMS[algo].sb3_class.load(tmp_path / "model.zip", env=model.get_env(), device="cpu")
    obs = model.get_env().reset()
    action, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_allclose(action, model.predict(obs, deterministic=True)[0], atol=1e-6)
    assert np.all(np.abs(action) <= 1.0)


def test_crossq_concatenates_dict_observations_key_by_key() -> None:
    first = ConcatenableObservations(a=torch.zeros(2, 3), b=torch.ones(2, 1))
    second = ConcatenableObservations(a=torch.ones(4, 3), b=torch.zeros(4, 1))
    joined = torch.cat([first, second], dim=0)
    assert isinstance(joined, ConcatenableObservations)
    assert joined["a"].shape == (6, 3) and joined["b"].shape == (6, 1)
    torch.testing.assert_close(joined["a"][2:], torch.ones(4, 3))


def test_goal_error_features_are_the_scaled_error_beside_the_observation() -> None:
    model = planar_model("algo.goal_error_scales=[0.1,0.01]")
    extractor = model.actor.features_extractor
    obs = {
        "observation": torch.randn(5, model.observation_space["observation"].shape[0]),
        "achieved_goal": torch.zeros(5, 3),
        "desired_goal": torch.tensor([[0.05, -0.005, 0.0]]).repeat(5, 1),
    }
    features = extractor(obs)
    plain = torch.cat([obs["achieved_goal"], obs["desired_goal"], obs["observation"]], dim=1)  # SB3's sorted keys
    torch.testing.assert_close(features[:, : plain.shape[1]], plain)
    expected = torch.tanh(torch.tensor([0.5, -0.05, 0.0, 5.0, -0.5, 0.0]))
    torch.testing.assert_close(features[0, plain.shape[1] :], expected)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algo=crossq", "algo.tau=0.05"], "no target networks"),
        (["normalize_observations=true", "algo.goal_error_scales=[0.1]"], "normalize_goals=false"),
        (["algo.goal_error_scales=[0.1,0]"], "lengths > 0"),
    ],
)
def test_config_problems_are_named(overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_config(compose_train_config(overrides))


def test_kuka_preset_is_the_arm_env_on_crossq_with_ddpg_one_key_away() -> None:
    cfg = compose_train_config(["env=kuka"])
    validate_config(cfg)
    assert cfg.algo.name == "crossq" and cfg.env.id == "KukaReach-v0"
    assert compose_train_config(["env=kuka", "algo=ddpg"]).algo.name == "ddpg"
    env = make_env(cfg.env)
    try:
        arm = env.unwrapped
        assert arm.robot.n_joints == 7 and arm.gravity_compensation and arm.task.success_threshold == 0.02
        # Nothing hand-picked: the torques are the ones derived from the KUKA's own dynamics (printed rounded).
        derived = np.array(arm.derived_settings()["env.action_scale"]) * arm.robot.torque_limits
        np.testing.assert_allclose(arm.action_torques, derived, rtol=5e-3)  # 3 significant figures
        assert arm.observation_space["observation"].shape == (7 * 4 + 3,)  # cos, sin, speed, position; hand
    finally:
        env.close()
