"""First-phase statistics of the features, as numpy arrays.

All statistics are per column (one column per slot: an element of an
elementwise vector, or one column holding every element of a shared one)
and are taken over finite values only; missing, NaN, +Inf and -Inf values
are counted. `first_phase.FirstPhaseCombineFn` computes them; the strategies
derive their bounds and impute values from them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

# Grid resolutions tried for quantiles, finest last. A probability must fall on
# the grid; config validation allows multiples of 1e-4.
_QUANTILE_GRIDS = (1_000, 10_000)


def quantile_grid(probabilities: Iterable[float]) -> int:
    """The coarsest grid `N` on which every probability is `k / N`.

    Raises:
      ValueError: A probability is not a multiple of 1 / 10,000.
    """
    probabilities = list(probabilities)
    for grid in _QUANTILE_GRIDS:
        if all(abs(p * grid - round(p * grid)) < 1e-6 for p in probabilities):
            return grid
    raise ValueError(
        f"quantile probabilities must be multiples of 0.0001. Received: {probabilities}"
    )


def quantile_epsilon(grid: int) -> float:
    """The summary's rank error for a grid: a tenth of one grid step."""
    return 0.1 / grid


@dataclasses.dataclass(frozen=True)
class FeatureStatistics:
    """First-phase statistics of `s` columns; numpy `[s]` each.

    Attributes:
      count: finite values. missing / nan / pos_inf / neg_inf: the others.
      mean, std: over finite values, float64. min, max: over finite values.
      boundaries: `[s, grid - 1]` quantile boundaries; column `k - 1` is the
        quantile at probability `k / grid`.
      grid: the quantile grid.
    """

    count: np.ndarray
    missing: np.ndarray
    nan: np.ndarray
    pos_inf: np.ndarray
    neg_inf: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    boundaries: np.ndarray
    grid: int

    def columns(self, start: int, stop: int) -> FeatureStatistics:
        """The statistics of columns `start` to `stop - 1`."""
        sliced = {
            field.name: getattr(self, field.name)[start:stop]
            for field in dataclasses.fields(self)
            if field.name != "grid"
        }
        return FeatureStatistics(**sliced, grid=self.grid)

    def quantile(self, probability: float) -> np.ndarray:
        """The `[s]` quantile at `probability` (0 is the min, 1 the max)."""
        if probability <= 0.0:
            return self.min
        if probability >= 1.0:
            return self.max
        index = int(np.round(probability * self.grid)) - 1
        return self.boundaries[:, index]
