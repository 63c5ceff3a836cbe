"""Weights & Biases: offline unless logged in, never a prompt, SB3 metrics as wandb history."""

from __future__ import annotations

import csv
import netrc
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import wandb
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.logger import CSVOutputFormat, KVWriter

from pipeline.checkpoints import atomic_write

WANDB_MODES = ("auto", "online", "offline", "disabled")


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


def init_run(
    wandb_cfg: DictConfig,
    config: dict[str, Any],
    directory: str,
    run_id: str | None = None,
    group: str | None = None,
    job_type: str = "train",
) -> Any:
    """Start (or resume, by ``run_id``) a wandb run writing its files under ``directory``; None if disabled."""
    mode = resolve_mode(wandb_cfg.mode)
    if mode == "disabled":
        return None
    kwargs = {
        "project": wandb_cfg.project,
        "entity": wandb_cfg.entity,
        "name": wandb_cfg.name,
        "group": wandb_cfg.group or group,
        "tags": list(wandb_cfg.tags),
        "config": config,
        "dir": directory,
        "id": run_id,
        "resume": "allow" if run_id else None,
        "job_type": job_type,
    }
    settings = wandb.Settings(silent=True, console="off", init_timeout=wandb_cfg.init_timeout)
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
    """SB3 logger output that sends every dump to the active wandb run, keyed by env steps."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        scalars = {
            key: value
            for key, value in key_values.items()
            if isinstance(value, (int, float)) and "wandb" not in (key_excluded.get(key) or ())
        }
        self.run.log({**scalars, "global_step": step})

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
    """One ``key=value`` line per dump: quiet, greppable logs when stdout is not a terminal."""

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        fields = " ".join(
            f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in sorted(key_values.items())
            if isinstance(value, (int, float, str))
        )
        print(f"[step {step}] {fields}", flush=True)

    def close(self) -> None:
        pass


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)
