"""The first phase, `FirstPhaseCombineFn` run by hand on batches `[x, missing]`,
against numpy over the finite values of each slot: counts, mean/std, min/max,
quantiles (by rank, within the summary's rank error), each clip strategy's
`phase0_lower`/`phase0_upper` and each impute strategy's value."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tanhguard.transforms.config import parse_config
from tanhguard.transforms.layout import (
    COUNT_FIELDS,
    QUANTILE_FIELDS,
    REPORTED_QUANTILES,
    field_slice,
    phase0_length,
)
from tanhguard.transforms.slots import plan_slots
from tanhguard.transforms.statistics import quantile_epsilon

F32_MAX = float(np.finfo(np.float32).max)
# 36,000 rows: the shared vector pools 6 x 36,000 values into one summary,
# beyond the 2 x 85,000 at which its summary starts compacting (so its
# quantiles carry a real rank error), while scalars stay cheap.
ROWS = 36_000
CUTS = (9_000, 20_000)  # three batches
GROUPS = ((0, 2), (1,))  # two accumulators, merged
CONFIG = parse_config(
    {
        "features": {
            "fare": {
                "clip": {"strategy": "quantile", "lower": 0.01, "upper": 0.99},
                "impute": "median",
            },
            "fine": {
                # 0.0005 needs the 10,000-point grid: a statistics group of its own.
                "clip": {"strategy": "quantile", "lower": 0.0005, "upper": 0.9995},
                "impute": "mean",
                "scale": "robust",
            },
            "each": {
                "shape": [3],
                "clip": {"strategy": "sigma", "k": 2.0},
                "impute": "mean",
                "scale": "robust",
            },
            "shared": {
                "shape": [6],
                "elementwise": False,
                "clip": {"strategy": "iqr", "k": 1.5},
                "impute": "median",
                "scale": {"strategy": "robust", "lower": 0.1, "upper": 0.9},
            },
            "count": {"dtype": "int", "clip": "minmax", "impute": "zero"},
            "limits": {
                "clip": {"strategy": "fixed", "lower": -40.0, "upper": 90.0},
                "impute": {"strategy": "constant", "value": 7.5},
            },
            "outliers": {"clip": {"strategy": "mad", "k": 3.0}, "scale": "minmax"},
            "raw": {"clip": "none", "impute": "mean", "scale": "log_zscore"},
        }
    }
)
SLOTS = plan_slots(CONFIG)
S = len(SLOTS)


def slot_of(feature):
    return next(slot for slot in SLOTS if slot.feature == feature)


def index_of(feature):
    return SLOTS.index(slot_of(feature))


def make_table(rows, rng):
    """`[x, missing]` for CONFIG: heavy-tailed floats with missing cells, NaN
    and +-Inf; the int feature holds integers (missing, never NaN or Inf)."""
    d = sum(feature.size for feature in CONFIG.features.values())
    scales = np.arange(1, d + 1) * 10.0
    offsets = np.arange(d) * 100.0 - 300.0  # every column its own location
    x = offsets + scales * rng.standard_t(3, (rows, d))
    count_column = next(slot.columns[0] for slot in SLOTS if slot.feature == "count")
    x[:, count_column] = rng.integers(-5, 1_000, rows)
    kind = rng.random((rows, d))
    floats = np.ones(d, bool)
    floats[count_column] = False
    x[(kind < 0.01) & floats] = np.nan  # NaN, not missing
    x[(kind >= 0.01) & (kind < 0.015) & floats] = np.inf
    x[(kind >= 0.015) & (kind < 0.02) & floats] = -np.inf
    missing = (kind >= 0.02) & (kind < 0.05)
    x[missing] = np.nan
    return x.astype(np.float32), missing


@pytest.fixture(scope="module")
def table():
    x, missing = make_table(ROWS, np.random.default_rng(7))
    # The shared vector pools more values than two summary buffers (85,000 at
    # epsilon 1e-4, `capacity_for`), so its quantiles carry a rank error.
    assert np.isfinite(x[:, list(slot_of("shared").columns)]).sum() > 2 * 85_000
    return x, missing


@pytest.fixture(scope="module")
def parameters(analysis, table):
    x, missing = table
    return analysis.first_phase(CONFIG, x, missing, CUTS, GROUPS)


def field(parameters, name):
    return parameters[field_slice(name, S)]


def _slot_ids():
    ids, seen = [], {}
    for slot in SLOTS:
        feature = CONFIG.features[slot.feature]
        position = seen.setdefault(slot.feature, 0)
        seen[slot.feature] += 1
        if not feature.is_vector:
            kind = "int_scalar" if feature.dtype == "int" else "scalar"
            ids.append(f"{slot.feature}_{kind}")
        elif feature.elementwise:
            ids.append(f"{slot.feature}_element_{position}")
        else:
            ids.append(f"{slot.feature}_shared_over_{len(slot.columns)}_elements")
    return ids


EVERY_SLOT = pytest.mark.parametrize("index", range(S), ids=_slot_ids())


def slot_cells(table, index):
    """All cells of a slot's columns, as a flat float64 array and mask."""
    x, missing = table
    columns = list(SLOTS[index].columns)
    return x[:, columns].astype(np.float64).ravel(), missing[:, columns].ravel()


