"""Clip bounds: how `lower` and `upper` follow from each clip strategy.

Every strategy's bounds come from the first-phase statistics of the finite
training values, except `mad`, whose MAD needs the median first: its bounds
are derived in the last phase (`tanhguard.transforms.fitting.final_bounds`).
"""

from __future__ import annotations

import math

import numpy as np

from tanhguard.transforms.analyzers import FeatureStatistics
from tanhguard.transforms.config import (
    ClipSpec,
    ConstantImpute,
    FixedClip,
    IqrClip,
    MadClip,
    MeanImpute,
    MedianImpute,
    MinMaxClip,
    NoClip,
    QuantileClip,
    SigmaClip,
    ZeroImpute,
)
from tanhguard.transforms.fitting import FLOAT32_MAX


def clip_bounds(
    spec: ClipSpec, stats: FeatureStatistics, slots: int
) -> tuple[np.ndarray, np.ndarray]:
    """First-phase `(lower, upper)`, each float64 `[slots]`.

    Returns:
      - `fixed`: the configured values.
      - `quantile`: the quantiles at the configured probabilities.
      - `sigma`: `mean -+ k * std`.
      - `iqr`: `Q1 - k * IQR`, `Q3 + k * IQR`.
      - `minmax`: the min and max.
      - `none`: the float32 range (only +-Inf are clipped, to its ends).
      - `mad`: NaN; the last phase fills them in.
      Bounds of a constant feature are equal (or collapse when clamped), so
      every value clips to that constant. Values beyond the float32 range are
      clamped to it later, with the final bounds.
    """

    def filled(value: float) -> np.ndarray:
        return np.full(slots, value, np.float64)

    def as64(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, np.float64)

    if isinstance(spec, FixedClip):
        return filled(spec.lower), filled(spec.upper)
    if isinstance(spec, QuantileClip):
        return as64(stats.quantile(spec.lower)), as64(stats.quantile(spec.upper))
    if isinstance(spec, SigmaClip):
        mean, std = as64(stats.mean), as64(stats.std)
        return mean - spec.k * std, mean + spec.k * std
    if isinstance(spec, IqrClip):
        q1, q3 = as64(stats.quantile(0.25)), as64(stats.quantile(0.75))
        return q1 - spec.k * (q3 - q1), q3 + spec.k * (q3 - q1)
    if isinstance(spec, MinMaxClip):
        return as64(stats.min), as64(stats.max)
    if isinstance(spec, NoClip):
        return filled(-FLOAT32_MAX), filled(FLOAT32_MAX)
    if isinstance(spec, MadClip):
        return filled(math.nan), filled(math.nan)
    raise TypeError(f"`clip`: unsupported strategy. Received: {spec!r}")


def impute_value(spec, stats: FeatureStatistics, slots: int) -> np.ndarray:
    """The float64 `[slots]` value missing and NaN inputs take.

    `median` and `mean` are of the finite training values; `zero` is 0 and
    `constant` the configured value. The graph clips it like any value.
    """
    if isinstance(spec, MedianImpute):
        return np.asarray(stats.quantile(0.5), np.float64)
    if isinstance(spec, MeanImpute):
        return np.asarray(stats.mean, np.float64)
    if isinstance(spec, ZeroImpute):
        return np.zeros(slots, np.float64)
    if isinstance(spec, ConstantImpute):
        return np.full(slots, spec.value, np.float64)
    raise TypeError(f"`impute`: unsupported strategy. Received: {spec!r}")
