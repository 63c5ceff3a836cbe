"""Build envs and SB3 models from the composed config."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from omegaconf import DictConfig, OmegaConf
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.noise import ActionNoise, NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

import rlik.envs  # noqa: F401  (registers the gymnasium ids)
from rlik.policy.networks import GoalErrorExtractor, SaturationPenalisedMlpPolicy, SaturationPenalisedMultiInputPolicy
from rlik.training.algorithms import POLICY_KEYS, RLIK_KEYS, algorithm_named
from rlik.training.goal_replay import MissedGoalReplay

NOISE_TYPES = ("normal", "ornstein_uhlenbeck", "none")


@dataclass(frozen=True)
class DecayingLearningRate:
    """SB3 learning-rate schedule: ``initial`` up to the fraction ``decay_start`` of the run, then
    linear to ``final`` at its end. A class, not a closure, so checkpoints pickle it plainly."""

    initial: float
    final: float
    decay_start: float

    def __call__(self, progress_remaining: float) -> float:
        decayed = (1.0 - progress_remaining - self.decay_start) / (1.0 - self.decay_start)
        return self.initial + min(max(decayed, 0.0), 1.0) * (self.final - self.initial)


def sb3_algo_kwargs(algo_cfg: DictConfig, keys: Iterable[str] | None = None) -> dict[str, Any]:
    """The algo config as keyword arguments of the SB3 algorithm (all its keys, or only ``keys``):
    rlik's own and the policy's keys dropped, ``learning_rate`` a schedule when ``learning_rate_final`` is set."""
    config = OmegaConf.to_container(algo_cfg, resolve=True)
    kwargs = {
        k: v for k, v in config.items() if k not in RLIK_KEYS and k not in POLICY_KEYS and (keys is None or k in keys)
    }
    if kwargs.get("tau", 0.0) is None:  # CrossQ: no target networks
        del kwargs["tau"]
    if algo_cfg.learning_rate_final is not None:
        kwargs["learning_rate"] = DecayingLearningRate(
            algo_cfg.learning_rate, algo_cfg.learning_rate_final, algo_cfg.learning_rate_decay_start
        )
    return kwargs


def env_kwargs(env_cfg: DictConfig) -> dict[str, Any]:
    """The env constructor's keyword arguments: every env key but ``id`` and ``max_episode_steps``."""
    kwargs = OmegaConf.to_container(env_cfg, resolve=True)
    kwargs.pop("id")
    kwargs.pop("max_episode_steps")
    return kwargs


def make_env(env_cfg: DictConfig, render_mode: str | None = None, **overrides: Any) -> gym.Env:
    """One env from the config's ``env`` node (``overrides`` replace its keys)."""
    if env_cfg.id not in gym.registry:
        known = sorted(k for k in gym.registry if k.startswith(("Urdf", "Planar", "Humanoid")))
        raise ValueError(f"unknown env id '{env_cfg.id}'; choose one of {known}.")
    kwargs = {**env_kwargs(env_cfg), **overrides}
    return gym.make(env_cfg.id, max_episode_steps=env_cfg.max_episode_steps, render_mode=render_mode, **kwargs)


def derived_settings(env: gym.Env) -> dict[str, Any]:
    """The settings an env derived from its URDF (``ArmReachEnv.derived_settings``: ``env.<key>`` -> value); empty
    for an env that derives nothing."""
    return getattr(env.unwrapped, "derived_settings", dict)()


def derived_settings_text(urdf: str, derived: dict[str, Any]) -> str:
    """``derived`` as the lines ``train.py`` prints: a heading, then one ``key=value`` as the command line takes it."""

    def value(item: Any) -> str:
        return "[" + ",".join(map(str, item)) + "]" if isinstance(item, list) else str(item)

    lines = [f"  {key}={value(item)}" for key, item in derived.items()]
    return "\n".join([f"derived from {urdf} (each key overrides its value):", *lines])


def make_training_env(
    env_cfg: DictConfig,
    n_envs: int,
    seed: int,
    normalize_observations: bool = False,
    normalize_goals: bool = True,
    missed_goal_replay: float = 0.0,
) -> VecEnv:
    """``n_envs`` envs in one process (PyBullet DIRECT clients are independent), with Monitor stats;
    fresh ``VecNormalize`` observation statistics when ``normalize_observations``, for HER's achieved
    and desired goals too unless ``normalize_goals`` is False (they then stay in metres); a share
    ``missed_goal_replay`` of the episodes retries missed goals (``MissedGoalReplay``)."""
    env = make_vec_env(
        lambda: make_env(env_cfg),
        n_envs=n_envs,
        seed=seed,
        wrapper_class=MissedGoalReplay if missed_goal_replay else None,
        wrapper_kwargs={"probability": missed_goal_replay},
    )
    if not normalize_observations:
        return env
    goal_conditioned = isinstance(env.observation_space, gym.spaces.Dict)
    keys = ["observation"] if goal_conditioned and not normalize_goals else None
    return VecNormalize(env, norm_reward=False, norm_obs_keys=keys)