def slot_finite(table, index):
    values, _ = slot_cells(table, index)
    return values[np.isfinite(values)]


def test_parameters_vector_has_the_documented_length(parameters):
    assert parameters.shape == (phase0_length(S),)


def test_row_count_leads_the_vector(parameters):
    assert parameters[0] == ROWS


@pytest.mark.parametrize(
    "first",
    [
        pytest.param({"shape": [4], "elementwise": False}, id="a_shared_vector"),
        pytest.param({"shape": [3]}, id="an_elementwise_vector"),
        pytest.param({"dtype": "int"}, id="an_int_scalar"),
    ],
)
def test_row_count_is_right_whichever_feature_comes_first(analysis, first):
    config = parse_config({"features": {"first": first, "second": {}}})
    size = config.features["first"].size
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, size + 1)).astype(np.float32)
    missing = rng.random(x.shape) < 0.2
    x[missing] = np.nan
    x[:5, 0], missing[:5, 0] = np.inf, False
    parameters = analysis.first_phase(config, x, missing, (20,))
    assert parameters[0] == 50


@EVERY_SLOT
def test_counts_match_numpy_and_add_up_to_every_value_of_the_slot(
    parameters, table, index
):
    values, missing = slot_cells(table, index)
    expected = {
        "count": np.isfinite(values).sum(),
        "missing": missing.sum(),
        "nan": (np.isnan(values) & ~missing).sum(),
        "pos_inf": (values == np.inf).sum(),
        "neg_inf": (values == -np.inf).sum(),
    }
    got = {name: field(parameters, name)[index] for name in COUNT_FIELDS}
    assert got == expected
    # README: count + missing + nan + pos_inf + neg_inf = num_rows (x d shared).
    assert sum(got.values()) == ROWS * len(SLOTS[index].columns)


@EVERY_SLOT
def test_mean_and_std_match_numpy_over_the_finite_values(parameters, table, index):
    finite = slot_finite(table, index)
    np.testing.assert_allclose(field(parameters, "mean")[index], finite.mean(), 1e-12)
    np.testing.assert_allclose(field(parameters, "std")[index], finite.std(), 1e-12)


@EVERY_SLOT
def test_min_and_max_are_the_finite_extremes(parameters, table, index):
    finite = slot_finite(table, index)
    assert field(parameters, "min")[index] == finite.min()
    assert field(parameters, "max")[index] == finite.max()


@EVERY_SLOT
def test_reported_quantiles_are_within_the_rank_error_of_numpy(
    parameters, table, index, assert_quantile_rank
):
    finite = slot_finite(table, index)
    for p in REPORTED_QUANTILES:
        value = field(parameters, f"q{p}")[index]
        # Reported quantiles need the 1,000-point grid: rank error 1e-4 x n.
        assert_quantile_rank(value, finite, p, quantile_epsilon(1000), f"q{p}")


SCALAR_SLOTS = [
    pytest.param(i, id=f"{slot.feature}_scalar")
    for i, slot in enumerate(SLOTS)
    if not CONFIG.features[slot.feature].is_vector
]


