"""The quantile summary's rank error against numpy's exact ranks."""

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tanhguard.transforms.quantile_summary import QuantileSummary, capacity_for

PROBABILITIES = np.arange(1, 1000) / 1000


def _rank_error(data: np.ndarray, values: np.ndarray, probabilities) -> float:
    """How far (in ranks) each returned value is from its target rank: 0 when
    the value's run of equal data values covers `p * n`."""
    ordered = np.sort(data)
    low = np.searchsorted(ordered, values, side="left")
    high = np.searchsorted(ordered, values, side="right")
    target = np.asarray(probabilities) * data.size
    return float(np.maximum(np.maximum(low - target, target - high), 0).max())


@pytest.mark.parametrize("epsilon", [1e-3, 1e-4, 1e-5])
def test_capacity_meets_the_bound_and_is_near_the_smallest(epsilon):
    max_values = 1 << 32
    capacity = capacity_for(epsilon, max_values)
    assert capacity % 2 == 0

    def levels(c):
        return math.ceil(math.log2(max_values / c)) + 1

    # The documented bound: levels / (2 * capacity) <= epsilon ...
    assert levels(capacity) / (2 * capacity) <= epsilon
    # ... and 3% fewer would not meet it.
    smaller = int(capacity * 0.97) // 2 * 2
    assert levels(smaller) / (2 * smaller) > epsilon


@pytest.mark.parametrize("duplicates", [False, True])
def test_rank_error_stays_within_epsilon_across_splits_and_merges(duplicates):
    rng = np.random.default_rng(7)
    epsilon = 1e-3
    capacity = capacity_for(epsilon, 1 << 32)
    data = rng.standard_t(2, 700_000)
    if duplicates:
        data = np.round(data * 2)  # long runs of equal values
    data[rng.random(data.size) < 0.01] = np.nan
    # Uneven pieces over three summaries, one of them pickled (as Beam sends
    # accumulators between stages), merged in two steps.
    pieces = np.array_split(data, 37)
    parts = [QuantileSummary(capacity) for _ in range(3)]
    for index, piece in enumerate(pieces):
        parts[index % 3].add(piece)
    parts[1].merge(pickle.loads(pickle.dumps(parts[2])))
    parts[0].merge(parts[1])
    finite = data[~np.isnan(data)]
    assert parts[0].count == finite.size
    # Several levels were used, so compactions happened.
    assert sum(level is not None for level in parts[0].levels) >= 2
    got = parts[0].quantiles(PROBABILITIES)
    assert _rank_error(finite, got, PROBABILITIES) <= epsilon * finite.size


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(
        st.floats(allow_nan=True, allow_infinity=False, width=32),
        min_size=0,
        max_size=400,
    ),
    split=st.integers(0, 400),
)
def test_small_streams_are_exact(data, split):
    """Below one buffer nothing is compacted: quantiles are exact (the
    smallest value whose rank reaches p * n)."""
    data = np.asarray(data, np.float32)
    left, right = QuantileSummary(1000, np.float32), QuantileSummary(1000, np.float32)
    left.add(data[:split])
    right.add(data[split:])
    left.merge(right)
    finite = np.sort(data[~np.isnan(data)])
    got = left.quantiles(PROBABILITIES)
    if not finite.size:
        assert got.size == 0
        return
    ranks = np.ceil(PROBABILITIES * finite.size).astype(int)
    expected = finite[np.clip(ranks - 1, 0, finite.size - 1)]
    np.testing.assert_array_equal(got, expected)


def test_summaries_of_different_shape_do_not_merge():
    with pytest.raises(ValueError, match="cannot merge"):
        QuantileSummary(100).merge(QuantileSummary(200))
    with pytest.raises(ValueError, match="even"):
        QuantileSummary(101)


@pytest.mark.parametrize("capacity", [2, 64, 1000])
def test_many_levels_stay_within_the_documented_bound(capacity):
    """Chunks sorted at once and buffers merged level by level, in uneven
    adds and merges: every rank stays within `L * N / (2 * capacity)` (the
    module's bound, `L` the levels used), with ties and negative zeros."""
    rng = np.random.default_rng(capacity)
    data = np.concatenate(
        [
            rng.standard_t(2, 120_000),
            np.round(rng.normal(size=60_000) * 3),  # runs of equal values
            np.full(20_000, -0.0),
        ]
    ).astype(np.float32)
    rng.shuffle(data)
    sizes = rng.integers(1, 9_000, size=200)
    bounds = np.cumsum(sizes)[np.cumsum(sizes) < data.size]
    pieces = np.split(data, bounds)
    parts = [QuantileSummary(capacity, np.float32) for _ in range(4)]
    for index, piece in enumerate(pieces):
        parts[index % 4].add(piece)
    parts[2].merge(pickle.loads(pickle.dumps(parts[3])))
    parts[0].merge(parts[1])
    parts[0].merge(parts[2])
    assert parts[0].count == data.size
    levels = len(parts[0].levels)
    assert levels >= 3  # compactions above the chunks' level happened
    got = parts[0].quantiles(PROBABILITIES)
    assert got.dtype == np.float32
    values, weights = parts[0].weighted_values()
    assert weights.sum() == data.size
    assert np.all(np.diff(values) >= 0)
    # `quantiles` searches the runs; the definition walks the weighted
    # values: the first whose cumulative weight reaches p * n.
    cumulative = np.cumsum(weights)
    first = np.searchsorted(cumulative, PROBABILITIES * data.size, side="left")
    np.testing.assert_array_equal(got, values[np.minimum(first, values.size - 1)])
    bound = levels * data.size / (2 * capacity)
    assert _rank_error(data, got, PROBABILITIES) <= bound


def test_probabilities_outside_0_1_give_the_extremes():
    """Below 0: the smallest value; above 1 or NaN: the largest (no rank
    reaches them), whatever the other probabilities asked at once."""
    summary = QuantileSummary(1000, np.float32)
    summary.add(np.array([5.0, 1.0, 3.0, 2.0, 4.0, 11.0], np.float32))
    got = summary.quantiles([0.5, 1.5, -0.5, np.nan, 0.0, 1.0])
    # Ranks 3, 9 (none), -3, NaN (none), 0 and 6 of the sorted 1 2 3 4 5 11.
    np.testing.assert_array_equal(got, [3.0, 11.0, 1.0, 11.0, 1.0, 11.0])
