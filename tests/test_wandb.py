"""Issue 25: what a run shows in Weights & Biases and on a terminal. README's first command with tiny budgets
(train.py on a pseudo-terminal, then evaluate.py run=outputs/latest), its offline wandb files read back with
wandb's own reader (``wandb leet inspect``)."""

from __future__ import annotations

import fcntl
import json
import math
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from rlik.evaluation.episodes import EpisodeResult, episode_rows, policy_controller
from rlik.ops.tracking import GOAL_COLUMNS, goal_table
from rlik.policy.loading import load_model
from rlik.training.checkpoints import json_text, statistics_path
from rlik.training.factory import make_env
from tests.conftest import (
    TINY,
    TRAIN,
    check_ok,
    leet_inspect,
    offline_run_dirs,
    read_json,
    run_evaluate,
    train_env,
    wandb_history,
    wandb_leet,
    wandb_records,
    wandb_summary,
)

STEPS = 200  # total_timesteps of TINY; periodic evaluations at 100 and 200 on 2 goals, the final one on 3


def run_on_terminal(cwd: Path, *overrides: str, timeout: float = 240) -> tuple[int, str]:
    """``python train.py <overrides>`` with stdout on a pseudo-terminal 200 columns wide, as on a user's terminal
    (SB3 draws its progress bar there); returns the exit code and the terminal's raw output (stderr: in ``cwd``)."""
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    with open(cwd / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(TRAIN), *overrides],
            cwd=cwd,
            env=train_env(TERM="xterm"),
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=stderr,
        )
    os.close(terminal)
    output, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
        return process.wait(timeout=max(1.0, deadline - time.monotonic())), output.decode(errors="replace")
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """README's first command, tiny: ``python train.py`` on a terminal (observations normalised, so that the
    models carry statistics; a tag of the user's own), then ``python evaluate.py run=outputs/latest`` (offline, as the
    run was).

    :return: the working directory (``outputs/latest`` under it) and the training's terminal output.
    """
    cwd = tmp_path_factory.mktemp("readme")
    overrides = ["normalize_observations=true", "normalize_goals=false", "wandb.tags=[baseline]"]
    code, terminal = run_on_terminal(cwd, *TINY, *overrides)
    assert code == 0, (cwd / "stderr.txt").read_text()[-3000:]
    check_ok(run_evaluate(cwd, "run=outputs/latest", "n_episodes=2"))
    return cwd, terminal


def latest_run(cwd: Path) -> Path:
    return (cwd / "outputs" / "latest").resolve()


def test_progress_bar_shows_each_periodic_evaluation_above_it(readme_run: tuple[Path, str]) -> None:
    _, terminal = readme_run
    for step in (100, 200):
        at = terminal.index(f"[step {step}] eval/env_steps={step} eval/fall_rate=")
        # Written where the bar was (its line erased first) as one line, and the bar drawn again below it.
        assert terminal[:at].endswith("\x1b[2K"), repr(terminal[at - 200 : at])
        assert "\n" not in terminal[at : terminal.index("eval/wall_seconds=", at)]
        assert "━" in terminal[at:]
    assert "200/200" in terminal[terminal.index("[step 200]") :] and "final evaluation:" in terminal
    assert "train/actor_loss" not in terminal  # beside the bar only the evaluations are printed


def test_charts_use_env_steps(readme_run: tuple[Path, str]) -> None:
    training = offline_run_dirs(latest_run(readme_run[0]))[0]
    metrics = wandb_records(training, "metric")
    assert {"name": "global_step", "options": {"defined": True}} in metrics
    families = [m["glob_name"].removesuffix("*") for m in metrics if m.get("step_metric") == "global_step"]
    history = wandb_history(training)
    # Every logged key (a table's or a video's fields under its own) in a family charted against global_step.
    keys = {key.split(".")[0] for row in history for key in row if not key.startswith("_")} - {"global_step"}
    assert keys >= {"train/actor_loss", "eval/success_rate", "eval/goals", "final/goals", "final/video"}
    assert [key for key in keys if not key.startswith(tuple(families))] == []
    assert all("global_step" in row for row in history)
    assert [row["global_step"] for row in history if "eval/success_rate" in row] == [100, STEPS]


