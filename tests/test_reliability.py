"""Issue 7: crash safety, sweep resilience, broken physics, W&B faults, determinism, bad input."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf
from stable_baselines3 import DDPG
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.save_util import load_from_pkl

from rlik.training import checkpoints
from rlik.training.config import compose_train_config
from rlik.training.factory import make_env, make_model, make_training_env
from rlik.training.resume import resumed_config
from tests.conftest import (
    REPO,
    TINY,
    TRAIN,
    check_ok,
    error_lines,
    offline_run_dirs,
    read_json,
    run_command,
    run_train,
    run_train_many,
    train_env,
    wandb_history,
    wandb_summary,
)

# --- crash safety: kill -9 at several moments, then resume ------------------------------------------

KILL_TOTAL = 1000
KILL_FREQ = 50
KILL_RUN = [
    *(o for o in TINY if not o.startswith(("total_timesteps", "checkpoint.freq", "eval.freq", "wandb.video"))),
    f"checkpoint.freq={KILL_FREQ}",
    "eval.freq=0",
    "wandb.video_episodes=0",
]


class Training:
    """``train.py`` as a child process whose stdout lines are collected as they come."""

    def __init__(self, cwd: Path, *overrides: str) -> None:
        self.lines: list[str] = []
        self.kill_time = float("inf")  # for a kill at a chosen moment (time.monotonic())
        self.start_step = 0  # the step the run starts from
        self.process = subprocess.Popen(
            [sys.executable, str(TRAIN), *overrides],
            cwd=cwd,
            env=train_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: the wandb service goes down with it
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, condition: Callable[[], bool], timeout: float = 120.0, poll: float = 0.0005) -> None:
        """Poll ``condition`` until it holds; fails if the process ends or ``timeout`` s pass first."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, "training ended before the kill point:\n" + "\n".join(self.lines)
            assert time.monotonic() < deadline, "kill point not reached:\n" + "\n".join(self.lines[-20:])
            time.sleep(poll)

    def resumed_at(self) -> str | None:
        """The ``resumed from <checkpoint> at step <N>`` line, once printed."""
        return next((line for line in self.lines if line.startswith("resumed from ")), None)

    def kill(self) -> None:
        """SIGKILL the training process (no cleanup runs), then its leftover children."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.reader.join(timeout=10)

    def finish(self, timeout: float = 180.0) -> int:
        code = self.process.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix("step_"))


def check_checkpoints_on_disk(run_dir: Path, env: Any) -> list[int]:
    """Every ``step_*`` directory is complete and loads (model and replay buffer); returns their steps."""
    found = sorted((run_dir / "checkpoints").glob("step_*"))
    for checkpoint in found:
        assert checkpoints.is_complete(checkpoint), f"incomplete checkpoint on disk: {checkpoint}"
        assert checkpoints.read_state(checkpoint)["num_timesteps"] == step_of(checkpoint)
        assert DDPG.load(checkpoint / checkpoints.MODEL_FILE, env=env).num_timesteps == step_of(checkpoint)
        buffer = load_from_pkl(checkpoint / checkpoints.REPLAY_FILE)
        assert buffer.size() == min(step_of(checkpoint), 2000)
    return [step_of(c) for c in found]


def test_kill_9_at_several_moments_then_resume(tmp_path: Path) -> None:
    rng = random.Random(7)
    run_dir = tmp_path / "run"
    ckpt_dir = run_dir / "checkpoints"
    env = make_env(compose_train_config(["env.max_episode_steps=25"]).env)

    def tmp_dirs() -> list[str]:
        return [n for n in os.listdir(ckpt_dir) if n.startswith(".tmp-")] if ckpt_dir.is_dir() else []

    def step_dirs() -> list[Path]:
        return sorted(ckpt_dir.glob("step_*")) if ckpt_dir.is_dir() else []

    kill_points = {
        # 1. while a checkpoint is being written (or an old one removed), after one is complete
        "mid-checkpoint": lambda t: bool(step_dirs()) and bool(tmp_dirs()),
        # 2. at a random moment of training
        "random": lambda t: t.resumed_at() is not None and time.monotonic() > t.kill_time,
        # 3. right after a new checkpoint was renamed into place (old ones being pruned)
        "new checkpoint": lambda t: (
            t.resumed_at() is not None and len(step_dirs()) > 0 and step_of(step_dirs()[-1]) > t.start_step
        ),
        # 4. again mid-write, now in a resumed run
        "mid-checkpoint after resume": lambda t: t.resumed_at() is not None and bool(tmp_dirs()),
    }
    survived, run_id, latest = [], None, None
    for n, (name, condition) in enumerate(kill_points.items()):
        overrides = [*KILL_RUN, f"total_timesteps={KILL_TOTAL}"]
        overrides += [f"resume={run_dir}"] if n else [f"hydra.run.dir={run_dir}"]
        training = Training(tmp_path, *overrides)
        training.start_step = step_of(latest) if latest else 0
        if n:
            training.wait_for(lambda t=training: t.resumed_at() is not None)
            assert training.resumed_at() == f"resumed from {latest} at step {step_of(latest)}"
            training.kill_time = time.monotonic() + rng.uniform(0.2, 1.5)
        training.wait_for(lambda t=training, c=condition: c(t))
        training.kill()
        steps = check_checkpoints_on_disk(run_dir, env)
        assert steps and all(s % KILL_FREQ == 0 for s in steps) and len(steps) <= 3
        leftovers = tmp_dirs()
        latest = checkpoints.latest_checkpoint(ckpt_dir)
        assert step_of(latest) == steps[-1] and tmp_dirs() == leftovers  # readers never delete
        ids = {checkpoints.read_state(latest)["wandb_run_id"], read_json(run_dir / "run.json")["wandb_run_id"]}
        assert len(ids) == 1 and (run_id is None or ids == {run_id})
        run_id = ids.pop()
        survived.append((name, steps[-1]))

    training = Training(tmp_path, *KILL_RUN, f"total_timesteps={KILL_TOTAL}", f"resume={run_dir}")
    assert training.finish() == 0, "\n".join(training.lines)
    assert training.resumed_at() == f"resumed from {latest} at step {step_of(latest)}"
    assert check_checkpoints_on_disk(run_dir, env) == [KILL_TOTAL - KILL_FREQ, KILL_TOTAL]
    assert not tmp_dirs()  # the killed runs' leftovers, removed by the next trainer (their owners are dead)
    assert read_json(run_dir / "metrics.json")["num_timesteps"] == KILL_TOTAL
    assert {p.name.rsplit("-", 1)[1] for p in offline_run_dirs(run_dir)} == {run_id}
    assert len(survived) == len(kill_points)
    assert [s for _, s in survived] == sorted(s for _, s in survived)  # progress is never lost
    env.close()


def test_checkpoint_write_is_atomic_in_process(tmp_path: Path) -> None:
    """A leftover ``.tmp-*`` directory (a write cut short) is never taken as a checkpoint; readers leave it,
    the writer's clean-up removes it once its owner pid is dead, and never a live process's."""
    cfg = compose_train_config(TINY_IN_PROCESS)
    model = make_model(cfg, make_training_env(cfg.env, 1, 0))
    model.learn(60)
    first = checkpoints.save_checkpoint(tmp_path, model, {"wandb_run_id": "x"}, keep=2)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    half = tmp_path / f".tmp-{int(dead.stdout)}-step_000000000120"
    shutil.copytree(first, half)
    (half / checkpoints.STATE_FILE).unlink()
    truncated = tmp_path / "step_000000000180"  # a (hypothetical) torn rename target: truncated zip
    shutil.copytree(first, truncated)
    data = (truncated / checkpoints.MODEL_FILE).read_bytes()
    (truncated / checkpoints.MODEL_FILE).write_bytes(data[: len(data) // 2])
    live = [tmp_path / f".tmp-{pid}-step_000000000120" for pid in (os.getpid(), os.getppid())]
    for directory in live:
        shutil.copytree(half, directory)
    assert checkpoints.latest_checkpoint(tmp_path) == first
    assert half.exists()
    assert checkpoints.remove_stale_temporaries(tmp_path) == [half]
    assert all(directory.exists() for directory in live)


# --- concurrent readers and trainers, signals ---------------------------------------------------------


def overridden(base: list[str], *overrides: str) -> list[str]:
    """``base`` with the keys of ``overrides`` replaced (Hydra refuses a key given twice)."""
    keys = tuple(o.split("=", 1)[0] + "=" for o in overrides)
    return [*(o for o in base if not o.startswith(keys)), *overrides]


def test_reader_polling_the_latest_checkpoint_never_breaks_training(tmp_path: Path) -> None:
    """What ``evaluate.py model=latest`` does (look up the latest checkpoint, load its model), in a loop
    beside a run that checkpoints every 25 steps: the trainer finishes and every ``step_*`` is complete."""
    run_dir = tmp_path / "run"
    env = make_env(compose_train_config(["env.max_episode_steps=25"]).env)
    training = Training(
        tmp_path, *overridden(KILL_RUN, "checkpoint.freq=25", "total_timesteps=300"), f"hydra.run.dir={run_dir}"
    )
    loaded = set()
    while training.process.poll() is None:
        latest = checkpoints.latest_checkpoint(run_dir / "checkpoints")
        # A checkpoint pruned (keep=2) between the lookup and the load is gone for the reader: expected.
        with contextlib.suppress(FileNotFoundError):
            loaded.add(DDPG.load(latest / checkpoints.MODEL_FILE, env=env).num_timesteps if latest else 0)
    assert training.finish() == 0, "\n".join(training.lines)
    assert check_checkpoints_on_disk(run_dir, env) == [275, 300]
    assert len(loaded - {0}) >= 3, loaded  # the reader did see the checkpoints come and go
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    env.close()


def test_second_trainer_of_a_run_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    """Two ``resume=`` of one run at once: the second exits 2 with one line naming the first's pid and
    touches nothing; the first finishes normally."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    first = Training(tmp_path, f"resume={run_dir}", "total_timesteps=600")
    first.wait_for(lambda: first.resumed_at() is not None)  # the lock is taken before this line
    before = {str(p): p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    second = run_train(tmp_path, f"resume={run_dir}", "total_timesteps=600", "algo.learning_rate=0.01")
    assert first.process.poll() is None, "the first trainer ended before the second was refused"
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert error_lines(second.stderr) == [
        f"error: run {run_dir} is in use by pid {first.process.pid} (train.py); wait for it to finish or stop "
        f"it (kill -INT {first.process.pid} saves a checkpoint), then resume."
    ]
    # Refused before Hydra wrote its resume files: the second's learning rate is nowhere on disk.
    # (Only the resume files: the first trainer, still running, may have rotated old checkpoints away meanwhile.)
    touched = [p for p, mtime in before.items() if ".hydra_resume" in p and Path(p).stat().st_mtime_ns != mtime]
    assert touched == [] and "0.01" not in (run_dir / ".hydra_resume" / "overrides.yaml").read_text()
    assert (run_dir / ".lock").read_text() == f"{first.process.pid}\n"
    assert first.finish() == 0, "\n".join(first.lines)
    assert read_json(run_dir / "metrics.json")["num_timesteps"] == 600
    assert len(offline_run_dirs(run_dir)) == 2  # the original run and the first resume: no third segment


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_signal_saves_a_checkpoint_at_the_current_step(tmp_path: Path, signum: signal.Signals) -> None:
    """SIGTERM (SLURM's preemption), SIGINT (Ctrl-C) or SIGHUP (the terminal closed) mid-run: a line saying a
    checkpoint is being saved, then a complete checkpoint at the step of the signal, the wandb history up to it,
    one line saying how to go on, exit 128 + signal; resume= finishes."""
    run_dir = tmp_path / "run"
    env = make_env(compose_train_config(["env.max_episode_steps=25"]).env)
    run = [*overridden(KILL_RUN, "total_timesteps=200"), "log_interval=1"]  # a [step N] line per episode
    training = Training(tmp_path, *run, f"hydra.run.dir={run_dir}")

    def logged_step() -> int:
        return max(
            (int(line.split("]")[0].split()[1]) for line in training.lines if line.startswith("[step ")), default=0
        )

    training.wait_for(lambda: logged_step() > KILL_FREQ)  # past the first periodic checkpoint
    os.kill(training.process.pid, signum)
    assert training.finish() == 128 + signum, "\n".join(training.lines)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(training.process.pid, signal.SIGKILL)  # what may be left of the wandb service
    assert not any("Traceback" in line for line in training.lines)
    assert (
        f"{signum.name}: stopping training at this step and saving a checkpoint there (a few seconds)" in training.lines
    )
    stops = [line for line in training.lines if line.startswith("interrupted")]
    steps = check_checkpoints_on_disk(run_dir, env)
    assert steps[-1] >= logged_step() > KILL_FREQ  # at the signal, past the periodic checkpoint before it
    assert stops == [
        f"interrupted at step {steps[-1]} ({signum.name}): checkpoint saved; "
        f"continue with: python train.py resume={run_dir}"
    ]
    (segment,) = offline_run_dirs(run_dir)
    logged = [row["global_step"] for row in wandb_history(segment)]
    assert logged == sorted(logged) and logged_step() <= logged[-1] <= steps[-1]

    resumed = Training(tmp_path, *run, f"resume={run_dir}")
    assert resumed.finish() == 0, "\n".join(resumed.lines)
    assert (
        resumed.resumed_at() == f"resumed from {run_dir / 'checkpoints' / f'step_{steps[-1]:012d}'} at step {steps[-1]}"
    )
    assert read_json(run_dir / "metrics.json")["num_timesteps"] == 200
    later = [row["global_step"] for row in wandb_history(offline_run_dirs(run_dir)[1])]
    assert later and min(later) > steps[-1]  # the resumed segment continues the history after the signal
    env.close()


# --- sweep resilience ---------------------------------------------------------------------------------


# Just enough to finish: 50 steps, one final episode, no periodic evaluation, checkpoint or video.
MINIMAL = [
    "total_timesteps=50",
    "algo.learning_starts=25",
    "algo.batch_size=8",
    "algo.net_arch=[8]",
    "algo.buffer_size=100",
    "env.max_episode_steps=25",
    "eval.freq=0",
    "eval.final_goals=1",
    "checkpoint.freq=0",
    "wandb.video_episodes=0",
    "wandb.mode=offline",
]


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_sweep_goes_on_when_one_job_fails(tmp_path: Path, launcher: str) -> None:
    """Every job runs; the sweep then exits non-zero, and the failed job is named with its overrides."""
    sweep_dir = tmp_path / "sweep"
    launch = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    result = run_train(
        tmp_path,
        "-m",
        *launch,
        *MINIMAL,
        "algo.gamma=1.5,0.95,0.9",  # job #0 is invalid
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=${hydra.job.num}",
    )
    assert result.returncode != 0  # the sweep reports its failure...
    for good in ("1", "2"):  # ...but the valid jobs ran to the end and kept their results
        assert read_json(sweep_dir / good / "metrics.json")["num_timesteps"] == 50
        assert (sweep_dir / good / "final_model.zip").exists()
    assert not (sweep_dir / "0").exists()  # the bad job left no half-made directory
    (failure,) = (sweep_dir / "failed_jobs.txt").read_text().splitlines()
    assert failure.startswith("job #0 (") and "algo.gamma=1.5" in failure
    assert "algo.gamma and algo.tau must be in (0, 1], got 1.5" in failure
    assert "algo.gamma and algo.tau must be in (0, 1], got 1.5" in result.stderr  # Hydra's final report
    if launcher == "basic":  # (joblib workers have their own stderr)
        assert f"error: {failure}" in result.stderr


# --- broken physics -----------------------------------------------------------------------------------

TINY_IN_PROCESS = [
    "algo.learning_starts=50",
    "algo.batch_size=16",
    "algo.net_arch=[16,16]",
    "algo.buffer_size=1000",
    "env.max_episode_steps=25",
]


class UnstableCounter(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.unstable = self.truncated = 0

    def _on_step(self) -> bool:
        info = self.locals["infos"][0]
        self.unstable += bool(info.get("unstable"))
        self.truncated += bool(info.get("TimeLimit.truncated")) or bool(info.get("unstable"))
        return True


def test_unstable_physics_ends_episodes_and_training_goes_on() -> None:
    cfg = compose_train_config([*TINY_IN_PROCESS, "env.max_joint_speed=2.0"])  # rad/s: random torques exceed it
    model = make_model(cfg, make_training_env(cfg.env, 1, 0))
    counter = UnstableCounter()
    model.learn(150, callback=counter)
    assert model.num_timesteps == 150 and counter.unstable >= 5
    buffer = model.replay_buffer
    assert buffer.size() == 150
    for key, values in buffer.observations.items():
        assert np.isfinite(values[:150]).all(), key
    assert np.isfinite(buffer.rewards[:150]).all() and np.isfinite(buffer.actions[:150]).all()


def test_her_relabelled_rewards_keep_the_goal_independent_penalty() -> None:
    """Every replayed reward, relabelled or not, is -distance(next achieved, desired) - torque_cost * mean(a^2)."""
    torque_cost = 100.0
    cfg = compose_train_config(
        [*TINY_IN_PROCESS, f"env.torque_cost={torque_cost}", "env.reward_type=dense", "algo.learning_starts=500"]
    )
    model = make_model(cfg, make_training_env(cfg.env, 1, 0))
    model.learn(200)  # random actions (before learning_starts): large torque costs
    batch = model.replay_buffer.sample(256)
    actions = batch.actions.numpy()
    distance = np.linalg.norm(
        batch.next_observations["achieved_goal"].numpy() - batch.observations["desired_goal"].numpy(), axis=1
    )
    expected = -distance - torque_cost * np.mean(actions**2, axis=1)
    np.testing.assert_allclose(batch.rewards.numpy().ravel(), expected, rtol=1e-4, atol=1e-4)
    assert np.mean(actions**2) > 0.1  # the penalty is large, so an empty info would fail the comparison


def test_nan_state_truncates_with_finite_observation() -> None:
    env = make_env(compose_train_config(TINY_IN_PROCESS).env)
    env.reset(seed=0)
    robot = env.unwrapped.robot
    robot.client.resetJointState(robot.body, robot.joint_indices[0], float("nan"), float("inf"))
    observation, reward, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
    assert info["unstable"] is True and truncated and not terminated and np.isfinite(reward)
    assert all(np.isfinite(v).all() for v in observation.values())
    env.reset(seed=1)  # a reset restores a sound state
    _, _, _, truncated, info = env.step(np.zeros(2, dtype=np.float32))
    assert info["unstable"] is False and not truncated
    env.close()


@pytest.mark.parametrize("bad", [[np.nan, 0.0], [0.0, -np.inf]])
def test_nan_action_raises_clear_error(bad: list[float]) -> None:
    env = make_env(compose_train_config(TINY_IN_PROCESS).env)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action contains NaN or inf.*check the policy's outputs"):
        env.step(np.array(bad))
    env.close()


# --- W&B faults ---------------------------------------------------------------------------------------


def test_wandb_online_without_network_falls_back_offline(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    quick = [o for o in TINY if not o.startswith(("wandb.mode", "wandb.video"))] + ["wandb.video_episodes=0"]
    start = time.monotonic()
    result = run_train(
        tmp_path,
        *quick,
        "wandb.mode=auto",
        "wandb.init_timeout=3",
        f"hydra.run.dir={run_dir}",
        timeout=150,
        WANDB_MODE="online",
        WANDB_API_KEY="f" * 40,
        WANDB_BASE_URL="http://127.0.0.1:9",  # loopback discard port: connection refused
    )
    elapsed = time.monotonic() - start
    check_ok(result)
    assert elapsed < 90, f"training took {elapsed:.0f} s with an unreachable W&B server"
    warnings = [line for line in result.stderr.splitlines() if "wandb" in line.lower()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: wandb online init failed"), result.stderr
    metrics = read_json(run_dir / "metrics.json")
    (offline,) = offline_run_dirs(run_dir)
    summary = wandb_summary(offline)
    assert summary["run_id"] == read_json(run_dir / "run.json")["wandb_run_id"]
    for key in ("success_rate", "final_distance_mean", "num_timesteps"):
        assert summary["summary"][f"final/{key}"] == pytest.approx(metrics[key], rel=1e-12)
    assert summary["summary"]["eval/success_rate"] is not None


def test_wandb_online_without_credentials_falls_back_offline(tmp_path: Path) -> None:
    script = (
        "from omegaconf import OmegaConf; from rlik.ops.tracking import init_run; "
        "cfg = OmegaConf.create({'mode': 'online', 'project': 'p', 'entity': None, 'name': None, "
        "'group': None, 'tags': [], 'init_timeout': 5.0}); "
        f"run = init_run(cfg, {{'a': 1}}, {str(tmp_path)!r}); run.log({{'x': 3.5}}); "
        "print('mode', run.settings.mode, run.id); run.finish()"
    )
    no_login = {"HOME": str(tmp_path), "WANDB_BASE_URL": "http://127.0.0.1:9"}  # no key, no ~/.netrc
    result = run_command([sys.executable, "-c", script], tmp_path, timeout=120, **no_login)
    check_ok(result)
    assert "mode offline" in result.stdout
    (warning,) = [line for line in result.stderr.splitlines() if "wandb" in line.lower()]
    assert warning.startswith("warning: wandb online init failed (No API key configured")
    (offline,) = offline_run_dirs(tmp_path)
    assert wandb_summary(offline)["summary"]["x"] == 3.5


# --- determinism --------------------------------------------------------------------------------------


def test_same_config_and_seed_give_identical_metrics(tiny_run: Path, joblib_sweep: tuple[Path, Any]) -> None:
    """Three runs of the tiny config (one alone, two side by side in a sweep): identical metrics.json."""
    sweep_dir, result = joblib_sweep
    reference = read_json(tiny_run / "metrics.json")
    runs = sorted(p for p in sweep_dir.iterdir() if (p / "metrics.json").exists())
    assert len(runs) == 2
    for run in runs:
        assert without_wall_time(read_json(run / "metrics.json")) == without_wall_time(reference)
    assert reference["num_timesteps"] == 200 and len(reference["episodes"]) == 3


def without_wall_time(metrics: dict[str, Any]) -> str:
    """metrics.json as canonical text (NaN == NaN) minus how it ran: wall-clock timings (``*_us``,
    ``*_us_mean``, ``learn_*``) and ``torch_threads`` (a run alone uses both cores, a sweep job one)."""

    def keep(row: dict[str, Any]) -> dict[str, Any]:
        return {
            k: v
            for k, v in row.items()
            if not k.endswith(("_us", "_us_mean")) and not k.startswith("learn_") and k != "torch_threads"
        }

    return json.dumps({**keep(metrics), "episodes": [keep(e) for e in metrics["episodes"]]}, sort_keys=True)


# --- bad input ----------------------------------------------------------------------------------------

MALFORMED_URDF = '<robot name="broken"><link name="base"></robot'


def prepare_resume(tiny_run: Path, case_dir: Path, damage: str) -> Path:
    """A copy of the tiny run with its checkpoints damaged in one way."""
    run_dir = case_dir / "old_run"
    shutil.copytree(tiny_run, run_dir)
    found = sorted((run_dir / "checkpoints").glob("step_*"))
    if damage == "no checkpoint":
        shutil.rmtree(run_dir / "checkpoints")
    elif damage == "corrupt models":
        for checkpoint in found:
            model = checkpoint / checkpoints.MODEL_FILE
            model.write_bytes(model.read_bytes()[:1000])
    elif damage == "corrupt replay buffers":
        for checkpoint in found:
            replay = checkpoint / checkpoints.REPLAY_FILE
            replay.write_bytes(replay.read_bytes()[:5000])
    elif damage == "corrupt actor averages":
        for checkpoint in found:
            (checkpoint / checkpoints.AVERAGE_FILE).write_bytes(b"not a torch file")
    elif damage == "corrupt statistics":  # beside final_model.zip, evaluate.py's default model
        (run_dir / f"final_model_{checkpoints.VECNORMALIZE_FILE}").write_bytes(b"\x80\x04not a pickle")
    elif damage == "corrupt config":
        (run_dir / ".hydra" / "config.yaml").write_bytes(b"env: [unclosed\n\xff")
    return run_dir


def evaluating_old_run(override: str, message: str) -> tuple[list[str], str, list[str], bool]:
    """A BAD_INPUTS case: evaluate.py on an undamaged earlier run with one bad value, refused in one line."""
    return (["run={case}/old_run", override, "n_episodes=1", "wandb.mode=disabled"], "no damage", [message], False)


# name: (overrides, needs, fragments of the message, error raised by Hydra itself)
BAD_INPUTS: dict[str, tuple[list[str], str | None, list[str], bool]] = {
    "unknown env": (["env=nope"], None, ["Could not find 'env/nope'", "planar_arm"], True),
    "unknown env id": (["env.id=Nope-v0"], None, ["unknown env id 'Nope-v0'", "choose env="], False),
    "unknown algo": (["algo=ppo"], None, ["Could not find 'algo/ppo'", "ddpg"], True),
    "misspelled key": (["algo.learning_rat=0.01"], None, ["Key 'learning_rat' not in 'DDPGConfig'"], True),
    "wrong type": (["total_timesteps=many"], None, ["Value 'many'", "total_timesteps"], True),
    "zero budget": (["total_timesteps=0"], None, ["total_timesteps must be > 0, got 0", "total_timesteps=<"], False),
    "negative budget": (["eval.final_goals=-5"], None, ["eval.final_goals must be > 0, got -5"], False),
    "negative frequency": (["checkpoint.freq=-1"], None, ["checkpoint.freq must be >= 0", "0 turns it off"], False),
    "invalid hyperparameter": (["algo.gamma=1.5"], None, ["algo.gamma and algo.tau must be in (0, 1]"], False),
    "learning-rate decay past the end": (
        ["algo.learning_rate_final=0.0001", "algo.learning_rate_decay_start=1"],
        None,
        ["algo.learning_rate_decay_start is a fraction of total_timesteps in [0, 1), got 1"],
        False,
    ),
    "actor average past the end": (
        ["algo.actor_average_start=1"],
        None,
        ["algo.actor_average_start is a fraction of total_timesteps in [0, 1)"],
        False,
    ),
    "negative seed": (["seed=-1"], None, ["seed must be >= 0", "got -1"], False),
    "no relabelled goals": (
        ["algo.her.n_sampled_goal=0"],
        None,
        ["n_sampled_goal must be >= 1", "her.enabled=false"],
        False,
    ),
    "negative noise": (
        ["algo.action_noise.sigma=-1"],
        None,
        ["algo.action_noise.sigma must be >= 0", "got -1.0"],
        False,
    ),
    "NaN threshold": (["env.success_threshold=nan"], None, ["env.success_threshold must be > 0, got nan"], False),
    "non-positive physics": (["env.timestep=0"], None, ["env.timestep must be > 0, got 0"], False),
    "negative speed limit": (["env.max_joint_speed=-1"], None, ["env.max_joint_speed must be > 0"], False),
    "NaN cost": (["env.torque_cost=nan"], None, ["env.torque_cost must be a finite cost >= 0, got nan"], False),
    "end effector that cannot move": (["env.end_effector=base"], None, ["end effector base is not moved"], False),
    "a joint twice": (
        ["env.joints=[shoulder,shoulder]"],
        None,
        ["joints ['shoulder'] are listed more than once"],
        False,
    ),
    "missing URDF": (
        ["env=urdf", "env.urdf=no_such_arm.urdf", "env.end_effector=tip"],
        None,
        ["no_such_arm.urdf"],
        False,
    ),
    "malformed URDF": (
        ["env=urdf", "env.urdf={case}/broken.urdf", "env.end_effector=tip"],
        "urdf",
        ["malformed XML", "fix the file"],
        False,
    ),
    "unknown link": (["env.end_effector=hand"], None, ["unknown link 'hand'", "choose from"], False),
    "unknown joint": (["env.joints=[shoulder,wrist]"], None, ["joint 'wrist'", "choose from"], False),
    "resume of a missing dir": (["resume={case}/gone"], None, ["does not exist", "earlier run"], False),
    "resume with a run dir": (
        ["resume={case}/old_run", "hydra.run.dir={case}/run"],
        "no damage",
        ["drop hydra.run.dir="],
        False,
    ),
    "resume without checkpoint": (["resume={case}/old_run"], "no checkpoint", ["no complete checkpoint"], False),
    "resume of corrupt checkpoints": (["resume={case}/old_run"], "corrupt models", ["no complete checkpoint"], False),
    "evaluating a checkpoint on an env with other spaces": (
        ["run={case}/old_run", "env.goal_conditioned=false", "n_episodes=1", "wandb.mode=disabled"],
        "no damage",
        ["has observation_space Dict", "but the env PlanarArmReach-v0 has Box", "check env.*"],
        False,
    ),
    "evaluating with another env preset": (
        ["run={case}/old_run", "env=humanoid", "wandb.mode=disabled"],
        "no damage",
        ["env= is not one of its keys", "env.<key>=<value>"],
        False,
    ),
    # Issue 34: a corrupt file of every checkpoint (one of the newest alone: resume falls back, test_run_dir.py).
    "resume of corrupt replay buffers": (
        ["resume={case}/old_run"],
        "corrupt replay buffers",
        ["no complete checkpoint in", "step_000000000100/replay_buffer.pkl is corrupt (", "start a new run"],
        False,
    ),
    "resume of corrupt actor averages": (
        ["resume={case}/old_run", "algo.actor_average_start=0.5"],
        "corrupt actor averages",
        ["no complete checkpoint in", "step_000000000100/actor_average.pt is corrupt ("],
        False,
    ),
    "resume of a run with a corrupt config": (
        ["resume={case}/old_run"],
        "corrupt config",
        ["old_run/.hydra/config.yaml is not valid YAML", "restore it"],
        False,
    ),
    "evaluating a run with a corrupt config": (
        ["run={case}/old_run", "wandb.mode=disabled"],
        "corrupt config",
        ["old_run/.hydra/config.yaml is not valid YAML", "restore it"],
        False,
    ),
    "evaluating a model with corrupt statistics": (
        ["run={case}/old_run", "n_episodes=1", "wandb.mode=disabled"],
        "corrupt statistics",
        ["final_model_vecnormalize.pkl (the model's observation statistics) is corrupt", "model=latest"],
        False,
    ),
    # Issue 34: values that trained, or started to, and then crashed (the final evaluation, HER's first update).
    "negative goal seed": (["eval.goal_seed=-1"], None, ["eval.goal_seed must be >= 0", "got -1"], False),
    "negative episode limit": (["env.max_episode_steps=-5"], None, ["env.max_episode_steps must be > 0", "-5"], False),
    "empty end-effector list": (["env.end_effector=[]"], None, ["env.end_effector is empty", "name the link"], False),
    "unknown device": (["device=gpu0"], None, ["unknown device 'gpu0'", "device=cpu"], False),
    "updates before HER's first episode": (
        ["algo.learning_starts=10"],
        None,
        ["algo.learning_starts=10 starts the updates before the first episodes end", "algo.learning_starts=50 or more"],
        False,
    ),
    "evaluating with a zero timestep": evaluating_old_run("env.timestep=0", "env.timestep must be > 0, got 0"),
    "evaluating with a NaN cost": evaluating_old_run(
        "env.torque_cost=nan", "env.torque_cost must be a finite cost >= 0, got nan"
    ),
    "evaluating with an empty end-effector list": evaluating_old_run(
        "env.end_effector=[]", "env.end_effector is empty"
    ),
    "evaluating with a negative episode limit": evaluating_old_run(
        "env.max_episode_steps=-1", "env.max_episode_steps must be > 0"
    ),
    "evaluating with a negative goal seed": evaluating_old_run("goal_seed=-1", "goal_seed must be >= 0"),
}


EVALUATE_CASES = {name for name in BAD_INPUTS if name.startswith("evaluating ")}  # evaluate.py, not train.py


def bookkeeping_file(path: Path) -> bool:
    """Written before the checks can refuse a resume: Hydra's log and resume config, and the run's lock."""
    return path.name in ("train.log", checkpoints.LOCK_FILE) or ".hydra_resume" in path.parts


@pytest.fixture(scope="module")
def bad_input_results(
    tiny_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, subprocess.CompletedProcess, dict[str, float]]]:
    """Every bad input run once through train.py's command line (they stop at start-up)."""
    cases, befores, scripts = {}, {}, []
    for name, (overrides, needs, _, _) in BAD_INPUTS.items():
        case_dir = tmp_path_factory.mktemp("bad")
        if needs == "urdf":
            (case_dir / "broken.urdf").write_text(MALFORMED_URDF)
        elif needs:
            prepare_resume(tiny_run, case_dir, needs)
        befores[name] = {str(p): p.stat().st_mtime for p in case_dir.rglob("*") if p.is_file()}
        args = [o.format(case=case_dir) for o in overrides]
        if name in EVALUATE_CASES:
            scripts.append(REPO / "evaluate.py")
        else:
            scripts.append(TRAIN)
            args.append("wandb.mode=offline")
            if not any(o.startswith("resume=") for o in overrides):
                args.append(f"hydra.run.dir={case_dir}/run")
        cases[name] = (case_dir, args)
    results = run_train_many(list(cases.values()), scripts=scripts)
    return {name: (cases[name][0], result, befores[name]) for name, result in zip(cases, results, strict=True)}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_exits_with_one_clear_line(name: str, bad_input_results: dict[str, Any]) -> None:
    _, _, fragments, by_hydra = BAD_INPUTS[name]
    case_dir, result, before = bad_input_results[name]
    # Hydra's composition errors (by_hydra) are turned into one line by train.py too.
    assert result.returncode == 2, result.stderr
    (message,) = error_lines(result.stderr)
    assert "Traceback" not in result.stderr
    assert not by_hydra or message.endswith("fix the override (python train.py --cfg job shows every key and value).")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    # Nothing made or changed: no new run directory, no file of an old run touched.
    assert not (case_dir / "run").exists() and not (case_dir / "outputs").exists()
    assert not (case_dir / "gone").exists()
    # (A resume's Hydra log, .hydra_resume/ and .lock are written before train.py's checks: not run files.)
    after = {str(p): p.stat().st_mtime for p in case_dir.rglob("*") if p.is_file() and not bookkeeping_file(p)}
    assert {k: v for k, v in after.items() if k not in before or before[k] != v} == {}


# --- resume refuses what its checkpoint fixes (issue 26) -----------------------------------------------

# name: (overrides given with resume=, the keys the one line names). The checkpoint's model, replay buffer
# and normalisation statistics were made on the run's task by its algorithm with its n_envs envs.
RESUME_REFUSALS: dict[str, tuple[list[str], list[str]]] = {
    "an env key": (["env.reward_type=sparse"], ["env.reward_type"]),
    "an env list key": (["env.action_scale=[0.5,0.5]", "total_timesteps=400"], ["env.action_scale"]),
    "another env": (["env=humanoid"], ["env=humanoid"]),
    "more envs": (["n_envs=2", "total_timesteps=400"], ["n_envs"]),
    "another algo": (["algo=td3"], ["algo=td3"]),
    "observation normalisation": (["normalize_observations=true"], ["normalize_observations"]),
    "several keys": (
        ["env.reward_type=sparse", "algo.net_arch=[8]", "n_envs=2", "algo.learning_rate=0.0005"],
        ["env.reward_type", "algo.net_arch", "n_envs"],
    ),
}


def run_dir_snapshot(run_dir: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``run_dir`` (hidden ones, symlinks unfollowed): a file's size, mtime and sha256,
    a directory's or link's presence (and the link's target)."""
    entries: dict[str, tuple[Any, ...]] = {}
    for root, directories, files in os.walk(run_dir):
        for name in directories + files:
            path = Path(root) / name
            key = str(path.relative_to(run_dir))
            if path.is_symlink():
                entries[key] = ("link", os.readlink(path))
            elif path.is_file():
                stat = path.stat()
                entries[key] = ("file", stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                entries[key] = ("dir",)
    return entries


@pytest.fixture(scope="module")
def resume_refusals(
    tiny_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, subprocess.CompletedProcess, dict[str, tuple[Any, ...]]]]:
    """Each refused ``resume=`` run once through train.py's command line, on its own copy of the tiny run."""
    cases, befores = {}, {}
    for name, (overrides, _) in RESUME_REFUSALS.items():
        case_dir = tmp_path_factory.mktemp("refused")
        run_dir = case_dir / "run"
        shutil.copytree(tiny_run, run_dir, symlinks=True)
        befores[name] = run_dir_snapshot(run_dir)
        cases[name] = (case_dir, [f"resume={run_dir}", *overrides])
    results = run_train_many(list(cases.values()))
    return {name: (cases[name][0], result, befores[name]) for name, result in zip(cases, results, strict=True)}


@pytest.mark.parametrize("name", list(RESUME_REFUSALS))
def test_resume_refuses_keys_its_checkpoint_fixes(name: str, resume_refusals: dict[str, Any]) -> None:
    """Another env, env key, algo, n_envs or normalisation with ``resume=``: one line naming the keys and the
    fix, exit 2, refused before Hydra writes into the run (no .hydra_resume/, log or wandb segment)."""
    _, keys = RESUME_REFUSALS[name]
    case_dir, result, before = resume_refusals[name]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    them = "it" if len(keys) == 1 else "them"
    (message,) = error_lines(result.stderr)
    assert message.startswith(
        f"error: {', '.join(keys)} cannot change when a run resumes; drop {them} from the command or start a new run"
    ), message
    assert run_dir_snapshot(case_dir / "run") == before
    assert sorted(p.name for p in case_dir.iterdir()) == ["run"]  # no outputs/ either


def test_resume_accepts_the_runs_own_presets_and_values(tiny_run: Path) -> None:
    """The run's whole command again with ``resume=`` added changes nothing fixed: accepted; only the keys
    that differ from the run's count as changes."""
    saved = OmegaConf.load(tiny_run / ".hydra" / "config.yaml")
    overrides = [
        f"resume={tiny_run}",
        "env=planar_arm",
        "algo=ddpg",
        f"env.reward_type={saved.env.reward_type}",
        f"n_envs={saved.n_envs}",
        "total_timesteps=400",
        "algo.learning_rate=0.0005",
    ]
    merged, changed = resumed_config(str(tiny_run), overrides)
    assert merged.resume == str(tiny_run) and merged.total_timesteps == 400
    assert changed == {"learning_rate": 0.0005}
    assert OmegaConf.to_container(merged.env) == OmegaConf.to_container(saved.env)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_evaluation_is_one_line(tiny_run: Path, tmp_path: Path, signum: signal.Signals) -> None:
    """A long evaluation stopped by a signal: one line, exit 128 + signal, no table file half-written."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    before = sorted(p.name for p in run_dir.iterdir())
    process = subprocess.Popen(
        [sys.executable, str(REPO / "evaluate.py"), f"run={run_dir}", "n_episodes=100000", "wandb.mode=disabled"],
        cwd=tmp_path,
        env=train_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Signal once evaluate.py has installed its handlers (the SIGTERM bit of /proc's caught-signals mask).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not caught_signals(process.pid) & (1 << (signal.SIGTERM - 1)):
        time.sleep(0.2)
    time.sleep(2.0)  # into the episodes
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert line.startswith(f"interrupted ({signal.Signals(signum).name}): evaluation stopped")
    assert "Traceback" not in stderr
    assert sorted(p.name for p in run_dir.iterdir()) == before  # no eval file, no temporary


def caught_signals(pid: int) -> int:
    """The process's caught-signals mask (SigCgt in /proc/<pid>/status); 0 if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
