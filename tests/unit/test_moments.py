"""`column_moments`, `merge_moments` and `pooled` against numpy on the whole
data: count, mean and M2 over the finite values of `g(clip(x))`, and the
counts of values clipped below and above (+-Inf included)."""

import functools
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tanhguard.transforms.moments import column_moments, merge_moments, pooled

# Values in rows of 3 columns: finite float32 of moderate size, with NaN and
# +-Inf mixed in.
finite32 = st.floats(-1e4, 1e4, width=32)
any_value = st.one_of(
    finite32, finite32, finite32, st.sampled_from([np.nan, np.inf, -np.inf])
)
tables = st.integers(0, 40).flatmap(
    lambda rows: hnp.arrays(np.float32, (rows, 3), elements=any_value)
)


def g(values):
    """README's `g(v) = sign(v) * log1p(|v|)`, written out."""
    return np.sign(values) * np.log1p(np.abs(values))


def expected_moments(x, lower=None, upper=None, log=None):
    """numpy over the whole table, column by column: count, mean and M2 of
    `g(clip(x))` over its finite values, and the values below/above."""
    x = np.asarray(x, np.float64)
    names = ("count", "mean", "m2", "below", "above", "sum_of_squares")
    out = {name: [] for name in names}
    for j in range(x.shape[1]):
        column = x[:, j]
        values = column[np.isfinite(column)]
        lo = -np.inf if lower is None else lower[j]
        hi = np.inf if upper is None else upper[j]
        values = np.clip(values, lo, hi)
        if log is not None and log[j]:
            values = g(values)
        out["count"].append(values.size)
        out["mean"].append(values.mean() if values.size else 0.0)
        out["m2"].append(values.var() * values.size if values.size else 0.0)
        out["sum_of_squares"].append(np.sum(values**2))
        with np.errstate(invalid="ignore"):
            out["below"].append(np.sum(column < lo))
            out["above"].append(np.sum(column > hi))
    return {name: np.array(values, np.float64) for name, values in out.items()}


def assert_moments_equal(got, expected):
    """Counts exactly; mean and M2 to float64 rounding relative to the size of
    the values (the sum of squares bounds what a merge can lose)."""
    np.testing.assert_array_equal(got.count, expected["count"])
    np.testing.assert_array_equal(got.below, expected["below"])
    np.testing.assert_array_equal(got.above, expected["above"])
    size = expected["sum_of_squares"]
    rms = np.sqrt(size / np.maximum(expected["count"], 1))
    assert np.all(np.abs(got.mean - expected["mean"]) <= 1e-12 * rms), (got, expected)
    assert np.all(np.abs(got.m2 - expected["m2"]) <= 1e-12 * size), (got, expected)


def merged_over(x, cuts, **kwargs):
    """The moments of `x` computed batch by batch (cut at `cuts`) and merged."""
    edges = [0, *sorted(cuts), len(x)]
    parts = [column_moments(x[i:j], **kwargs) for i, j in itertools.pairwise(edges)]
    return functools.reduce(merge_moments, parts)


@settings(max_examples=60, deadline=None)
@given(x=tables, data=st.data())
def test_any_split_of_the_rows_gives_the_moments_of_the_whole(x, data):
    cuts = data.draw(st.lists(st.integers(0, len(x)), max_size=4), label="cuts")
    assert_moments_equal(merged_over(x, cuts), expected_moments(x))


@settings(max_examples=60, deadline=None)
@given(x=tables, data=st.data())
def test_any_split_gives_the_moments_of_the_clipped_and_logged_whole(x, data):
    cuts = data.draw(st.lists(st.integers(0, len(x)), max_size=4), label="cuts")
    pairs = data.draw(st.lists(st.tuples(finite32, finite32), min_size=3, max_size=3))
    lower = np.array([min(pair) for pair in pairs], np.float64)
    upper = np.array([max(pair) for pair in pairs], np.float64)
    log = np.array(data.draw(st.lists(st.booleans(), min_size=3, max_size=3)))
    got = merged_over(x, cuts, lower=lower, upper=upper, log=log)
    assert_moments_equal(got, expected_moments(x, lower, upper, log))


def test_nan_and_infinities_stay_out_of_the_moments_but_infinities_are_clipped():
    x = np.array([[1.0], [np.nan], [np.inf], [-np.inf], [3.0], [np.inf]], np.float32)
    moments = column_moments(x, lower=np.array([0.0]), upper=np.array([10.0]))
    # Finite values 1 and 3: mean 2, M2 = 1 + 1. +Inf twice above, -Inf below.
    assert moments.count.tolist() == [2.0]
    assert moments.mean.tolist() == [2.0]
    assert moments.m2.tolist() == [2.0]
    assert (moments.below.tolist(), moments.above.tolist()) == ([1.0], [2.0])


