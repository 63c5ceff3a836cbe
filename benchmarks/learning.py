"""Learning speed of a training config over seeds: env steps and wall time to 50 %, 90 % and 95 % success.

Trains ``python train.py <overrides> seed=S`` for each of ``--seeds`` (one after another, or
``--jobs 2`` side by side with one torch thread each), or, with ``--from-runs``, only analyses run
directories trained elsewhere (finished or still running). For each run, from the periodic held-out
evaluations in progress.csv: the first env steps, and wall seconds in ``learn()`` (resumes included), at which
``eval/success_rate`` reached each threshold; from metrics.json: the final success rate, fall rate,
median and 95th-percentile final distance, and the seconds in ``learn()``. Prints one row per run and a mean row,
writes the rows as CSV and plots the learning curves with rlik-plot's figure (rlik/evaluation/learning_curves.py: the mean over seeds
with the 95 % bootstrap interval of the mean, up to the shortest run's last evaluation).

    python benchmarks/learning.py                                         # planar arm, seeds 0,1,2
    python benchmarks/learning.py --seeds 0,1 --jobs 2 env=humanoid total_timesteps=300000
    python benchmarks/learning.py --from-runs outputs/learning/<time>/seed* --tag humanoid_fall50
"""

from __future__ import annotations

import argparse
import csv
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, BenchmarkError, reject_overrides, run_cli, train

sys.path.insert(0, str(REPO))  # this checkout's rlik, even where another is installed
from rlik.evaluation.learning_curves import Configuration, Run, learning_figure, load_run, save  # noqa: E402

THRESHOLDS = (0.5, 0.9, 0.95)
# metrics.json, in the table and CSV
FINAL_KEYS = ("success_rate", "fall_rate", "final_distance_median", "final_distance_p95", "learn_seconds")


def train_seeds(seeds: list[int], overrides: list[str], runs_dir: Path, jobs: int) -> list[Path]:
    """One train.py run per seed in ``runs_dir/seed<S>``, ``jobs`` at a time; their directories."""
    run_dirs = [runs_dir / f"seed{seed}" for seed in seeds]
    for run_dir in run_dirs:
        if run_dir.exists():
            raise BenchmarkError(f"{run_dir} exists; choose another --runs-dir, or analyse it with --from-runs.")
    # Side by side, one thread each, so two jobs fill two cores without fighting.
    threads = ["torch_threads=1"] if jobs > 1 else []

    # Set on a failure or Ctrl-C: no further seed starts. A worker sets it too, as it may pick up
    # the next seed before the main thread sees the failure.
    stop = threading.Event()

    def run(seed: int, run_dir: Path) -> None:
        if stop.is_set():
            return
        run_dir.mkdir(parents=True)
        print(f"seed {seed}: training in {run_dir} (train.py output in stdout.log there)", flush=True)
        start = time.perf_counter()
        try:
            with open(run_dir / "stdout.log", "w") as log:
                metrics = train([*overrides, *threads, f"seed={seed}"], run_dir, log)
        except BenchmarkError as error:
            stop.set()
            raise BenchmarkError(f"seed {seed}: {error}") from None
        minutes = (time.perf_counter() - start) / 60
        print(f"seed {seed}: done in {minutes:.1f} min, final success {metrics['success_rate']:.1%}", flush=True)

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        list(pool.map(run, seeds, run_dirs))
    finally:
        stop.set()
        pool.shutdown(cancel_futures=True)
    return run_dirs


def csv_row(run: Run) -> dict[str, Any]:
    row: dict[str, Any] = {"run": str(run.path), "seed": run.seed, "env_id": run.env_id}
    for threshold in THRESHOLDS:
        reached = run.reached(threshold)
        row[f"steps_to_{threshold:g}"] = reached[0] if reached else ""
        row[f"seconds_to_{threshold:g}"] = f"{reached[1]:.1f}" if reached else ""
    final = run.final or {}
    return row | {key: final.get(key, "") for key in (*FINAL_KEYS, "num_timesteps")}


