"""``resume=<run dir>``: the run's own config with this command line's changes on top, and what may change.

A resumed run continues its checkpoint: the model, its replay buffer and the task they were learnt on.
Keys that would change those (any ``env`` key or another ``env=`` preset, another ``algo=``, ``n_envs``,
the observation normalisation, and the algo keys that shape the networks, the exploration or the replay
buffer) are refused in one line, before Hydra writes anything into the run directory.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from rlik.paths import RunDir
from rlik.training import checkpoints
from rlik.training.algorithms import RESUMABLE_KEYS, algorithm_named
from rlik.training.averaging import ActorAverage
from rlik.training.config import TrainConfig
from rlik.training.factory import sb3_algo_kwargs

# Top-level keys a checkpoint fixes: its replay buffer holds transitions of n_envs envs, and its saved
# VecNormalize statistics (or their absence) decide what the policy's observations are normalised by.
FIXED_KEYS = ("n_envs", "normalize_observations", "normalize_goals")
# Config groups (conf/env/, conf/algo/): another preset is another task or another algorithm.
PRESET_GROUPS = ("env", "algo")


class ResumeRefused(ValueError):
    """Keys given with ``resume=`` that the resumed checkpoint fixes; the message names them and the fix."""

    def __init__(self, keys: Sequence[str]) -> None:
        them = "it" if len(keys) == 1 else "them"
        super().__init__(
            f"{', '.join(keys)} cannot change when a run resumes; drop {them} from the command or start a new run "
            f"(resumable: {', '.join(RESUMABLE_KEYS)})."
        )


def is_resumable(key: str) -> bool:
    """Whether the dotted config ``key`` may take a new value when a run resumes."""
    group, _, rest = key.partition(".")
    if group == "env" or key in FIXED_KEYS:
        return False
    return group != "algo" or rest.split(".")[0] in RESUMABLE_KEYS


def saved_config(run_dir: Path) -> DictConfig:
    """The run's ``.hydra/config.yaml`` on the current schema (struct): top-level and algo keys added since
    the run started take their defaults, so runs of an older checkout still resume."""
    saved = OmegaConf.merge(OmegaConf.structured(TrainConfig), checkpoints.read_yaml(RunDir(run_dir).config))
    saved.algo = OmegaConf.merge(OmegaConf.structured(algorithm_named(saved.algo.name).schema), saved.algo)
    OmegaConf.set_struct(saved, True)
    return saved


def saved_presets(run_dir: Path) -> dict[str, str]:
    """The ``env=`` and ``algo=`` presets the run started with, from Hydra's ``.hydra/hydra.yaml`` ({} if absent)."""
    path = RunDir(run_dir).hydra_config
    if not path.is_file():
        return {}
    choices = checkpoints.read_yaml(path).hydra.runtime.choices
    return {group: choices[group] for group in PRESET_GROUPS if group in choices}


def changed_values(before: Any, after: Any, prefix: str = "") -> dict[str, Any]:
    """The dotted keys whose value differs between two plain config trees, with their value in ``after``."""
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return {} if before == after else {prefix: after}
    changed: dict[str, Any] = {}
    for key, value in after.items():
        changed.update(changed_values(before.get(key), value, f"{prefix}.{key}" if prefix else str(key)))
    return changed


def resumed_config(resume: str, overrides: Sequence[str]) -> tuple[DictConfig, dict[str, Any]]:
    """The resumed run's own config with ``overrides`` applied on top, and the algo hyperparameters they change.

    :param resume: the run directory, as given to ``resume=``.
    :param overrides: this command line's task overrides (Hydra syntax, ``resume=`` among them or not).
    :return: the config to train with (``resume`` set), and ``{algo key: new value}`` of the keys changed.
    :raises ResumeRefused: an override picks another ``env=`` or ``algo=`` preset than the run's, or gives a
        key that is not ``is_resumable`` a new value (one given with the run's value is no change).
    """
    run_dir = Path(resume)
    presets = saved_presets(run_dir)
    other_presets, keys = [], []
    for override in overrides:
        key, _, value = override.partition("=")
        if key in PRESET_GROUPS:
            # The run's own preset again (say, its whole original command with resume= added) changes nothing.
            if value != presets.get(key):
                other_presets.append(override)
        elif key != "resume":
            keys.append(override)
    if other_presets:
        raise ResumeRefused(other_presets)
    saved = saved_config(run_dir)
    merged = OmegaConf.merge(saved, OmegaConf.from_dotlist(keys))
    changed = changed_values(*(OmegaConf.to_container(c, resolve=False) for c in (saved, merged)))
    if fixed := [key for key in changed if not is_resumable(key)]:
        raise ResumeRefused(fixed)
    merged.resume = resume
    return merged, {key.removeprefix("algo."): value for key, value in changed.items() if key.startswith("algo.")}


