"""Issue 34: a run directory is never silently mixed, rewritten or shortened (real train.py processes)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline import checkpoints
from tests.conftest import TINY, error_lines, read_json, run_train, run_train_many
from tests.test_reliability import KILL_RUN, Training, overridden, run_dir_snapshot

# --- a new run never lands in a directory that holds another run -----------------------------------------


def another_run(tiny_run: Path, case_dir: Path, layout: str) -> Path:
    """What ``case_dir`` holds before the second start; returns the directory that start is pointed at."""
    if layout == "sweep":  # an earlier sweep's job 0
        shutil.copytree(tiny_run, case_dir / "sweep" / "0", symlinks=True)
        return case_dir / "sweep"
    run_dir = case_dir / "run"
    if layout == "other files":  # a directory of the user's, no run in it
        run_dir.mkdir()
        (run_dir / "notes.txt").write_text("mine\n")
        return run_dir
    shutil.copytree(tiny_run, run_dir, symlinks=True)
    if layout == "run without checkpoint":  # say, one killed before its first checkpoint
        shutil.rmtree(run_dir / "checkpoints")
    return run_dir


# name: (what the directory holds, the second start's overrides, fragments of its one line). The second start
# has other settings than the run there (seed, learning rate), so a mix would show.
SECOND_STARTS: dict[str, tuple[str, list[str], list[str]]] = {
    "finished run": (
        "finished run",
        [*TINY, "seed=3", "algo.learning_rate=0.01", "hydra.run.dir={dir}"],
        ["{dir} already holds another run (.hydra/config.yaml, checkpoints,", "python train.py resume={dir}"],
    ),
    "run without checkpoint": (
        "run without checkpoint",
        [*TINY, "seed=3", "hydra.run.dir={dir}"],
        ["{dir} already holds another run", "no checkpoint to resume", "another hydra.run.dir, or delete {dir}"],
    ),
    "sweep into an earlier sweep's directory": (
        "sweep",
        ["-m", *TINY, "seed=3,4", "hydra.sweep.dir={dir}"],
        ["sweep directory {dir} already holds the runs of another sweep (0/", "another hydra.sweep.dir"],
    ),
    "failed start in a directory of other files": (
        "other files",
        [*TINY, "seed=-1", "hydra.run.dir={dir}"],
        ["seed must be >= 0"],
    ),
}


@pytest.fixture(scope="module")
def second_starts(
    tiny_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, subprocess.CompletedProcess, dict[str, tuple[Any, ...]]]]:
    """Each second start run once (they stop before training), with a snapshot of its case directory before."""
    cases, befores = {}, {}
    for name, (layout, overrides, _) in SECOND_STARTS.items():
        case_dir = tmp_path_factory.mktemp("second")
        target = another_run(tiny_run, case_dir, layout)
        befores[name] = run_dir_snapshot(case_dir)
        cases[name] = (case_dir, [o.format(dir=target) for o in overrides])
    results = run_train_many(list(cases.values()))
    return {name: (cases[name][0], result, befores[name]) for name, result in zip(cases, results, strict=True)}


@pytest.mark.parametrize("name", list(SECOND_STARTS))
def test_a_new_run_refuses_a_directory_that_holds_another(name: str, second_starts: dict[str, Any]) -> None:
    """A second training (no ``resume=``) into a directory holding another run (or a sweep into an earlier
    sweep's directory): exit 2, one line naming the directory and the fix, and every file, link and directory
    under it exactly as it was (size, mtime, sha256), Hydra's config and log included. A start that fails in a
    directory of the user's own files takes back all it wrote there and leaves the files."""
    layout, _, fragments = SECOND_STARTS[name]
    case_dir, result, before = second_starts[name]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (message,) = error_lines(result.stderr)
    target = case_dir / ("sweep" if layout == "sweep" else "run")
    for fragment in fragments:
        assert fragment.format(dir=target) in message, message
    assert run_dir_snapshot(case_dir) == before


def test_a_new_run_refuses_a_live_runs_directory_untouched(tmp_path: Path) -> None:
    """While a run trains, a second new run with another success threshold into its directory exits 2 with
    the in-use line, before Hydra wrote its config there: the live run's ``.hydra/`` stays byte for byte, and
    the first run finishes with its own threshold."""
    run_dir = tmp_path / "run"
    first = Training(
        tmp_path, *overridden(KILL_RUN, "total_timesteps=1500"), "log_interval=1", f"hydra.run.dir={run_dir}"
    )
    first.wait_for(lambda: any(line.startswith("[step ") for line in first.lines))  # training, under its lock
    hydra_before = run_dir_snapshot(run_dir / ".hydra")
    second = run_train(tmp_path, *TINY, "env.success_threshold=2.0", f"hydra.run.dir={run_dir}")
    assert first.process.poll() is None, "the first run ended before the second was refused"
    assert second.returncode == 2 and "Traceback" not in second.stderr
    pid = first.process.pid
    assert error_lines(second.stderr) == [
        f"error: run {run_dir} is in use by pid {pid} (train.py); wait for it to finish or stop it "
        f"(kill -INT {pid} saves a checkpoint), then resume."
    ]
    assert run_dir_snapshot(run_dir / ".hydra") == hydra_before
    assert (run_dir / checkpoints.LOCK_FILE).read_text() == f"{pid}\n"
    assert first.finish() == 0, "\n".join(first.lines)
    assert read_json(run_dir / "metrics.json")["num_timesteps"] == 1500
    assert "success_threshold: 2.0" not in (run_dir / ".hydra" / "config.yaml").read_text()
