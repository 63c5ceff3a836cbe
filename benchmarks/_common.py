"""What the training benchmarks share: running ``train.py`` (or this repo's Python) as a subprocess,
reading a run's ``metrics.json``, timing ``train.py`` runs, and reporting bad input in one line."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
# Timed runs: offline wandb, as in a run without login, and no work after learn() (which the rate
# does not see) beyond a 1-goal final evaluation.
RATE_ONLY_OVERRIDES = ["wandb.mode=offline", "eval.final_goals=1", "wandb.video_episodes=0"]


class BenchmarkError(Exception):
    """Bad input or a failed subprocess: printed as one ``error:`` line."""


def override_key(override: str) -> str:
    """The config key of a Hydra override: ``++hydra.run.dir=x`` -> ``hydra.run.dir``."""
    return override.split("=", 1)[0].lstrip("+~")


def reject_overrides(overrides: Iterable[str], keys: Iterable[str], reason: str) -> None:
    """Raise if an override sets one of ``keys``, which the benchmark sets itself."""
    clashes = sorted({override_key(o) for o in overrides} & set(keys))
    if clashes:
        raise BenchmarkError(f"drop {', '.join(k + '=' for k in clashes)} from the overrides: {reason}")


def run_python(args: Sequence[str], stdout: IO[str] | int = subprocess.PIPE) -> str:
    """Run ``python <args>`` in the repo; its stdout when piped. A failure raises with its last stderr line."""
    result = subprocess.run([sys.executable, *args], cwd=REPO, stdout=stdout, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        # wandb prints its own "wandb: ..." lines after the error on the way out: skip them.
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("wandb:")]
        last = lines[-1].strip().removeprefix("error: ") if lines else "no message on stderr"
        raise BenchmarkError(f"{Path(args[0]).name} failed (exit {result.returncode}): {last}")
    return result.stdout or ""


def train(overrides: Sequence[str], run_dir: Path, stdout: IO[str] | int = subprocess.DEVNULL) -> dict[str, Any]:
    """``python train.py <overrides>`` writing into ``run_dir``, without a progress bar; its metrics.json."""
    run_python(["train.py", *overrides, f"hydra.run.dir='{run_dir.resolve()}'", "progress_bar=false"], stdout)
    return read_metrics(run_dir)


def timed_train(overrides: Sequence[str], steps: int, run_dir: Path) -> float:
    """Env steps/s of ``model.learn()`` (metrics.json's ``learn_steps_per_second``) in
    ``python train.py <overrides> total_timesteps=<steps>``, writing into ``run_dir``."""
    return train([*RATE_ONLY_OVERRIDES, *overrides, f"total_timesteps={steps}"], run_dir)["learn_steps_per_second"]


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """``--steps`` and ``--repeats`` of a benchmark that times ``train.py`` runs, best of interleaved repetitions."""
    parser.add_argument("--steps", type=int, default=10_000, help="env steps per training run (default 10000)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repetitions; the best is kept")


def timing_header(steps: int, repeats: int, overrides: Sequence[str]) -> str:
    """The first line a timing benchmark prints."""
    label = " ".join(overrides) or "(defaults)"
    return f"{steps} env steps x {repeats} interleaved repetitions (best kept); overrides: {label}\n"


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """A finished run's final evaluation (``metrics.json``; its per-episode rows dropped)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise BenchmarkError(f"{path} does not exist: {run_dir} is not a finished train.py run.")
    metrics = json.loads(path.read_text())
    metrics.pop("episodes", None)
    return metrics


def run_cli(main: Callable[[], None]) -> None:
    """Run ``main``; a BenchmarkError becomes one ``error:`` line on stderr and exit status 2, as in train.py."""
    try:
        main()
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
