"""Compute per control step: the learned policy's ways of acting beside the classical IK controllers.

On the observations of real episodes of one env (the Jacobian controller drives them, so they are states a
reaching arm passes through), in one process, interleaved ``--repeats`` times, best kept:

- the lean actor (rlik/policy/lean.py) on one observation, and per observation in a batch of all of them;
- SB3's ``model.predict(obs, deterministic=True)`` (observation normalisation included, as evaluate.py);
- ONNX Runtime on ``policy.onnx`` (rlik/policy/export.py), one observation and batched (with the onnx extra);
- the Jacobian controller's control step, a FABRIK solve (where the env's chain has one), and one PyBullet
  ``calculateInverseKinematics`` solve.

Printed in microseconds and as ratios to the Jacobian controller's step. Timings do not depend on the
weights: without ``--run`` the policy is a fresh model of the default training config.

    python benchmarks/inference.py
    python benchmarks/inference.py --run outputs/<run> --model final
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import REPO, BenchmarkError
from omegaconf import DictConfig

sys.path.insert(0, str(REPO))  # this checkout's rlik, even where another is installed
from rlik.control import FabrikController, JacobianController, inverse_kinematics_time_us
from rlik.evaluation.episodes import predict_controller
from rlik.policy.export import OnnxPolicy, lean_policy, save_onnx
from rlik.policy.lean import stack_observations
from rlik.policy.loading import load_model, model_file, run_config
from rlik.training.config import compose_train_config
from rlik.training.factory import make_env, make_model, make_training_env


def load(run: Path | None, model_name: str) -> tuple[DictConfig, Any, Any]:
    """(training config, SB3 model, observation statistics or None) of ``run``, or of a fresh default model."""
    if run is None:
        cfg = compose_train_config([])
        return cfg, make_model(cfg, make_training_env(cfg.env, 1, seed=0)), None
    cfg = run_config(run)  # the run's model exactly as evaluate.py loads it
    env = make_env(cfg.env)
    model, vec_normalize = load_model(model_file(run, model_name), run, cfg, env)
    return cfg, model, vec_normalize


def jacobian_episodes(env: Any, n_observations: int) -> tuple[list[Any], list[np.ndarray], list[float]]:
    """Observations and goals of Jacobian-driven episodes, and the controller's time per step (s)."""
    controller = JacobianController(env.unwrapped)
    observations, goals, times, seed = [], [], [], 0
    while len(observations) < n_observations:
        observation, _ = env.reset(seed=seed)
        goals.append(env.unwrapped.task.goal.copy())
        done = False
        while not done and len(observations) < n_observations:
            observations.append(observation)
            start = time.perf_counter()
            action = controller(observation)
            times.append(time.perf_counter() - start)
            observation, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        seed += 1
    return observations, goals, times


def per_call_us(function: Callable[[Any], Any], inputs: list[Any]) -> float:
    start = time.perf_counter()
    for item in inputs:
        function(item)
    return 1e6 * (time.perf_counter() - start) / len(inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="a training run directory (default: a fresh default model)")
    parser.add_argument("--model", choices=("best", "final"), default="final", help="with --run (default final)")
    parser.add_argument("--observations", type=int, default=500, help="observations timed (default 500)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the best is kept")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        cfg, model, vec_normalize = load(args.run, args.model)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    env = make_env(cfg.env)
    lean = lean_policy(model, vec_normalize)
    predict = predict_controller(model, vec_normalize)
    try:
        fabrik = FabrikController(env.unwrapped)
    except ValueError as error:  # a chain FABRIK does not handle
        fabrik, fabrik_reason = None, str(error)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            onnx = OnnxPolicy(save_onnx(lean, Path(scratch) / "policy.onnx"))
        except ImportError as error:
            onnx, onnx_reason = None, str(error)

        best: dict[str, float] = {}

        def keep(name: str, us: float) -> None:
            best[name] = min(best.get(name, np.inf), us)

        for _ in range(args.repeats):
            observations, goals, jacobian_times = jacobian_episodes(env, args.observations)
            batch = stack_observations(observations)
            keep("Jacobian controller step", 1e6 * float(np.mean(jacobian_times)))
            keep("lean policy, one observation", per_call_us(lean.act, observations))
            keep("lean policy, per observation of a batch", per_call_us(lean.act, [batch]) / len(observations))
            keep("SB3 predict", per_call_us(predict, observations))
            if onnx is not None:
                keep("ONNX Runtime, one observation", per_call_us(onnx.act, observations))
                keep("ONNX Runtime, per observation of a batch", per_call_us(onnx.act, [batch]) / len(observations))
            if fabrik is not None:
                keep("FABRIK solve", per_call_us(fabrik.solve, goals))
            keep("PyBullet calculateInverseKinematics solve", inverse_kinematics_time_us(env.unwrapped, goals))
    env.close()

    source = f"{args.run} ({args.model}_model.zip)" if args.run else "a fresh model of the default config"
    print(f"{cfg.env.id}, {cfg.algo.name} policy from {source}; {args.observations} observations of Jacobian-driven")
    print(f"episodes; best of {args.repeats} interleaved repetitions, 1 torch thread\n")
    reference = best["Jacobian controller step"]
    print(f"{'':<44} {'us':>8} {'/ Jacobian step':>16}")
    for name, us in best.items():
        print(f"{name:<44} {us:>8.1f} {us / reference:>16.3f}")
    if onnx is None:
        print(f"\nONNX Runtime not timed: {onnx_reason}")
    if fabrik is None:
        print(f"\nFABRIK not timed: {fabrik_reason}")


if __name__ == "__main__":
    try:
        main()
    except BenchmarkError as error:
        raise SystemExit(f"error: {error}") from None
