"""Quantiles of every column of a batch stream: a Beam combiner.

`tft.quantiles` runs its sketch through TFT's packed combiner, which Beam
spreads over a hot-key fanout of ten: at an epsilon of 1e-4 the sketch of ten
columns is over 100 MB, and on the in-process runner that combine re-encodes
such accumulators through six stages, taking longer than reading the data.
`QuantilesCombineFn` keeps the same sketch (tfx_bsl's `QuantilesSketch`, the
one `tft.quantiles` uses) for a plain combine: the first phase
(`tanhguard.pipeline.statistics`) sketches each bundle's batches and merges
the sketches once.

It also takes columns without a finite value: their quantiles are 0 (where
`tft.quantiles` fails, tensorflow/transform#256), and the caller, which counts
finite values, reports them.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
from tfx_bsl.sketches import QuantilesSketch

# The element count up to which the sketch's rank error stays within epsilon;
# the value `tft.quantiles` uses.
MAX_ELEMENTS = 1 << 32


class QuantilesCombineFn(beam.CombineFn):
    """Batches `[x]`, `x` float `[rows, columns]` -> `[columns, grid - 1]`
    float32: the quantile at probability `k / grid` in column `k - 1`.

    The accumulator is one multi-stream sketch (a stream per column, as
    `tft.quantiles` keeps it: one sketch of many columns holds less than one
    sketch per column) and which columns have had a finite value. The sketch
    skips NaN, and leaves the streams that never had a value out of its
    output; those columns get quantiles of 0.
    """

    def __init__(self, columns: int, grid: int, epsilon: float):
        self._columns = columns
        self._grid = grid
        self._epsilon = epsilon

    @property
    def columns(self) -> int:
        return self._columns

    def create_accumulator(self) -> list:
        sketch = QuantilesSketch(self._epsilon, MAX_ELEMENTS, self._columns)
        return [sketch, np.zeros(self._columns, bool)]

    def add_input(self, accumulator, batch):
        sketch, seen = accumulator
        x = np.asarray(batch[0])
        finite = np.isfinite(x)
        if not finite.all():
            x = np.where(finite, x, np.nan)
        # Each column sorted (NaN last; rows need not stay aligned, streams
        # are independent), as float64: the sketch takes both faster.
        x = np.sort(x, axis=0).astype(np.float64)
        sketch.AddValues(pa.array(x.ravel()))
        seen |= finite.any(axis=0)
        return accumulator

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for sketch, seen in accumulators:
            merged[0].Merge(sketch)
            merged[1] |= seen
        return merged

    def compact(self, accumulator):
        accumulator[0].Compact()
        return accumulator

    def extract_output(self, accumulator) -> np.ndarray:
        sketch, seen = accumulator
        boundaries = np.zeros([self._columns, self._grid - 1], np.float32)
        # One list per stream that had values, in column order:
        # [min, q(1 / grid), ..., q((grid - 1) / grid), max].
        streams = sketch.GetQuantiles(self._grid).to_pylist()
        if len(streams) != int(seen.sum()):
            raise ValueError(
                f"quantile sketch returned {len(streams)} streams for "
                f"{int(seen.sum())} columns with values"
            )
        for column, quantiles in zip(np.flatnonzero(seen), streams, strict=True):
            boundaries[column] = quantiles[1:-1]
        return boundaries