class PenaltyHerReplayBuffer(HerReplayBuffer):
    """SB3's HER buffer that keeps each transition's ``info["penalty"]`` for relabelled rewards.

    ``ReachTask.compute_reward`` subtracts the goal-independent costs (torque, balance, fall) carried in
    ``info["penalty"]``; with SB3's default (no infos kept) relabelled samples, 80 % of a batch with
    4 sampled goals, would never see a fall. Only the penalties are kept, as floats in SB3's ``infos``
    slot, which SB3 deep-copies at every batch: for a float array that is one memcpy, for info dicts
    about 1.4 ms per batch of 256 (profiled). ``compute_reward`` takes them as an array of penalties.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "copy_info_dict": True})
        self.infos = np.zeros((self.buffer_size, self.n_envs))  # type: ignore[assignment]

    def add(
        self,
        obs: dict[str, np.ndarray],
        next_obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        self.infos[self.pos] = [info.get("penalty", 0.0) for info in infos]
        self.copy_info_dict = False  # SB3 would store the whole dicts; it still reads their time-limit flags
        try:
            super().add(obs, next_obs, action, reward, done, infos)
        finally:
            self.copy_info_dict = True  # sampling then hands the stored penalties to compute_reward


def make_action_noise(noise_cfg: DictConfig, n_actions: int) -> ActionNoise | None:
    if noise_cfg.type not in NOISE_TYPES:
        raise ValueError(f"unknown algo.action_noise.type '{noise_cfg.type}'; choose from {NOISE_TYPES}.")
    mean, sigma = np.zeros(n_actions), noise_cfg.sigma * np.ones(n_actions)
    if noise_cfg.type == "normal":
        return NormalActionNoise(mean, sigma)
    if noise_cfg.type == "ornstein_uhlenbeck":
        return OrnsteinUhlenbeckActionNoise(mean, sigma)
    return None


def make_model(cfg: DictConfig, env: VecEnv) -> BaseAlgorithm:
    """A fresh SB3 model for ``cfg.algo`` on ``env``; HER replay when the env is goal-conditioned."""
    algo_cfg = cfg.algo
    algorithm = algorithm_named(algo_cfg.name)
    goal_conditioned = isinstance(env.observation_space, gym.spaces.Dict)
    kwargs = sb3_algo_kwargs(algo_cfg)
    if goal_conditioned and algo_cfg.her.enabled:
        kwargs["replay_buffer_class"] = PenaltyHerReplayBuffer
        kwargs["replay_buffer_kwargs"] = {
            "n_sampled_goal": algo_cfg.her.n_sampled_goal,
            "goal_selection_strategy": algo_cfg.her.goal_selection_strategy,
        }
    policy: str | type[BasePolicy] = "MultiInputPolicy" if goal_conditioned else "MlpPolicy"
    policy_kwargs: dict[str, Any] = {key: algo_cfg[key] for key in POLICY_KEYS if key in algo_cfg}
    policy_kwargs["net_arch"] = list(algo_cfg.net_arch)
    if algo_cfg.get("saturation_cost", 0.0) > 0:
        policy = SaturationPenalisedMultiInputPolicy if goal_conditioned else SaturationPenalisedMlpPolicy
        policy_kwargs["saturation_cost"] = algo_cfg.saturation_cost
    if algo_cfg.goal_error_scales:
        if not goal_conditioned:
            raise ValueError(
                "algo.goal_error_scales needs a goal-conditioned env (Dict observations); set env.goal_conditioned=true "
                "or algo.goal_error_scales=[]."
            )
        policy_kwargs["features_extractor_class"] = GoalErrorExtractor
        policy_kwargs["features_extractor_kwargs"] = {"scales": list(algo_cfg.goal_error_scales)}
    if algo_cfg.fused_optimizer:  # only then: Adam(fused=False) would also turn off torch's default foreach kernel
        policy_kwargs["optimizer_kwargs"] = {**algorithm.optimizer_defaults, "fused": True}
    return algorithm.sb3_class(
        policy,
        env,
        action_noise=make_action_noise(algo_cfg.action_noise, env.action_space.shape[0]),
        policy_kwargs=policy_kwargs,
        seed=cfg.seed,
        device=cfg.device,
        verbose=0,
        **kwargs,
    )
