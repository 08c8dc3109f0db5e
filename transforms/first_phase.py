"""The first analysis phase: counts, moments, min/max and quantiles.

It also counts the finite zeros and reads the `quantile_grid` of stats.json
(`layout.GRID_PROBABILITIES`) off the same quantile summaries.

Per slot, over the finite values (missing, NaN, +Inf and -Inf are counted),
it computes `statistics.FeatureStatistics`, and from them each strategy's clip bounds
and impute value. Everything is packed, field-major over the S slots, into
the float64 *parameters* vector (`layout.PHASE0_FIELDS` after the row count)
that the fit phase and the graph read.

`FirstPhaseCombineFn` computes the vector from batches `[x, missing]` (every
feature's elements side by side, see `tanhguard.pipeline.batch_layout`) in
one `CombineGlobally`: each bundle accumulates its batches and the
accumulators are merged once. It runs in two places:

- inside TFT, as `FirstPhase` wrapped by `analyzers.first_phase_analyzer`,
  when the preprocessing_fn analyzes both phases itself (TFX's Transform);
- directly on Beam over the files, as the batch job's first pass
  (`tanhguard.pipeline.analyze`), which then hands the vector to the graph as
  constants, so none of its passes holds the dataset.
"""

from __future__ import annotations

from collections.abc import Mapping

import apache_beam as beam
import numpy as np

from tanhguard.transforms.config import Config, FeatureConfig
from tanhguard.transforms.layout import (
    COUNT_FIELDS,
    GRID_FIELDS,
    GRID_PROBABILITIES,
    PHASE0_FIELDS,
    QUANTILE_FIELDS,
    REPORTED_QUANTILES,
    phase0_length,
)
from tanhguard.transforms.moments import (
    ColumnMoments,
    mean_and_m2,
    merge_moments,
    split_finite,
)
from tanhguard.transforms.parallel import map_columns
from tanhguard.transforms.quantile_summary import QuantilesCombineFn, QuantileSummary
from tanhguard.transforms.slots import element_columns, total_slots
from tanhguard.transforms.statistics import (
    FeatureStatistics,
    quantile_epsilon,
    quantile_grid,
)

GroupKey = tuple[int, str | None]


def required_probabilities(feature: FeatureConfig) -> list[float]:
    """The reported quantiles and those the feature's strategies need."""
    return [
        *REPORTED_QUANTILES,
        *feature.impute.probabilities(),
        *feature.clip.probabilities(),
        *feature.scale.probabilities(),
    ]


def statistics_groups(config: Config) -> dict[GroupKey, list[str]]:
    """Features whose statistics one set of summaries computes side by side.

    Keys are `(quantile grid, pooled feature or None)`. Scalars and elementwise
    vectors with the same grid share one group (a summary per column); a
    shared vector pools its elements into one column, so it has its own.
    """
    groups: dict[GroupKey, list[str]] = {}
    for name, feature in config.features.items():
        grid = quantile_grid(required_probabilities(feature))
        pooled = None if feature.slots == feature.size else name
        groups.setdefault((grid, pooled), []).append(name)
    return groups