class CorruptCheckpoint(ValueError):
    """A checkpoint with a file that cannot be read (truncated, garbled); the message names the file."""


def read_checkpoint(checkpoint: Path, cfg: DictConfig, env: VecEnv) -> tuple[OffPolicyAlgorithm, ActorAverage | None]:
    """The model of ``checkpoint`` on ``env`` (wrapped in the checkpoint's normalisation statistics, if it has
    them), with its replay buffer and, when the run averages its actor, the mean so far.

    The config's hyperparameters, not those pickled in the zip: the run's config (with this command line's
    changes, which an earlier resume's command line does not carry over) is the truth.

    :raises CorruptCheckpoint: a file of it cannot be read.
    """

    def read(name: str, load: Callable[[Path], Any]) -> Any:
        try:
            return load(checkpoint / name)
        except Exception as error:  # pickle, zip and torch each fail in their own way on a cut-off file
            raise CorruptCheckpoint(f"{checkpoint / name} is corrupt ({type(error).__name__})") from None

    if not checkpoints.is_complete(checkpoint):
        raise CorruptCheckpoint(f"{checkpoint} is incomplete (its {checkpoints.STATE_FILE} or model zip is unreadable)")
    if (checkpoint / checkpoints.VECNORMALIZE_FILE).exists():
        env = read(checkpoints.VECNORMALIZE_FILE, lambda path: VecNormalize.load(str(path), env))
    hyperparameters = sb3_algo_kwargs(cfg.algo, RESUMABLE_KEYS)
    model = read(
        checkpoints.MODEL_FILE,
        lambda path: algorithm_named(cfg.algo.name).sb3_class.load(path, env=env, device=cfg.device, **hyperparameters),
    )
    if (checkpoint / checkpoints.REPLAY_FILE).exists():
        read(checkpoints.REPLAY_FILE, model.load_replay_buffer)
    average = None
    if cfg.algo.actor_average_start is not None:
        start = int(cfg.algo.actor_average_start * cfg.total_timesteps)
        average = read(checkpoints.AVERAGE_FILE, lambda path: ActorAverage.load(path, start))
    return model, average


def load_newest_checkpoint(
    run_dir: Path, cfg: DictConfig, env: VecEnv
) -> tuple[Path, OffPolicyAlgorithm, ActorAverage | None]:
    """The newest checkpoint of ``run_dir`` that reads whole, and ``read_checkpoint``'s model and actor average.

    A corrupt checkpoint (a disk error, a copy cut short: a crash never leaves one) is passed over for the one
    before it, with a ``warning:`` line naming the file; it stays on disk.

    :raises FileNotFoundError: none reads whole (the oldest one's problem named).
    """
    directory = RunDir(run_dir).checkpoints
    found = sorted(directory.glob("step_*")) if directory.is_dir() else []
    problem = ""
    for checkpoint in reversed(found):
        try:
            return checkpoint, *read_checkpoint(checkpoint, cfg, env)
        except CorruptCheckpoint as error:
            if checkpoint != found[0]:
                print(f"warning: {error}; resuming from the checkpoint before it.", file=sys.stderr, flush=True)
            problem = f" (the oldest: {error})"
    raise FileNotFoundError(f"no complete checkpoint in {directory}{problem}; start a new run instead.")


