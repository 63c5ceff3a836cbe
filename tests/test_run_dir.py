"""Issue 34: a run directory is never silently mixed, rewritten or shortened (real train.py processes)."""

from __future__ import annotations

import contextlib
import csv
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.save_util import load_from_pkl, load_from_zip_file

from rlik.ops import interrupts
from rlik.ops.interrupts import SIGNALS, Interrupted, SignalStop
from rlik.training import checkpoints
from rlik.training.config import compose_train_config
from rlik.training.factory import make_env, make_model, make_training_env
from rlik.training.resume import grow_replay_buffer
from tests.conftest import EVALUATE, TINY, check_ok, error_lines, read_json, run_evaluate, run_train, run_train_many
from tests.test_reliability import (
    KILL_FREQ,
    KILL_RUN,
    TINY_IN_PROCESS,
    Training,
    caught_signals,
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


def test_signal_stop_says_it_saves_ignores_a_second_signal_and_yields_to_a_third(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """``SignalStop`` with real signals to this process: while training (deferring) the first asks for a stop at
    the step and says a checkpoint is being saved; a second, while the stop is under way, is ignored and says so;
    a third raises ``Interrupted`` at once. Outside training the first raises at once."""
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    try:
        stop = SignalStop()
        stop.install()
        stop.deferring = True
        os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler as os.kill returns
        assert stop.signum == signal.SIGINT
        stop.deferring = False  # learn() has ended at the step: the checkpoint is being saved
        os.kill(os.getpid(), signal.SIGHUP)
        with pytest.raises(Interrupted) as third:
            os.kill(os.getpid(), signal.SIGINT)
        assert third.value.exit_code == 130
        assert capfd.readouterr().err.splitlines() == [
            "SIGINT: stopping training at this step and saving a checkpoint there (a few seconds)",
            "SIGHUP again: still stopping; a third signal stops at once (the newest complete checkpoint stays)",
        ]
        outside = SignalStop()
        outside.install()
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
        outside.uninstall()
        assert all(signal.getsignal(signum) == signal.SIG_DFL for signum in SIGNALS)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_a_checkpoint_cut_short_by_a_signal_leaves_no_temporary(tmp_path: Path) -> None:
    """The third SIGINT of a stop (the process's ``SignalStop``, a stop under way, a second signal ignored), sent
    by a timer at swept moments of ``save_checkpoint`` (2 to 90 % of its duration): an ``Interrupted``, never a ``DiskWriteError``
    (torch reports it from inside its writer as a RuntimeError); every ``step_*`` on disk stays complete, the
    temporary being written is removed, and the newest complete checkpoint is never older than before."""
    # A replay buffer of 200k rows makes each save tens of milliseconds long on any machine; the signals are swept
    # over the save's own measured duration, so that most land inside it however fast the disk is.
    cfg = compose_train_config([*TINY_IN_PROCESS, "algo.buffer_size=200000"])
    model = make_model(cfg, make_training_env(cfg.env, 1, 0))
    model.learn(60)
    start = time.perf_counter()
    checkpoints.save_checkpoint(tmp_path, model, {"wandb_run_id": "x"}, keep=2)
    duration = time.perf_counter() - start
    stop, cut = interrupts.SIGNAL_STOP, 0
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    stop.install()
    try:
        for delay in np.linspace(0.02, 0.9, 30) * duration:  # s into the save
            stop.signum, stop.repeats, stop.forced = signal.SIGINT, 1, None
            before = checkpoints.latest_checkpoint(tmp_path)
            model.num_timesteps += 1  # each save a new step, as in training
            timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT))
            try:
                timer.start()
                checkpoints.save_checkpoint(tmp_path, model, {"wandb_run_id": "x"}, keep=2)
                timer.cancel()
                timer.join()
            except Interrupted:
                cut += 1
            timer.join()
            assert all(checkpoints.is_complete(checkpoint) for checkpoint in tmp_path.glob("step_*"))
            assert before is None or checkpoints.latest_checkpoint(tmp_path).name >= before.name
            # (a pruned old checkpoint cut short mid-delete is a .tmp-<pid>-delete-* the next trainer removes)
            assert not [p.name for p in tmp_path.glob(".tmp-*") if "-delete-" not in p.name]
    finally:
        stop.signum, stop.repeats, stop.forced = None, 0, None
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert cut >= 5  # most moments land inside a save


