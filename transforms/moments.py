"""Count, mean and M2 per column, over finite values: mergeable moments.

Both analysis phases use them: the first over the raw values, the fit phase
over `g(clip(x))`. Merging follows Chan et al.'s parallel algorithm, so the
result does not depend on how the runner splits the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tanhguard.transforms.strategies import log_transform


@dataclass(frozen=True)
class ColumnMoments:
    """Per column: finite count, mean and M2 of `g(clip(x))`; clip counts."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    below: np.ndarray
    above: np.ndarray

    def columns(self, selected: list[int]) -> ColumnMoments:
        """The moments of the selected columns."""
        return ColumnMoments(
            *(getattr(self, name)[selected] for name in self.__dataclass_fields__)
        )

    @property
    def std(self) -> np.ndarray:
        """The population std per column (0 for a column without values)."""
        return np.sqrt(np.maximum(self.m2, 0.0) / np.maximum(self.count, 1.0))


def split_finite(column: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """A 1-D column's finite values (its dtype), and its NaN, +Inf and -Inf
    counts (the infinities are counted only when some value is not finite)."""
    finite = np.isfinite(column)
    values = column[finite]
    nan = pos_inf = neg_inf = 0
    if values.size < column.size:
        pos_inf = np.count_nonzero(column == np.inf)
        neg_inf = np.count_nonzero(column == -np.inf)
        nan = column.size - values.size - pos_inf - neg_inf
    return values, nan, pos_inf, neg_inf


def mean_and_m2(values: np.ndarray) -> tuple[float, float]:
    """The mean and M2 of float64 `values` (0 and 0 when empty); `values` is
    centred in place."""
    mean = values.sum() / max(values.size, 1)
    values -= mean
    # einsum, not np.dot: OpenBLAS may start threads for a dot product, which
    # on a busy machine costs more than the product.
    return mean, np.einsum("i,i->", values, values)


def column_moments(
    x: np.ndarray,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    log: np.ndarray | None = None,
) -> ColumnMoments:
    """Moments of one batch `x` (`[rows, D]`, NaN for missing values) after
    clipping to `[lower, upper]` and applying `g` where `log` (defaults: no
    clip, no `g`).

    Only finite values enter the moments; `below`/`above` count every value
    the graph clips, +-Inf included.
    """
    x = np.asarray(x, dtype=np.float64)
    width = x.shape[1]
    lower = np.full(width, -np.inf) if lower is None else lower
    upper = np.full(width, np.inf) if upper is None else upper
    finite = np.isfinite(x)
    outside = ~finite
    clipped = np.clip(np.where(finite, x, 0.0), lower, upper)
    if log is not None and np.any(log):
        clipped = np.where(log, log_transform(clipped), clipped)
    clipped[outside] = 0.0
    count = finite.sum(axis=0).astype(np.float64)
    mean = clipped.sum(axis=0) / np.maximum(count, 1.0)
    clipped -= mean
    clipped[outside] = 0.0
    m2 = np.einsum("ij,ij->j", clipped, clipped)
    with np.errstate(invalid="ignore"):
        below = (x < lower).sum(axis=0).astype(np.float64)
        above = (x > upper).sum(axis=0).astype(np.float64)
    return ColumnMoments(count, mean, m2, below, above)


def merge_moments(
    left: ColumnMoments | None, right: ColumnMoments | None
) -> ColumnMoments | None:
    """Chan et al.'s parallel merge, column by column (empty columns allowed;
    either side may be None: nothing seen yet)."""
    if left is None or right is None:
        return right if left is None else left
    count = left.count + right.count
    safe = np.maximum(count, 1.0)
    delta = right.mean - left.mean
    mean = left.mean + delta * (right.count / safe)
    m2 = left.m2 + right.m2 + delta**2 * (left.count * right.count / safe)
    return ColumnMoments(
        count, mean, m2, left.below + right.below, left.above + right.above
    )


def pooled(moments: ColumnMoments, columns: tuple[int, ...]) -> ColumnMoments:
    """The columns of one slot merged into one (a shared vector pools its
    elements)."""
    merged = None
    for column in columns:
        merged = merge_moments(merged, moments.columns([column]))
    return merged
