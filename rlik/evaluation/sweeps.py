"""A sweep's jobs pooled by configuration: the jobs that differ only in their seed are one configuration, and its
success is summarised over the seeds (mean, spread, bootstrap confidence interval)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import bootstrap

SEED_KEY = "seed"


@dataclass(frozen=True)
class SeedSummary:
    """One configuration's success rates over its seeds (fractions in [0, 1]).

    ``std`` is the sample standard deviation; ``std``, ``ci_low`` and ``ci_high`` are None for a single seed.
    """

    n_seeds: int
    mean: float
    std: float | None
    min: float
    max: float
    ci_low: float | None
    ci_high: float | None


def summarise_seeds(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 10_000, rng_seed: int = 0
) -> SeedSummary:
    """Mean, spread and percentile-bootstrap confidence interval of the mean of ``values`` (``scipy.stats.bootstrap``).

    :param values: one value per seed, e.g. success rates (fractions).
    :param confidence: the interval's coverage, e.g. 0.95.
    :param resamples: bootstrap resamples of the seeds (drawn with replacement).
    :param rng_seed: seeds the resampling, so a table is the same every time it is made.
    :return: the summary; with few seeds the bootstrap interval is narrower than the truth (it cannot see
        outcomes the seeds never showed), so read it beside ``n_seeds``.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("summarise_seeds needs at least one value.")
    if x.size == 1:
        return SeedSummary(1, float(x[0]), None, float(x[0]), float(x[0]), None, None)
    rng = np.random.default_rng(rng_seed)
    interval = bootstrap(
        (x,), np.mean, confidence_level=confidence, n_resamples=resamples, method="percentile", rng=rng
    )
    low, high = interval.confidence_interval
    return SeedSummary(
        x.size, float(x.mean()), float(x.std(ddof=1)), float(x.min()), float(x.max()), float(low), float(high)
    )


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level of dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def swept_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keys whose value differs between the flattened ``configs`` (a key some lack counts), sorted."""
    return sorted({key for c in configs for key in c if len({json.dumps(x.get(key)) for x in configs}) > 1})


def group_by_configuration(
    configs: Sequence[Mapping[str, Any]], keys: Sequence[str]
) -> list[tuple[dict[str, Any], list[int]]]:
    """The indices of ``configs`` grouped by their values of ``keys`` other than the seed, in order of first index.

    :param configs: flattened configs (``{"algo.tau": 0.005, ...}``), one per run or sweep job.
    :param keys: the swept keys (``swept_keys``); ``seed`` among them is pooled over.
    :return: per configuration, its values of the non-seed keys and the indices of its runs.
    """
    group_keys = [key for key in keys if key != SEED_KEY]
    groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for index, config in enumerate(configs):
        setting = {key: config.get(key) for key in group_keys}
        groups.setdefault(json.dumps(setting, sort_keys=True, default=str), (setting, []))[1].append(index)
    return list(groups.values())


def configuration_rows(
    jobs: Sequence[str], configs: Sequence[Mapping[str, Any]], values: Sequence[float], keys: Sequence[str]
) -> list[tuple[dict[str, Any], list[str], list[Any], SeedSummary]]:
    """The jobs grouped by their values of ``keys`` other than the seed (``group_by_configuration``), best mean first.

    :param jobs: the job names (``<sweep dir>/<name>``), one per job.
    :param configs: each job's flattened config (``{"algo.tau": 0.005, ...}``).
    :param values: each job's success rate.
    :param keys: the swept keys (those whose value differs between jobs); ``seed`` among them is pooled over.
    :return: per configuration: its values of the non-seed keys, its jobs, their seeds and ``summarise_seeds`` of
        their values; sorted by mean, then by the interval's lower end (a single seed last).
    """
    if not len(jobs) == len(configs) == len(values):
        raise ValueError(
            f"{len(jobs)} jobs, {len(configs)} configs and {len(values)} values; give one of each per job."
        )
    rows = [
        (
            setting,
            [jobs[i] for i in indices],
            [configs[i].get(SEED_KEY) for i in indices],
            summarise_seeds([values[i] for i in indices]),
        )
        for setting, indices in group_by_configuration(configs, keys)
    ]
    # Stable: configurations that tie keep the order of their first job.
    return sorted(rows, key=lambda r: (-r[3].mean, -(r[3].ci_low if r[3].ci_low is not None else -np.inf)))


def configuration_table(
    jobs: Sequence[str], configs: Sequence[Mapping[str, Any]], values: Sequence[float], keys: Sequence[str]
) -> tuple[list[str], list[list[Any]]]:
    """``configuration_rows`` as a table: headers, and one row of strings and numbers per configuration.

    Columns: rank, the non-seed swept keys, the seeds and jobs, and success (fraction) mean, std, min, max and the
    bounds of its 95 % bootstrap interval (empty for a single seed).
    """

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.4g}"

    rows = configuration_rows(jobs, configs, values, keys)
    stats = ["success_mean", "success_std", "success_min", "success_max", "success_ci95_low", "success_ci95_high"]
    headers = ["rank", *(key for key in keys if key != SEED_KEY), "seeds", "jobs", *stats]
    table = [
        [
            rank,
            *setting.values(),
            " ".join(str(seed) for seed in seeds),
            " ".join(names),
            *(number(v) for v in (s.mean, s.std, s.min, s.max, s.ci_low, s.ci_high)),
        ]
        for rank, (setting, names, seeds, s) in enumerate(rows, start=1)
    ]
    return headers, table