@pytest.mark.parametrize("count", [2, 3], ids=["twice", "three times"])
def test_repeated_ctrl_c_keeps_the_checkpoints_whole(tmp_path: Path, count: int) -> None:
    """A real run sent Ctrl-C past its first periodic checkpoint, then again 50 ms after each line it prints
    (``stopping training ...``, ``... again: still stopping ...``). Wherever each lands (the save, the wandb
    finish, Python's exit: a busy machine decides), exit 130 (or death by SIGINT once the exit is under way,
    130 to a shell), no traceback, one ``interrupted`` line naming the newest complete checkpoint (twice: the
    stop's own, at the signal's step), every ``step_*`` complete, no half-written one left, and ``resume=``
    finishes the run from it. (The counting itself: the in-process test above.)"""
    run_dir = tmp_path / "run"
    env = make_env(compose_train_config(["env.max_episode_steps=25"]).env)
    run = [*overridden(KILL_RUN, "total_timesteps=600"), "log_interval=1"]
    training = Training(tmp_path, *run, f"hydra.run.dir={run_dir}")
    training.wait_for(lambda: logged_step(training.lines) > KILL_FREQ)  # past the first periodic checkpoint
    pid = training.process.pid
    os.kill(pid, signal.SIGINT)
    for said in ("SIGINT: stopping training", "SIGINT again: still stopping")[: count - 1]:
        # The next signal once the last one was handled: two signals pending at once would count as one.
        deadline = time.monotonic() + 300
        while not any(line.startswith(said) for line in training.lines) and training.process.poll() is None:
            assert time.monotonic() < deadline, "\n".join(training.lines[-20:])
            time.sleep(0.001)
        time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):  # the stop may be over already
            os.kill(pid, signal.SIGINT)
    assert training.finish(timeout=600) in (130, -signal.SIGINT), "\n".join(training.lines)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # what may be left of the wandb service
    output = "\n".join(training.lines)
    assert "Traceback" not in output, output
    steps = check_checkpoints_on_disk(run_dir, env)
    newest = steps[-1]
    (stop,) = [line for line in training.lines if line.startswith("interrupted")]
    resume = f"continue with: python train.py resume={run_dir}"
    saved = f"interrupted at step {newest} (SIGINT): checkpoint saved; {resume}"
    assert stop == saved or (
        count == 3 and stop == f"interrupted (SIGINT); the newest checkpoint is at step {newest}; {resume}"
    )
    assert count == 3 or newest >= logged_step(training.lines)  # twice: the stop's own checkpoint, at the signal
    assert not [p.name for p in run_dir.rglob(".tmp-*") if "-delete-" not in p.name], output
    resumed = Training(tmp_path, *run, f"resume={run_dir}")
    assert resumed.finish(timeout=600) == 0, "\n".join(resumed.lines)
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


# --- fault injection: random signals at random moments, then resume --------------------------------------------

FAULTS = ("SIGINT", "double SIGINT", "SIGTERM", "SIGHUP")
FAULT_RUNS = 8  # each fault twice
FAULT_TOTAL = 300  # env steps of each run
FAULT_WINDOW = 11.0  # s from train.py's signal handlers in to a little past a run's end here (2 busy cores)


