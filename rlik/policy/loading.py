"""What a training run left, loaded to act: its config, its models with their observation statistics, and
``load_policy``, the run's policy in numpy (``rlik.policy.lean.LeanPolicy``) beside the env it was trained for.

    from rlik.policy.loading import load_policy

    policy = load_policy("outputs/latest")  # final_model.zip (DEFAULT_MODEL); model="best" or "latest" for the others
    env = gym.make(policy.env_id, **policy.env_kwargs)
    action = policy.act(observation)  # one observation, or a batch

A model is loaded without an env: the settings only training reads (HER's replay buffer, which SB3 cannot
build without one, and the buffer's size) are replaced on loading, so old zips that record them load too.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

from rlik.evaluation.config import DEFAULT_MODEL, MODELS
from rlik.paths import RunDir
from rlik.policy.export import lean_policy
from rlik.policy.lean import LeanPolicy, Normalization
from rlik.training import checkpoints
from rlik.training.algorithms import algorithm_named
from rlik.training.config import validate_env_config
from rlik.training.factory import env_kwargs

MODEL_NAMES = (*MODELS, "latest")  # "latest": the newest complete checkpoint
# Saved attributes SB3 would rebuild the replay buffer from, replaced on loading: a model loaded to act never
# trains, and HER's buffer (the class a goal-conditioned run records) cannot be built without an env.
ACTING_OBJECTS: dict[str, Any] = {"replay_buffer_class": None, "replay_buffer_kwargs": {}, "buffer_size": 1}


def run_config(run_dir: Path, env_overrides: DictConfig | None = None) -> DictConfig:
    """A training run's saved config (``.hydra/config.yaml``) with ``env_overrides`` merged into its ``env``.

    :raises FileNotFoundError: ``run_dir`` is missing or is not a training run's directory.
    :raises ValueError: an override names a key the run's env does not have, or gives it a value the env fails on.
    """
    path = RunDir(run_dir).config
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(
            f"run directory {run_dir} does not exist; pass the directory of a training run "
            "(outputs/<date>/<time>_<env>_<algo>_seed<N>, or outputs/latest)."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} has no .hydra/config.yaml, so it is not a training run; pass the directory train.py wrote."
        )
    cfg = checkpoints.read_yaml(path)
    unknown = sorted(set(env_overrides or {}) - set(cfg.env))
    if unknown:
        raise ValueError(f"env.{unknown[0]} is not a key of {cfg.env.id}'s config; choose from {sorted(cfg.env)}.")
    if env_overrides:
        cfg.env = OmegaConf.merge(cfg.env, env_overrides)
        validate_env_config(cfg.env)
    return cfg


def model_file(run_dir: Path, model: str = DEFAULT_MODEL) -> Path:
    """The zip of one of a run's models: ``best`` (best periodic evaluation), ``final`` (end of training) or
    ``latest`` (the newest complete checkpoint).

    :raises ValueError: an unknown ``model``.
    :raises FileNotFoundError: the run has no such model (yet).
    """
    if model not in MODEL_NAMES:
        raise ValueError(f"unknown model '{model}'; choose one of {MODEL_NAMES}.")
    run_dir = Path(run_dir)
    if model == "latest":
        latest = checkpoints.latest_checkpoint(RunDir(run_dir).checkpoints)
        if latest is None:
            raise FileNotFoundError(f"no complete checkpoint in {run_dir / 'checkpoints'}; choose model=best or final.")
        return latest / checkpoints.MODEL_FILE
    path = RunDir(run_dir).model(model)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist (a run writes it when training ends); choose model=latest, its newest "
            "checkpoint, or resume the run."
        )
    return path


def read_statistics(path: Path) -> VecNormalize:
    """Saved ``VecNormalize`` observation statistics, frozen, without the env they wrapped (acting only
    normalises with them).

    :raises ValueError: the file is corrupt (named).
    """
    try:
        with open(path, "rb") as handle:
            vec_normalize = pickle.load(handle)
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError, IndexError) as error:
        raise ValueError(
            f"{path} (the model's observation statistics) is corrupt ({type(error).__name__}); restore it, or "
            "evaluate another of the run's models (model=latest, checkpoint=<run>/checkpoints/step_*/model.zip)."
        ) from None
    vec_normalize.training = False
    return vec_normalize


def load_model(
    path: Path, run_dir: Path, train_cfg: DictConfig, env: gym.Env | None = None
) -> tuple[BaseAlgorithm, VecNormalize | None]:
    """An SB3 zip loaded to act, with the observation statistics it was trained with.

    :param path: the model zip (a run's best or final model, or a checkpoint's ``model.zip``).
    :param run_dir: the run it belongs to: its newest checkpoint holds the statistics of zips written
        before statistics were saved beside models.
    :param train_cfg: the run's config (``run_config``): its algorithm and whether it normalised.
    :param env: if given, the zip's observation and action spaces must be this env's.
    :returns: (model on the CPU, its frozen ``VecNormalize``; None when the run does not normalise).
    """
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass an SB3 .zip (e.g. {run_dir}/best_model.zip).")
    try:
        model = algorithm_named(train_cfg.algo.name).sb3_class.load(path, device="cpu", custom_objects=ACTING_OBJECTS)
    except Exception as error:  # truncated zip, not a zip, missing entries
        raise ValueError(
            f"checkpoint {path} is unreadable ({type(error).__name__}: {error}); pass another .zip."
        ) from None
    for name in ("observation_space", "action_space") if env is not None else ():
        if getattr(model, name) != getattr(env, name):
            raise ValueError(
                f"checkpoint {path} has {name} {getattr(model, name)} but the env {train_cfg.env.id} has "
                f"{getattr(env, name)}; evaluate it with the env config it was trained with (check env.* overrides "
                "and run=)."
            )
    # Saved beside the zip (best/final model), in its checkpoint directory, or, for zips from before
    # statistics were saved with models, in the newest checkpoint.
    beside = (checkpoints.statistics_path(path), path.parent / checkpoints.VECNORMALIZE_FILE)
    statistics = next((candidate for candidate in beside if candidate.is_file()), None)
    if statistics is None and train_cfg.normalize_observations:
        latest = checkpoints.latest_checkpoint(RunDir(run_dir).checkpoints)
        statistics = latest / checkpoints.VECNORMALIZE_FILE if latest else None
        if statistics is None or not statistics.is_file():
            raise FileNotFoundError(
                f"{path} acts on normalised observations, but no statistics are beside it ({beside[0].name}) or in "
                f"{run_dir / 'checkpoints'}; copy the run directory whole."
            )
    return model, read_statistics(statistics) if statistics else None


@dataclass(frozen=True)
class RunPolicy:
    """A training run's policy, acting in numpy alone, and the env it was trained for.

    :param lean: the deterministic actor with the run's observation normalisation (``LeanPolicy``; its
        ``save`` writes a ``policy.npz`` that needs only numpy and rlik/policy/lean.py).
    :param env_id: the gymnasium id of the env it was trained on.
    :param env_kwargs: ``gym.make`` keyword arguments that rebuild that env: every env key of the run's
        config and ``max_episode_steps``.
    :param config: the run's whole training config (``.hydra/config.yaml``).
    :param model_path: the SB3 zip it was read from.
    """

    lean: LeanPolicy
    env_id: str
    env_kwargs: dict[str, Any]
    config: DictConfig
    model_path: Path

    @property
    def normalization(self) -> dict[str, Normalization]:
        """The observation statistics it normalises with, by observation key (``""`` for a Box
        observation); empty when the run did not normalise. Observations go in unnormalised."""
        return self.lean.normalization

    def act(self, observation: dict[str, Any] | np.ndarray) -> np.ndarray:
        """Actions in the env's action space: (n_actions,) for one observation as the env returns it (a dict
        of arrays or an array), (n, n_actions) for a batch with a leading dimension n."""
        return self.lean.act(observation)

    __call__ = act


def load_policy(run_dir: str | os.PathLike, model: str = DEFAULT_MODEL) -> RunPolicy:
    """The policy of a training run, ready to act: ``policy.act(observation)``.

    :param run_dir: the run's directory (``outputs/<date>/<time>_<env>_<algo>_seed<N>``, ``outputs/latest``).
    :param model: ``final`` (the model training ended with; the default of evaluate.py too), ``best`` (best periodic evaluation) or
        ``latest`` (the newest checkpoint, e.g. of a run still training).
    :raises FileNotFoundError: no such run directory, or no such model in it.
    :raises ValueError: an unknown ``model``, an unreadable zip, or an actor the lean path does not convert.
    """
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    path = model_file(run_dir, model)
    sb3_model, vec_normalize = load_model(path, run_dir, config)
    env_config = OmegaConf.to_container(config.env, resolve=True)
    lean = lean_policy(sb3_model, vec_normalize, source=str(path.resolve()), env=env_config)
    make_kwargs = {**env_kwargs(config.env), "max_episode_steps": config.env.max_episode_steps}
    return RunPolicy(lean, config.env.id, make_kwargs, config, path)
