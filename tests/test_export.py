"""Lean inference and export (rlik/policy/lean.py, rlik/policy/export.py): the same actions as SB3's ``predict``.

Each model trains a few hundred steps first, so that weights, BatchRenorm statistics and observation
statistics are all away from their initial values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import DDPG, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

from rlik.policy.export import OnnxPolicy, lean_policy, save_onnx
from rlik.policy.lean import LeanPolicy
from rlik.training.config import compose_train_config
from rlik.training.factory import make_model, make_training_env

TOLERANCE = 1e-5
CASES = {
    # name: overrides; goal-conditioned (Dict) unless env.goal_conditioned=false
    "ddpg_goal_errors": [],
    "ddpg_normalised": ["normalize_observations=true", "algo.goal_error_scales=[]"],
    "ddpg_normalised_observation_key_goal_errors": ["normalize_observations=true", "normalize_goals=false"],
    "td3_flat_normalised": ["algo=td3", "env.goal_conditioned=false", "normalize_observations=true"],
    "sac_flat": ["algo=sac", "env.goal_conditioned=false"],
    "tqc_goal_errors": ["algo=tqc"],
    "crossq_goal_errors_normalised": ["algo=crossq", "normalize_observations=true", "normalize_goals=false"],
}


def trained(overrides: list[str]) -> tuple[BaseAlgorithm, VecNormalize | None]:
    cfg = compose_train_config(
        ["algo.net_arch=[32,32]", "algo.learning_starts=100", "algo.batch_size=32", "n_envs=1", *overrides]
    )
    env = make_training_env(
        cfg.env, 1, seed=0, normalize_observations=cfg.normalize_observations, normalize_goals=cfg.normalize_goals
    )
    model = make_model(cfg, env)
    model.learn(300)
    vec_normalize = env if isinstance(env, VecNormalize) else None
    if vec_normalize is not None:
        vec_normalize.training = False
    return model, vec_normalize


def observations(model: BaseAlgorithm, n: int) -> dict[str, np.ndarray] | np.ndarray:
    """Observations spread wider than the env's, to reach the normalisation's clipping too."""
    rng = np.random.default_rng(1)
    space = model.observation_space
    if hasattr(space, "spaces"):
        return {key: rng.normal(0, 2, size=(n, *s.shape)).astype(np.float32) for key, s in space.spaces.items()}
    return rng.normal(0, 2, size=(n, *space.shape)).astype(np.float32)


def sb3_actions(model: BaseAlgorithm, vec_normalize: VecNormalize | None, obs: object) -> np.ndarray:
    if vec_normalize is not None:
        obs = vec_normalize.normalize_obs(obs)
    return model.predict(obs, deterministic=True)[0]


@pytest.mark.parametrize("case", list(CASES))
def test_lean_npz_and_onnx_actions_equal_sb3_predict(case: str, tmp_path: Path) -> None:
    model, vec_normalize = trained(CASES[case])
    lean = lean_policy(model, vec_normalize)
    batch = observations(model, 200)
    expected = sb3_actions(model, vec_normalize, batch)
    assert np.abs(expected).max() > 0.05  # not a policy that outputs zeros

    np.testing.assert_allclose(lean.act(batch), expected, atol=TOLERANCE)
    single = {k: v[7] for k, v in batch.items()} if isinstance(batch, dict) else batch[7]
    np.testing.assert_allclose(lean.act(single), sb3_actions(model, vec_normalize, single), atol=TOLERANCE)
    assert lean.act(single).shape == model.action_space.shape

    loaded = LeanPolicy.load(lean.save(tmp_path / "policy.npz"))
    np.testing.assert_array_equal(loaded.act(batch), lean.act(batch))

    onnx = OnnxPolicy(save_onnx(lean, tmp_path / "policy.onnx"))
    np.testing.assert_allclose(onnx.act(batch), expected, atol=TOLERANCE)
    np.testing.assert_allclose(onnx.act(single), expected[7], atol=TOLERANCE)


def test_an_actor_it_cannot_convert_gets_a_clear_error() -> None:
    cfg = compose_train_config(["env.goal_conditioned=false"])
    env = make_training_env(cfg.env, 1, seed=0)
    with pytest.raises(ValueError, match="gSDE"):
        lean_policy(SAC("MlpPolicy", env, use_sde=True, policy_kwargs={"net_arch": [8]}))
    with pytest.raises(ValueError, match="LeakyReLU"):
        lean_policy(DDPG("MlpPolicy", env, policy_kwargs={"net_arch": [8], "activation_fn": torch.nn.LeakyReLU}))


def test_a_policy_file_of_another_format_is_refused(tmp_path: Path) -> None:
    model, _ = trained([])
    path = lean_policy(model).save(tmp_path / "policy.npz")
    with np.load(path) as data:
        arrays = dict(data)
    arrays["meta"] = np.array(str(arrays["meta"]).replace('"format_version": 1', '"format_version": 99'))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="format 99"):
        LeanPolicy.load(path)
