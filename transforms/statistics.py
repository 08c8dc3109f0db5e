"""Statistics of the features, as numpy arrays: the first phase's, and the
histograms the fit phase counts.

All statistics are per column (one column per slot: an element of an
elementwise vector, or one column holding every element of a shared one)
and are taken over finite values only; missing, NaN, +Inf and -Inf values
are counted. `first_phase.FirstPhaseCombineFn` computes `FeatureStatistics`;
the strategies derive their bounds and impute values from them.

Histograms follow `numpy.histogram`'s rules: equal bins from
`numpy.linspace(lo, hi, bins + 1)`, each bin `[e_i, e_i+1)` but the last,
which holds its right edge too; `bin_counts` gives the same counts as
`numpy.histogram(values, bins=edges)`.
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
      zeros: finite values equal to 0 (None: not counted).
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
    zeros: np.ndarray | None = None

    def columns(self, start: int, stop: int) -> FeatureStatistics:
        """The statistics of columns `start` to `stop - 1`."""
        sliced = {
            field.name: getattr(self, field.name)[start:stop]
            for field in dataclasses.fields(self)
            if field.name != "grid" and getattr(self, field.name) is not None
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


# A clip bound at the float32 limit is no bound (`clip: none`): it does not
# widen the histogram's range.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def histogram_range(
    stats: dict[str, np.ndarray], lower: np.ndarray, upper: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`(lo, hi)` per slot: the range the raw histogram's equal bins cover.

    The central range from the first phase's quantiles, `[q0.001, q0.999]`,
    widened to include the clip bounds (but not a bound at the float32 limit,
    which `clip: none` uses), and never beyond the finite min and max: the
    clip bounds show inside the histogram, and 0.1% of the values at most fall
    outside it on each side (counted as `below` / `above`).

    Args:
      stats: `[S]` arrays `min`, `max`, `q0.001`, `q0.999`, `count`.
      lower, upper: `[S]` final clip bounds.

    Returns:
      `lo < hi`, float64. A slot whose values are one number `v` gets
      `(v - 0.5, v + 0.5)` (numpy's rule); one without finite values gets its
      clip bounds, or `(0, 1)` (numpy's default) when those are no bounds.
    """
    lower = np.asarray(lower, np.float64)
    upper = np.asarray(upper, np.float64)
    low_bound = np.where(np.abs(lower) >= _FLOAT32_MAX, np.inf, lower)
    high_bound = np.where(np.abs(upper) >= _FLOAT32_MAX, -np.inf, upper)
    lo = np.maximum(np.minimum(stats["q0.001"], low_bound), stats["min"])
    hi = np.minimum(np.maximum(stats["q0.999"], high_bound), stats["max"])
    empty = stats["count"] == 0
    bounded = (np.abs(lower) < _FLOAT32_MAX) & (np.abs(upper) < _FLOAT32_MAX)
    lo = np.where(empty, np.where(bounded, lower, 0.0), lo)
    hi = np.where(empty, np.where(bounded, upper, 1.0), hi)
    lo, hi = lo.astype(np.float64), hi.astype(np.float64)
    one_value = lo >= hi
    lo = np.where(one_value, lo - 0.5, lo)
    hi = np.where(one_value, hi + 0.5, hi)
    # Far from 0, +-0.5 is below float64's resolution.
    still = lo >= hi
    lo = np.where(still, np.nextafter(lo, -np.inf), lo)
    hi = np.where(still, np.nextafter(hi, np.inf), hi)
    return lo, hi


def histogram_edges(lo: np.ndarray, hi: np.ndarray, bins: int) -> np.ndarray:
    """`[S, bins + 1]` equal-width edges per slot, as `numpy.histogram` makes
    them for `range=(lo, hi)`."""
    return np.stack(
        [np.linspace(a, b, bins + 1) for a, b in zip(lo, hi, strict=True)]
    ).reshape(len(lo), bins + 1)