def test_each_evaluation_is_a_table_of_its_goals(readme_run: tuple[Path, str]) -> None:
    run_dir = latest_run(readme_run[0])
    training = offline_run_dirs(run_dir)[0]

    def tables(key: str) -> list[tuple[int, list[dict]]]:
        """(global_step, rows) of each table logged as ``key``, read from the run's files."""
        logged = [(row["global_step"], row[f"{key}.path"]) for row in wandb_history(training) if f"{key}.path" in row]
        contents = [(step, read_json(training / "files" / path)) for step, path in logged]
        return [(step, [dict(zip(table["columns"], row)) for row in table["data"]]) for step, table in contents]

    periodic = tables("eval/goals")
    assert [(step, len(rows)) for step, rows in periodic] == [(100, 2), (STEPS, 2)]
    ((step, final),) = tables("final/goals")
    assert step == STEPS and list(final[0]) == [c for c in GOAL_COLUMNS if c != "goal_kind"]  # no goal kinds here
    episodes = read_json(run_dir / "metrics.json")["episodes"]
    assert len(final) == len(episodes) == 3
    for row, episode in zip(final, episodes, strict=True):
        assert (row["seed"], row["success"], row["fell"], row["steps"]) == (
            episode["seed"],
            episode["success"],
            episode["fell"],
            episode["steps"],
        )
        assert row["final_distance"] == pytest.approx(episode["final_distance"])
        assert row["goal"] == pytest.approx(episode["goal"])


def test_goal_table_keeps_goal_kinds_and_leaves_unreached_times_empty() -> None:
    def episode(seed: int, success: bool, kind: str) -> EpisodeResult:
        time_to_reach = 0.4 if success else math.nan
        return EpisodeResult(
            seed, [0.3, 0.0, 1.1], success, 0.01, time_to_reach, False, False, -3.0, 2.0, 100, goal_kind=kind
        )

    table = goal_table(episode_rows([episode(1, True, "lean"), episode(2, False, "upright")]))
    assert table.columns == list(GOAL_COLUMNS)  # the humanoid's goal kinds: a column
    rows = [dict(zip(table.columns, row)) for row in table.data]
    assert [(row["goal_kind"], row["time_to_reach"]) for row in rows] == [("lean", 0.4), ("upright", None)]


def test_final_and_best_models_are_artifacts_in_the_run_files(readme_run: tuple[Path, str]) -> None:
    run_dir = latest_run(readme_run[0])
    training = offline_run_dirs(run_dir)[0]
    run_id = read_json(run_dir / "run.json")["wandb_run_id"]
    models = {
        (set(a["aliases"]) - {"latest"}).pop(): a for a in wandb_records(training, "artifact") if a["type"] == "model"
    }
    assert set(models) == {"final", "best"}
    files = {}
    for alias, artifact in models.items():
        assert artifact["name"] == f"model-{run_id}"
        files[alias] = {entry["path"]: Path(entry["local_path"]) for entry in artifact["manifest"]["contents"]}
        assert set(files[alias]) == {"model.zip", "model_vecnormalize.pkl"}
        source = run_dir / f"{alias}_model.zip"
        for name, copy in files[alias].items():
            assert copy.resolve().is_relative_to(training.resolve())  # kept with the run's files, for wandb sync
            assert copy.read_bytes() == (source if name == "model.zip" else statistics_path(source)).read_bytes()
    assert json.loads(models["final"]["metadata"])["num_timesteps"] == STEPS
    # Readable back: the final version loads with its statistics (evaluate.py's loader) and acts as final_model.zip.
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    env = make_env(config.env)
    try:
        artifact_model, statistics = load_model(files["final"]["model.zip"], run_dir, config, env)
        run_model, run_statistics = load_model(run_dir / "final_model.zip", run_dir, config, env)
        assert statistics is not None
        observation, _ = env.reset(seed=5)
        np.testing.assert_array_equal(
            policy_controller(artifact_model, statistics)(observation),
            policy_controller(run_model, run_statistics)(observation),
        )
    finally:
        env.close()


