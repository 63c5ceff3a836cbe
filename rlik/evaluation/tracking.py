"""An evaluation into its training run's wandb run: summaries, a table of goals, plots, video and the eval files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import wandb
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rlik.ops.tracking import STEP_METRIC, experiment_group, experiment_tags, goal_table, init_run
from rlik.paths import RunDir
from rlik.training import checkpoints
from rlik.training.config import WandbConfig


def log_to_wandb(
    train_cfg: DictConfig,
    run_dir: Path,
    summaries: dict[str, dict[str, Any]],
    episodes: dict[str, list[dict[str, Any]]],
    media: dict[str, dict[str, Path]],
) -> None:
    """Into the run's wandb run (resumed by id; else a new one in its group): each controller's summary, its
    table of one row per goal, plots and video at the run's last step, and copies of the eval files.

    The resumed segment leaves the wandb directory's ``latest-run`` on the training's own, so that
    ``wandb leet inspect --summary <run dir>/wandb`` still shows the training (config, final metrics).
    wandb keys: the run's own, with those given on this command line on top.

    :param train_cfg: the run's config (``run_config``).
    :param run_dir: the training run directory, its eval files written.
    :param summaries: controller -> its summary (eval_<controller>.json without ``REPORT_CONTEXT``).
    :param episodes: controller -> its ``episode_rows``.
    :param media: controller -> its plots and video (``"video"``), by name.
    """
    given = [o for o in HydraConfig.get().overrides.task if o.startswith("wandb.")]
    wandb_cfg = OmegaConf.merge(
        OmegaConf.structured(WandbConfig), train_cfg.get("wandb", {}), OmegaConf.from_dotlist(given).get("wandb", {})
    )
    run_info = checkpoints.read_json(RunDir(run_dir).run_info) if RunDir(run_dir).run_info.is_file() else {}
    run_id = run_info.get("wandb_run_id")
    config = None if run_id else OmegaConf.to_container(train_cfg, resolve=True)
    group = run_info.get("wandb_group") or experiment_group(train_cfg)
    tags = experiment_tags(train_cfg)
    run = init_run(wandb_cfg, config, str(run_dir), run_id, group, job_type="eval", latest=run_id is None, tags=tags)
    if run is None:
        return
    logged: dict[str, Any] = {}
    for controller, summary in summaries.items():
        name = f"eval_{controller}"
        run.summary.update({f"{name}/{key}": value for key, value in summary.items()})
        logged[f"{name}/goals"] = goal_table(episodes[controller])
        files = media[controller]
        logged.update({f"{name}/{key}": wandb.Image(str(path)) for key, path in files.items() if key != "video"})
        if "video" in files and wandb_cfg.video:
            logged[f"{name}/video"] = wandb.Video(str(files["video"]), format="mp4")
    checkpoint = checkpoints.latest_checkpoint(run_dir / "checkpoints")  # the run's last step
    step = {STEP_METRIC: checkpoints.read_state(checkpoint)["num_timesteps"]} if checkpoint else {}
    run.log({**logged, **step})
    # Copies, not links to run_dir: reached through outputs/latest, a link would follow it to the next run.
    for name in [f"eval_{controller}.json" for controller in summaries] + ["eval_table.json", "eval_table.csv"]:
        copy = shutil.copy2(run_dir / name, Path(run.dir) / name)
        run.save(str(copy), base_path=run.dir, policy="now")
    run.finish()