def bin_counts(
    x: np.ndarray, edges: np.ndarray, top_bucket: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts the finite values of each column of `x` in its equal bins.

    Args:
      x: `[rows, D]` values (NaN and +-Inf are skipped).
      edges: `[D, K + 1]` equal-width increasing edges per column (as
        `histogram_edges` makes them).
      top_bucket: Count values equal to the last edge in a bucket `K` of their
        own instead of in the last bin.

    Returns:
      `(counts [D, K] (or [D, K + 1]), below [D], above [D])`: the counts are
      `numpy.histogram(column, bins=edges)`'s; `below`/`above` count the
      finite values left of the first edge / right of the last.
    """
    x = np.asarray(x, np.float64)
    columns = x.shape[1]
    bins = edges.shape[1] - 1
    lo, hi = edges[:, 0], edges[:, -1]
    # Buckets per column: 0 below the first edge (NaN and -Inf too), 1..K
    # the bins `[e_j-1, e_j)`, K + 1 from the last edge on (+Inf too).
    bounds = np.concatenate(
        [np.full((columns, 1), -np.inf), edges, np.full((columns, 1), np.inf)], axis=1
    ).ravel()
    offsets = np.arange(columns) * (bins + 3)
    # A first guess from the position (rounding may put it one bucket off;
    # `fmax` sends NaN to bucket 0), then the exact comparison with the
    # bucket's own edges, as numpy.histogram corrects it: +Inf ends in the
    # bucket past K + 1, which is not kept.
    scale = bins / (hi - lo)
    with np.errstate(invalid="ignore", over="ignore"):
        position = x * scale
        position += 1.0 - lo * scale
    np.fmax(position, 0.0, out=position)
    np.fmin(position, bins + 1.0, out=position)
    index = position.astype(np.int64)
    index += offsets
    size = columns * (bins + 3)
    buckets = np.bincount(index.ravel(), minlength=size)
    # Few guesses are off (by rounding, next to an edge): count the guesses,
    # then move the values below their bucket's lower edge one bucket down
    # and those at or above its upper edge one up. Selecting the few is
    # cheaper than correcting every index (an int64 minus a bool array).
    with np.errstate(invalid="ignore"):
        down = index[x < np.take(bounds, index)]
        up = index[x >= np.take(bounds[1:], index)]
    for moved, step in ((down, -1), (up, 1)):
        if moved.size:
            buckets -= np.bincount(moved, minlength=size)
            buckets += np.bincount(moved + step, minlength=size)[:size]
    buckets = buckets.reshape(columns, bins + 3)[:, : bins + 2]
    nan = np.count_nonzero(np.isnan(x), axis=0)
    at_top = np.count_nonzero(x == hi, axis=0)
    below = buckets[:, 0] - nan - np.count_nonzero(x == -np.inf, axis=0)
    above = buckets[:, bins + 1] - at_top
    counts = buckets[:, 1 : bins + 1].copy()
    if top_bucket:
        counts = np.concatenate([counts, at_top[:, np.newaxis]], axis=1)
    else:
        counts[:, -1] += at_top
    return counts, below, above


def sorted_bin_counts(
    ordered: np.ndarray, edges: np.ndarray, top_bucket: bool = False
) -> tuple[np.ndarray, int, int]:
    """`bin_counts` of one column from its finite values sorted: the same
    counts, `below` and `above`, found by searching the edges among the
    values (`ordered` ascending, no NaN; `edges` `[K + 1]`)."""
    left = np.searchsorted(ordered, edges, side="left")  # values < each edge
    to_top = int(np.searchsorted(ordered, edges[-1], side="right"))  # <= the last
    counts = np.diff(left)
    at_top = to_top - int(left[-1])
    if top_bucket:
        counts = np.append(counts, at_top)
    else:
        counts[-1] += at_top
    return counts, int(left[0]), ordered.size - to_top


def output_histogram(
    fine_edges: np.ndarray,
    fine_counts: np.ndarray,
    points: list[tuple[float, float]],
    image,
    bins: int,
    bound: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The histogram of a slot's outputs, from counts of the values before a
    monotone (non-decreasing) map to the output.

    The values before the map are counted in equal bins `fine_edges` (the
    last bucket of `fine_counts` holds the values equal to the last edge) and
    as point masses `points` (`(value, count)`). Since `image` never reverses
    an order, the values of a bin `[a, b)` all land in `[image(a), image(b)]`:
    the images of the edges are the output's edges, and the counts carry over
    exactly. Bins whose images coincide (where the output bound cuts) are
    merged; the rest are merged, neighbours together, into at most `bins`.
    Point masses outside them get one bin at each end at most.

    Args:
      fine_edges: `[F + 1]` increasing edges, or empty (no such values).
      fine_counts: `[F + 1]` counts: one per bin, then the top bucket.
      points: `(value, count)` point masses.
      image: The monotone map, numpy in and out.
      bins: The target number of bins.
      bound: Every image lies in `[-bound, bound]`.

    Returns:
      `(edges, counts)`: increasing edges, at most `bins + 2` counts. When
      every output is one number, `bins` equal bins over `[-bound, bound]`.
    """
    masses = [(float(image(np.array([v]))[0]), float(c)) for v, c in points if c > 0]
    fine_counts = np.asarray(fine_counts, np.float64)
    edges = np.empty(0)
    counts = np.empty(0)
    if len(fine_edges):
        mapped = image(np.asarray(fine_edges, np.float64))
        masses.append((float(mapped[-1]), float(fine_counts[-1])))
        unique = np.unique(mapped)
        if unique.size >= 2 and fine_counts[:-1].sum() > 0:
            # Each fine bin goes to the merged bin holding its left edge's image.
            merged = np.searchsorted(unique, mapped[:-1], side="right") - 1
            merged = np.minimum(merged, unique.size - 2)
            step = -(-(unique.size - 1) // bins)  # ceil
            keep = np.unique(np.r_[np.arange(0, unique.size, step), unique.size - 1])
            edges = unique[keep]
            group = np.searchsorted(keep, merged, side="right") - 1
            counts = np.bincount(
                group, weights=fine_counts[:-1], minlength=edges.size - 1
            )
        else:  # every value maps to one output (or there is none)
            masses.append((float(unique[0]), float(fine_counts[:-1].sum())))
    values = [v for v, c in masses if c > 0]
    if edges.size:
        low, high = min(values, default=edges[0]), max(values, default=edges[-1])
        if low < edges[0]:
            edges, counts = np.r_[low, edges], np.r_[0.0, counts]
        if high > edges[-1]:
            edges, counts = np.r_[edges, high], np.r_[counts, 0.0]
    elif values and min(values) < max(values):
        edges = np.linspace(min(values), max(values), bins + 1)
        counts = np.zeros(bins)
    else:
        edges = np.linspace(-bound, bound, bins + 1)
        counts = np.zeros(bins)
    for value, count in masses:
        index = np.searchsorted(edges, value, side="right") - 1
        counts[min(max(index, 0), counts.size - 1)] += count
    return edges, counts
