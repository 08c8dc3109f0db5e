"""The first analysis phase on Beam: counts, moments, min/max and quantiles.

`FirstPhaseCombineFn` turns batches of the side-by-side dense input into the
parameters vector (`tanhguard.transforms.first_phase`) in one
`CombineGlobally`: each bundle accumulates its batches, and the accumulators
are merged once. The same combiner runs in two places:

- inside TFT, wrapped as `FirstPhase`, a `ptransform_analyzer`
  (`first_phase_analyzer`), when the preprocessing_fn analyzes both phases
  itself (TFX's Transform component);
- directly on Beam, fed by `dense_batch` from the files, as the batch job's
  first pass (`tanhguard.pipeline.analyze`). The job then hands the vector to
  the graph as constants, so none of its passes holds the dataset.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
import tensorflow_transform as tft

from tanhguard.pipeline.quantiles import QuantilesCombineFn
from tanhguard.transforms.analyzers import FeatureStatistics, quantile_epsilon
from tanhguard.transforms.config import Config
from tanhguard.transforms.first_phase import (
    GroupKey,
    element_columns,
    parameters,
    statistics_groups,
)
from tanhguard.transforms.fitting import (
    column_moments,
    merge_moments,
    phase0_length,
    total_slots,
)


def dense_batch(batch: pa.RecordBatch, config: Config) -> list[np.ndarray]:
    """A record batch (`csv_reader.arrow_schema`) -> `[x, missing]`.

    `x` is float32 `[rows, D]`, every feature's elements side by side in
    config order, NaN where a value is missing; `missing` is its bool mask.
    The same as `tanhguard.transforms.nonfinite.densify` in the graph: a row
    with fewer values than the feature's size misses its trailing elements.
    The readers have checked that no row holds more (`readers._conform`).
    """
    rows = batch.num_rows
    parts, masks = [], []
    for name, feature in config.features.items():
        column = batch.column(name)
        lengths = pc.list_value_length(column).fill_null(0)
        lengths = np.asarray(lengths, dtype=np.int64)
        values = np.asarray(column.flatten(), dtype=np.float32)
        if feature.size == 1:
            present = (lengths == 1)[:, np.newaxis]
        else:
            present = np.arange(feature.size)[np.newaxis, :] < lengths[:, np.newaxis]
        x = np.full((rows, feature.size), np.nan, np.float32)
        x[present] = values
        parts.append(x)
        masks.append(~present)
    return [np.concatenate(parts, axis=1), np.concatenate(masks, axis=1)]


def _merged(moments, other):
    """`merge_moments` where either side may be None (nothing seen yet)."""
    if moments is None or other is None:
        return other if moments is None else moments
    return merge_moments(moments, other)


class _GroupAccumulator:
    """Counts, moments, min/max and the quantile summaries of one group."""

    def __init__(self, columns: int, quantiles):
        self.counts = np.zeros((5, columns), np.int64)
        self.moments = None
        self.min = np.full(columns, np.inf, np.float32)
        self.max = np.full(columns, -np.inf, np.float32)
        self.quantiles = quantiles


class FirstPhaseCombineFn(beam.CombineFn):
    """Batches `[x, missing]` -> the float64 parameters vector."""

    def __init__(self, config: Config):
        self._config = config
        columns = element_columns(config)
        self._groups: list[tuple[GroupKey, np.ndarray, bool]] = []
        self._quantiles: list[QuantilesCombineFn] = []
        for key, names in statistics_groups(config).items():
            grid, pooled = key
            selected = np.concatenate([columns[name] for name in names])
            width = 1 if pooled is not None else len(selected)
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
        for group, (_, columns, pooled), quantiles in zip(
            accumulator, self._groups, self._quantiles, strict=True
        ):
            x, missing = x_all[:, columns], missing_all[:, columns]
            if pooled:
                x, missing = x.reshape(-1, 1), missing.reshape(-1, 1)
            finite = np.isfinite(x)
            is_nan = np.isnan(x)
            group.counts += np.stack(
                [
                    finite.sum(axis=0),
                    missing.sum(axis=0),
                    (is_nan & ~missing).sum(axis=0),
                    (x == np.inf).sum(axis=0),
                    (x == -np.inf).sum(axis=0),
                ]
            )
            width = x.shape[1]
            moments = column_moments(
                x,
                np.full(width, -np.inf),
                np.full(width, np.inf),
                np.zeros(width, bool),
            )
            group.moments = _merged(group.moments, moments)
            if x.shape[0]:
                group.min = np.minimum(group.min, np.where(finite, x, np.inf).min(0))
                group.max = np.maximum(group.max, np.where(finite, x, -np.inf).max(0))
            group.quantiles = quantiles.add_input(group.quantiles, [x])
        return accumulator

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for other in accumulators:
            for into, group, quantiles in zip(
                merged, other, self._quantiles, strict=True
            ):
                into.counts += group.counts
                into.moments = _merged(into.moments, group.moments)
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
                mean = group.moments.mean
                std = np.sqrt(group.moments.m2 / np.maximum(group.moments.count, 1.0))
            counts = group.counts.astype(np.float64)
            group_stats[key] = FeatureStatistics(
                *counts,
                mean=mean,
                std=std,
                min=group.min,
                max=group.max,
                boundaries=quantiles.extract_output(group.quantiles),
                grid=key[0],
            )
        return parameters(self._config, group_stats)


class FirstPhase(beam.PTransform):
    """Batches `[x, missing]` (see `dense_batch`) -> one parameters vector."""

    def __init__(self, config: Config):
        super().__init__()
        self._config = config

    def expand(self, batches: beam.PCollection) -> list[beam.PCollection]:
        return [
            batches
            | "Statistics" >> beam.CombineGlobally(FirstPhaseCombineFn(self._config))
        ]


def first_phase_analyzer(x: tf.Tensor, missing: tf.Tensor, config: Config) -> tf.Tensor:
    """`FirstPhase` as a TFT analyzer: the float64 parameters vector.

    Args:
      x: float32 `[batch, D]`, as `dense_batch` gives it.
      missing: bool `[batch, D]`.
      config: The validated config.
    """
    (vector,) = tft.experimental.ptransform_analyzer(
        [x, missing],
        FirstPhase(config),
        output_dtypes=[tf.float64],
        output_shapes=[[phase0_length(total_slots(config))]],
        name="tanhguard_first_phase",
    )
    return vector
