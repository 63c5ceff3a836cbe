"""Where the held-out goals lie that a controller misses: success by region of the goal, and of the joint
configuration the goal was sampled from.

Reads the per-goal rows of ``evaluate.py``'s reports (``eval_<controller>.json``; several runs, or several
controllers of one run, on the same goals) and rebuilds each goal's configuration by sampling it again with the
episode's seed, as the env's ``reset`` does. Prints, per report, the success rate on every goal, on goals behind
the body (``--behind``: goal x below this, m), on goals whose configuration meets every ``--pose`` condition, and
on the rest; then the goals every report misses, with their configurations' values of the ``--pose`` joints.

    python benchmarks/goal_regions.py <run>/eval_policy.json <run>/eval_jacobian_balance.json \\
        --behind -0.15 --pose "waist_yaw<-0.5" --pose "right_shoulder_pitch>1.5"
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, BenchmarkError, run_cli
from omegaconf import OmegaConf

sys.path.insert(0, str(REPO))  # this checkout's rlik, even where another is installed
from rlik.training.factory import make_env

CONDITION = re.compile(r"^(\w+)([<>])(-?[\d.]+)$")


def read_report(path: Path) -> dict[str, Any]:
    """An ``evaluate.py`` report with its per-goal rows."""
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise BenchmarkError(f"cannot read {path} ({error}); give the eval_<controller>.json of evaluate.py.") from None
    if not report.get("episodes"):
        raise BenchmarkError(f"{path} has no per-goal rows; give the eval_<controller>.json of evaluate.py.")
    return report


def goal_configurations(env_config: dict[str, Any], episodes: list[dict[str, Any]]) -> tuple[list[str], np.ndarray]:
    """The joint names and the configurations (n_goals, n_joints), rad, the episodes' goals were sampled from."""
    env = make_env(OmegaConf.create(env_config)).unwrapped
    names, configurations = list(env.robot.joint_names), []
    for episode in episodes:
        env.reset(seed=episode["seed"])  # the start state; then the same draw as that reset's
        goal = env.task.sample_goal(np.random.default_rng(episode["seed"]), env.initial_joint_positions, env.goal_range)
        if not np.allclose(goal, episode["goal"], atol=1e-5):
            raise BenchmarkError(f"the goal of seed {episode['seed']} is not the report's: the env changed since.")
        configurations.append(env.robot.joint_state()[0])
    env.close()
    return names, np.array(configurations)


def pose_mask(conditions: list[str], names: list[str], configurations: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Goals whose configuration meets every condition ``<joint><|><value>``, and the joints the conditions name."""
    mask, joints = np.ones(len(configurations), dtype=bool), []
    for condition in conditions:
        match = CONDITION.match(condition.replace(" ", ""))
        if not match or match.group(1) not in names:
            raise BenchmarkError(f"--pose {condition!r}: write <joint><value or <joint>>value, joints: {names}.")
        joints.append(match.group(1))
        column = configurations[:, names.index(match.group(1))]
        value = float(match.group(3))
        mask &= column < value if match.group(2) == "<" else column > value
    return mask, joints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path, help="eval_<controller>.json files on the same goals")
    parser.add_argument("--behind", type=float, default=-0.15, help="goals with x below this are behind, m")
    parser.add_argument("--pose", action="append", default=[], help='a condition on the goal\'s pose: "waist_yaw<-0.5"')
    args = parser.parse_args()

    reports = [read_report(path) for path in args.reports]
    seeds = [[episode["seed"] for episode in report["episodes"]] for report in reports]
    if any(s != seeds[0] for s in seeds):
        raise BenchmarkError(
            "the reports are not on the same goals (goal seeds differ); evaluate them with one goal_seed."
        )
    episodes = reports[0]["episodes"]
    names, configurations = goal_configurations(reports[0]["env"], episodes)
    behind = np.array([episode["goal"][0] < args.behind for episode in episodes])
    posed, pose_joints = pose_mask(args.pose, names, configurations)
    success = np.array([[episode["success"] for episode in report["episodes"]] for report in reports])

    regions = {
        "all": np.ones(len(episodes), dtype=bool),
        f"behind (x < {args.behind} m)": behind,
        "pose: " + " & ".join(args.pose): posed,
        "the rest": ~posed,
    }
    print("| report | " + " | ".join(f"{name}: {int(mask.sum())} goals" for name, mask in regions.items()) + " |")
    print("|---" * (len(regions) + 1) + "|")
    for path, row in zip(args.reports, success):
        print(f"| {path} | " + " | ".join(f"{100 * row[mask].mean():.1f} %" for mask in regions.values()) + " |")
    missed = np.flatnonzero(~success.any(axis=0))
    print(f"\nmissed by every report: {len(missed)} goals, {int(posed[missed].sum())} of them in the pose region")
    for index in missed:
        values = ", ".join(f"{joint} {configurations[index, names.index(joint)]:+.2f}" for joint in pose_joints)
        print(f"  goal {index} at {np.round(episodes[index]['goal'], 2).tolist()} m; {values} rad")


if __name__ == "__main__":
    run_cli(main)
