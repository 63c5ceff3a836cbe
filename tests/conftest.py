"""Helpers for the end-to-end tests: run ``train.py`` as a real subprocess with tiny budgets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "train.py"
EVALUATE = REPO / "evaluate.py"

# A run of a few seconds: 200 env steps, two checkpoints, two periodic evaluations, a one-episode video.
TINY = [
    "total_timesteps=200",
    "algo.learning_starts=100",
    "algo.batch_size=16",
    "algo.net_arch=[16,16]",
    "algo.buffer_size=2000",
    "env.max_episode_steps=25",
    "eval.freq=100",
    "eval.periodic_goals=2",
    "eval.final_goals=3",
    "checkpoint.freq=100",
    "wandb.video_episodes=1",
    "wandb.mode=offline",
]


def train_env(**extra: str) -> dict[str, str]:
    """The subprocess environment: quiet wandb, no W&B credentials or mode from the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"WANDB_SILENT": "true", "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0"}, **extra)
    return env


def run_command(
    args: list[str], cwd: Path | None = None, timeout: float = 240, **env: str
) -> subprocess.CompletedProcess:
    """``args`` in ``cwd`` with ``train_env(**env)``, never reading stdin; stdout and stderr captured as text."""
    return subprocess.run(
        args, cwd=cwd, env=train_env(**env), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )


def run_train(cwd: Path, *overrides: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """``python train.py <overrides>`` in ``cwd`` (``run_command``)."""
    return run_command([sys.executable, str(TRAIN), *overrides], cwd, timeout, **env)


def run_evaluate(cwd: Path, *overrides: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python evaluate.py <overrides>`` in ``cwd`` (``run_command``)."""
    return run_command([sys.executable, str(EVALUATE), *overrides], cwd, timeout)


# Runs train.py's __main__ in a forked child of one process that has imported the heavy libraries
# once: each start-up failure then costs a fraction of a second instead of a full interpreter start.
PRELOADED_RUNNER = """
import json, os, runpy, sys
import hydra, torch, wandb, pybullet, stable_baselines3, imageio  # noqa: F401  (the slow imports)
import rlik.training.factory, rlik.ops.tracking, rlik.evaluation.episodes, rlik.training.checkpoints  # noqa: F401
results = []
for case in json.load(sys.stdin):
    pid = os.fork()
    if pid == 0:
        os.chdir(case["cwd"])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(case[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = [case["script"], *case["args"]]
        code = 0
        try:
            runpy.run_path(case["script"], run_name="__main__")
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    results.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(json.dumps(results))
"""


def run_train_many(
    cases: list[tuple[Path, list[str]]], timeout: float = 300, scripts: list[Path] | None = None
) -> list[subprocess.CompletedProcess]:
    """``python train.py <args>`` (or ``scripts[i]``) in ``cwd`` for each ``(cwd, args)``, in turn, preloaded."""
    scripts = scripts or [TRAIN] * len(cases)
    specs = [
        {"cwd": str(cwd), "args": args, "script": str(script), "stdout": str(cwd / ".o"), "stderr": str(cwd / ".e")}
        for (cwd, args), script in zip(cases, scripts, strict=True)
    ]
    runner = subprocess.run(
        [sys.executable, "-c", PRELOADED_RUNNER],
        input=json.dumps(specs),
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert runner.returncode == 0, runner.stderr
    codes = json.loads(runner.stdout.splitlines()[-1])
    results = []
    for spec, code in zip(specs, codes, strict=True):
        out, err = Path(spec["stdout"]), Path(spec["stderr"])
        results.append(subprocess.CompletedProcess(spec["args"], code, out.read_text(), err.read_text()))
        out.unlink()
        err.unlink()
    return results


def check_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def offline_run_dirs(run_dir: Path) -> list[Path]:
    """``run_dir/wandb/offline-run-<time>-<id>`` directories, oldest first."""
    return sorted((Path(run_dir) / "wandb").glob("offline-run-*"))


def wandb_leet(*args: str, cwd: Path | None = None) -> str:
    """Stdout of ``wandb leet <args>`` (wandb's own reader of .wandb files), which must succeed."""
    result = run_command([sys.executable, "-m", "wandb", "leet", *args], cwd, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def leet_inspect(offline_run_dir: Path, *flags: str) -> str:
    """Stdout of ``wandb leet inspect <flags> --json`` on an offline run."""
    return wandb_leet("inspect", *flags, "--json", str(offline_run_dir))


def wandb_summary(offline_run_dir: Path) -> dict[str, Any]:
    """State, run id and summary of an offline run."""
    return json.loads(leet_inspect(offline_run_dir, "--summary"))


def wandb_records(offline_run_dir: Path, kind: str) -> list[dict[str, Any]]:
    """The records of one kind (``history``, ``metric``, ``artifact``, ...) of an offline run, their contents only."""
    records = (json.loads(line) for line in leet_inspect(offline_run_dir).splitlines())
    return [record[kind] for record in records if record.get("type") == kind]


def wandb_history(offline_run_dir: Path) -> list[dict[str, Any]]:
    """The history rows (``run.log`` calls) of an offline run, as ``{key: value}`` dicts."""
    return [history["item"] for history in wandb_records(offline_run_dir, "history")]


@pytest.fixture(autouse=True)
def sb3_log_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare ``model.learn()`` makes SB3's default logger create a folder; keep it out of the system /tmp."""
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "sb3"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of one finished tiny training run (read-only: copy it to modify)."""
    cwd = tmp_path_factory.mktemp("tiny")
    run_dir = cwd / "run"
    check_ok(run_train(cwd, *TINY, f"hydra.run.dir={run_dir}"))
    return run_dir


@pytest.fixture(scope="session")
def joblib_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A 2-job joblib multirun of the tiny config, side by side; the jobs differ only in the wandb name."""
    cwd = tmp_path_factory.mktemp("joblib")
    sweep_dir = cwd / "sweep"
    result = run_train(
        cwd,
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *TINY,
        "wandb.name=a,b",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweep.subdir=${hydra.job.num}",  # the default <num>_<overrides> name is too long for the OS
    )
    return sweep_dir, result
