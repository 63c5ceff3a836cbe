"""Env steps/s of ``train.py`` with 1 torch thread against 2, side by side in one run.

SB3's gradient steps are most of a humanoid run's time. On this 2-core machine a run alone can
give torch both cores (``torch_threads=2``); runs side by side (a joblib sweep) take one each. This
times the same config at each thread count, alternating ``--repeats`` times and keeping the best
of each (a shared machine is noisy). The rate is metrics.json's ``learn_steps_per_second``: the
wall time of ``model.learn()``, periodic evaluation and checkpoints included. Run it on an idle
machine: a busy core is what it measures.

    python benchmarks/torch_threads.py                                   # planar arm, 10000 steps
    python benchmarks/torch_threads.py --steps 10000 env=humanoid checkpoint.freq=10000
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import add_timing_arguments, reject_overrides, run_cli, timed_train, timing_header


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_timing_arguments(parser)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (default 1 2)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. env=humanoid")
    args = parser.parse_intermixed_args()
    if args.steps <= 0 or args.repeats <= 0 or min(args.threads) <= 0:
        parser.error("--steps, --repeats and --threads must be > 0")
    reject_overrides(args.overrides, {"total_timesteps", "hydra.run.dir", "torch_threads"}, "the benchmark sets them.")

    print(timing_header(args.steps, args.repeats, args.overrides))
    best = dict.fromkeys(args.threads, 0.0)
    for repeat in range(args.repeats):
        for threads in args.threads:
            with tempfile.TemporaryDirectory(prefix="torch_threads_") as tmp:
                rate = timed_train([*args.overrides, f"torch_threads={threads}"], args.steps, Path(tmp) / "run")
            best[threads] = max(best[threads], rate)
            print(
                f"repetition {repeat + 1}/{args.repeats}, torch_threads={threads}: {rate:.1f} env steps/s", flush=True
            )

    baseline = best[args.threads[0]]
    print(f"\n{'torch_threads':>13} {'steps/s':>8} {f'x threads={args.threads[0]}':>12}")
    for threads, rate in best.items():
        print(f"{threads:>13} {rate:>8.1f} {rate / baseline:>12.2f}")


if __name__ == "__main__":
    run_cli(main)
