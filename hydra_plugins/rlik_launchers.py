"""rlik's Hydra launchers: hydra-submitit-launcher's, with requeued jobs resuming their run (conf/hydra/launcher/
slurm.yaml, slurm_local.yaml), and hydra-ray-launcher's, on a new local Ray instance or a running cluster
(``hydra/launcher=rlik_ray``, conf/hydra/launcher/rlik_ray.yaml; ``pip install -e ".[ray]"``):

    python train.py -m hydra/launcher=rlik_ray seed=0,1,2,3                            # a new Ray instance on this machine
    RAY_ADDRESS=<head>:6379 python train.py -m hydra/launcher=rlik_ray seed=0,1,2,3    # the cluster of `ray start --head`
    python train.py -m hydra/launcher=rlik_ray hydra.launcher.ray.init.address=auto    # the cluster started on this machine
    python train.py -m hydra/launcher=rlik_ray hydra.launcher.ray.remote.num_cpus=2 seed=0,1   # 2 CPUs and threads a job

Ray runs as many jobs side by side as the CPUs allow. On a cluster, every node needs this checkout and the sweep
directory (``hydra.sweep.dir``) at the same path. Other keywords of ``ray.init`` and ``ray.remote``:
``+hydra.launcher.ray.init.<key>=...``, ``+hydra.launcher.ray.remote.<key>=...``.

Hydra instantiates launchers only from the ``hydra_plugins`` namespace package and finds this module there when the
repository root is on ``sys.path`` (``python train.py`` from the root), so every Hydra app's plugin scan imports this
module: it imports nothing of rlik until one of its launchers runs (the logic lives in ``rlik/ops/launchers.py``), and
its configs are in rlik's own config directory, so another app's ``hydra/launcher=ray`` stays hydra-ray-launcher's.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn
from hydra.errors import ConfigCompositionException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
except ImportError as error:  # the sweeps extra is not installed; Hydra's plugin scan must still import this module
    SUBMITIT_MISSING = str(error)

    class BaseSubmititLauncher(Launcher):  # type: ignore[no-redef]
        """Stands in for hydra-submitit-launcher's launcher without the sweeps extra: says how to install it."""

        _EXECUTOR = ""

        def __init__(self, **params: Any) -> None:
            raise ConfigCompositionException(
                f"hydra/launcher=slurm and slurm_local need hydra-submitit-launcher ({SUBMITIT_MISSING}): "
                "pip install 'rlik[sweeps]'"
            )

        def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
            raise NotImplementedError

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            raise NotImplementedError


class ResumingSubmititLauncher(BaseSubmititLauncher):
    """hydra-submitit-launcher's launcher whose jobs, on a preemption or near their time limit (submitit's
    ``USR2``), save a checkpoint at the current step and are requeued to resume their own run from it instead of
    starting it again."""

    def __call__(self, *args: Any) -> JobReturn:
        """The job, in its own process: submitit's ``USR2`` handler (which requeues the job through ``checkpoint``)
        runs only after training has stopped and saved a checkpoint at that step (``rlik.ops.interrupts``)."""
        import submitit

        from rlik.ops import interrupts

        preempt = submitit.JobEnvironment._usr_sig()  # USR2, or $SUBMITIT_PREEMPT_SIGNAL
        interrupts.SIGNAL_STOP.stop_then(preempt, signal.getsignal(preempt))
        return super().__call__(*args)

    def checkpoint(
        self,
        sweep_overrides: Sequence[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> Any:
        """submitit's checkpoint hook, called in the job on its ``USR2``: the same job with ``requeue_overrides``.

        :return: the ``DelayedSubmission`` submitit requeues.
        """
        import submitit  # lazy, as in the plugin: plugin discovery stays fast

        from rlik.ops.launchers import requeue_overrides

        return submitit.helpers.DelayedSubmission(
            self,
            requeue_overrides(sweep_overrides, self.job_run_dir(sweep_overrides, job_dir_key, job_num)),
            job_dir_key,
            job_num,
            job_id,
            singleton_state,
        )

    def job_run_dir(self, sweep_overrides: Sequence[str], job_dir_key: str, job_num: int) -> Path:
        """The job's run directory, as ``hydra.core.utils.run_job`` makes it: ``<job_dir_key>/<hydra.sweep.subdir>``
        of the job's config (with the job id and number the plugin gives it), from this process's working directory."""
        import submitit

        assert self.config is not None and self.hydra_context is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(sweep_overrides))
        with open_dict(config.hydra.job):
            config.hydra.job.id, config.hydra.job.num = submitit.JobEnvironment().job_id, job_num
        return Path(os.path.abspath(Path(str(OmegaConf.select(config, job_dir_key))) / str(config.hydra.sweep.subdir)))


class SubmititSlurmLauncher(ResumingSubmititLauncher):
    """SLURM jobs (``hydra/launcher=slurm``): each in its own allocation, requeued into its own run."""

    _EXECUTOR = "slurm"


class SubmititLocalLauncher(ResumingSubmititLauncher):
    """submitit's local executor (``hydra/launcher=slurm_local``): the jobs of a batch run side by side on this
    machine, each told how many they are (``$RLIK_PARALLEL_JOBS``) to share the cores' torch threads."""

    _EXECUTOR = "local"
    parallel_jobs = 1

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        self.parallel_jobs = len(job_overrides)  # pickled with this launcher into every job of the batch
        return super().launch(job_overrides, initial_job_idx)

    def __call__(self, *args: Any) -> JobReturn:
        from rlik.ops.launchers import PARALLEL_JOBS_ENV

        os.environ[PARALLEL_JOBS_ENV] = str(self.parallel_jobs)  # in the job's own process
        return super().__call__(*args)


class RayLauncher(Launcher):
    """hydra-ray-launcher's launcher with ``ray.init``'s address settled first (``ray_init_options``): a new local
    Ray instance, or a running cluster from the config or ``$RAY_ADDRESS`` without the object store size Ray refuses
    there."""

    def __init__(self, ray: DictConfig) -> None:
        self.ray_cfg = ray  # the names hydra-ray-launcher's launch() reads
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        # Before the sweep directory exists: a missing plugin leaves nothing behind.
        try:
            from hydra_plugins.hydra_ray_launcher import _core  # noqa: F401  (imports ray)
        except ImportError as error:
            raise ConfigCompositionException(
                f"hydra/launcher=rlik_ray needs Ray and hydra-ray-launcher ({error}): pip install 'rlik[ray]'"
            ) from None
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.hydra_ray_launcher import _core

        from rlik.ops.launchers import absolute_sweep_dir_override, ray_init_options

        assert self.config is not None
        with open_dict(self.ray_cfg):
            self.ray_cfg.init = ray_init_options(self.ray_cfg.init)
        # Workers of a cluster started by `ray start` run in that command's directory: every job's config gets
        # the sweep directory as an absolute path (load_sweep_config applies the hydra.* overrides).
        with read_write(self.config.hydra), open_dict(self.config.hydra):
            self.config.hydra.overrides.hydra.append(absolute_sweep_dir_override(str(self.config.hydra.sweep.dir)))
        return _core.launch(launcher=self, job_overrides=job_overrides, initial_job_idx=initial_job_idx)
