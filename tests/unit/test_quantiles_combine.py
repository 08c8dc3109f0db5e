"""The quantile analyzer's combiner against numpy's ranks."""

import pickle

import numpy as np

from tanhguard.transforms.quantile_summary import QuantilesCombineFn

GRID = 100
EPSILON = 1e-3


def _combine(batches, split: int) -> np.ndarray:
    """Two accumulators (as two bundles would make), pickled as Beam encodes
    them between stages, merged, then extracted."""
    fn = QuantilesCombineFn(columns=3, grid=GRID, epsilon=EPSILON)
    parts = []
    for chunk in (batches[:split], batches[split:]):
        accumulator = fn.create_accumulator()
        for batch in chunk:
            accumulator = fn.add_input(accumulator, [batch])
        parts.append(pickle.loads(pickle.dumps(fn.compact(accumulator))))
    return fn.extract_output(fn.merge_accumulators(parts))


def test_quantiles_are_within_epsilon_in_rank_and_skip_non_finite_values():
    rng = np.random.default_rng(3)
    x = rng.standard_t(2, (20_000, 3)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan
    x[:50, 0] = np.inf
    x[50:60, 2] = -np.inf
    boundaries = _combine(np.array_split(x, 7), split=3)
    assert boundaries.shape == (3, GRID - 1)
    assert boundaries.dtype == np.float32
    for column in range(3):
        finite = np.sort(x[np.isfinite(x[:, column]), column].astype(np.float64))
        n = finite.size
        for k in (1, 10, 50, 90, 99):
            value = boundaries[column, k - 1]
            # The value's rank range in the data must come within epsilon * n
            # of the target rank k / GRID * n.
            low = np.searchsorted(finite, value, side="left")
            high = np.searchsorted(finite, value, side="right")
            target = k / GRID * n
            assert low - EPSILON * n - 1 <= target <= high + EPSILON * n + 1, (
                column,
                k,
            )


def test_a_column_without_finite_values_gets_zeros_and_keeps_the_others_in_place():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5_000, 3))
    x[:, 2] += 10.0  # a stream put in the wrong column would show
    x[:, 1] = np.nan
    x[:10, 1] = np.inf
    boundaries = _combine(np.array_split(x, 4), split=1)
    np.testing.assert_array_equal(boundaries[1], 0.0)
    for column in (0, 2):
        median = boundaries[column, GRID // 2 - 1]
        assert abs(median - np.median(x[:, column])) < 0.05


def test_an_empty_dataset_gives_zeros():
    fn = QuantilesCombineFn(columns=2, grid=GRID, epsilon=EPSILON)
    boundaries = fn.extract_output(fn.create_accumulator())
    np.testing.assert_array_equal(boundaries, np.zeros((2, GRID - 1)))
