"""Structured-config schema for ``conf/``: a typo or a wrong type fails at start with Hydra's message.

The env schemas are generated from the env classes' constructors, with defaults from the
registered gymnasium presets, so every env parameter is a config key, one to one, and no
default is written twice.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import gymnasium as gym
import torch
from gymnasium.envs.registration import load_env_creator
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

import rlik.envs  # noqa: F401  (registers the gymnasium ids)
from rlik.paths import CONF_DIR
from rlik.training.algorithms import ALGORITHMS

# conf/env/<name>.yaml -> gymnasium id
ENV_PRESETS = {
    "planar_arm": "PlanarArmReach-v0",
    "arm": "ArmReach-v0",
    "kuka": "KukaReach-v0",
    "urdf": "UrdfReach-v0",
    "humanoid": "HumanoidReach-v0",
    "humanoid_bimanual": "HumanoidBimanualReach-v0",
    "g1": "G1Reach-v0",  # the Unitree G1 (example-robot-data)
    "g1_bimanual": "G1BimanualReach-v0",
}
# Chosen per run, not per experiment: not config keys.
RUNTIME_ENV_PARAMETERS = {"self", "render_mode"}


def _omegaconf_type(annotation: Any) -> Any:
    """Map a constructor annotation to a type OmegaConf can check (it has no general Union)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        others = [a for a in args if a is not type(None)]
        if len(others) == 1 and len(others) < len(args):
            return Optional[_omegaconf_type(others[0])]  # noqa: UP045  (OmegaConf reads typing.Optional)
        return Any
    if origin in (list, Sequence, typing.Sequence, tuple):
        return list[_omegaconf_type(args[0])] if args else list[Any]
    return annotation if annotation in (int, float, bool, str) else Any


def env_schema(env_id: str) -> type:
    """A dataclass with ``id``, ``max_episode_steps`` and one field per env constructor parameter."""
    spec = gym.spec(env_id)
    env_class = load_env_creator(spec.entry_point)
    hints = typing.get_type_hints(env_class.__init__)
    fields: list[tuple[str, Any, Any]] = [
        ("id", str, field(default=env_id)),
        # None: the env ends its episodes itself (ArmReach-v0, at its derived episode_steps).
        ("max_episode_steps", Optional[int], field(default=spec.max_episode_steps)),  # noqa: UP045
    ]
    for name, parameter in inspect.signature(env_class.__init__).parameters.items():
        if name in RUNTIME_ENV_PARAMETERS:
            continue
        default = spec.kwargs.get(name, parameter.default)
        if default is inspect.Parameter.empty:
            default = MISSING
        if isinstance(default, (list, tuple)):
            default = field(default_factory=lambda value=list(default): list(value))
        else:
            default = field(default=default)
        fields.append((name, _omegaconf_type(hints[name]), default))
    return dataclasses.make_dataclass(f"{env_class.__name__}Config_{env_id.replace('-', '_')}", fields)


@dataclass
class EvalConfig:
    """Periodic evaluation picks ``best_model.zip``; the final one writes ``metrics.json``."""

    freq: int = 5000  # env steps between periodic evaluations (0: none)
    periodic_goals: int = 50
    final_goals: int = 200
    goal_seed: int = 1_000_003  # seeds of the held-out goals; training seeds never reach it


@dataclass
class CurriculumConfig:
    """Goal curriculum: training goals start near the start pose (``env.goal_range`` = ``start``) and
    widen by ``increment`` whenever the training success rate over the last episodes reaches
    ``success_threshold``; evaluation always uses ``env.goal_range``."""

    enabled: bool = False
    start: float = 0.1  # goal_range at step 0
    increment: float = 0.1  # goal_range added per promotion, up to 1
    success_threshold: float = 0.7  # training success rate (last 100 episodes) that promotes
    min_episodes: int = 50  # episodes since the last promotion before the next one


@dataclass
class CheckpointConfig:
    freq: int = 10_000  # env steps between checkpoints (0: none)
    keep: int = 2  # newest checkpoints kept on disk
    replay_buffer: bool = True  # save the replay buffer with each checkpoint, for exact resume


@dataclass
class WandbConfig:
    """``mode: auto`` is online when logged in (or ``WANDB_MODE=online``), else offline."""

    mode: str = "auto"  # auto | online | offline | disabled
    project: str = "rlik"
    entity: Optional[str] = None  # noqa: UP045
    name: Optional[str] = None  # noqa: UP045
    group: Optional[str] = None  # noqa: UP045  (a multirun defaults to the sweep's name)
    tags: list[str] = field(default_factory=list)
    video: bool = True  # log the final policy's video.mp4 to the run
    video_episodes: int = 2  # episodes in video.mp4 (0: no video)
    init_timeout: float = 30.0  # seconds to reach the server when online; then offline, with one warning


