"""``rlik-plot``: learning curves of training runs from their periodic held-out evaluations (``progress.csv``).

    rlik-plot outputs/latest                        # one run: <run dir>/learning_curves.png
    rlik-plot multirun/2026-11-23_12-00-00-123456   # a sweep: one curve per configuration, its seeds pooled
    rlik-plot outputs/2026-11-23/*_seed0 outputs/2026-11-23/*_seed1   # runs: into their common parent directory
    python -m rlik.evaluation.learning_curves <dirs> --out curves.png

Success rate and median final distance (m) against env steps, and the fall rate when an evaluation saw a fall. Runs
that differ only in their seed are one configuration (as ``evaluate.py sweep=`` pools them): its curve is the mean
over seeds, with the 95 % bootstrap interval of that mean as a band, up to its shortest run's last evaluation.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import matplotlib
import numpy as np
from omegaconf import OmegaConf

from rlik.evaluation.sweeps import SEED_KEY, flatten, group_by_configuration, summarise_seeds, swept_keys
from rlik.ops.logs import exit_bad_input  # not rlik.ops.cli, which imports torch: this command starts fast
from rlik.paths import RunDir

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

PNG_NAME = "learning_curves.png"
# Run attribute -> progress.csv column, in the rows the periodic evaluation writes (rlik/training/callbacks.py).
EVAL_COLUMNS = {
    "steps": "eval/env_steps",
    "seconds": "eval/wall_seconds",
    "success": "eval/success_rate",
    "distance": "eval/final_distance_median",
    "fall": "eval/fall_rate",
}
# Panels: (Run attribute, y label, log scale).
PANELS = [("success", "success rate", False), ("distance", "median final distance (m)", True)]
FALL_PANEL = ("fall", "fall rate", False)


class PlainLogFormatter(LogFormatter):
    """Log-axis labels as plain numbers (0.05 m, not 5e-02)."""

    def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
        return f"{x:g}"


@dataclass
class Run:
    """A run's periodic evaluations (``progress.csv``) and, once finished, its final one (``metrics.json``)."""

    path: Path
    config: dict[str, Any]  # flattened: {"algo.learning_rate": 0.001, ...}
    steps: np.ndarray  # env steps at each periodic evaluation
    seconds: np.ndarray  # wall seconds in learn() (resumes included), at each
    success: np.ndarray  # fraction of the held-out goals reached
    distance: np.ndarray  # median final distance, m
    fall: np.ndarray  # fraction of episodes that fell
    final: dict[str, Any] | None  # metrics.json without its episodes; None while training

    @property
    def seed(self) -> int:
        return int(self.config[SEED_KEY])

    @property
    def env_id(self) -> str:
        return str(self.config["env.id"])

    def reached(self, threshold: float) -> tuple[int, float] | None:
        """Env steps and wall seconds of the first evaluation with success >= ``threshold``."""
        hits = np.flatnonzero(self.success >= threshold)
        return (int(self.steps[hits[0]]), float(self.seconds[hits[0]])) if hits.size else None


def is_run(path: Path) -> bool:
    """Whether ``path`` is a train.py run directory (it holds the run's .hydra/config.yaml)."""
    return (RunDir(path).config).is_file()


def load_run(path: Path) -> Run:
    """A train.py run directory's evaluations; ValueError naming the problem if it is not one."""
    if not path.is_dir():
        raise ValueError(f"{path} does not exist; pass a run directory (outputs/latest) or a sweep's directory")
    progress = RunDir(path).progress
    if not is_run(path) or not progress.is_file():
        raise ValueError(f"{path} is not a train.py run directory (no .hydra/config.yaml or progress.csv); pass one")
    with open(progress, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get(EVAL_COLUMNS["success"])]
    columns = {
        name: np.array([float(row.get(column) or "nan") for row in rows]) for name, column in EVAL_COLUMNS.items()
    }
    config = flatten(OmegaConf.to_container(OmegaConf.load(RunDir(path).config), resolve=True))
    final = None
    if (RunDir(path).metrics).is_file():
        final = {k: v for k, v in json.loads((RunDir(path).metrics).read_text()).items() if k != "episodes"}
    return Run(path, config, final=final, **columns)


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """Each path's run directory, or a sweep directory's runs (its job subdirectories, by job number)."""
    found: list[Path] = []
    for path in paths:
        if is_run(path):
            found.append(path)
            continue
        jobs = sorted((p for p in path.iterdir() if is_run(p)), key=job_order) if path.is_dir() else []
        if not jobs:
            raise ValueError(
                f"{path} is neither a run directory nor a sweep directory with runs in it; pass outputs/<date>/<run>, "
                "outputs/latest or multirun/<time>"
            )
        found += jobs
    return found


def job_order(path: Path) -> tuple[int, str]:
    """Sweep jobs 0, 1, ..., 10 in numeric order; other names after them, by name."""
    return (int(path.name), "") if path.name.isdigit() else (sys.maxsize, path.name)


@dataclass
class Configuration:
    """Runs that differ only in their seed, with the label of their curve (the swept values that set them apart)."""

    label: str
    runs: list[Run]


