"""Quantiles of every column of a batch stream: a Beam combiner.

`tft.quantiles` runs tfx_bsl's sketch through TFT's packed combiner, which
Beam spreads over a hot-key fanout of ten: at an epsilon of 1e-4 the sketch of
ten columns is over 100 MB, and on the in-process runner that combine
re-encodes such accumulators through six stages, taking longer than reading
the data. `QuantilesCombineFn` is a plain combine over
`tanhguard.transforms.quantile_summary` (a tenth of that state, the same
deterministic rank error): the first phase (`tanhguard.pipeline.statistics`)
summarizes each bundle's batches and merges the summaries once.

It also takes columns without a finite value: their quantiles are 0 (where
`tft.quantiles` fails, tensorflow/transform#256), and the caller, which counts
finite values, reports them.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from tanhguard.transforms.quantile_summary import (
    QuantileSummary,
    capacity_for,
    merge_lists,
)

# The value count per column up to which the rank error stays within epsilon
# (`tft.quantiles` uses the same).
MAX_ELEMENTS = 1 << 32


class QuantilesCombineFn(beam.CombineFn):
    """Batches `[x]`, `x` float32 `[rows, columns]` -> `[columns, grid - 1]`
    float32: the quantile at probability `k / grid` in column `k - 1`.

    One `QuantileSummary` per column, over its finite values; a column without
    any gets quantiles of 0.
    """

    def __init__(self, columns: int, grid: int, epsilon: float):
        self._columns = columns
        self._grid = grid
        self._capacity = capacity_for(epsilon, MAX_ELEMENTS)

    @property
    def columns(self) -> int:
        return self._columns

    def create_accumulator(self) -> list[QuantileSummary]:
        return [
            QuantileSummary(self._capacity, np.float32) for _ in range(self._columns)
        ]

    def add_input(self, summaries, batch):
        x = np.asarray(batch[0], dtype=np.float32)
        finite = np.isfinite(x)
        if not finite.all():
            x = np.where(finite, x, np.nan)
        for column, summary in enumerate(summaries):
            summary.add(x[:, column])
        return summaries

    def merge_accumulators(self, accumulators):
        return merge_lists(accumulators)

    def extract_output(self, summaries) -> np.ndarray:
        boundaries = np.zeros([self._columns, self._grid - 1], np.float32)
        probabilities = np.arange(1, self._grid) / self._grid
        for column, summary in enumerate(summaries):
            if summary.count:
                boundaries[column] = summary.quantiles(probabilities)
        return boundaries