@dataclass
class TrainConfig:
    env: Any = MISSING
    algo: Any = MISSING
    seed: int = 0
    total_timesteps: int = 50_000  # env steps, summed over the n_envs envs
    n_envs: int = 1
    # None: this job's share of the cores under its launcher (rlik/ops/launchers.py job_torch_threads)
    torch_threads: Optional[int] = None  # noqa: UP045
    device: str = "cpu"
    normalize_observations: bool = False  # VecNormalize on observations (stats saved with the models)
    # With normalize_observations: HER's achieved and desired goals too (false: they stay in metres, so
    # the policy compares them coordinate for coordinate instead of through two sets of statistics).
    normalize_goals: bool = True
    # The share of training episodes that retry a goal missed before (rlik/training/goal_replay.py), in [0, 1).
    missed_goal_replay: float = 0.0
    resume: Optional[str] = None  # noqa: UP045  (a run directory to continue)
    progress_bar: Optional[bool] = None  # noqa: UP045  (None: a bar on a terminal, log lines otherwise)
    log_interval: int = 20  # episodes between training-metric dumps
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; ``conf/*.yaml`` extend them."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for name, algorithm in ALGORITHMS.items():
        store.store(group="algo", name=f"schema_{name}", node=algorithm.schema)
    registered = gym.registry.keys()
    for name, env_id in ENV_PRESETS.items():
        if env_id in registered:
            store.store(group="env", name=f"schema_{name}", node=env_schema(env_id))


def compose_train_config(overrides: list[str]) -> Any:
    """The training config as ``python train.py <overrides>`` composes it, without a run (tests, benchmarks)."""
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


HER_STRATEGIES = ("future", "final", "episode")


# Env keys that must be positive, and costs that must be finite and >= 0, where the env has them.
ENV_POSITIVE_KEYS = ("success_threshold", "timestep", "frame_skip", "max_joint_speed")
ENV_COST_KEYS = ("torque_cost", "balance_weight", "fall_penalty")


def validate_config(cfg: Any) -> None:
    """Checks Hydra's types cannot express; raises ValueError naming the key and the fix."""
    if missing := sorted(OmegaConf.missing_keys(cfg)):
        raise ValueError(
            f"{missing[0]} has no value and {cfg.env.id} needs one; give it on the command line, {missing[0]}=<value>."
        )
    positive = {
        "total_timesteps": cfg.total_timesteps,
        "n_envs": cfg.n_envs,
        "torch_threads": cfg.torch_threads,
        "log_interval": cfg.log_interval,
        "eval.periodic_goals": cfg.eval.periodic_goals,
        "eval.final_goals": cfg.eval.final_goals,
        "algo.batch_size": cfg.algo.batch_size,
        "algo.buffer_size": cfg.algo.buffer_size,
        "algo.learning_rate": cfg.algo.learning_rate,
        "algo.train_freq": cfg.algo.train_freq,
    }
    for key, value in positive.items():
        if value is not None and not value > 0:  # null: chosen at run time (torch_threads); the schema types the rest
            raise ValueError(f"{key} must be > 0, got {value}; set it on the command line, e.g. {key}=<positive>.")
    if not cfg.wandb.init_timeout > 0:
        raise ValueError(f"wandb.init_timeout must be > 0 seconds, got {cfg.wandb.init_timeout}.")
    for key in ("eval.freq", "checkpoint.freq", "algo.learning_starts", "wandb.video_episodes"):
        if OmegaConf.select(cfg, key) < 0:
            raise ValueError(f"{key} must be >= 0 (0 turns it off), got {OmegaConf.select(cfg, key)}.")
    if cfg.algo.learning_rate_final is not None and not cfg.algo.learning_rate_final > 0:
        raise ValueError(
            f"algo.learning_rate_final must be > 0 (null: constant rate), got {cfg.algo.learning_rate_final}."
        )
    if not 0.0 <= cfg.algo.learning_rate_decay_start < 1.0:
        raise ValueError(
            f"algo.learning_rate_decay_start is a fraction of total_timesteps in [0, 1), got {cfg.algo.learning_rate_decay_start}."
        )
    if cfg.algo.actor_average_start is not None and not 0.0 <= cfg.algo.actor_average_start < 1.0:
        raise ValueError(
            f"algo.actor_average_start is a fraction of total_timesteps in [0, 1) (null: no averaging), got {cfg.algo.actor_average_start}."
        )
    if cfg.algo.name == "crossq" and cfg.algo.tau is not None:
        raise ValueError(
            "algo.tau has no meaning for CrossQ (it has no target networks); drop algo.tau from the command."
        )
    if not 0.0 < cfg.algo.gamma <= 1.0 or not (cfg.algo.tau is None or 0.0 < cfg.algo.tau <= 1.0):
        raise ValueError(f"algo.gamma and algo.tau must be in (0, 1], got {cfg.algo.gamma} and {cfg.algo.tau}.")
    if cfg.algo.goal_error_scales and cfg.normalize_observations and cfg.normalize_goals:
        raise ValueError(
            "algo.goal_error_scales are metres, but normalize_goals=true hands the policy normalised goals; "
            "set normalize_goals=false or algo.goal_error_scales=[]."
        )
    if any(not scale > 0 for scale in cfg.algo.goal_error_scales):
        raise ValueError(
            f"algo.goal_error_scales must be lengths > 0 (metres), got {list(cfg.algo.goal_error_scales)}."
        )
    if cfg.algo.gradient_steps == 0 or cfg.algo.gradient_steps < -1:
        raise ValueError(f"algo.gradient_steps must be >= 1 or -1, got {cfg.algo.gradient_steps}.")
    if cfg.algo.her.goal_selection_strategy not in HER_STRATEGIES:
        raise ValueError(
            f"unknown algo.her.goal_selection_strategy '{cfg.algo.her.goal_selection_strategy}'; choose from {HER_STRATEGIES}."
        )
    if not 0.0 <= cfg.missed_goal_replay < 1.0:
        raise ValueError(
            f"missed_goal_replay must be in [0, 1) (a share of the episodes), got {cfg.missed_goal_replay}."
        )
    curriculum = cfg.curriculum
    if curriculum.enabled and not (0.0 < curriculum.start <= 1.0 and curriculum.increment > 0):
        raise ValueError(
            f"curriculum.start must be in (0, 1] and curriculum.increment > 0, got {curriculum.start} "
            f"and {curriculum.increment}."
        )
    if cfg.seed < 0:
        raise ValueError(f"seed must be >= 0 (numpy's generators take no negative seed), got {cfg.seed}.")
    if cfg.algo.her.n_sampled_goal < 1:
        raise ValueError(
            f"algo.her.n_sampled_goal must be >= 1 (relabelled goals per real one), got {cfg.algo.her.n_sampled_goal}; "
            "to train without HER set algo.her.enabled=false."
        )
    if not cfg.algo.action_noise.sigma >= 0:
        raise ValueError(
            f"algo.action_noise.sigma must be >= 0 (normalised action units), got {cfg.algo.action_noise.sigma}."
        )
    if cfg.eval.goal_seed < 0:
        raise ValueError(
            f"eval.goal_seed must be >= 0 (numpy's generators take no negative seed), got {cfg.eval.goal_seed}."
        )
    try:
        torch.device(cfg.device)
    except RuntimeError:
        raise ValueError(f"unknown device '{cfg.device}'; set device=cpu, cuda or cuda:<index>.") from None
    validate_env_config(cfg.env)
    check_learning_starts(cfg, cfg.env.max_episode_steps or cfg.env.get("episode_steps"))


def check_learning_starts(cfg: Any, episode: int | None) -> None:
    """HER samples only finished episodes: the first update must come after each env's first episode of ``episode``
    env steps (None: not known yet; ArmReach-v0 derives it when built). A resume's buffer holds some already."""
    her = cfg.algo.her.enabled and cfg.env.get("goal_conditioned")
    if her and episode and not cfg.resume and cfg.algo.learning_starts < episode * cfg.n_envs:
        raise ValueError(
            f"algo.learning_starts={cfg.algo.learning_starts} starts the updates before the first episodes end "
            f"({cfg.n_envs} env(s) x {episode} env steps per episode), but HER samples finished episodes "
            f"only; set algo.learning_starts={episode * cfg.n_envs} or more."
        )


def validate_env_config(env: Any) -> None:
    """Checks of an env config that the env constructor would pass and that fail later (mid-training, in the
    final evaluation, in a video), for train.py and for a run's env with evaluate.py's overrides
    (rlik/policy/loading.py ``run_config``); raises ValueError naming the key and the fix."""
    if env.id not in gym.registry:
        raise ValueError(f"unknown env id '{env.id}'; choose env= one of {sorted(ENV_PRESETS)}.")
    if env.get("max_episode_steps") is not None and not env.max_episode_steps > 0:  # null: the env's own limit
        raise ValueError(
            f"env.max_episode_steps must be > 0 env steps (null: the env's own), got {env.max_episode_steps}."
        )
    for key in ENV_POSITIVE_KEYS:  # NaN fails "> 0" too
        if key in env and env[key] is not None and not env[key] > 0:  # null: derived (ArmReach-v0)
            raise ValueError(f"env.{key} must be > 0, got {env[key]}; set env.{key}=<positive>.")
    for key in ENV_COST_KEYS:
        if key in env and not 0 <= env[key] < float("inf"):
            raise ValueError(f"env.{key} must be a finite cost >= 0, got {env[key]}.")
    if "end_effector" in env and env.end_effector is not None and len(env.end_effector) == 0:
        raise ValueError("env.end_effector is empty; name the link (or a list of links) that must reach the goals.")