def test_readme_leet_line_shows_the_training_after_an_evaluation(readme_run: tuple[Path, str]) -> None:
    cwd = readme_run[0]
    run_dir = latest_run(cwd)
    run_id = read_json(run_dir / "run.json")["wandb_run_id"]
    readme = wandb_leet("inspect", "--summary", "outputs/latest/wandb", cwd=cwd)  # README's line, as written
    for text in (run_id, "total_timesteps", "final/success_rate", "train/actor_loss"):
        assert text in readme, text
    shown = json.loads(leet_inspect(cwd / "outputs" / "latest" / "wandb", "--summary"))
    assert shown["run_id"] == run_id and shown["config"]["total_timesteps"] == STEPS
    assert shown["summary"]["final/success_rate"] == read_json(run_dir / "metrics.json")["success_rate"]
    # The evaluation: a later segment of the same run, with copies of its files (not links into outputs/latest).
    training, evaluation = offline_run_dirs(run_dir)
    assert shown["file"].startswith(str(training)) and evaluation.name.endswith(run_id)
    for name in ("eval_policy.json", "eval_table.json", "eval_table.csv"):
        copy = evaluation / "files" / name
        assert not copy.is_symlink() and copy.read_bytes() == (run_dir / name).read_bytes(), name
    evaluated = wandb_summary(evaluation)["summary"]
    assert evaluated["eval_policy/success_rate"] == read_json(run_dir / "eval_policy.json")["success_rate"]
    (row,) = [row for row in wandb_history(evaluation) if "eval_policy/goals.path" in row]
    assert row["global_step"] == STEPS
    assert len(read_json(evaluation / "files" / row["eval_policy/goals.path"])["data"]) == 2  # n_episodes=2


def refuse_constant(constant: str) -> None:
    """``json.loads``' ``parse_constant``: NaN, Infinity and -Infinity are not JSON (JavaScript's JSON.parse fails)."""
    raise ValueError(f"{constant} is not standard JSON")


def test_every_json_file_is_standard_json(readme_run: tuple[Path, str]) -> None:
    """Issue 37: every JSON file the run and its evaluation wrote parses strictly; a time to reach of a goal not
    reached, NaN in memory, is ``null``."""
    run_dir = latest_run(readme_run[0])
    files = sorted(run_dir.rglob("*.json"))  # ours, the checkpoints' state.json, wandb's files and table copies
    assert {"metrics.json", "run.json", "eval_policy.json", "eval_table.json", "state.json"} <= {f.name for f in files}
    for path in files:
        json.loads(path.read_text(), parse_constant=refuse_constant)
    for name in ("metrics.json", "eval_policy.json"):
        episodes = read_json(run_dir / name)["episodes"]
        assert not all(e["success"] for e in episodes), name  # the tiny policy misses: NaN times were written
        assert [e["time_to_reach"] is None for e in episodes] == [not e["success"] for e in episodes], name


def test_json_text_writes_null_for_nan_and_infinity() -> None:
    data = {"a": math.nan, "b": [math.inf, 1.5, (2, -math.inf)], "c": {"d": np.float64("nan"), "e": "NaN"}}
    parsed = json.loads(json_text(data), parse_constant=refuse_constant)
    assert parsed == {"a": None, "b": [None, 1.5, [2, None]], "c": {"d": None, "e": "NaN"}}


def test_console_lines_go_to_train_log_and_the_wandb_run(readme_run: tuple[Path, str]) -> None:
    """Issue 37: the run directory is printed first and last; the lines printed above the progress bar are also in
    ``train.log`` (time-stamped) and in the wandb run's console record (``output.log``, offline too)."""
    cwd, terminal = readme_run
    run_dir = latest_run(cwd)
    shown = [line for line in terminal.replace("\r", "\n").splitlines() if "run directory:" in line]
    assert [line.split("run directory: ")[1].split()[0] for line in shown] == [str(run_dir)] * 2
    assert terminal.index("run directory:") < terminal.index("[step 100]") < terminal.rindex("run directory:")
    log = (run_dir / "train.log").read_text().splitlines()
    for text in ("run directory:", "[step 100] eval/env_steps=100", "[step 200] eval/", "final evaluation:"):
        assert any(text in line for line in log), text
    assert all(line[:4].isdigit() for line in log)  # each line time-stamped
    training = offline_run_dirs(run_dir)[0]
    captured = "".join(record.get("line", "") for record in wandb_records(training, "output_raw"))
    assert "[step 100] eval/env_steps=100" in captured and "final evaluation:" in captured
    assert "[step 100] eval/env_steps=100" in (training / "files" / "output.log").read_text()


def test_run_is_named_after_its_directory_tagged_and_grouped(readme_run: tuple[Path, str]) -> None:
    """Issue 37: both segments (training, evaluation) carry the run directory's name, the env and algorithm as tags
    before the user's own, and the experiment's group."""
    run_dir = latest_run(readme_run[0])
    segments = offline_run_dirs(run_dir)
    assert len(segments) == 2
    for segment in segments:
        (record,) = wandb_records(segment, "run")
        assert record["display_name"] == run_dir.name
        assert record["tags"] == ["PlanarArmReach-v0", "ddpg", "baseline"]
        assert record["run_group"] == "PlanarArmReach-v0_ddpg"
    assert read_json(run_dir / "run.json")["wandb_group"] == "PlanarArmReach-v0_ddpg"