def test_random_signals_at_random_moments_then_resume(tmp_path: Path) -> None:
    """Eight short runs, each sent SIGINT, SIGINT twice 50 ms apart, SIGTERM or SIGHUP at a seeded random moment
    (stratified) from the time train.py handles signals to a little past its usual end (start-up, training, a checkpoint
    write, the final evaluation or already done), then resumed to the end (or, stopped before its first
    checkpoint, started again: nothing was saved and no directory is left). Each interrupted process exits
    cleanly (no traceback, exit 0 or 128 + signal); every ``step_*`` on disk is complete, no temporary is left;
    a checkpoint reported saved is on disk with its transitions, the resume starts from the newest one, and the
    finished run's replay buffer begins with every transition it held. Finally every run directory evaluates."""
    rng = random.Random(34)
    env = make_env(compose_train_config(["env.max_episode_steps=25"]).env)
    run = [*overridden(KILL_RUN, f"total_timesteps={FAULT_TOTAL}"), "log_interval=1"]
    outcomes: Counter[str] = Counter()
    signals_sent = 0
    run_dirs = [tmp_path / f"run{n}" for n in range(FAULT_RUNS)]
    for n, run_dir in enumerate(run_dirs):
        fault = FAULTS[n % len(FAULTS)]
        signum = signal.SIGINT if fault.endswith("SIGINT") else getattr(signal, fault)
        training = Training(tmp_path, *run, f"hydra.run.dir={run_dir}")
        # Before its handlers are in, Python's defaults act while train.py imports: not this test's business.
        deadline = time.monotonic() + 120
        while not caught_signals(training.process.pid) & (1 << (signal.SIGHUP - 1)):
            assert time.monotonic() < deadline and training.process.poll() is None, "\n".join(training.lines)
            time.sleep(0.01)
        # Stratified: run n's moment is random within its own slice of the ~10 s from then to a little past the
        # end, so that start-up, training, checkpoint writes and the final evaluation are all hit.
        time.sleep(rng.uniform(n, n + 1) * FAULT_WINDOW / FAULT_RUNS)
        for _ in range(2 if fault.startswith("double") else 1):
            with contextlib.suppress(ProcessLookupError):  # it may have finished already
                os.kill(training.process.pid, signum)
                signals_sent += 1
            time.sleep(0.05)
        code = training.finish()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(training.process.pid, signal.SIGKILL)  # what may be left of the wandb service
        output = "\n".join(training.lines)
        assert code in (0, 128 + signum, -signum) and "Traceback" not in output, output
        steps = check_checkpoints_on_disk(run_dir, env) if (run_dir / "checkpoints").is_dir() else []
        assert not list(tmp_path.rglob(".tmp-*")), output
        saved = [line for line in training.lines if line.startswith("interrupted at step ")]
        held = None
        if saved:  # the stop's own checkpoint: on disk, whole, with its transitions
            step = int(saved[0].split()[3])
            assert step in steps, output
            held = load_from_pkl(run_dir / "checkpoints" / f"step_{step:012d}" / checkpoints.REPLAY_FILE)
        if steps:
            outcomes["finished before the signal" if code == 0 else "stopped with a checkpoint"] += 1
            resumed = Training(tmp_path, *run, f"resume={run_dir}")
            assert resumed.finish() == 0, "\n".join(resumed.lines)
            assert (
                resumed.resumed_at()
                == f"resumed from {run_dir / 'checkpoints' / f'step_{steps[-1]:012d}'} at step {steps[-1]}"
            )
        else:  # stopped in start-up: nothing saved, and nothing left to mix with the run started again
            outcomes["stopped before the first checkpoint"] += 1
            assert code != 0 and not (run_dir / ".hydra").exists(), output
            check_ok(run_train(tmp_path, *run, f"hydra.run.dir={run_dir}"))
        assert read_json(run_dir / "metrics.json")["num_timesteps"] == FAULT_TOTAL
        final = load_from_pkl(run_dir / "checkpoints" / f"step_{FAULT_TOTAL:012d}" / checkpoints.REPLAY_FILE)
        assert final.size() == FAULT_TOTAL
        for key, values in (held.observations if held else {}).items():  # no transition reported saved is lost
            np.testing.assert_array_equal(final.observations[key][: held.size()], values[: held.size()])
    evaluations = run_train_many(
        [(run_dir, [f"run={run_dir}", "n_episodes=1", "wandb.mode=disabled"]) for run_dir in run_dirs],
        scripts=[EVALUATE] * len(run_dirs),
    )
    assert all(result.returncode == 0 for result in evaluations), [r.stderr for r in evaluations]
    print(f"\nfault injection: {FAULT_RUNS} runs, {signals_sent} signals sent; {dict(outcomes)}")
    assert sum(outcomes.values()) == FAULT_RUNS
    env.close()