def print_table(runs: list[Run]) -> None:
    """One row per run, then the mean; a threshold's mean is over the runs that reached it ((k/n) if not all)."""
    name_width = max(len("mean"), *(len(run.path.name) for run in runs))

    def reach(steps: object, seconds: object) -> str:
        return f" {steps:>15} {seconds:>6}"

    def finals(values: list[dict[str, Any]]) -> str:
        if not values:
            return ""
        success, falls, median, p95, seconds = (np.mean([v[key] for v in values]) for key in FINAL_KEYS)
        errors = f"{1000 * median:.1f} / {1000 * p95:.1f} mm"
        return f" {success:>8.1%} {falls:>7.1%} {errors:>17} {seconds:>9.0f}"

    header = f"{'run':<{name_width}} {'seed':>4}"
    header += "".join(reach(f"{threshold:.0%} at steps", "s") for threshold in THRESHOLDS)
    header += f" {'success':>8} {'falls':>7} {'median / p95 err':>17} {'learn() s':>9}"
    print(header)
    print("-" * len(header))
    for run in runs:
        line = f"{run.path.name:<{name_width}} {run.seed:>4}"
        for threshold in THRESHOLDS:
            reached = run.reached(threshold)
            line += reach(reached[0], f"{reached[1]:.0f}") if reached else reach("never", "")
        print(line + finals([run.final] if run.final else []))
    line = f"{'mean':<{name_width}} {'':>4}"
    for threshold in THRESHOLDS:
        reached = [r for r in (run.reached(threshold) for run in runs) if r]
        if not reached:
            line += reach("never", "")
            continue
        count = "" if len(reached) == len(runs) else f" ({len(reached)}/{len(runs)})"
        steps, seconds = np.mean(reached, axis=0)
        line += reach(f"{steps:.0f}{count}", f"{seconds:.0f}")
    print(line + finals([run.final for run in runs if run.final]))


def seed_list(text: str) -> list[int]:
    return [int(seed) for seed in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2], help="comma-separated (default 0,1,2)")
    parser.add_argument("--jobs", type=int, default=1, help="training runs at a time (default 1)")
    parser.add_argument("--runs-dir", type=Path, help="where to train (default outputs/learning/<time>)")
    parser.add_argument("--from-runs", type=Path, nargs="+", metavar="DIR", help="analyse these runs; no training")
    parser.add_argument("--tag", help="name in the default --out and the plot title (default: the first run's env id)")
    parser.add_argument("--out", type=Path, help="OUT.csv and OUT.png (default benchmarks/results/learning_<tag>)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. env=humanoid")
    args = parser.parse_intermixed_args()
    # nargs="+" also takes overrides written after the directories.
    if args.from_runs and (args.overrides or any("=" in str(path) and not path.exists() for path in args.from_runs)):
        parser.error("overrides configure training; --from-runs only analyses existing runs")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if len(set(args.seeds)) < len(args.seeds):
        parser.error("--seeds repeats a seed")

    if args.from_runs:
        run_dirs = args.from_runs
    else:
        reject_overrides(args.overrides, {"seed", "hydra.run.dir"}, "--seeds and --runs-dir set them.")
        if args.jobs > 1:
            reject_overrides(args.overrides, {"torch_threads"}, "with --jobs > 1 every run uses one torch thread.")
        runs_dir = args.runs_dir or REPO / "outputs" / "learning" / time.strftime("%Y-%m-%d_%H-%M-%S")
        run_dirs = train_seeds(args.seeds, args.overrides, runs_dir, args.jobs)
        print(f"\nanalyse these runs again with --from-runs {runs_dir}/seed*\n")
    try:
        runs = [load_run(path) for path in run_dirs]
    except ValueError as error:  # not a run directory
        raise BenchmarkError(str(error)) from None

    tag = args.tag or runs[0].env_id
    out = args.out or REPO / "benchmarks" / "results" / f"learning_{tag}"
    out.parent.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out.parent / f"{out.name}.csv", out.parent / f"{out.name}.png"  # a tag may hold dots
    print_table(runs)
    for run in runs:
        if not run.steps.size:
            print(f"note: {run.path} has no periodic evaluation yet (eval.freq=0, or fewer steps than eval.freq)")
        if run.final is None:
            print(f"note: {run.path} has no metrics.json (still training, or stopped): its final columns are empty")
    rows = [csv_row(run) for run in runs]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {csv_path}")
    if evaluated := [run for run in runs if run.steps.size]:  # rlik-plot's figure, the seeds as one configuration
        seeds = ", ".join(str(run.seed) for run in evaluated)
        figure = learning_figure(
            [Configuration(f"mean of seeds {seeds}", evaluated)], f"{tag}: periodic held-out evaluation"
        )
        for threshold in THRESHOLDS:
            figure.axes[0].axhline(threshold, color="gray", lw=0.8, ls=":")
        print(f"wrote {save(figure, png_path)}")


if __name__ == "__main__":
    run_cli(main)
