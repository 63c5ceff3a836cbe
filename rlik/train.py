"""Train a learned-IK policy with SB3 (DDPG by default) under Hydra, logging to Weights & Biases.

    python train.py                                   # planar arm, DDPG, default budget
    python train.py env=humanoid total_timesteps=300000
    python train.py -m seed=0,1,2 algo.learning_rate=1e-3,3e-4 hydra/launcher=joblib
    python train.py resume=outputs/2026-11-23/12-00-00-123456_PlanarArmReach-v0_ddpg_seed0
    python -m rlik.train ...  and  rlik-train ...     # the same command

The command around one run: Hydra's config and run directory, the run's lock, signals, and every failure as one
line (rlik/ops/cli.py). The run itself, step by step, is ``rlik.training.run.train``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rlik.ops import interrupts
from rlik.ops.cli import exit_bad_input, interrupted_line, report_failed_job, run_main
from rlik.ops.interrupts import Interrupted
from rlik.paths import CONF_DIR, RunDir
from rlik.training import checkpoints
from rlik.training.config import register_configs
from rlik.training.resume import check_resume_argument
from rlik.training.run import train

register_configs()
# A resumed run writes into its own directory and keeps its original .hydra/config.yaml.
OmegaConf.register_new_resolver("run_dir_or_resume", lambda resume, default: resume or default)
OmegaConf.register_new_resolver("hydra_subdir", lambda resume: ".hydra_resume" if resume else ".hydra")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    """One training job (of a multirun too) in Hydra's run directory; its failures as one line each.

    :return: the final success rate on the held-out goals, in [0, 1] (the Optuna sweeper's objective).
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        # One trainer per run directory: a second one (say, a resume= typed twice) is refused untouched. A new
        # run's lock was taken before Hydra wrote here (rlik.ops.cli.NewRunDirectory); the others take it now.
        lock = checkpoints.RunLock.take(run_dir)
    except checkpoints.RunInUse as error:
        if multirun:
            report_failed_job(error)
            raise
        exit_bad_input(str(error))
    try:
        with lock:
            return train(cfg, run_dir, multirun)
    except Interrupted as interrupted:
        # Stopped before a checkpoint (in start-up): nothing to resume, so no half-made run directory either.
        if not cfg.resume and checkpoints.latest_checkpoint(RunDir(run_dir).checkpoints) is None:
            lock.undo_start(run_dir)
        print(interrupted_line(interrupted, run_dir), file=sys.stderr, flush=True)
        interrupts.SIGNAL_STOP.hand_over(interrupted.signum)  # a submitit job's USR2: requeued as resume=<run dir>
        sys.exit(interrupted.exit_code)
    except checkpoints.DiskWriteError as error:  # a full disk, a directory made read-only mid-run
        if multirun:
            report_failed_job(error)
            raise
        print(f"error: {error}, then continue with: python train.py resume={run_dir}", file=sys.stderr)
        sys.exit(1)
    except (ValueError, FileNotFoundError) as error:
        # Bad input found before training: say it in one line, and take back what this start wrote (a resumed
        # run's directory keeps everything).
        if not cfg.resume and not (RunDir(run_dir).checkpoints).exists():
            lock.undo_start(run_dir)
        if multirun:
            # The launcher records the failure and runs the other jobs; the sweep exits non-zero at the end.
            report_failed_job(error)
            raise
        exit_bad_input(str(error))
    except Exception as error:
        if multirun:
            report_failed_job(error)
        raise


def cli() -> None:
    """``python train.py``, ``python -m rlik.train`` and the ``rlik-train`` console script."""
    # Hydra makes the run directory (resume= reuses it) before main runs: check resume= first.
    if problem := check_resume_argument(sys.argv[1:]):
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    interrupts.SIGNAL_STOP.install()
    try:
        run_main(main)
    except Interrupted as interrupted:  # a signal while Hydra starts the run, before main()
        for run_dir, lock in checkpoints.RunLock.claimed.items():  # a new run's directory, claimed: taken back
            lock.undo_start(run_dir)
        print(f"interrupted ({interrupted.name}) before training started: nothing saved.", file=sys.stderr)
        sys.exit(interrupted.exit_code)
    finally:
        interrupts.SIGNAL_STOP.uninstall()


if __name__ == "__main__":
    cli()
