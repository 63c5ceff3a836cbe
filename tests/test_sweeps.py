"""Issue 25: sweeps under every launcher. Torch threads shared by the jobs side by side (joblib, submitit's local
executor, Ray), Ray on a new local instance and on a running cluster, a job requeued by submitit resuming its own
run, and evaluate.py's table of configurations pooled over seeds. Real launchers, real train.py subprocesses."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from rlik.evaluation.sweeps import configuration_rows, configuration_table, summarise_seeds
from rlik.ops.launchers import (
    PARALLEL_JOBS_ENV,
    absolute_sweep_dir_override,
    job_torch_threads,
    ray_init_options,
    requeue_overrides,
)
from tests.conftest import REPO, TINY, check_ok, offline_run_dirs, read_json, run_evaluate, run_train, train_env

CORES = len(os.sched_getaffinity(0))
SUBDIR = "hydra.sweep.subdir=${hydra.job.num}"  # the default <num>_<overrides> name is too long for the OS
# Ray on this machine only: Ray's single-machine mode puts every address on 127.0.0.1 (on Linux Ray otherwise
# binds its services to the machine's outward address, whatever --node-ip-address says); no usage report, and no
# access token written to the home directory.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


# --- torch threads per launcher ----------------------------------------------------------------------------------


def test_job_torch_threads_per_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule of rlik/ops/launchers.py on real launcher config nodes; the end-to-end tests below check metrics.json."""
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv(PARALLEL_JOBS_ENV, raising=False)
    joblib = OmegaConf.create({"_target_": "JoblibLauncher", "n_jobs": 2})
    assert job_torch_threads(3, joblib) == 3  # an explicit torch_threads wins
    assert job_torch_threads(None, None) == CORES  # a run alone: every core
    assert job_torch_threads(None, joblib) == max(1, CORES // 2)
    assert job_torch_threads(None, OmegaConf.create({"n_jobs": -1})) == 1  # joblib's -1: one job per core
    assert job_torch_threads(None, OmegaConf.create({"n_jobs": 4 * CORES})) == 1  # more jobs than cores: 1 each
    ray = OmegaConf.create({"ray": {"init": {"address": None}, "remote": {"num_cpus": 3}}})
    assert job_torch_threads(None, ray) == 3  # Ray: the CPUs the job reserved, whatever this machine has
    assert job_torch_threads(None, OmegaConf.create({"ray": {"init": {}, "remote": {}}})) == 1  # Ray's default
    submitit = OmegaConf.create({"_target_": "SubmititLocalLauncher", "timeout_min": 60})
    assert job_torch_threads(None, submitit) == CORES  # a SLURM job: its allocation, alone
    monkeypatch.setenv(PARALLEL_JOBS_ENV, "2")  # a batch of 2 on submitit's local executor
    assert job_torch_threads(None, submitit) == max(1, CORES // 2)
    monkeypatch.delenv(PARALLEL_JOBS_ENV)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")  # an allocation that does not bind its tasks to cores
    assert job_torch_threads(None, submitit) == 1


# --- Ray -----------------------------------------------------------------------------------------------------------


def test_ray_init_options_settle_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_init_options({"address": None}) == {"address": "local"}  # the plugin then sets its object store
    assert ray_init_options({"address": None, "object_store_memory": 10**9}) == {
        "address": "local",
        "object_store_memory": 10**9,
    }
    # A running cluster refuses object_store_memory: null, which the plugin's setdefault keeps.
    assert ray_init_options({"address": "auto", "object_store_memory": 10**9}) == {
        "address": "auto",
        "object_store_memory": None,
    }
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert ray_init_options({"address": None}) == {"address": "127.0.0.1:6379", "object_store_memory": None}
    assert ray_init_options({"address": "local"}) == {"address": "local"}


def test_absolute_sweep_dir_override_parses_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    parser = OverridesParser.create()
    for name in ("multirun/2026-12-02_12-00-00", "a b", "it's", "x:y=z,w", "back\\slash", "end\\"):
        override = parser.parse_override(absolute_sweep_dir_override(name))
        assert override.key_or_group == "hydra.sweep.dir" and override.value() == str(tmp_path / name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_env() -> Iterator[dict[str, str]]:
    """``RAY_ENV`` with Ray's files (sessions, logs, sockets) in a directory of their own, removed afterwards; under
    /tmp, as a socket's path must stay short (pytest's tmp_path is too long)."""
    pytest.importorskip("ray")
    directory = tempfile.mkdtemp(prefix="rlik-ray-", dir="/tmp")
    try:
        yield {**RAY_ENV, "RAY_TMPDIR": directory}
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def ray_head(tmp_path: Path, ray_env: dict[str, str]) -> Iterator[str]:
    """A Ray head with 2 CPUs on 127.0.0.1 (``ray start --head --block``), started in its own directory; stopped
    by SIGTERM to that process, which takes down the head's processes and only those (``ray stop`` would stop
    every Ray process on the machine)."""
    directory = tmp_path / "head"
    directory.mkdir()
    port = free_port()
    log = open(directory / "head.log", "w")  # noqa: SIM115  (closed in the finaliser)
    head = subprocess.Popen(
        [Path(sys.executable).parent / "ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}"]
        + ["--num-cpus=2", "--disable-usage-stats", "--include-dashboard=false", "--block"],
        cwd=directory,
        env=train_env(**ray_env),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (directory / "head.log").read_text():
            assert head.poll() is None and time.monotonic() < deadline, (directory / "head.log").read_text()
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        log.close()


def test_ray_sweeps_on_a_local_instance_and_on_a_running_cluster(
    ray_head: str, ray_env: dict[str, str], tmp_path: Path
) -> None:
    """Two 2-job sweeps: on a new local instance (jobs of 2 CPUs, one at a time, although a cluster runs here too),
    and on the running head through address=auto and $RAY_ADDRESS (jobs of 1 CPU, side by side) with a relative
    sweep directory, which the head's workers, working elsewhere, still write into."""
    local = tmp_path / "local"
    result = run_train(
        tmp_path,
        "-m",
        "hydra/launcher=rlik_ray",
        "+hydra.launcher.ray.init.num_cpus=2",
        "+hydra.launcher.ray.init.include_dashboard=false",
        "hydra.launcher.ray.remote.num_cpus=2",
        *TINY,
        "seed=0,1",
        f"hydra.sweep.dir={local}",
        SUBDIR,
        **ray_env,
    )
    check_ok(result)
    assert "Started a local Ray instance" in result.stdout + result.stderr
    for job in (0, 1):
        metrics = read_json(local / str(job) / "metrics.json")
        assert metrics["num_timesteps"] == 200 and metrics["torch_threads"] == 2  # 2 CPUs per job

    driver = tmp_path / "driver"  # the cluster's workers work in tmp_path/head
    driver.mkdir()
    result = run_train(
        driver,
        "-m",
        "hydra/launcher=rlik_ray",
        "hydra.launcher.ray.init.address=auto",
        *TINY,
        "seed=0,1",
        "hydra.sweep.dir=sweep",
        SUBDIR,
        RAY_ADDRESS=ray_head,
        **ray_env,
    )
    check_ok(result)
    output = result.stdout + result.stderr
    assert f"Connecting to existing Ray cluster at address: {ray_head}" in output
    assert "'object_store_memory': None" in output  # the plugin's default left out, as Ray demands
    for job in (0, 1):
        metrics = read_json(driver / "sweep" / str(job) / "metrics.json")
        assert metrics["num_timesteps"] == 200 and metrics["torch_threads"] == 1  # 1 CPU each, 2 side by side
    assert not (tmp_path / "head" / "sweep").exists()


# --- submitit: threads, and a requeued job resuming its run ---------------------------------------------------------


def test_requeue_overrides_resume_the_run_once_it_has_a_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    overrides = ["algo=td3", "seed=1"]
    assert requeue_overrides(overrides, tmp_path) == overrides  # nothing saved yet: the job starts again
    assert requeue_overrides([*overrides, f"resume={tiny_run}"], tiny_run) == [f"resume={tiny_run.resolve()}"]


def test_submitit_local_jobs_share_the_cores_and_a_requeued_job_resumes(tmp_path: Path) -> None:
    """hydra/launcher=slurm_local, 2 jobs side by side: each trains with half the cores' threads. Job 0 gets
    submitit's USR2 (preemption, time limit) after its first periodic checkpoint: it saves one at that step, the
    checkpoint hook requeues it with ``resume=<its run dir>``, and it finishes from there in the same wandb run; job
    1 runs through."""
    from submitit.core.utils import DelayedSubmission

    sweep = tmp_path / "sweep"
    steps = 1000  # time to see a checkpoint and signal the job before it ends
    overrides = [o for o in TINY if not o.startswith(("total_timesteps", "eval.freq", "wandb.video", "checkpoint."))]
    command = [sys.executable, str(REPO / "train.py"), "-m", "hydra/launcher=slurm_local", *overrides]
    command += [f"total_timesteps={steps}", "checkpoint.freq=50", "eval.freq=0", "wandb.video_episodes=0"]
    command += ["seed=0,1", f"hydra.sweep.dir={sweep}", SUBDIR]
    sweep_run = subprocess.Popen(
        command, cwd=tmp_path, env=train_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        run_dir = sweep / "0"
        deadline = time.monotonic() + 300
        while not list((run_dir / "checkpoints").glob("step_*")):
            assert sweep_run.poll() is None and time.monotonic() < deadline, sweep_run.communicate()
            time.sleep(0.05)
        pid = int((run_dir / ".lock").read_text())  # the job's process, which holds its run's lock
        os.kill(pid, signal.SIGUSR2)
        stdout, stderr = sweep_run.communicate(timeout=300)
    finally:
        if sweep_run.poll() is None:
            sweep_run.kill()
            sweep_run.wait()
    assert sweep_run.returncode == 0, stderr[-3000:]

    for job in (0, 1):
        metrics = read_json(sweep / str(job) / "metrics.json")
        assert metrics["num_timesteps"] == steps and metrics["torch_threads"] == max(1, CORES // 2)
    logs = {  # per submitit job (its id): the job's stdout and stderr, those of its requeued run appended
        path.parent.name: path.read_text() + path.with_suffix(".err").read_text()
        for path in (sweep / ".submitit").glob("*/*_0_log.out")
    }
    (requeued,) = [job_id for job_id, log in logs.items() if "Requeued job" in log]
    # The job stopped at the signal, saved a checkpoint there, and its requeued run resumed from that one.
    (stopped,) = [line for line in logs[requeued].splitlines() if line.startswith("interrupted at step ")]
    step = int(stopped.split()[3])
    assert stopped.startswith(f"interrupted at step {step} (SIGUSR2): checkpoint saved") and 0 < step < steps
    (resumed,) = [line for line in logs[requeued].splitlines() if line.startswith("resumed from ")]
    assert resumed == f"resumed from {run_dir}/checkpoints/step_{step:012d} at step {step}"
    assert not any("resumed from" in log for job_id, log in logs.items() if job_id != requeued)
    # The submission submitit requeued: the job's own arguments, its overrides now resume= alone.
    requeue = DelayedSubmission.load(sweep / ".submitit" / requeued / f"{requeued}_submitted.pkl")
    assert requeue.args[0] == [f"resume={run_dir}"] and requeue.args[2] == 0
    # One wandb run, continued: two offline segments with one id.
    assert len({path.name.rsplit("-", 1)[1] for path in offline_run_dirs(run_dir)}) == 1
    assert len(offline_run_dirs(run_dir)) == 2


# --- evaluate.py sweep=: one row per configuration -------------------------------------------------------------


def test_summarise_seeds() -> None:
    summary = summarise_seeds([0.9, 1.0, 0.95, 0.85])
    assert summary.n_seeds == 4 and summary.mean == pytest.approx(0.925)
    assert summary.std == pytest.approx(np.std([0.9, 1.0, 0.95, 0.85], ddof=1))
    assert (summary.min, summary.max) == (0.85, 1.0)
    assert 0.85 <= summary.ci_low < summary.mean < summary.ci_high <= 1.0
    assert summarise_seeds([0.9, 1.0, 0.95, 0.85]) == summary  # seeded: the same table every time
    single = summarise_seeds([0.5])
    assert (single.mean, single.std, single.ci_low, single.ci_high) == (0.5, None, None, None)
    with pytest.raises(ValueError):
        summarise_seeds([])


def test_configuration_rows_pool_the_seeds_best_first() -> None:
    configs = [{"seed": s, "algo.tau": t, "env.id": "PlanarArmReach-v0"} for t in (0.005, 0.01) for s in (0, 1)]
    configs.append({"seed": 0, "algo.tau": 0.02, "env.id": "PlanarArmReach-v0"})
    jobs = ["0", "1", "2", "3", "4"]
    rows = configuration_rows(jobs, configs, [0.5, 0.7, 0.9, 0.8, 0.85], ["algo.tau", "seed"])
    assert [(setting, names, seeds) for setting, names, seeds, _ in rows] == [
        ({"algo.tau": 0.01}, ["2", "3"], [0, 1]),
        ({"algo.tau": 0.02}, ["4"], [0]),  # the same mean, one seed: after the one with an interval
        ({"algo.tau": 0.005}, ["0", "1"], [0, 1]),
    ]
    assert [summary.mean for *_, summary in rows] == pytest.approx([0.85, 0.85, 0.6])
    headers, table = configuration_table(jobs, configs, [0.5, 0.7, 0.9, 0.8, 0.85], ["algo.tau", "seed"])
    assert headers[:4] == ["rank", "algo.tau", "seeds", "jobs"] and table[1][-2:] == ["", ""]


def test_evaluate_sweep_ranks_configurations_over_seeds(tmp_path: Path) -> None:
    """A real 2 x 2 sweep (two values of algo.tau, seeds 0 and 1; joblib, 2 jobs side by side with half the cores'
    threads each), then ``evaluate.py sweep=``: the per-job ranking and one row per configuration beside it."""
    sweep = tmp_path / "sweep"
    overrides = [o for o in TINY if not o.startswith(("eval.freq", "wandb.video"))]
    result = run_train(
        tmp_path,
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *overrides,
        "eval.freq=0",
        "wandb.video_episodes=0",
        "algo.tau=0.005,0.05",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        SUBDIR,
    )
    check_ok(result)
    for job in range(4):
        assert read_json(sweep / str(job) / "metrics.json")["torch_threads"] == max(1, CORES // 2)
    evaluation = run_evaluate(tmp_path, f"sweep={sweep}", "n_episodes=4", "wandb.mode=disabled", timeout=300)
    check_ok(evaluation)
    with open(sweep / "eval_policy_ranking.csv") as handle:
        ranking = list(csv.DictReader(handle))
    with open(sweep / "eval_policy_configurations.csv") as handle:
        configurations = list(csv.DictReader(handle))
    assert len(ranking) == 4 and len(configurations) == 2
    success = {row["job"]: float(row["success_rate"]) for row in ranking}
    for row in configurations:
        jobs = row["jobs"].split()
        assert row["seeds"] == "0 1" and {
            ranking_row["algo.tau"] for ranking_row in ranking if ranking_row["job"] in jobs
        } == {row["algo.tau"]}
        values = [success[job] for job in jobs]
        assert float(row["success_mean"]) == pytest.approx(np.mean(values), abs=1e-3)
        assert (float(row["success_min"]), float(row["success_max"])) == pytest.approx((min(values), max(values)))
        assert (
            min(values) - 1e-9
            <= float(row["success_ci95_low"])
            <= float(row["success_ci95_high"])
            <= max(values) + 1e-9
        )
    means = [float(row["success_mean"]) for row in configurations]
    assert means == sorted(means, reverse=True)
    assert "success rate per configuration over its seeds" in evaluation.stdout
