"""Env steps/s of ``train.py`` under config variants, side by side in one run.

Each ``--variant`` is a set of Hydra overrides (one quoted argument) applied on top of the overrides
shared by all. The default compares 1 torch thread with 2: SB3's gradient steps are most of a humanoid
run's time, and on this 2-core machine a run alone can give torch both cores while runs side by side
(a joblib sweep) take one each. The variants alternate ``--repeats`` times and the best of each is
kept (a shared machine is noisy). The rate is metrics.json's ``learn_steps_per_second``: the wall time
of ``model.learn()``, periodic evaluation and checkpoints included. Run it on an idle machine: a busy
core is what it measures.

    python benchmarks/train_variants.py                                  # planar arm, 10000 steps
    python benchmarks/train_variants.py --steps 10000 env=humanoid checkpoint.freq=10000
    python benchmarks/train_variants.py --variant algo.fused_optimizer=false --variant algo.fused_optimizer=true env=humanoid
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import add_timing_arguments, reject_overrides, run_cli, timed_train, timing_header

DEFAULT_VARIANTS = ["torch_threads=1", "torch_threads=2"]
SET_BY_BENCHMARK = {"total_timesteps", "hydra.run.dir"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_timing_arguments(parser)
    parser.add_argument(
        "--variant",
        action="append",
        dest="variants",
        help=f"overrides of one variant, space-separated; repeat for each (default: {' and '.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. env=humanoid")
    args = parser.parse_intermixed_args()
    variants = args.variants or DEFAULT_VARIANTS
    if args.steps <= 0 or args.repeats <= 0:
        parser.error("--steps and --repeats must be > 0")
    if len(set(variants)) < 2:
        parser.error("give at least two different --variant")
    reject_overrides([*args.overrides, *" ".join(variants).split()], SET_BY_BENCHMARK, "the benchmark sets them.")

    print(timing_header(args.steps, args.repeats, args.overrides))
    best = dict.fromkeys(variants, 0.0)
    for repeat in range(args.repeats):
        for variant in variants:
            with tempfile.TemporaryDirectory(prefix="train_variants_") as tmp:
                rate = timed_train([*args.overrides, *variant.split()], args.steps, Path(tmp) / "run")
            best[variant] = max(best[variant], rate)
            print(f"repetition {repeat + 1}/{args.repeats}, {variant}: {rate:.1f} env steps/s", flush=True)

    width = max(len("variant"), *(len(v) for v in variants))
    print(f"\n{'variant':<{width}} {'steps/s':>8} {'x first':>8}")
    for variant, rate in best.items():
        print(f"{variant:<{width}} {rate:>8.1f} {rate / best[variants[0]]:>8.2f}")


if __name__ == "__main__":
    run_cli(main)
