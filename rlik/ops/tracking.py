"""Weights & Biases: offline unless logged in, never a prompt, SB3 metrics as wandb history charted against env
steps, per-goal evaluations as tables, models as artifacts; SB3 log lines for the terminal."""

from __future__ import annotations

import csv
import math
import netrc
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import wandb
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.logger import CSVOutputFormat, KVWriter

from rlik.ops.logs import say
from rlik.training.checkpoints import MODEL_FILE, atomic_write, statistics_path

WANDB_MODES = ("auto", "online", "offline", "disabled")
# The x axis of every chart: env steps, logged as ``global_step`` in each row. wandb's own ``_step`` counts log
# calls, and restarts in each segment of a resumed offline run. Globs match by prefix: SB3's families, the
# periodic and final evaluations, the curriculum, and evaluate.py's ``eval_<controller>/`` keys.
STEP_METRIC = "global_step"
METRIC_FAMILIES = ("rollout/*", "time/*", "train/*", "eval/*", "curriculum/*", "final/*", "eval_*")
# The columns of a per-goal table, in order (``EpisodeResult``'s fields but the per-step distances and the
# wall-clock control time); ``goal_kind`` only where the env reports one.
GOAL_COLUMNS = (
    "seed",
    "goal",
    "final_distance",
    "success",
    "fell",
    "unstable",
    "time_to_reach",
    "goal_kind",
    "episode_return",
    "mean_abs_torque",
    "steps",
)


def logged_in() -> bool:
    """True when an API key is at hand (env var or ~/.netrc), without asking the server or the user."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str) -> str:
    """``auto``: ``WANDB_MODE`` if set, else online when logged in, else offline."""
    if mode not in WANDB_MODES:
        raise ValueError(f"unknown wandb.mode '{mode}'; choose from {WANDB_MODES}.")
    if mode != "auto":
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if logged_in() else "offline")


def experiment_group(cfg: DictConfig) -> str:
    """The wandb group of a run outside a sweep: its env and algorithm (``PlanarArmReach-v0_ddpg``), the experiment
    its seeds and variants belong to."""
    return f"{cfg.env.id}_{cfg.algo.name}"


def experiment_tags(cfg: DictConfig) -> list[str]:
    """The wandb tags every run of a training config gets, before the user's own (``wandb.tags``): env id, algorithm."""
    return [cfg.env.id, cfg.algo.name]


def init_run(
    wandb_cfg: DictConfig,
    config: dict[str, Any] | None,
    directory: str,
    run_id: str | None = None,
    group: str | None = None,
    job_type: str = "train",
    latest: bool = True,
    tags: list[str] | None = None,
) -> Any:
    """Start (or resume, by ``run_id``) a wandb run writing its files under ``directory``, its charts against
    ``global_step``; None if disabled. Named as ``directory`` (the run directory), unless ``wandb.name`` is set.

    :param group: the group unless ``wandb.group`` is set (``experiment_group``, a sweep's ``sweep-<name>``).
    :param latest: make it the ``latest-run`` of ``directory/wandb``, which ``wandb leet`` opens; False for a
        segment that only adds to a run (an evaluation), so that the training's segment stays the one shown.
    :param tags: tags before ``wandb.tags`` (``experiment_tags``).
    """
    run = _start_run(wandb_cfg, config, directory, run_id, group, job_type, latest, tags or [])
    if run is not None:
        # Recorded in every segment: a resumed offline run's charts use env steps too.
        run.define_metric(STEP_METRIC)
        for family in METRIC_FAMILIES:
            run.define_metric(family, step_metric=STEP_METRIC)
    return run


def _start_run(
    wandb_cfg: DictConfig,
    config: dict[str, Any] | None,
    directory: str,
    run_id: str | None,
    group: str | None,
    job_type: str,
    latest: bool,
    tags: list[str],
) -> Any:
    mode = resolve_mode(wandb_cfg.mode)
    if mode == "disabled":
        return None
    kwargs = {
        "project": wandb_cfg.project,
        "entity": wandb_cfg.entity,
        # The run directory's name (<time>_<env>_<algo>_seed<N>, or a sweep's job number): the run is found by it
        # in the UI and on disk alike. Not wandb's random name.
        "name": wandb_cfg.name or Path(directory).resolve().name,  # outputs/latest: the run it points at
        "group": wandb_cfg.group or group,
        "tags": list(dict.fromkeys([*tags, *wandb_cfg.tags])),
        "config": config,
        "dir": directory,
        "id": run_id,
        "resume": "allow" if run_id else None,
        "job_type": job_type,
    }
    # console="wrap": the run keeps the console lines (output.log), offline too, without redirecting the file
    # descriptors, which would take the terminal away from SB3's progress bar.
    settings = wandb.Settings(silent=True, console="wrap", init_timeout=wandb_cfg.init_timeout, symlink=latest)
    if mode != "online":
        return wandb.init(mode=mode, settings=settings, **kwargs)
    try:  # bounded by init_timeout: no network or no credentials must not stall training
        return wandb.init(mode="online", settings=settings, **kwargs)
    except wandb.errors.Error as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        print(
            f"warning: wandb online init failed ({reason}); logging offline under {directory}/wandb, "
            "upload later with `wandb sync <run dir>/wandb/offline-run-*`.",
            file=sys.stderr,
            flush=True,
        )
        return wandb.init(mode="offline", settings=settings, **kwargs)