# A replay buffer's arrays with one row per stored step (ReplayBuffer, DictReplayBuffer: a dict of arrays per
# observation key; HerReplayBuffer: its infos and the start and length of each step's episode).
BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts", "infos")
HER_EPISODE_ARRAYS = ("ep_start", "ep_length")


def grow_replay_buffer(buffer: ReplayBuffer, size: int) -> bool:
    """Give ``buffer`` room for ``size`` transitions (over all its envs), keeping every stored one.

    A resume that extends the run (a larger ``total_timesteps``, which ``algo.buffer_size`` follows by default)
    would otherwise go on with the checkpoint's capacity and overwrite its oldest transitions. SB3 stores them in
    a ring of ``buffer_size`` rows (one column per env) written at ``pos``: a full ring is unrolled oldest first,
    so the new rows follow the newest, and HER's episode starts, which are row indices, move with their rows.

    :param size: transitions in all, as ``algo.buffer_size``; no larger than the buffer's capacity: unchanged.
    :return: whether the buffer grew.
    """
    rows, old = max(size // buffer.n_envs, 1), buffer.buffer_size
    if rows <= old:
        return False
    order = np.roll(np.arange(old), -buffer.pos) if buffer.full else np.arange(old)  # stored rows, oldest first

    def grown(array: np.ndarray) -> np.ndarray:
        new = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
        new[:old] = array[order]
        return new

    for name in (*BUFFER_ARRAYS, *HER_EPISODE_ARRAYS):
        value = getattr(buffer, name, None)
        if isinstance(value, dict):
            setattr(buffer, name, {key: grown(array) for key, array in value.items()})
        elif value is not None:
            setattr(buffer, name, grown(value))
    if buffer.full and hasattr(buffer, "ep_start"):
        # Row r of the ring is row (r - pos) % old now; an episode not yet begun (it starts at pos, the next row
        # written) starts at the first new row.
        buffer.ep_start[:old] = (buffer.ep_start[:old] - buffer.pos) % old
        current = buffer._current_ep_start
        buffer._current_ep_start = np.where(current == buffer.pos, old, (current - buffer.pos) % old)
    buffer.pos, buffer.full, buffer.buffer_size = old if buffer.full else buffer.pos, False, rows
    return True


def task_overrides(argv: Sequence[str]) -> list[str]:
    """The overrides of a command line that set the job's config (not Hydra's own ``hydra.*`` nor flags).

    :raises OverrideParseException: an override Hydra cannot parse.
    """
    candidates = [argument for argument in argv if "=" in argument and not argument.startswith("-")]
    parsed = OverridesParser.create().parse_overrides(candidates)
    return [override.input_line for override in parsed if not override.is_hydra_override()]


def check_resume_argument(argv: Sequence[str]) -> str | None:
    """The problem with a ``resume=<run dir>`` command line, found before Hydra writes into the run directory
    (its resume files, its log): a run directory that is not one, one in use, keys the run cannot change."""
    for argument in argv:
        if not argument.startswith("resume="):
            continue
        value = argument.split("=", 1)[1].strip("'\"")
        if value in ("", "null"):
            return None
        if any(a.startswith(("hydra.run.dir=", "++hydra.run.dir=")) for a in argv):
            return "resume= continues in the resumed run's own directory; drop hydra.run.dir= from the command."
        if not (RunDir(value).config).is_file():
            what = "is not a run directory (no .hydra/config.yaml)" if Path(value).is_dir() else "does not exist"
            return (
                f"resume={value}: {what}; pass the directory of an earlier run, e.g. resume=outputs/<date>/<time>_..."
            )
        try:
            checkpoints.RunLock.check_free(Path(value))
            resumed_config(value, task_overrides(argv))
        except (OmegaConfBaseException, OverrideParseException):
            # An unknown key, a wrong type, a sweep's list of values, bad syntax: Hydra's composition names
            # these in one line (or, in a sweep, each job's resume checks its own values).
            return None
        except (checkpoints.RunInUse, ValueError) as error:  # refused keys, a corrupt .hydra/ file
            return str(error)
    return None
