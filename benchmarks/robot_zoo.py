"""The robot zoo: every arm learnt by one command with nothing but its URDF and end-effector link, in one table.

Each arm trains with ``python train.py env=arm env.urdf=<urdf> env.end_effector=<link> seed=S`` (one after another,
or ``--jobs 2`` side by side with one torch thread each), then ``evaluate.py`` runs its final model, the Jacobian
controller and PyBullet's IK (``controller=pybullet_ik``) on the run's 200 held-out goals. One row per arm: joints,
success at 2 cm and at 5 mm, median / p95 final error, env steps to 90 % (periodic evaluation, 50 goals),
``learn()`` minutes, and the classical controllers' success on the same goals. UR5 and SO-101 come from the PyPI
package ``example-robot-data`` (``pip install -e ".[robots]"``).

    python benchmarks/robot_zoo.py                                  # every arm, seed 0
    python benchmarks/robot_zoo.py --arms kuka,panda --jobs 2
    python benchmarks/robot_zoo.py --from-runs outputs/zoo/<time>   # the table again, from the runs
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, BenchmarkError, reject_overrides, run_cli, run_python, train
from learning import load_run

# name -> (URDF, end-effector link): nothing else is given.
ZOO = {
    "planar_arm": ("planar_arm_2link.urdf", "fingertip"),
    "kuka_iiwa": ("kuka_iiwa/model.urdf", "lbr_iiwa_link_7"),
    "panda": ("franka_panda/panda.urdf", "panda_grasptarget"),
    "xarm6": ("xarm/xarm6_robot.urdf", "link6"),
    "ur5": ("package://example-robot-data/robots/ur_description/urdf/ur5_robot.urdf", "tool0"),
    "so101": ("package://example-robot-data/robots/so_arm_description/urdf/so101.urdf", "gripper_frame_link"),
}
CONTROLLERS = ("policy", "jacobian", "pybullet_ik")
FINE = 0.005  # m: the second success threshold of the table


def train_arm(name: str, run_dir: Path, seed: int, overrides: list[str], threads: list[str]) -> None:
    urdf, end_effector = ZOO[name]
    run_dir.mkdir(parents=True)
    print(f"{name}: training in {run_dir} (train.py output in stdout.log there)", flush=True)
    start = time.perf_counter()
    command = ["env=arm", f"env.urdf={urdf}", f"env.end_effector={end_effector}", f"seed={seed}", *threads]
    with open(run_dir / "stdout.log", "w") as log:
        metrics = train([*command, *overrides], run_dir, log)
    print(f"{name}: {(time.perf_counter() - start) / 60:.1f} min, success {metrics['success_rate']:.1%}", flush=True)


def evaluate_arm(run_dir: Path) -> None:
    """The final model and the classical controllers on the run's held-out goals: eval_<controller>.json."""
    controllers = f"controller=[{','.join(CONTROLLERS)}]"
    run_python(["evaluate.py", f"run='{run_dir.resolve()}'", "model=final", controllers, "wandb.mode=disabled"])


def success_within(report: dict[str, Any], threshold: float) -> float:
    return float(np.mean([episode["final_distance"] < threshold for episode in report["episodes"]]))


def arm_row(name: str, run_dir: Path) -> dict[str, Any]:
    reports = {}
    for controller in CONTROLLERS:
        path = run_dir / f"eval_{controller}.json"
        if not path.is_file():
            raise BenchmarkError(f"{path} does not exist: evaluate {run_dir} first (or train it with this script).")
        reports[controller] = json.loads(path.read_text())
    policy, run = reports["policy"], load_run(run_dir)
    reached = run.reached(0.9)
    row = {
        "arm": name,
        "joints": len(policy["env"]["joints"] or json.loads((run_dir / "derived.json").read_text())["env.joints"]),
        "success_2cm": policy["success_rate"],
        "success_5mm": success_within(policy, FINE),
        "median_mm": 1000 * policy["final_distance_median"],
        "p95_mm": 1000 * policy["final_distance_p95"],
        "steps_to_90": reached[0] if reached else None,
        "learn_min": run.final["learn_seconds"] / 60 if run.final else None,
    }
    for controller in CONTROLLERS[1:]:
        row[f"{controller}_2cm"] = success_within(reports[controller], 0.02)
        row[f"{controller}_5mm"] = success_within(reports[controller], FINE)
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'arm':<11} {'joints':>6} {'2 cm':>6} {'5 mm':>6} {'median / p95 (mm)':>18} {'to 90 %':>8} "
        f"{'learn()':>8} {'Jacobian 2 cm / 5 mm':>21} {'PyBullet IK 2 cm / 5 mm':>24}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        steps = f"{row['steps_to_90'] / 1000:.0f}k" if row["steps_to_90"] else "never"
        minutes = f"{row['learn_min']:.1f} min" if row["learn_min"] is not None else "-"
        errors = f"{row['median_mm']:.1f} / {row['p95_mm']:.1f}"
        jacobian = f"{row['jacobian_2cm']:.1%} / {row['jacobian_5mm']:.1%}"
        ik = f"{row['pybullet_ik_2cm']:.1%} / {row['pybullet_ik_5mm']:.1%}"
        print(
            f"{row['arm']:<11} {row['joints']:>6} {row['success_2cm']:>6.1%} {row['success_5mm']:>6.1%} {errors:>18} "
            f"{steps:>8} {minutes:>8} {jacobian:>21} {ik:>24}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", default=",".join(ZOO), help=f"comma-separated, of {', '.join(ZOO)} (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="arms trained at a time (default 1)")
    parser.add_argument("--runs-dir", type=Path, help="where to train (default outputs/zoo/<time>)")
    parser.add_argument("--from-runs", type=Path, metavar="DIR", help="a --runs-dir trained before: the table only")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "robot_zoo.csv")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every arm, e.g. total_timesteps=30000")
    args = parser.parse_intermixed_args()
    arms = args.arms.split(",")
    if unknown := sorted(set(arms) - set(ZOO)):
        parser.error(f"unknown arm {unknown[0]}; choose from {', '.join(ZOO)}")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")

    if args.from_runs:
        runs_dir = args.from_runs
    else:
        reject_overrides(
            args.overrides, {"env", "env.urdf", "env.end_effector", "seed", "hydra.run.dir"}, "the zoo sets them."
        )
        runs_dir = args.runs_dir or REPO / "outputs" / "zoo" / time.strftime("%Y-%m-%d_%H-%M-%S")
        threads = ["torch_threads=1"] if args.jobs > 1 else []

        def train_and_evaluate(name: str) -> None:
            train_arm(name, runs_dir / name, args.seed, args.overrides, threads)
            evaluate_arm(runs_dir / name)

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(train_and_evaluate, arms))
        print(f"\nthe table again: python benchmarks/robot_zoo.py --from-runs {runs_dir}\n")
    rows = [arm_row(name, runs_dir / name) for name in arms if (runs_dir / name).is_dir()]
    if not rows:
        raise BenchmarkError(f"{runs_dir} holds none of the arms {', '.join(arms)}.")
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    run_cli(main)
