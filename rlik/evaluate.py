"""Evaluate a saved policy, or the classical Jacobian controller, on a fixed, seeded set of goals.

    python evaluate.py run=outputs/<date>/<run>                       # final_model.zip on 200 held-out goals
    python evaluate.py run=<run dir> controller=jacobian              # classical baseline, same env, same goals
    python evaluate.py checkpoint=<run dir>/checkpoints/step_<N>/model.zip env.success_threshold=0.005
    python evaluate.py run=<run dir> video=true plots=true            # + eval_<controller>.mp4 and PNGs
    python evaluate.py sweep=multirun/<date>                          # every job, ranked (+ CSV)
    python evaluate.py run=<run dir> export=true                      # policy.npz + policy.onnx of its model
    python evaluate.py run=<run dir> watch=true [controller=jacobian]  # in PyBullet's window (rlik-enjoy run=...)

The env is rebuilt from the run's .hydra/config.yaml (env.* overrides on top). Writes
<run dir>/eval_<controller>.json: the summary (distances m, times s, torques N m, compute times
microseconds) and one row per episode; prints it beside the other controllers' eval files.

This module reads the command line and picks the mode; the work is in rlik/evaluation/: run.py (a run's controllers
evaluated, exported, watched), report.py (the table and eval files), ranking.py (sweep=), config.py (the schema).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from rlik.evaluation.config import register_evaluate_config, validate_evaluate_config
from rlik.evaluation.ranking import evaluate_sweep
from rlik.evaluation.run import evaluate_run, export_run, run_dir_of, watch_run
from rlik.ops.cli import exit_bad_input, run_main
from rlik.ops.interrupts import Interrupted, SignalStop
from rlik.paths import CONF_DIR

register_evaluate_config()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """Evaluate, rank a sweep, export or watch, as ``cfg`` asks; a bad value or a missing file ends in one line.

    :param cfg: the composed ``EvaluateConfig`` (conf/evaluate.yaml and the command line).
    """
    try:
        validate_evaluate_config(cfg)
        torch.set_num_threads(cfg.torch_threads)
        run_dir = run_dir_of(Path(cfg.checkpoint)) if cfg.checkpoint and not cfg.run else Path(cfg.run or ".")
        if cfg.sweep:
            evaluate_sweep(cfg, Path(cfg.sweep))
        elif cfg.export:
            export_run(cfg, run_dir)
        elif cfg.watch:
            watch_run(cfg, run_dir)
        else:
            evaluate_run(cfg, run_dir)
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def cli() -> None:
    """``python evaluate.py`` and the ``rlik-evaluate`` console script."""
    # env.* keys are the run's, unknown to the schema: add them (run_config then checks them against the run).
    if any(a.startswith("env=") for a in sys.argv[1:]):
        exit_bad_input(
            "evaluate.py evaluates a run on the env it was trained on: env= is not one of its keys; change one of "
            "the run's env keys with env.<key>=<value>, or evaluate another run with run=<dir>."
        )
    sys.argv[1:] = [f"++{a}" if a.startswith("env.") else a for a in sys.argv[1:]]
    # Ctrl-C or SIGTERM: an evaluation cut short ends at once, in one line (its files are written whole or not at all).
    stop = SignalStop()
    stop.install()
    try:
        run_main(main, "evaluate.py")
    except Interrupted as interrupted:
        print(
            f"interrupted ({interrupted.name}): evaluation stopped; files it wrote are whole, the rest unwritten.",
            file=sys.stderr,
        )
        sys.exit(interrupted.exit_code)
    finally:
        stop.uninstall()


def enjoy() -> None:
    """The ``rlik-enjoy`` console script: ``evaluate.py watch=true`` (rl-baselines3-zoo's ``enjoy``)."""
    sys.argv.insert(1, "watch=true")
    cli()


if __name__ == "__main__":
    cli()
