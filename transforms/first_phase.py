"""The first analysis phase's parameters vector, from the statistics.

The first phase computes, per set of statistics, the counts, moments, min,
max and quantiles of the finite values (`FeatureStatistics`), and from them
each strategy's clip bounds and impute value (`tanhguard.transforms.bounds`).
Everything is packed, field-major over the S slots, into the float64
parameters vector (`PHASE0_FIELDS`, after the row count) that the last phase
(`tanhguard.transforms.fitting`) and the graph read.

Features share one set of analyzers per statistics group (see
`statistics_groups`); the Beam analyzer that runs them is
`tanhguard.pipeline.statistics`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tanhguard.transforms.analyzers import FeatureStatistics, quantile_grid
from tanhguard.transforms.bounds import clip_bounds, impute_value
from tanhguard.transforms.config import (
    REPORTED_QUANTILES,
    Config,
    FeatureConfig,
    QuantileClip,
    RobustScale,
)
from tanhguard.transforms.fitting import (
    COUNT_FIELDS,
    PHASE0_FIELDS,
    QUANTILE_FIELDS,
    phase0_length,
    total_slots,
)

GroupKey = tuple[int, str | None]


def _required_probabilities(feature: FeatureConfig) -> list[float]:
    probabilities = list(REPORTED_QUANTILES)
    if isinstance(feature.clip, QuantileClip):
        probabilities += [feature.clip.lower, feature.clip.upper]
    if isinstance(feature.scale, RobustScale):
        probabilities += [feature.scale.lower, feature.scale.upper]
    return probabilities


def statistics_groups(config: Config) -> dict[GroupKey, list[str]]:
    """Features whose statistics one set of analyzers computes side by side.

    Keys are `(quantile grid, pooled feature or None)`. Scalars and elementwise
    vectors with the same grid share one quantile sketch (a stream per
    column); a shared vector pools its elements into one column, so it has its
    own.
    """
    groups: dict[GroupKey, list[str]] = {}
    for name, feature in config.features.items():
        grid = quantile_grid(_required_probabilities(feature))
        pooled = None if feature.slots == feature.size else name
        groups.setdefault((grid, pooled), []).append(name)
    return groups


def element_columns(config: Config) -> dict[str, np.ndarray]:
    """Each feature's element columns in the side-by-side `[rows, D]` input."""
    columns, start = {}, 0
    for name, feature in config.features.items():
        columns[name] = np.arange(start, start + feature.size)
        start += feature.size
    return columns


def _phase0_fields(
    feature: FeatureConfig, stats: FeatureStatistics
) -> dict[str, np.ndarray]:
    """The `PHASE0_FIELDS` of one feature, `[slots]` each."""
    slots = feature.slots
    lower, upper = clip_bounds(feature.clip, stats, slots)
    if isinstance(feature.scale, RobustScale):
        robust = [
            stats.quantile(feature.scale.lower),
            stats.quantile(feature.scale.upper),
        ]
    else:
        robust = [np.zeros(slots), np.zeros(slots)]
    return {
        "count": stats.count,
        "missing": stats.missing,
        "nan": stats.nan,
        "pos_inf": stats.pos_inf,
        "neg_inf": stats.neg_inf,
        "mean": stats.mean,
        "std": stats.std,
        "min": stats.min,
        "max": stats.max,
        **{
            field: stats.quantile(p)
            for field, p in zip(QUANTILE_FIELDS, REPORTED_QUANTILES, strict=True)
        },
        "phase0_lower": lower,
        "phase0_upper": upper,
        "impute_value": impute_value(feature.impute, stats, slots),
        "robust_lower": robust[0],
        "robust_upper": robust[1],
    }


def parameters(
    config: Config, group_stats: Mapping[GroupKey, FeatureStatistics]
) -> np.ndarray:
    """The float64 parameters vector from each group's statistics.

    Args:
      config: The validated config.
      group_stats: For each key of `statistics_groups(config)`, the statistics
        of its columns: its features' slots side by side, in config order.
    """
    stats: dict[str, FeatureStatistics] = {}
    for key, names in statistics_groups(config).items():
        offset = 0
        for name in names:
            slots = config.features[name].slots
            stats[name] = group_stats[key].columns(offset, offset + slots)
            offset += slots
    fields = {
        name: _phase0_fields(feature, stats[name])
        for name, feature in config.features.items()
    }
    first = next(iter(config.features))
    # Every value is counted once in exactly one of the count fields.
    values_per_row = config.features[first].size // config.features[first].slots
    rows = sum(float(fields[first][key][0]) for key in COUNT_FIELDS)
    packed = [np.array([rows / values_per_row])]
    for key in PHASE0_FIELDS:
        packed += [np.asarray(fields[name][key], np.float64) for name in fields]
    vector = np.concatenate(packed)
    assert vector.shape == (phase0_length(total_slots(config)),), vector.shape
    return vector
