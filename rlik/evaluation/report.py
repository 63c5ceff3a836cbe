"""What ``evaluate.py`` prints and saves: the table of every controller evaluated on the same goals, and the
eval_<controller>.json, eval_table.json and eval_table.csv files beside the run."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rlik.evaluation.config import CONTROLLERS
from rlik.evaluation.episodes import REACHED
from rlik.training import checkpoints

# The keys of an eval_<controller>.json that say what was evaluated; the others summarise how it went.
REPORT_CONTEXT = ("controller", "checkpoint", "env", "goal_seed", "dt", "episodes")
# Rows of the printed table: (summary key, label, format).
TABLE = [
    ("success_rate", "success rate", "{:.1%}"),
    ("final_distance_mean", "final distance mean (m)", "{:.4f}"),
    ("final_distance_median", "final distance median (m)", "{:.4f}"),
    ("final_distance_p95", "final distance p95 (m)", "{:.4f}"),
    ("time_to_reach_mean", "time to reach mean (s)", "{:.3f}"),
    ("fall_rate", "fall rate", "{:.1%}"),
    # Humanoid goals by kind (envs' info["goal_kind"]): beyond the arm's reach from an upright torso, or not.
    ("success_rate_lean", "success, lean goals", "{:.1%}"),
    ("fall_rate_lean", "falls, lean goals", "{:.1%}"),
    ("goals_lean", "lean goals", "{}"),
    ("success_rate_upright", "success, upright goals", "{:.1%}"),
    ("fall_rate_upright", "falls, upright goals", "{:.1%}"),
    ("goals_upright", "upright goals", "{}"),
    ("mean_abs_torque", "mean |torque| (N m)", "{:.3f}"),
    ("episode_return_mean", "episode return mean", "{:.2f}"),
    ("control_time_us_mean", "control step (us)", "{:.0f}"),
    ("sb3_predict_time_us_mean", "SB3 predict (us)", "{:.0f}"),
    ("lean_action_max_difference", "max |lean - predict|", "{:.1e}"),
    ("solve_time_us_mean", "IK solve (us)", "{:.0f}"),
    ("n_episodes", "episodes", "{}"),
]
# Every eval_<controller>.json also times one PyBullet IK solve on its goals: a reference beside the table, not a
# controller's own figure (the policy solves no IK).
REFERENCE_IK_TIME = "ik_time_us_mean"


def comparison_table(
    run_dir: Path, goal_seed: int, n_episodes: int, reports: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """``reports`` beside the run's other eval_<controller>.json on the same goals: {"goal_seed", "metrics":
    the table's metric keys, "controllers": controller -> metric -> value (None where it has none), and
    ``REFERENCE_IK_TIME``: the mean time of one PyBullet IK solve on these goals (us; None in older files)}.

    :param run_dir: the training run directory whose eval_<controller>.json files join the table.
    :param goal_seed: the seed of this evaluation's goals; an older file joins only with the same seed ...
    :param n_episodes: ... and the same number of goals.
    :param reports: controller -> the eval_<controller>.json contents of this evaluation.
    """
    merged = {}
    for name in CONTROLLERS:
        path = run_dir / f"eval_{name}.json"
        if name in reports:
            merged[name] = reports[name]
        elif path.is_file():
            try:
                report = checkpoints.read_json(path)
            except ValueError as error:  # an old, damaged evaluation must not cost this one its files
                print(f"warning: {error} Left out of the table.", file=sys.stderr)
                continue
            if report.get("goal_seed") == goal_seed and report.get("n_episodes") == n_episodes:
                merged[name] = report
    metrics = [key for key, _, _ in TABLE if any(key in r for r in merged.values())]
    # With several end effectors: each one's success alone, after the success rate (TABLE's first row).
    reached = list(dict.fromkeys(key for r in merged.values() for key in r if key.startswith(REACHED)))
    metrics[1:1] = reached
    values = {name: {key: r.get(key) for key in metrics} for name, r in merged.items()}
    ik_times = [r[REFERENCE_IK_TIME] for r in merged.values() if r.get(REFERENCE_IK_TIME) is not None]
    reference = float(np.mean(ik_times)) if ik_times else None
    return {"goal_seed": goal_seed, "metrics": metrics, "controllers": values, REFERENCE_IK_TIME: reference}


def table_rows(table: dict[str, Any]) -> list[list[str]]:
    """The printed rows of a ``comparison_table``: one per metric, one column per controller.

    :param table: a ``comparison_table``.
    """
    formats = {key: (label, fmt) for key, label, fmt in TABLE}
    formats.update(
        {
            key: (f"success, {key.removeprefix(REACHED)} alone", "{:.1%}")
            for key in table["metrics"]
            if key.startswith(REACHED)
        }
    )
    return [
        [formats[key][0], *(cell(r[key], formats[key][1]) for r in table["controllers"].values())]
        for key in table["metrics"]
    ]


def cell(value: Any, form: str) -> str:
    """A printed value; a dash where there is none: None (a metric the controller lacks, null in a file) or NaN (a
    mean over no episodes, e.g. the time to reach when no goal was reached).

    :param value: the number (or None).
    :param form: its ``str.format`` pattern, e.g. ``"{:.1%}"``.
    """
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else form.format(value)


def save_evaluation(run_dir: Path, reports: dict[str, dict[str, Any]], table: dict[str, Any]) -> list[Path]:
    """eval_<controller>.json for each report, and the table as eval_table.json and .csv; a write that fails
    (read-only directory, full disk) is one line naming its file. Returns the files written.

    :param run_dir: the training run directory the files go into.
    :param reports: controller -> its eval_<controller>.json contents.
    :param table: their ``comparison_table``.
    """
    csv_rows = [["controller", *table["metrics"]], *([n, *r.values()] for n, r in table["controllers"].items())]
    path = run_dir
    try:
        for name, report in reports.items():
            path = run_dir / f"eval_{name}.json"
            checkpoints.atomic_write_json(path, report)
        path = run_dir / "eval_table.json"
        checkpoints.atomic_write_json(path, table)
        path = run_dir / "eval_table.csv"
        checkpoints.atomic_write(path, lambda tmp: write_csv(tmp, csv_rows))
    except OSError as error:
        raise OSError(
            f"cannot write {path} ({error.strerror}): the results above are not saved; make {run_dir} writable, "
            "or copy the run directory and evaluate the copy."
        ) from None
    return [run_dir / f"eval_{name}.json" for name in reports] + [run_dir / "eval_table.json", path]


def write_csv(path: Path, rows: list[list[Any]]) -> None:
    """``rows`` (the headers first) as a CSV file at ``path``.

    :param path: the file, replaced if it exists.
    :param rows: one list of cells per line.
    """
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """``headers`` and ``rows`` as aligned text columns, a line of dashes under the headers.

    :param headers: the column names.
    :param rows: one list of cells per row, as many as ``headers``.
    """
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in lines)
