"""train.py's command-line failures as one line each: Hydra's composition errors, a failed sweep job, a signal, a
run directory that is taken."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rlik.ops.interrupts import Interrupted
from rlik.ops.logs import exit_bad_input
from rlik.paths import RunDir
from rlik.training import checkpoints

# Hydra plugins of the extras (pyproject.toml): the configs a missing one leaves unloadable, and the extra to install.
PLUGIN_EXTRAS = {"hydra/launcher/submitit": "sweeps", "hydra/sweeper/optuna": "sweeps"}


def config_error_line(error: BaseException, script: str = "train.py") -> str:
    """Hydra's several-line composition error (unknown key, option or type) as one line with the fix.

    :param script: the command whose ``--cfg job`` lists the keys (``train.py`` or ``evaluate.py``).
    """
    text = f"{error}\n{error.__cause__ or ''}"
    for config, extra in PLUGIN_EXTRAS.items():
        if f"Could not load '{config}" in text:
            return f"{text.splitlines()[0]} Its Hydra plugin is not installed: pip install 'rlik[{extra}]'."
    skip = ("full_key:", "object_type=", "reference_type=", "To append", "Config search path", "provider=", "schema_")
    parts = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(skip)]
    message = " ".join(p if p.endswith((".", ":", ",")) else p + ";" for p in parts).rstrip(";")
    return f"{message}; fix the override (python {script} --cfg job shows every key and value)."


def run_main(main: Callable[[], Any], script: str = "train.py") -> None:
    """Call a ``@hydra.main`` function with Hydra's composition errors as one line (unless the user asked for
    Hydra's full reports with ``HYDRA_FULL_ERROR=1``).

    :param script: the command being run, named in the fix.
    """
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises composition errors instead of printing them
    try:
        main()
    except (ConfigCompositionException, OverrideParseException) as error:
        exit_bad_input(config_error_line(error, script))


def report_failed_job(error: BaseException) -> None:
    """In a multirun: one line naming the failed job, on stderr and in ``<sweep dir>/failed_jobs.txt``."""
    hydra_cfg = HydraConfig.get()
    line = f"job #{hydra_cfg.job.num} ({hydra_cfg.job.override_dirname or 'no overrides'}) failed: {error}"
    print(f"error: {line}", file=sys.stderr, flush=True)
    logging.getLogger(__name__).error(line)
    sweep_dir = Path(hydra_cfg.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / "failed_jobs.txt", "a") as handle:  # one short append per job: no interleaving
        handle.write(line.replace("\n", " ") + "\n")


def interrupted_line(interrupted: Interrupted, run_dir: Path) -> str:
    """What a signal left behind in ``run_dir`` and how to go on, in one line."""
    resume = f"continue with: python train.py resume={run_dir}"
    if interrupted.checkpoint is not None:
        step = checkpoints.read_state(interrupted.checkpoint)["num_timesteps"]
        return f"interrupted at step {step} ({interrupted.name}): checkpoint saved; {resume}"
    latest = checkpoints.latest_checkpoint(RunDir(run_dir).checkpoints)
    if latest is None:
        return f"interrupted ({interrupted.name}) before the first checkpoint: nothing saved; start the run again."
    step = checkpoints.read_state(latest)["num_timesteps"]
    return f"interrupted ({interrupted.name}); the newest checkpoint is at step {step}; {resume}"


class NewRunDirectory(Callback):
    """Hydra callback (``hydra.callbacks`` in conf/config.yaml): a new run, or a sweep, never lands in a
    directory that holds another run or one in use. Hydra calls it before it writes ``.hydra/`` and its log
    there (a resumed run's directory is checked by train.py's ``check_resume_argument``, earlier still).

    Its refusal is ``exit_bad_input``'s exit: Hydra turns a callback's exceptions into warnings and goes on.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.resume:
            return
        try:
            checkpoints.RunLock.claim(Path(config.hydra.run.dir))
        except (checkpoints.RunInUse, checkpoints.RunDirectoryTaken) as error:
            exit_bad_input(str(error))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        # The jobs' directories are <sweep dir>/<subdir>: any earlier sweep's job there would be mixed.
        for job_dir in sorted(sweep_dir.iterdir()) if sweep_dir.is_dir() else []:
            if job_dir.is_dir() and any(path.exists() for path in RunDir(job_dir).run_files()):
                exit_bad_input(
                    f"sweep directory {sweep_dir} already holds the runs of another sweep ({job_dir.name}/, ...); "
                    f"give this sweep another hydra.sweep.dir (a job of it continues with python train.py "
                    f"resume={job_dir})."
                )