class WandbOutputFormat(KVWriter):
    """SB3 logger output that sends every dump to the active wandb run, keyed by env steps: its numbers, and
    its wandb tables (recorded with ``exclude=("csv",)``, as ``HeldOutEvaluation`` does)."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        logged = {
            key: value
            for key, value in key_values.items()
            if isinstance(value, (int, float, wandb.Table)) and "wandb" not in (key_excluded.get(key) or ())
        }
        self.run.log({**logged, STEP_METRIC: step})

    def close(self) -> None:
        pass


class ContinuedCSVOutputFormat(CSVOutputFormat):
    """SB3's ``progress.csv``, continued when a run resumes from its checkpoint at ``resume_step`` env steps.

    Rows up to ``resume_step`` stay; rows logged after that checkpoint (before a crash or a stop) are
    dropped, since the resumed run logs those steps again. ``resume_step`` None starts a new file.
    """

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        # Not SB3's __init__: it truncates the file.
        self.keys = _keep_rows(path, resume_step) if resume_step is not None and path.exists() else []
        # r+, not a+: SB3 rewrites from the start when new keys appear. Closed by close().
        self.file = open(path, "r+" if self.keys else "w+")  # noqa: SIM115
        self.file.seek(0, os.SEEK_END)
        self.separator, self.quotechar = ",", '"'


def _keep_rows(path: Path, last_step: int) -> list[str]:
    """Rewrite ``path`` (atomically) without its rows after ``last_step`` env steps; return its columns."""
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        columns, rows = list(reader.fieldnames or []), list(reader)

    def step(row: dict[str, str]) -> float:  # SB3's own dumps carry the step, the periodic evaluation's too
        return float(row.get("time/total_timesteps") or row.get("eval/env_steps") or 0)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(row for row in rows if step(row) <= last_step)

    atomic_write(path, write)
    return columns


class LineOutputFormat(KVWriter):
    """One ``[step N] key=value ...`` line per dump: quiet, greppable logs when stdout is not a terminal, or
    the periodic evaluations alone above a progress bar.

    :param prefix: only keys that start with it (``"eval/"``: the evaluations); a dump without any prints nothing.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        fields = " ".join(
            f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in sorted(key_values.items())
            if isinstance(value, (int, float, str)) and key.startswith(self.prefix)
        )
        if fields:
            say(f"[step {step}] {fields}")

    def close(self) -> None:
        pass


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)


def swept_values(
    task_overrides: list[str], sweep_dir: Path, sweeper_params: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The keys a sweep varies, each with this job's value: ``{"algo.learning_rate": 0.001, "seed": 2}``.

    :param task_overrides: this job's overrides (Hydra's ``overrides.task``), one value per key.
    :param sweep_dir: the sweep's directory; its ``multirun.yaml`` (written by Hydra's basic sweeper before the
        jobs start) holds the command line's overrides, the sweeps among them (``seed=0,1,2``, ``range``, ...).
    :param sweeper_params: ``hydra.sweeper.params``: the search space of the Optuna sweeper, or the basic
        sweeper's params; None when there are none.
    """
    parser = OverridesParser.create()
    keys = set(sweeper_params or ())
    launched = Path(sweep_dir) / "multirun.yaml"
    if launched.is_file():
        command_line = list(OmegaConf.load(launched).hydra.overrides.task)
        keys |= {o.key_or_group for o in parser.parse_overrides(command_line) if o.is_sweep_override()}
    return {o.key_or_group: o.value() for o in parser.parse_overrides(task_overrides) if o.key_or_group in keys}


def goal_table(episodes: list[dict[str, Any]]) -> wandb.Table:
    """A wandb table of one evaluation, one row per goal (``GOAL_COLUMNS``).

    :param episodes: ``episode_rows`` of the evaluation (metres, seconds of simulated time, N m); a time to
        reach of NaN (goal not held to the end) becomes an empty cell.
    """
    columns = [c for c in GOAL_COLUMNS if c != "goal_kind" or any(e.get(c) is not None for e in episodes)]

    def cell(value: Any) -> Any:
        return None if isinstance(value, float) and not math.isfinite(value) else value

    return wandb.Table(columns=columns, data=[[cell(e[c]) for c in columns] for e in episodes])


def log_model(run: Any, path: Path, alias: str, metadata: dict[str, Any]) -> None:
    """A model zip, with its ``_vecnormalize.pkl`` when there is one, as a version of the run's ``model``
    artifact ``model-<run id>`` with the alias ``alias`` (``"final"``, ``"best"``).

    The files are copied into the run's own wandb directory first and added from there: an offline run keeps
    its artifacts with its files for ``wandb sync``, unchanged when a resume later rewrites the models.

    :param metadata: what the version records about the model (JSON-able), e.g. its evaluation.
    """
    folder = Path(run.settings.sync_dir) / "artifacts" / alias
    folder.mkdir(parents=True, exist_ok=True)
    artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=metadata)
    # Named alike in every version (model.zip, model_vecnormalize.pkl), as evaluate.py checkpoint= expects them.
    for source, name in ((Path(path), MODEL_FILE), (statistics_path(path), statistics_path(Path(MODEL_FILE)).name)):
        if source.is_file():
            artifact.add_file(str(shutil.copy2(source, folder / name)), name=name, policy="immutable")
    run.log_artifact(artifact, aliases=[alias])