@pytest.mark.parametrize("index", SCALAR_SLOTS)
def test_quantiles_of_fewer_values_than_a_summary_buffer_are_numpys_exactly(
    parameters, table, index
):
    # A summary keeps up to 85,000 values (its buffer at epsilon 1e-4) as they
    # are (`quantile_summary`): no rank error yet, so numpy's inverted CDF.
    finite = slot_finite(table, index)
    assert finite.size < 85_000
    expected = np.quantile(finite, REPORTED_QUANTILES, method="inverted_cdf")
    got = [field(parameters, name)[index] for name in QUANTILE_FIELDS]
    assert got == expected.tolist()


def test_elementwise_elements_get_statistics_of_their_own_column(parameters, table):
    x, _ = table
    indices = [i for i, slot in enumerate(SLOTS) if slot.feature == "each"]
    columns = [SLOTS[i].columns[0] for i in indices]
    means = []
    for column in columns:
        values = x[:, column].astype(np.float64)
        means.append(values[np.isfinite(values)].mean())
    np.testing.assert_allclose(field(parameters, "mean")[indices], means, rtol=1e-12)


def test_integer_feature_statistics_are_exact(parameters, table):
    index = index_of("count")
    finite = slot_finite(table, index)
    assert np.array_equal(finite, np.round(finite))  # the test data are integers
    assert field(parameters, "mean")[index] == pytest.approx(finite.mean(), rel=1e-15)
    assert field(parameters, "q0.5")[index] == np.quantile(
        finite, 0.5, method="inverted_cdf"
    )


# Per clip strategy, the documented bounds from the slot's own statistics.
def _fixed(stats, finite):
    return -40.0, 90.0  # the configured values


def _quantile(stats, finite):
    return stats["q0.01"], stats["q0.99"]  # the configured probabilities


def _quantile_fine(stats, finite):
    # 0.0005 and 0.9995 are not reported; on a grid of 10,000 with n < 700,000
    # (the buffer at epsilon 1e-5) the summary is exact: numpy's quantiles.
    return tuple(np.quantile(finite, [0.0005, 0.9995], method="inverted_cdf").tolist())


def _sigma(stats, finite):
    mean, std = finite.mean(), finite.std()
    return mean - 2.0 * std, mean + 2.0 * std


def _iqr(stats, finite):
    q1, q3 = stats["q0.25"], stats["q0.75"]
    return q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)


def _minmax(stats, finite):
    return finite.min(), finite.max()


def _none(stats, finite):
    return -F32_MAX, F32_MAX


def _mad(stats, finite):
    return np.nan, np.nan  # only known once the MAD is (the fit phase)


CLIP_CASES = [
    pytest.param("limits", _fixed, id="fixed_clip_gives_the_configured_values"),
    pytest.param("fare", _quantile, id="quantile_clip_gives_the_quantiles"),
    pytest.param(
        "fine", _quantile_fine, id="quantile_clip_on_the_fine_grid_gives_its_quantiles"
    ),
    pytest.param("each", _sigma, id="sigma_clip_gives_mean_minus_plus_k_std"),
    pytest.param("shared", _iqr, id="iqr_clip_gives_tukeys_fences"),
    pytest.param("count", _minmax, id="minmax_clip_gives_the_training_min_and_max"),
    pytest.param("raw", _none, id="no_clip_gives_the_float32_range"),
    pytest.param("outliers", _mad, id="mad_clip_leaves_the_bounds_to_the_fit_phase"),
]


@pytest.mark.parametrize(("feature", "formula"), CLIP_CASES)
def test_phase0_bounds_follow_the_clip_formula(parameters, table, feature, formula):
    for index, slot in enumerate(SLOTS):
        if slot.feature != feature:
            continue
        stats = {name: field(parameters, name)[index] for name in QUANTILE_FIELDS}
        expected = formula(stats, slot_finite(table, index))
        got = [
            field(parameters, name)[index] for name in ("phase0_lower", "phase0_upper")
        ]
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_quantile_clip_bounds_are_within_the_rank_error_of_numpy(
    parameters, table, assert_quantile_rank
):
    index = index_of("fare")
    finite = slot_finite(table, index)
    epsilon = quantile_epsilon(1000)
    assert_quantile_rank(
        field(parameters, "phase0_lower")[index], finite, 0.01, epsilon
    )
    assert_quantile_rank(
        field(parameters, "phase0_upper")[index], finite, 0.99, epsilon
    )


