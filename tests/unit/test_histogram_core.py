"""The histogram arithmetic (`transforms/statistics.py`) against numpy."""

import numpy as np
import pytest

from tanhguard.transforms.statistics import (
    bin_counts,
    histogram_edges,
    histogram_range,
    output_histogram,
    sorted_bin_counts,
)

F32_MAX = float(np.finfo(np.float32).max)


def _columns(rng, rows=2000):
    x = rng.standard_t(2, (rows, 4)) * [1.0, 10.0, 1e-3, 1e6]
    x[rng.random(x.shape) < 0.02] = np.nan
    x[rng.random(x.shape) < 0.01] = np.inf
    x[rng.random(x.shape) < 0.01] = -np.inf
    return x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bin_counts_are_numpy_histogram(seed):
    rng = np.random.default_rng(seed)
    x = _columns(rng)
    lo = np.array([-2.0, -5.0, -1e-3, -3e6])
    hi = np.array([2.0, 50.0, 1e-3, 1e6])
    edges = histogram_edges(lo, hi, 50)
    # Values exactly on edges (the first, an inner one, the last).
    x[:5, 0], x[5:9, 0], x[9:12, 0] = edges[0, 0], edges[0, 17], edges[0, -1]
    counts, below, above = bin_counts(x, edges)
    for column in range(4):
        values = x[:, column][np.isfinite(x[:, column])]
        span = (lo[column], hi[column])
        expected, numpy_edges = np.histogram(values, bins=50, range=span)
        np.testing.assert_array_equal(edges[column], numpy_edges)
        np.testing.assert_array_equal(counts[column], expected)
        assert below[column] == (values < lo[column]).sum()
        assert above[column] == (values > hi[column]).sum()


def test_bin_counts_correct_the_guesses_rounding_puts_in_the_next_bin():
    """Values on and one ulp either side of every edge of awkward ranges,
    where `x * scale + offset` rounds some into the neighbouring bin (both
    ways, as the check below makes sure): the counts stay numpy's."""
    lo, hi, bins = np.array([0.1, -7.3, 1e-7]), np.array([0.7, 1e5, 3.3e-7]), 97
    edges = histogram_edges(lo, hi, bins)
    near = np.concatenate(
        [edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)], axis=1
    ).T  # [3 * (bins + 1), 3]: column j holds column j's edges and neighbours
    counts, below, above = bin_counts(near, edges)
    scale = bins / (hi - lo)
    guess = np.floor(near * scale + (1.0 - lo * scale)).astype(np.int64)
    off_low, off_high = 0, 0
    for column in range(3):
        values = near[:, column]
        expected, _ = np.histogram(values, bins=edges[column])
        np.testing.assert_array_equal(counts[column], expected)
        assert below[column] == (values < lo[column]).sum()
        assert above[column] == (values > hi[column]).sum()
        # numpy's own bucket (1..bins, 0 below, bins + 1 above) per value
        exact = np.searchsorted(edges[column], values, side="right")
        inside = (values >= lo[column]) & (values < hi[column])
        off_low += np.count_nonzero(inside & (guess[:, column] < exact))
        off_high += np.count_nonzero(inside & (guess[:, column] > exact))
    assert off_low > 0 and off_high > 0  # both corrections were needed


@pytest.mark.parametrize("top_bucket", [False, True])
def test_sorted_bin_counts_are_bin_counts_of_the_sorted_values(top_bucket):
    """The fit phase's route (sort, then search the edges) against the
    direct one and numpy, with values on and one ulp around every edge,
    ties, and values outside the range on both sides."""
    rng = np.random.default_rng(5)
    edges = histogram_edges(np.array([-0.3]), np.array([2.9]), 61)
    on_edges = np.concatenate(
        [edges[0], np.nextafter(edges[0], -np.inf), np.nextafter(edges[0], np.inf)]
    )
    values = np.concatenate(
        [rng.standard_t(2, 5000), on_edges, np.full(40, edges[0, -1]), [-50.0, 50.0]]
    )
    ordered = np.sort(values)
    counts, below, above = sorted_bin_counts(ordered, edges[0], top_bucket)
    expected = bin_counts(values[:, np.newaxis], edges, top_bucket)
    np.testing.assert_array_equal(counts, expected[0][0])
    assert (below, above) == (expected[1][0], expected[2][0])
    assert below == np.count_nonzero(values < -0.3)
    assert above == np.count_nonzero(values > edges[0, -1])
    numpy_counts, _ = np.histogram(values, bins=edges[0])
    if top_bucket:
        at_top = np.count_nonzero(values == edges[0, -1])
        numpy_counts[-1] -= at_top
        numpy_counts = np.append(numpy_counts, at_top)
    np.testing.assert_array_equal(counts, numpy_counts)


