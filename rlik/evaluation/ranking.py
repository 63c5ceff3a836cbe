"""``evaluate.py sweep=<multirun dir>``: every job of a sweep evaluated on the same goals and ranked, and its jobs
pooled over their seeds, one row per configuration.

Kept out of rlik/evaluation/sweeps.py, whose statistics rlik-plot also uses: that command starts without the
evaluation's imports (torch, PyBullet, wandb)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rlik.evaluation.report import cell, format_table, write_csv
from rlik.evaluation.run import evaluate_run
from rlik.evaluation.sweeps import configuration_table, flatten, swept_keys
from rlik.paths import RunDir
from rlik.training import checkpoints


def evaluate_sweep(cfg: DictConfig, sweep_dir: Path) -> None:
    """Evaluate every job of a multirun that has a usable model and rank them; list the others with the reason.
    Writes <sweep>/eval_<controller>_ranking.csv (one row per ranked job) and eval_<controller>_configurations.csv
    (one row per configuration, its seeds pooled).

    :param cfg: the composed ``EvaluateConfig``: one controller, the goals of each job.
    :param sweep_dir: the multirun directory (hydra.sweep.dir), one job directory per job.
    """
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep={sweep_dir} does not exist; pass a multirun directory (hydra.sweep.dir).")
    found = sorted(p for p in sweep_dir.iterdir() if RunDir(p).is_run())
    if not found:
        raise FileNotFoundError(
            f"sweep={sweep_dir} has no job directories with .hydra/config.yaml; pass a multirun directory."
        )
    # A job that failed or was stopped before writing the model asked for is listed, not a reason to rank none.
    jobs, summaries, unranked = [], [], []
    for job in found:
        try:
            summaries.append(evaluate_run(cfg, job)[cfg.controller])
            jobs.append(job)
        except (ValueError, OSError) as error:
            unranked.append(f"{job.name}: {error}")
    failed_jobs = sweep_dir / "failed_jobs.txt"  # train.py's record of the jobs that failed and left no directory
    unranked += failed_jobs.read_text().splitlines() if failed_jobs.is_file() else []
    if not jobs:
        raise FileNotFoundError(f"no job of sweep={sweep_dir} could be evaluated: {'; '.join(unranked)}")
    configs = [flatten(OmegaConf.to_container(checkpoints.read_yaml(RunDir(job).config), resolve=True)) for job in jobs]
    keys = swept_keys(configs)
    ranked = sorted(zip(jobs, configs, summaries), key=lambda j: (-j[2]["success_rate"], j[2]["final_distance_mean"]))
    metrics = ["success_rate", "final_distance_median", "final_distance_mean", "fall_rate", "episode_return_mean"]
    rows = [
        [i + 1, job.name, *(c.get(k) for k in keys), *(cell(s[m], "{:.4g}") for m in metrics)]
        for i, (job, c, s) in enumerate(ranked)
    ]
    headers = ["rank", "job", *keys, *metrics]
    path = sweep_dir / f"eval_{cfg.controller}_ranking.csv"
    write_csv(path, [headers, *rows])
    print(f"\nranking of {len(jobs)} jobs ({cfg.controller}, {cfg.n_episodes} goals each), also in {path}:")
    print(format_table(headers, rows))
    # The same jobs pooled over their seeds: one row per configuration (rlik/evaluation/sweeps.py).
    headers, rows = configuration_table([j.name for j in jobs], configs, [s["success_rate"] for s in summaries], keys)
    path = sweep_dir / f"eval_{cfg.controller}_configurations.csv"
    write_csv(path, [headers, *rows])
    print(f"\nsuccess rate per configuration over its seeds (mean, spread, 95 % bootstrap interval), also in {path}:")
    print(format_table(headers, rows))
    if unranked:
        print(f"\nnot ranked ({len(unranked)}):\n" + "\n".join(f"  {line}" for line in unranked))