def test_without_bounds_nothing_is_counted_as_clipped_not_even_infinities():
    x = np.array([[np.inf], [-np.inf], [5.0]], np.float32)
    moments = column_moments(x)
    assert (moments.below.tolist(), moments.above.tolist()) == ([0.0], [0.0])
    assert moments.count.tolist() == [1.0]


@pytest.mark.parametrize(
    ("log", "expected_mean"),
    [
        pytest.param(False, (-2.0 + 2.0 + 9.0) / 3, id="clip_only_averages_clip_x"),
        pytest.param(
            True,
            float(np.mean(g(np.array([-2.0, 2.0, 9.0])))),
            id="log_averages_g_of_clip_x",
        ),
    ],
)
def test_clip_comes_before_g(log, expected_mean):
    # -7 clips to -2, 2 stays, 100 clips to 9: g sees the clipped values.
    x = np.array([[-7.0], [2.0], [100.0]], np.float32)
    moments = column_moments(
        x, lower=np.array([-2.0]), upper=np.array([9.0]), log=np.array([log])
    )
    np.testing.assert_allclose(moments.mean, [expected_mean], rtol=1e-15)
    assert (moments.below.tolist(), moments.above.tolist()) == ([1.0], [1.0])


def test_log_applies_only_to_the_columns_that_ask_for_it():
    x = np.array([[1.0, 1.0], [3.0, 3.0]], np.float32)
    moments = column_moments(x, log=np.array([False, True]))
    np.testing.assert_allclose(moments.mean, [2.0, np.mean(g(np.array([1.0, 3.0])))])


@settings(max_examples=40, deadline=None)
@given(x=tables)
def test_pooled_columns_equal_numpy_over_the_stacked_columns(x):
    moments = column_moments(x)
    for columns in [(0, 1, 2), (2, 0), (1,)]:
        stacked = x[:, list(columns)].reshape(-1, 1)
        got = pooled(moments, columns)
        assert_moments_equal(got, expected_moments(stacked))


def test_pooled_sums_the_clip_counts_of_its_columns():
    x = np.array([[-5.0, 0.5, 20.0], [np.inf, -np.inf, 0.0]], np.float32)
    moments = column_moments(x, lower=np.zeros(3), upper=np.ones(3))
    got = pooled(moments, (0, 1, 2))
    # Below 0: -5 and -Inf; above 1: 20 and +Inf.
    assert (got.below.tolist(), got.above.tolist()) == ([2.0], [2.0])


@pytest.mark.parametrize(
    "order",
    [
        pytest.param("empty_first", id="empty_batch_merged_into_data"),
        pytest.param("empty_last", id="data_merged_into_empty_batch"),
    ],
)
def test_empty_columns_merge_without_nan(order):
    data = column_moments(np.array([[1.0, np.nan], [4.0, np.nan]], np.float32))
    empty = column_moments(np.full((3, 2), np.nan, np.float32))
    parts = [empty, data] if order == "empty_first" else [data, empty]
    merged = merge_moments(*parts)
    assert not np.isnan(merged.mean).any() and not np.isnan(merged.m2).any()
    # Column 0: values 1 and 4 (mean 2.5, M2 2 * 1.5^2); column 1: none.
    assert merged.count.tolist() == [2.0, 0.0]
    assert merged.mean.tolist() == [2.5, 0.0]
    assert merged.m2.tolist() == [4.5, 0.0]
    assert merged.std.tolist() == [1.5, 0.0]


def test_two_empty_batches_merge_into_an_empty_column_with_zero_std():
    empty = column_moments(np.empty((0, 1), np.float32))
    merged = merge_moments(empty, column_moments(np.full((2, 1), np.nan)))
    assert (merged.count.tolist(), merged.mean.tolist()) == ([0.0], [0.0])
    assert merged.std.tolist() == [0.0]


def test_merging_with_nothing_seen_yet_returns_the_other_side():
    moments = column_moments(np.array([[2.0]], np.float32))
    assert merge_moments(None, moments) is moments
    assert merge_moments(moments, None) is moments
    assert merge_moments(None, None) is None


def test_std_is_the_population_std_of_numpy():
    x = np.array([[1.0], [2.0], [4.0], [np.nan]], np.float32)
    np.testing.assert_allclose(
        column_moments(x).std, [np.std([1.0, 2.0, 4.0])], rtol=1e-15
    )