def _phase0_fields(
    feature: FeatureConfig, stats: FeatureStatistics
) -> dict[str, np.ndarray]:
    """The `PHASE0_FIELDS` of one feature, `[slots]` each."""
    slots = feature.slots
    lower, upper = feature.clip.bounds(stats, slots)
    probabilities = feature.scale.range_probabilities()
    if probabilities is None:
        robust = [np.zeros(slots), np.zeros(slots)]
    else:
        robust = [stats.quantile(p) for p in probabilities]
    return {
        **{field: getattr(stats, field) for field in COUNT_FIELDS},
        **{field: getattr(stats, field) for field in ("mean", "std", "min", "max")},
        **{
            field: stats.quantile(p)
            for field, p in zip(QUANTILE_FIELDS, REPORTED_QUANTILES, strict=True)
        },
        "phase0_lower": lower,
        "phase0_upper": upper,
        "impute_value": feature.impute.impute_value(stats, slots),
        "robust_lower": robust[0],
        "robust_upper": robust[1],
        "zeros": np.zeros(slots) if stats.zeros is None else stats.zeros,
        **{
            field: stats.quantile(p)
            for field, p in zip(GRID_FIELDS, GRID_PROBABILITIES, strict=True)
        },
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


def _column_part(
    x: np.ndarray, missing: np.ndarray, summary: QuantileSummary
) -> tuple[tuple, np.float32, np.float32]:
    """One column of a batch: its counts (finite, missing, NaN that is not
    missing, +Inf, -Inf), finite zeros, the mean and M2 of the finite values
    (float64), their min and max (+-Inf when none); adds them to `summary`."""
    values, nan, pos_inf, neg_inf = split_finite(x)
    count = values.size
    gone = np.count_nonzero(missing)  # missing values are NaN in `x`
    zeros = np.count_nonzero(values == 0)
    mean = m2 = 0.0
    low, high = np.float32(np.inf), np.float32(-np.inf)
    if count:
        mean, m2 = mean_and_m2(values.astype(np.float64))
        low, high = values.min(), values.max()
        summary.extend(values)  # a copy `split_finite` made
    return (count, gone, nan - gone, pos_inf, neg_inf, zeros, mean, m2), low, high


class _GroupAccumulator:
    """Counts, moments, min/max and the quantile summaries of one group."""

    def __init__(self, columns: int, quantiles):
        self.counts = np.zeros((5, columns), np.int64)
        self.zeros = np.zeros(columns, np.int64)
        self.moments = None
        self.min = np.full(columns, np.inf, np.float32)
        self.max = np.full(columns, -np.inf, np.float32)
        self.quantiles = quantiles


class FirstPhaseCombineFn(beam.CombineFn):
    """Batches `[x, missing]` -> the float64 parameters vector.

    `x` is float32 `[rows, D]`, every feature's elements side by side in
    config order, NaN where a value is missing; `missing` is its bool mask.
    """

    def __init__(self, config: Config):
        self._config = config
        columns = element_columns(config)
        every = np.arange(sum(len(found) for found in columns.values()))
        self._groups: list[tuple[GroupKey, np.ndarray | slice, bool]] = []
        self._quantiles: list[QuantilesCombineFn] = []
        for key, names in statistics_groups(config).items():
            grid, pooled = key
            selected = np.concatenate([columns[name] for name in names])
            width = 1 if pooled is not None else len(selected)
            if np.array_equal(selected, every):  # one group: select without a copy
                selected = slice(None)
            self._groups.append((key, selected, pooled is not None))
            self._quantiles.append(
                QuantilesCombineFn(width, grid, quantile_epsilon(grid))
            )

    def create_accumulator(self) -> list[_GroupAccumulator]:
        return [
            _GroupAccumulator(quantiles.columns, quantiles.create_accumulator())
            for quantiles in self._quantiles
        ]

    def add_input(self, accumulator, batch):
        x_all = np.asarray(batch[0], dtype=np.float32)
        missing_all = np.asarray(batch[1], dtype=bool)
        for group, (_, columns, pooled) in zip(accumulator, self._groups, strict=True):
            x, missing = x_all[:, columns].T, missing_all[:, columns].T
            if pooled:  # one column of every element
                x, missing = x.reshape(1, -1), missing.reshape(1, -1)
            x, missing = np.ascontiguousarray(x), np.ascontiguousarray(missing)
            summaries = group.quantiles
            results = map_columns(
                lambda j, x=x, missing=missing, summaries=summaries: _column_part(
                    x[j], missing[j], summaries[j]
                ),
                range(x.shape[0]),
                x.shape[1],
            )
            parts = np.array([result[0] for result in results], dtype=np.float64)
            parts = parts.reshape(x.shape[0], -1)
            group.counts += parts[:, :5].T.astype(np.int64)
            group.zeros += parts[:, 5].astype(np.int64)
            count = parts[:, 0]
            group.moments = merge_moments(
                group.moments,
                ColumnMoments(
                    count,
                    parts[:, 6],
                    parts[:, 7],
                    np.zeros_like(count),
                    np.zeros_like(count),
                ),
            )
            group.min = np.minimum(group.min, [result[1] for result in results])
            group.max = np.maximum(group.max, [result[2] for result in results])
        return accumulator

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for other in accumulators:
            for into, group, quantiles in zip(
                merged, other, self._quantiles, strict=True
            ):
                into.counts += group.counts
                into.zeros += group.zeros
                into.moments = merge_moments(into.moments, group.moments)
                into.min = np.minimum(into.min, group.min)
                into.max = np.maximum(into.max, group.max)
                into.quantiles = quantiles.merge_accumulators(
                    [into.quantiles, group.quantiles]
                )
        return merged

    def extract_output(self, accumulator) -> np.ndarray:
        group_stats = {}
        for group, (key, _, _), quantiles in zip(
            accumulator, self._groups, self._quantiles, strict=True
        ):
            width = quantiles.columns
            if group.moments is None:
                mean, std = np.zeros(width), np.zeros(width)
            else:
                mean, std = group.moments.mean, group.moments.std
            counts = group.counts.astype(np.float64)
            group_stats[key] = FeatureStatistics(
                *counts,
                mean=mean,
                std=std,
                min=group.min,
                max=group.max,
                boundaries=quantiles.extract_output(group.quantiles),
                grid=key[0],
                zeros=group.zeros.astype(np.float64),
            )
        return parameters(self._config, group_stats)


class FirstPhase(beam.PTransform):
    """Batches `[x, missing]` -> one parameters vector."""

    def __init__(self, config: Config):
        super().__init__()
        self._config = config

    def expand(self, batches: beam.PCollection) -> list[beam.PCollection]:
        return [
            batches
            | "Statistics" >> beam.CombineGlobally(FirstPhaseCombineFn(self._config))
        ]
