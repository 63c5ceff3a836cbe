"""Issue 34: a run directory is never silently mixed, rewritten or shortened (real train.py processes)."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.save_util import load_from_pkl, load_from_zip_file

from pipeline import checkpoints
from pipeline.config import compose_train_config
from pipeline.factory import make_env, make_model, make_training_env
from pipeline.resume import grow_replay_buffer
from tests.conftest import TINY, check_ok, error_lines, read_json, run_evaluate, run_train, run_train_many
from tests.test_reliability import (
    KILL_FREQ,
    KILL_RUN,
    TINY_IN_PROCESS,
    Training,
    check_checkpoints_on_disk,
    overridden,
    run_dir_snapshot,
)

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


# --- a resume that extends the run keeps every transition -------------------------------------------------


def episode_chains_hold(buffer: HerReplayBuffer) -> int:
    """Every sampleable row's episode, per env, is a chain of steps (each next observation is the following
    row's observation), read through HER's ``ep_start`` and ``ep_length`` as its sampling does; returns the
    number of sampleable rows."""
    rows, size = np.nonzero(buffer.ep_length > 0), buffer.buffer_size
    for row, env in zip(*rows, strict=True):
        start, length = buffer.ep_start[row, env], buffer.ep_length[row, env]
        assert (row - start) % size < length  # the row is inside its episode
        steps = (start + np.arange(length)) % size
        for key in buffer.observations:
            np.testing.assert_array_equal(
                buffer.next_observations[key][steps[:-1], env], buffer.observations[key][steps[1:], env]
            )
    return len(rows[0])


def test_grown_her_buffer_keeps_every_transition_and_episode() -> None:
    """A wrapped HER ring (2 envs, 30 rows each, 50 rows written: the oldest 20 overwritten) grown to 200
    transitions: the 60 stored transitions in order, oldest first, then room for 140 more; every episode still
    a chain of steps where HER looks for it; 100 more steps overwrite none of the old ones, and every old
    episode HER could sample it still can."""
    # Episodes of 15 steps: the ring (steps 20-49 of each env) holds the cut-off end of one, a whole one and the
    # first steps of one under way.
    cfg = compose_train_config([*TINY_IN_PROCESS, "algo.buffer_size=60", "n_envs=2", "env.max_episode_steps=15"])
    model = make_model(cfg, make_training_env(cfg.env, 2, 0))
    model.learn(100)
    buffer = model.replay_buffer
    assert buffer.full and buffer.pos == 20 and episode_chains_hold(buffer) > 0
    order = np.roll(np.arange(30), -buffer.pos)
    stored = {key: values[order].copy() for key, values in buffer.next_observations.items()}
    actions, sampleable = buffer.actions[order].copy(), buffer.ep_length[order] > 0

    assert grow_replay_buffer(buffer, 200) and not grow_replay_buffer(buffer, 200)
    assert (buffer.buffer_size, buffer.pos, buffer.full, buffer.size()) == (100, 30, False, 30)  # rows per env
    episode_chains_hold(buffer)
    model.learn(100, reset_num_timesteps=False)  # the episodes under way go on in the new rows
    assert buffer.pos == 80 and not buffer.full
    np.testing.assert_array_equal(buffer.actions[:30], actions)
    for key, values in stored.items():
        np.testing.assert_array_equal(buffer.next_observations[key][:30], values)
    assert (buffer.ep_length[:30] > 0)[sampleable].all()  # no old episode dropped from sampling
    assert episode_chains_hold(buffer) > sampleable.sum()
    buffer.sample(64)


def test_resume_with_a_larger_budget_keeps_every_transition(tmp_path: Path) -> None:
    """``resume=<run> total_timesteps=400`` of a 200-step run whose replay buffer is the run's own length (the
    default): the buffer grows to 400 and is said to, the 400-step checkpoint holds all 400 transitions, its
    first 200 exactly the 200-step checkpoint's, HER's episode bookkeeping with them."""
    run_dir = tmp_path / "run"
    run = overridden([o for o in TINY if not o.startswith("algo.buffer_size")], "eval.freq=0", "wandb.video_episodes=0")
    check_ok(run_train(tmp_path, *run, f"hydra.run.dir={run_dir}"))
    first = load_from_pkl(run_dir / "checkpoints" / "step_000000000200" / checkpoints.REPLAY_FILE)
    assert (first.buffer_size, first.size()) == (200, 200)  # full: a longer run would overwrite from here

    resumed = run_train(tmp_path, f"resume={run_dir}", "total_timesteps=400")
    check_ok(resumed)
    assert "replay buffer grown from 200 to 400 transitions" in resumed.stdout.splitlines()
    last_checkpoint = run_dir / "checkpoints" / "step_000000000400"
    last = load_from_pkl(last_checkpoint / checkpoints.REPLAY_FILE)
    assert (last.buffer_size, last.size()) == (400, 400)
    assert load_from_zip_file(last_checkpoint / checkpoints.MODEL_FILE)[0]["buffer_size"] == 400
    for name in ("observations", "next_observations"):
        for key, values in getattr(first, name).items():
            np.testing.assert_array_equal(getattr(last, name)[key][:200], values)
    for name in ("actions", "rewards", "ep_start", "ep_length"):
        np.testing.assert_array_equal(getattr(last, name)[:200], getattr(first, name))
    assert episode_chains_hold(last) == 400
    assert read_json(run_dir / "metrics.json")["num_timesteps"] == 400


# --- values that crashed after the training budget was spent -------------------------------------------------


def test_a_long_env_step_trains_and_records_its_video(tmp_path: Path) -> None:
    """``env.timestep=1.0`` (10 s per env step, under 1 frame per second of video): the run finishes and its
    video is readable, at 1 frame per second."""
    run_dir = tmp_path / "run"
    check_ok(run_train(tmp_path, *TINY, "env.timestep=1.0", f"hydra.run.dir={run_dir}"))
    assert read_json(run_dir / "metrics.json")["num_timesteps"] == 200
    assert iio.improps(run_dir / "video.mp4").n_images > 0
    assert iio.immeta(run_dir / "video.mp4")["fps"] == 1


# --- signals at any moment ------------------------------------------------------------------------------------


def logged_step(lines: list[str]) -> int:
    """The last step of the ``[step N] ...`` log lines so far (0 before the first)."""
    return max((int(line.split("]")[0].split()[1]) for line in lines if line.startswith("[step ")), default=0)


@pytest.mark.parametrize("count", [2, 3], ids=["twice", "three times"])
def test_repeated_ctrl_c_keeps_the_checkpoints_whole(tmp_path: Path, count: int) -> None:
    """Ctrl-C, then again 50 ms after the first one's line (``stopping training ... saving a checkpoint``):
    twice, the second is ignored with a line and the stop's checkpoint is saved; three times, the third stops at
    once. Either way exit 130 (or death by SIGINT, which a shell reports as 130), one ``interrupted`` line naming the newest complete checkpoint, every
    ``step_*`` on disk complete, no temporary left, and ``resume=`` finishes the run."""
    run_dir = tmp_path / "run"
    env = make_env(compose_train_config(["env.max_episode_steps=25"]).env)
    # A replay buffer of 200k transitions (SB3 pickles its whole capacity, about 35 MB) makes each save last long
    # enough for the next signal to come while it is under way.
    run = [*overridden(KILL_RUN, "total_timesteps=600", "algo.buffer_size=200000"), "log_interval=1"]
    training = Training(tmp_path, *run, f"hydra.run.dir={run_dir}")
    training.wait_for(lambda: logged_step(training.lines) > KILL_FREQ)  # past the first periodic checkpoint
    pid = training.process.pid
    os.kill(pid, signal.SIGINT)
    for said in ("SIGINT: stopping training", "SIGINT again: still saving")[: count - 1]:
        # The next signal once the last one was handled: two signals pending at once would count as one.
        deadline = time.monotonic() + 60
        while not any(line.startswith(said) for line in training.lines) and training.process.poll() is None:
            assert time.monotonic() < deadline, "\n".join(training.lines[-20:])
            time.sleep(0.001)
        time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):  # the stop may be over already (three times)
            os.kill(pid, signal.SIGINT)
    # A signal once the exit is under way ends the process by that signal (Python's finalisation restores the
    # default handlers), which a shell reports as 130 too.
    assert training.finish() in (130, -signal.SIGINT), "\n".join(training.lines)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # what may be left of the wandb service
    assert not any("Traceback" in line for line in training.lines)
    assert any(line.startswith("SIGINT again: still saving the checkpoint") for line in training.lines)
    steps = check_checkpoints_on_disk(run_dir, env)
    newest = steps[-1]
    (stop,) = [line for line in training.lines if line.startswith("interrupted")]
    assert stop in (
        f"interrupted at step {newest} (SIGINT): checkpoint saved; continue with: python train.py resume={run_dir}",
        f"interrupted (SIGINT); the newest checkpoint is at step {newest}; continue with: python train.py "
        f"resume={run_dir}",
    )
    if count == 2:  # the stop's own checkpoint, at the signal
        assert stop.startswith(f"interrupted at step {newest} ") and newest >= logged_step(training.lines)
    assert not [p for p in run_dir.rglob(".tmp-*")]
    resumed = Training(tmp_path, *run, f"resume={run_dir}")
    assert resumed.finish() == 0, "\n".join(resumed.lines)
    assert resumed.resumed_at() == f"resumed from {run_dir / 'checkpoints' / f'step_{newest:012d}'} at step {newest}"
    assert read_json(run_dir / "metrics.json")["num_timesteps"] == 600
    env.close()


# --- evaluate.py sweep= with jobs that failed -----------------------------------------------------------------


def test_sweep_evaluation_ranks_the_usable_jobs_and_lists_the_others(
    joblib_sweep: tuple[Path, Any], tmp_path: Path
) -> None:
    """A sweep of a finished job (0), one stopped before its final models (1: checkpoints only), one that left a
    directory but no model (2) and one that failed at start (``failed_jobs.txt``): ``model=best`` ranks job 0,
    ``model=latest`` jobs 0 and 1; the others are listed under ``not ranked`` with the reason."""
    sweep = tmp_path / "sweep"
    shutil.copytree(joblib_sweep[0], sweep, symlinks=True)
    for name in ("best_model.zip", "final_model.zip", "metrics.json"):
        (sweep / "1" / name).unlink()
    shutil.copytree(sweep / "1", sweep / "2", symlinks=True)
    shutil.rmtree(sweep / "2" / "checkpoints")
    failed = "job #3 (algo.gamma=1.5) failed: algo.gamma and algo.tau must be in (0, 1], got 1.5 and 0.05."
    (sweep / "failed_jobs.txt").write_text(failed + "\n")
    expected = {  # model=: (the jobs ranked, {job not ranked: its reason})
        "best": (["0"], {job: f"{sweep / job / 'best_model.zip'} does not exist" for job in ("1", "2")}),
        "latest": (["0", "1"], {"2": f"no complete checkpoint in {sweep / '2' / 'checkpoints'}"}),
    }
    for model, (ranked, reasons) in expected.items():
        result = run_evaluate(tmp_path, f"sweep={sweep}", f"model={model}", "n_episodes=2", "wandb.mode=disabled")
        check_ok(result)
        with open(sweep / "eval_policy_ranking.csv") as handle:
            assert sorted(row["job"] for row in csv.DictReader(handle)) == ranked
        listed = result.stdout.split(f"not ranked ({len(reasons) + 1}):\n")[1].splitlines()
        for line, (job, reason) in zip(listed, reasons.items(), strict=False):
            assert line.startswith(f"  {job}: ") and reason in line, line
        assert listed[len(reasons)] == f"  {failed}"


# --- corrupt files ----------------------------------------------------------------------------------------


# damaged file of the newest checkpoint (step 200): the warning naming it
CORRUPTIONS = {
    "replay buffer": (checkpoints.REPLAY_FILE, "{checkpoint}/replay_buffer.pkl is corrupt ("),
    "model": (checkpoints.MODEL_FILE, "{checkpoint} is incomplete (its state.json or model zip is unreadable)"),
    "state": (checkpoints.STATE_FILE, "{checkpoint} is incomplete (its state.json or model zip is unreadable)"),
}


@pytest.mark.parametrize("damaged", list(CORRUPTIONS))
def test_resume_falls_back_past_a_corrupt_checkpoint(tiny_run: Path, tmp_path: Path, damaged: str) -> None:
    """The newest checkpoint with a cut-off file (a disk error, a copy cut short): ``resume=`` says so in one
    ``warning:`` line naming the file, resumes from the checkpoint before it (step 100) and finishes the run."""
    name, warning = CORRUPTIONS[damaged]
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir, symlinks=True)
    newest, previous = run_dir / "checkpoints" / "step_000000000200", run_dir / "checkpoints" / "step_000000000100"
    data = (newest / name).read_bytes()
    (newest / name).write_bytes(data[: len(data) // 2])
    result = run_train(tmp_path, f"resume={run_dir}", "total_timesteps=300")
    check_ok(result)
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert line.startswith("warning: " + warning.format(checkpoint=newest)), line
    assert line.endswith("; resuming from the checkpoint before it.")
    assert f"resumed from {previous} at step 100" in result.stdout.splitlines()
    assert read_json(run_dir / "metrics.json")["num_timesteps"] == 300