def test_top_bucket_holds_the_values_equal_to_the_last_edge():
    x = np.array([[0.0], [0.5], [1.0], [1.0], [np.nan], [np.inf]])
    counts, below, above = bin_counts(x, histogram_edges([0.0], [1.0], 2), True)
    assert counts.tolist() == [[1, 1, 2]]
    assert (below.tolist(), above.tolist()) == ([0], [0])


def _stats(**fields):
    return {key: np.array([value], np.float64) for key, value in fields.items()}


RANGE_CASES = [
    pytest.param(
        dict(min=-100, max=100, q=(-5, 5), bounds=(-3, 4)),
        (-5, 5),
        id="bounds_inside_the_central_range_leave_it",
    ),
    pytest.param(
        dict(min=-100, max=100, q=(-5, 5), bounds=(-20, 30)),
        (-20, 30),
        id="bounds_outside_widen_it",
    ),
    pytest.param(
        dict(min=-10, max=8, q=(-5, 5), bounds=(-1e6, 1e6)),
        (-10, 8),
        id="never_beyond_min_and_max",
    ),
    pytest.param(
        dict(min=-100, max=100, q=(-5, 5), bounds=(-F32_MAX, F32_MAX)),
        (-5, 5),
        id="clip_none_bounds_do_not_widen_it",
    ),
    pytest.param(
        dict(min=7, max=7, q=(7, 7), bounds=(7, 7)),
        (6.5, 7.5),
        id="one_value_gets_numpys_plus_minus_half",
    ),
    pytest.param(
        dict(min=np.inf, max=-np.inf, q=(0, 0), bounds=(-1, 2), count=0),
        (-1, 2),
        id="no_values_take_the_clip_bounds",
    ),
]


@pytest.mark.parametrize(("given", "expected"), RANGE_CASES)
def test_histogram_range(given, expected):
    stats = _stats(
        min=given["min"],
        max=given["max"],
        count=given.get("count", 10),
        **{"q0.001": given["q"][0], "q0.999": given["q"][1]},
    )
    lo, hi = histogram_range(stats, [given["bounds"][0]], [given["bounds"][1]])
    assert (lo[0], hi[0]) == expected


def _pushed(values, center, scale, bound):
    return np.clip((values - center) / scale, -bound, bound)


@pytest.mark.parametrize(
    ("center", "scale", "bound"),
    [(0.0, 1.0, 5.0), (3.0, 0.5, 5.0), (-2.0, 10.0, 0.1), (0.0, 1e-3, 3.0)],
    ids=["identity", "narrow_scale_cut_by_the_bound", "tiny_bound", "far_past_B"],
)
def test_output_histogram_is_numpys_over_its_edges(center, scale, bound):
    rng = np.random.default_rng(4)
    finite = rng.normal(2.0, 3.0, 5000)
    lo, hi = finite.min(), finite.max()
    fine_edges = histogram_edges([lo], [hi], 1000)
    counts, _, _ = bin_counts(finite[:, None], fine_edges, top_bucket=True)
    points = [(40.0, 7.0), (lo, 3.0), (1.25, 11.0)]  # e.g. +Inf at a bound, impute

    def image(values):
        return _pushed(values, center, scale, bound)

    edges, got = output_histogram(fine_edges[0], counts[0], points, image, 50, bound)
    outputs = np.concatenate(
        [image(finite), *(np.full(int(c), image(np.array([v]))[0]) for v, c in points)]
    )
    expected, _ = np.histogram(outputs, bins=edges)
    np.testing.assert_array_equal(got, expected)
    assert got.sum() == finite.size + 21
    assert np.all(np.diff(edges) > 0) and len(edges) <= 53
    assert -bound <= edges[0] and edges[-1] <= bound


def test_constant_output_gets_equal_bins_over_the_bound():
    fine_edges = histogram_edges([1.0], [2.0], 10)[0]
    counts = np.r_[np.ones(10), 0.0]

    def image(values):
        return np.zeros_like(values)

    edges, got = output_histogram(fine_edges, counts, [(5.0, 2.0)], image, 50, 3.0)
    np.testing.assert_array_equal(edges, np.linspace(-3.0, 3.0, 51))
    assert got[25] == 12 and got.sum() == 12  # 0 falls in [0, 0.12)