IMPUTE_CASES = [
    pytest.param("fare", "median", id="median_impute_is_the_median_quantile"),
    pytest.param("shared", "median", id="median_impute_of_a_shared_vector_is_pooled"),
    pytest.param("fine", "mean", id="mean_impute_is_the_mean_of_finite_values"),
    pytest.param("each", "mean", id="mean_impute_of_each_element_is_its_own_mean"),
    pytest.param("count", "zero", id="zero_impute_is_zero"),
    pytest.param("limits", "constant", id="constant_impute_is_the_configured_value"),
]


@pytest.mark.parametrize(("feature", "strategy"), IMPUTE_CASES)
def test_impute_value_follows_the_impute_strategy(
    parameters, table, feature, strategy, assert_quantile_rank
):
    for index, slot in enumerate(SLOTS):
        if slot.feature != feature:
            continue
        value = field(parameters, "impute_value")[index]
        finite = slot_finite(table, index)
        if strategy == "median":
            assert value == field(parameters, "q0.5")[index]
            assert_quantile_rank(value, finite, 0.5, quantile_epsilon(1000))
        elif strategy == "mean":
            assert value == pytest.approx(finite.mean(), rel=1e-12)
        elif strategy == "zero":
            assert value == 0.0
        else:
            assert value == 7.5  # the config's `value`


ROBUST_CASES = [
    pytest.param("each", (0.25, 0.75), id="robust_defaults_keep_q1_and_q3"),
    pytest.param("shared", (0.1, 0.9), id="robust_custom_range_keeps_its_quantiles"),
    pytest.param("fine", (0.25, 0.75), id="robust_on_the_fine_grid_keeps_q1_and_q3"),
]


@pytest.mark.parametrize(("feature", "probabilities"), ROBUST_CASES)
def test_robust_range_quantiles_are_the_scalers_probabilities(
    parameters, table, feature, probabilities, assert_quantile_rank
):
    for index, slot in enumerate(SLOTS):
        if slot.feature != feature:
            continue
        finite = slot_finite(table, index)
        grid = 10_000 if feature == "fine" else 1_000
        for name, p in zip(
            ("robust_lower", "robust_upper"), probabilities, strict=True
        ):
            value = field(parameters, name)[index]
            assert_quantile_rank(value, finite, p, quantile_epsilon(grid), name)


def test_robust_range_quantiles_are_zero_for_other_scalers(parameters):
    others = [i for i, slot in enumerate(SLOTS) if slot.scale.strategy != "robust"]
    assert others
    assert not field(parameters, "robust_lower")[others].any()
    assert not field(parameters, "robust_upper")[others].any()


# Split invariance, on a small table (every summary exact): the vector must
# not depend on how the runner cuts the rows into batches and bundles.
SMALL = make_table(120, np.random.default_rng(3))


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_any_split_into_batches_and_accumulators_gives_the_same_vector(analysis, data):
    x, missing = SMALL
    reference = analysis.first_phase(CONFIG, x, missing)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(x)), max_size=5)))
    batches = len(cuts) + 1
    order = data.draw(st.permutations(range(batches)))
    split = data.draw(st.integers(0, batches))
    groups = [order[:split], order[split:]]
    got = analysis.first_phase(CONFIG, x, missing, cuts, groups)
    np.testing.assert_allclose(got, reference, rtol=1e-12, atol=1e-9)
    counts = [field_slice(name, S) for name in COUNT_FIELDS]
    for where in [*counts, field_slice("min", S), field_slice("max", S)]:
        np.testing.assert_array_equal(got[where], reference[where])


def test_an_accumulator_that_saw_no_batch_changes_nothing(analysis):
    x, missing = SMALL
    reference = analysis.first_phase(CONFIG, x, missing, (60,))
    with_idle = analysis.first_phase(CONFIG, x, missing, (60,), [(0,), (), (1,)])
    np.testing.assert_allclose(with_idle, reference, rtol=1e-12)
