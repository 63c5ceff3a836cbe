"""Env steps/s of our training loop (train.py) against a bare SB3 ``model.learn()`` on the same env and model.

"Ours" is ``python train.py <overrides> total_timesteps=N`` with the config's periodic held-out
evaluation, checkpointing, CSV, line and offline wandb logging; its rate is metrics.json's
``learn_steps_per_second`` (wall time of ``model.learn()``). "Bare" is this script run with ``--bare``:
it composes the same config with the same overrides, sets the same torch threads, builds the same
env and model with ``rlik.training.factory`` (and VecNormalize when ``normalize_observations``) and times
``model.learn(N)`` with no callbacks and SB3's default, silent logger. Both run as subprocesses, so
they pay the same start-up costs and share no torch state. They alternate ``--repeats`` times and
the best of each is kept, since a shared machine is noisy. Target: ours >= 0.9 x bare.

The periodic work keeps the config's frequencies (eval.freq 5000, checkpoint.freq 10000 steps by
default) rather than being scaled to N: its cost per env step is then that of a full run whenever
N is a multiple of both, as the default N is. The script prints how much periodic work ours did.
What train.py does after ``learn()`` (final evaluation, video) is outside the rate, so ours runs it
on 1 goal and without video to save time; the overrides can change these defaults.

    python benchmarks/train_throughput.py                       # planar arm, 10000 steps, 2 repeats
    python benchmarks/train_throughput.py --steps 20000 --repeats 3 env=humanoid
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    REPO,
    BenchmarkError,
    add_timing_arguments,
    reject_overrides,
    run_cli,
    run_python,
    timed_train,
    timing_header,
)
from omegaconf import OmegaConf

TARGET_RATIO = 0.9
BARE_RESULT = "bare_steps_per_second="  # the --bare child's result line (pybullet also prints on stdout)


def bare_rate(steps: int, overrides: list[str]) -> float:
    """Env steps/s of ``model.learn(steps)`` alone, on the env and model train.py would build."""
    sys.path.insert(0, str(REPO))  # this checkout's rlik, even where another is installed
    # Imported here: the parent process only starts subprocesses.
    import torch

    from rlik.ops.launchers import job_torch_threads
    from rlik.training.config import compose_train_config
    from rlik.training.factory import make_model, make_training_env

    cfg = compose_train_config(overrides)
    torch.set_num_threads(job_torch_threads(cfg.torch_threads, None))  # as train.py for a run alone
    model = make_model(
        cfg, make_training_env(cfg.env, cfg.n_envs, cfg.seed, cfg.normalize_observations, cfg.normalize_goals)
    )
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    return model.num_timesteps / (time.perf_counter() - start)


def measure_bare(steps: int, overrides: list[str]) -> float:
    """``bare_rate`` in a fresh process of this script."""
    stdout = run_python([__file__, "--bare", "--steps", str(steps), *overrides])
    match = re.search(rf"^{BARE_RESULT}(\S+)$", stdout, re.MULTILINE)
    if match is None:
        raise BenchmarkError(f"the --bare subprocess printed no {BARE_RESULT} line.")
    return float(match.group(1))


def periodic_work(run_dir: Path, steps: int) -> str:
    """What ours did inside learn(), from the run's composed config."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    evals = steps // cfg.eval.freq if cfg.eval.freq > 0 else 0
    saves = steps // cfg.checkpoint.freq if cfg.checkpoint.freq > 0 else 0
    buffer = " with replay buffer" if cfg.checkpoint.replay_buffer else ""
    text = f"{evals} periodic evaluations of {cfg.eval.periodic_goals} goals and {saves} checkpoints{buffer}"
    if any(freq > 0 and steps % freq for freq in (cfg.eval.freq, cfg.checkpoint.freq)):
        text += f" (--steps is not a multiple of eval.freq={cfg.eval.freq} and checkpoint.freq={cfg.checkpoint.freq}"
        text += ": their cost per step differs from a full run's)"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_timing_arguments(parser)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)  # the child process
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both, e.g. env=humanoid")
    args = parser.parse_intermixed_args()
    if args.bare:
        print(f"{BARE_RESULT}{bare_rate(args.steps, args.overrides)!r}", flush=True)
        return
    if args.steps <= 0 or args.repeats <= 0:
        parser.error("--steps and --repeats must be > 0")
    reject_overrides(args.overrides, {"total_timesteps", "hydra.run.dir"}, "the benchmark sets them (use --steps).")

    print(timing_header(args.steps, args.repeats, args.overrides))
    best_ours = best_bare = 0.0
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="train_throughput_") as tmp:
            run_dir = Path(tmp) / "run"
            ours = timed_train(args.overrides, args.steps, run_dir)
            if repeat == 0:
                print(f"ours did {periodic_work(run_dir, args.steps)}")
        bare = measure_bare(args.steps, args.overrides)
        best_ours, best_bare = max(best_ours, ours), max(best_bare, bare)
        print(f"repetition {repeat + 1}/{args.repeats}: ours {ours:.1f}, bare {bare:.1f} env steps/s", flush=True)

    ratio = best_ours / best_bare
    header = f"\n{'ours steps/s':>12} {'bare steps/s':>13} {'ratio':>6}"
    print(header)
    print("-" * len(header.strip()))
    verdict = "" if ratio >= TARGET_RATIO else f"  below target {TARGET_RATIO}"
    print(f"{best_ours:>12.1f} {best_bare:>13.1f} {ratio:>6.2f}{verdict}")
    print(f"\nratio = ours (train.py, callbacks and logging) / bare (model.learn alone); target >= {TARGET_RATIO}")


if __name__ == "__main__":
    run_cli(main)
