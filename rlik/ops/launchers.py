"""How sweep jobs share a machine and come back: torch threads per launcher, the run a requeued job resumes, and
where Ray runs. Used by ``train.py`` and by the launchers of ``hydra_plugins/rlik_launchers.py``."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rlik.paths import RunDir
from rlik.training import checkpoints

# Set in each job process by hydra/launcher=slurm_local (submitit's local executor): the jobs of its batch, which run
# side by side.
PARALLEL_JOBS_ENV = "RLIK_PARALLEL_JOBS"


def allocated_cores() -> int:
    """The cores this process may use: its affinity mask (a SLURM allocation with task binding, ``taskset``),
    at most SLURM's ``SLURM_CPUS_PER_TASK`` when set (an allocation that does not bind tasks to cores)."""
    cores = len(os.sched_getaffinity(0))
    slurm_cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(cores, int(slurm_cpus)) if slurm_cpus.isdigit() and int(slurm_cpus) > 0 else cores


def jobs_side_by_side(launcher: DictConfig | None, cores: int) -> int:
    """How many jobs of this sweep share ``cores`` with this one.

    :param launcher: the job's ``hydra.launcher`` node; None when not in a sweep.
    :param cores: the cores of this process (``allocated_cores``).
    :return: joblib's ``n_jobs`` (< 0 counts back from all cores, as joblib does), the jobs a submitit_local batch
        started together (``hydra/launcher=slurm_local``, ``$RLIK_PARALLEL_JOBS``), else 1: the basic launcher runs one job at a time and SLURM gives
        each job its own allocation.
    """
    if launcher is None:
        return 1
    if "n_jobs" in launcher:  # hydra-joblib-launcher
        n_jobs = int(launcher.n_jobs)
        return n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
    return max(1, int(os.environ.get(PARALLEL_JOBS_ENV, "1")))


def job_torch_threads(requested: int | None, launcher: DictConfig | None) -> int:
    """Torch threads for a training job.

    :param requested: ``torch_threads`` from the config; a number wins.
    :param launcher: the job's ``hydra.launcher`` node in a sweep, None for a single run.
    :return: under Ray, the CPUs the job reserved (``ray.remote.num_cpus``; Ray reserves 1 when unset); else this
        process's cores (``allocated_cores``) shared among the jobs beside it (``jobs_side_by_side``); at least 1.
    """
    if requested is not None:
        return requested
    if launcher is not None and "ray" in launcher:
        return max(1, int(launcher.ray.remote.get("num_cpus") or 1))
    cores = allocated_cores()
    return max(1, cores // jobs_side_by_side(launcher, cores))


def requeue_overrides(overrides: Sequence[str], run_dir: Path) -> list[str]:
    """The overrides a preempted or timed-out sweep job is requeued with.

    :param overrides: the job's overrides as launched.
    :param run_dir: the job's run directory.
    :return: ``resume=<run dir>`` alone when the run has a complete checkpoint (the run's own
        ``.hydra/config.yaml`` holds every value of its sweep point; a group choice such as ``algo=td3`` given
        again would be read as a value on resume), else ``overrides``: the job starts again.
    """
    if checkpoints.latest_checkpoint(RunDir(run_dir).checkpoints) is None:
        return list(overrides)
    return [f"resume={run_dir.resolve()}"]


def ray_init_options(init: Mapping[str, Any]) -> dict[str, Any]:
    """``ray.init``'s keyword arguments from ``hydra.launcher.ray.init``.

    :param init: the config node; ``address`` null means ``$RAY_ADDRESS`` when set, else a new Ray instance on this
        machine (``"local"``, not Ray's own fallback to a cluster it finds running here).
    :return: the options with the address settled; ``object_store_memory`` null when attaching to a running cluster
        (Ray refuses the option then; hydra-ray-launcher sets its own only where the key is absent).
    """
    options = dict(init)
    options["address"] = options.get("address") or os.environ.get("RAY_ADDRESS") or "local"
    if options["address"] != "local":
        options["object_store_memory"] = None
    return options


def absolute_sweep_dir_override(sweep_dir: str) -> str:
    """The Hydra override that sets ``hydra.sweep.dir`` to ``sweep_dir`` made absolute (from this process's working
    directory), quoted for Hydra's override grammar (where a backslash escapes only a quote or the backslashes before
    one, and the closing quote)."""
    path = re.sub(r"(\\*)('|$)", lambda m: 2 * m[1] + ("\\'" if m[2] else ""), os.path.abspath(sweep_dir))
    return f"hydra.sweep.dir='{path}'"