def configurations(runs: list[Run]) -> list[Configuration]:
    """``runs`` grouped by configuration (``rlik.evaluation.sweeps.group_by_configuration``), in order of their first run."""
    configs = [run.config for run in runs]
    keys = swept_keys(configs)
    groups = group_by_configuration(configs, keys)
    result = []
    for setting, indices in groups:
        members = [runs[i] for i in indices]
        first = members[0].config
        name = " ".join(f"{k}={v}" for k, v in setting.items()) or f"{first['env.id']} {first['algo.name']}"
        seeds = ", ".join(str(run.seed) for run in members)
        result.append(Configuration(f"{name} (seed{'s' if len(members) > 1 else ''} {seeds})", members))
    return result


def pooled(runs: list[Run], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One metric of ``runs`` on their common env steps (each interpolated, up to the shortest run's last evaluation):
    (steps, mean over runs, and the lower and upper ends of the 95 % bootstrap interval of the mean; None for one run).
    """
    end = min(run.steps[-1] for run in runs)  # every seed contributes to every point
    grid = np.unique(np.concatenate([run.steps[run.steps <= end] for run in runs]))
    curves = np.array([np.interp(grid, run.steps, getattr(run, name)) for run in runs])
    if len(runs) == 1:
        return grid, curves[0], None, None
    summaries = [summarise_seeds(column) for column in curves.T]
    low, high = (np.array([getattr(s, bound) for s in summaries]) for bound in ("ci_low", "ci_high"))
    return grid, curves.mean(axis=0), low, high


def learning_figure(configs: list[Configuration], title: str) -> Figure:
    """Panels of success rate, median final distance (log scale) and, if any evaluation saw a fall, the fall rate,
    against env steps; one line per configuration (its mean over seeds) with its interval as a band."""
    panels = PANELS + ([FALL_PANEL] if any(np.nanmax(run.fall) > 0 for c in configs for run in c.runs) else [])
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(8, 3.2 * len(panels)), squeeze=False)
    for ax, (name, label, log) in zip(axes[:, 0], panels):
        for index, config in enumerate(configs):
            steps, mean, low, high = pooled(config.runs, name)
            color = f"C{index % 10}"
            ax.plot(steps, mean, color=color, lw=2, marker="o", ms=3, label=config.label)
            if low is not None:
                ax.fill_between(steps, low, high, color=color, alpha=0.2, lw=0)
        ax.set(ylabel=label, yscale="log" if log else "linear")
        if log:
            ax.yaxis.set_major_formatter(PlainLogFormatter())
            # Minor ticks labelled only on an axis spanning less than a decade, which may hold no major tick.
            ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.5)))
        else:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3, which="both" if log else "major")
    axes[0, 0].set_title(title)
    axes[0, 0].legend(loc="best", fontsize="small")
    axes[-1, 0].set_xlabel("env steps")
    return fig


def output_path(paths: Sequence[Path]) -> Path:
    """Where the PNG goes: into the one run or sweep directory given, else into the given runs' common parent."""
    if len(paths) == 1:
        return paths[0] / PNG_NAME
    resolved = [path.resolve() for path in paths]
    common = resolved[0]
    while not all(common in (path, *path.parents) for path in resolved):
        common = common.parent
    return common / PNG_NAME


def plot(paths: Sequence[Path], out: Path | None = None) -> tuple[Path, list[Configuration]]:
    """The learning curves of the runs in ``paths`` (run or sweep directories) as a PNG; (its path, the curves)."""
    runs = [load_run(path) for path in find_runs(paths)]
    empty = [run.path for run in runs if not run.steps.size]
    if len(empty) == len(runs):
        raise ValueError(
            f"no periodic evaluation in {empty[0]}/progress.csv yet (eval.freq=0, or fewer steps than eval.freq); "
            "plot a run that trained past eval.freq"
        )
    for path in empty:
        print(f"note: {path} has no periodic evaluation yet: left out")
    configs = configurations([run for run in runs if run.steps.size])
    out = out or output_path(paths)
    n_runs = sum(len(c.runs) for c in configs)
    title = f"{runs[0].env_id}: periodic held-out evaluations of {n_runs} run{'s' if n_runs > 1 else ''}"
    if any(len(c.runs) > 1 for c in configs):
        title += "\nmean over seeds, band: 95 % bootstrap interval of the mean"
    try:
        return save(learning_figure(configs, title), out), configs
    except OSError as error:
        raise ValueError(f"cannot write {out} ({error.strerror}); choose another file with --out") from None


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` and close it."""
    try:
        fig.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a bad argument as one ``error:`` line and exit 2, as train.py and evaluate.py report them."""

    def error(self, message: str) -> NoReturn:
        exit_bad_input(f"{message}; see {self.prog} --help")


def main(argv: Sequence[str] | None = None) -> Path:
    """``rlik-plot <dirs> [--out PNG]``: writes the learning curves and prints the PNG's path."""
    parser = ArgumentParser(prog="rlik-plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", type=Path, nargs="+", help="run directories and/or sweep (multirun) directories")
    parser.add_argument("--out", type=Path, help=f"the PNG (default: {PNG_NAME} in the run or sweep directory)")
    args = parser.parse_args(argv)
    try:
        out, configs = plot(args.dirs, args.out)
    except ValueError as error:
        exit_bad_input(str(error))
    print(f"wrote {out}: {len(configs)} curve{'s' if len(configs) > 1 else ''} ({'; '.join(c.label for c in configs)})")
    return out


def cli() -> None:
    """The ``rlik-plot`` console script."""
    main()


if __name__ == "__main__":
    cli()
