"""The fit phase without Beam: `final_bounds`, `MadCombineFn`,
`fit_part` and `fit`, each against README's formula computed here on
the clipped finite data (numpy, scikit-learn's RobustScaler), and the edge
cases with their flags."""

import itertools

import numpy as np
import pytest
from sklearn.preprocessing import RobustScaler

from tanhguard.errors import NoFiniteValuesError
from tanhguard.transforms.config import parse_config
from tanhguard.transforms.fit_phase import (
    HistogramGrids,
    MadCombineFn,
    final_bounds,
    fit_part,
)
from tanhguard.transforms.layout import (
    FLAG_CONSTANT,
    FLAG_DEGENERATE_BOUNDS,
    FLAG_NO_FINITE_VALUES,
    FLAG_ZERO_ROBUST_RANGE,
    field_slice,
    phase0_length,
)
from tanhguard.transforms.slots import plan_slots
from tanhguard.transforms.statistics import quantile_epsilon

F32_MAX = float(np.finfo(np.float32).max)
MAD_EPSILON = quantile_epsilon(1000)  # README: MAD rank error 1e-4 x n

CLIPS = {
    "fixed": {"strategy": "fixed", "lower": -40.0, "upper": 90.0},
    "quantile": {"strategy": "quantile", "lower": 0.01, "upper": 0.99},
    "sigma": {"strategy": "sigma", "k": 2.0},
    "iqr": {"strategy": "iqr", "k": 1.5},
    "mad": {"strategy": "mad", "k": 3.0},
    "minmax": "minmax",
    "none": "none",
}
SCALES = {
    "zscore": "zscore",
    "robust": "robust",
    "robust_10_90": {"strategy": "robust", "lower": 0.1, "upper": 0.9},
    "minmax": "minmax",
    "log_zscore": "log_zscore",
    "none": "none",
}
PAIRS = list(itertools.product(CLIPS, SCALES))
# 2,101 rows, 100 of them missing, NaN or +-Inf in every column: 2,001 finite
# values, so that scikit-learn's interpolated 10/25/50/75/90th percentiles
# fall on data points (n - 1 is a multiple of 4 and of 10) and coincide with
# the inverted-CDF quantiles the summary gives.
ROWS = 2_101
CUTS = (700, 1_400)
GROUPS = ((0, 2), (1,))
MAIN = parse_config(
    {
        "features": {
            **{
                f"{clip}__{scale}": {"clip": CLIPS[clip], "scale": SCALES[scale]}
                for clip, scale in PAIRS
            },
            "each": {"shape": [3], "clip": "iqr", "scale": "log_zscore"},
            "shared": {
                "shape": [4],
                "elementwise": False,
                "clip": {"strategy": "mad", "k": 3.0},
                "scale": "zscore",
            },
        }
    }
)
SLOTS = plan_slots(MAIN)


def g(values):
    """README's `g(v) = sign(v) * log1p(|v|)`."""
    return np.sign(values) * np.log1p(np.abs(values))


def main_table(rng):
    d = sum(feature.size for feature in MAIN.features.values())
    x = 20.0 + 15.0 * rng.standard_t(2, (ROWS, d))
    missing = np.zeros((ROWS, d), bool)
    for column in range(d):
        rows = rng.permutation(ROWS)
        missing[rows[:30], column] = True
        x[rows[:60], column] = np.nan  # 30 missing, 30 NaN
        x[rows[60:80], column] = np.inf
        x[rows[80:100], column] = -np.inf
    return x.astype(np.float32), missing


@pytest.fixture(scope="module")
def table():
    return main_table(np.random.default_rng(21))


@pytest.fixture(scope="module")
def fitted(analysis, table):
    x, missing = table
    return analysis.run(MAIN, x, missing, CUTS, GROUPS)


def scale_name(feature):
    """The SCALES key of a feature's scaler."""
    scale = feature.scale.strategy
    if scale == "robust" and (feature.scale.lower, feature.scale.upper) == (0.1, 0.9):
        return "robust_10_90"
    return scale


def _slot_ids(config, slots):
    ids, seen = [], {}
    for slot in slots:
        feature = config.features[slot.feature]
        position = seen.setdefault(slot.feature, 0)
        seen[slot.feature] += 1
        name = f"{scale_name(feature)}_after_{feature.clip.strategy}_clip"
        if feature.is_vector and feature.elementwise:
            name += f"_element_{position}"
        elif feature.is_vector:
            name += f"_shared_over_{feature.size}_elements"
        ids.append(name)
    return ids


SLOT_IDS = _slot_ids(MAIN, SLOTS)


def slots_where(condition):
    return [
        pytest.param(i, id=SLOT_IDS[i])
        for i, slot in enumerate(SLOTS)
        if condition(slot)
    ]


EVERY_SLOT = pytest.mark.parametrize("index", slots_where(lambda slot: True))


def float32_close(got, expected):
    """`got` is a float32 value, within one float32 ulp of `expected`."""
    assert np.float32(got) == got, f"{got} is not a float32 value"
    np.testing.assert_array_max_ulp(np.float32(got), np.float32(expected), maxulp=1)


def applied_close(got, expected, log):
    """A center or scale as the graph applies it: float32 (within one ulp),
    but float64 on the `log_zscore` path (`fit`'s docstring: `g` squeezes
    the spread into digits float32 lacks), so equal to float64 rounding."""
    if log:
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-300)
    else:
        float32_close(got, expected)


def expected_center_and_scale(scale, clip, clipped, finite, lower, upper):
    """README's scaler table, on the clipped finite values."""
    if scale == "zscore":
        return clipped.mean(), clipped.std()
    if scale == "log_zscore":
        return g(clipped).mean(), g(clipped).std()
    if scale.startswith("robust"):
        low, high = (0.1, 0.9) if scale == "robust_10_90" else (0.25, 0.75)
        q = np.quantile(clipped, [low, 0.5, high], method="inverted_cdf")
        return q[1], q[2] - q[0]
    if scale == "minmax":
        if clip == "none":  # no clip bounds: the training min and max
            lower, upper = finite.min(), finite.max()
        return (lower + upper) / 2, (upper - lower) / 2
    return 0.0, 1.0


@EVERY_SLOT
def test_center_and_scale_follow_readme_on_the_clipped_finite_data(
    fitted, table, index, finite_values
):
    slot = SLOTS[index]
    feature = MAIN.features[slot.feature]
    finite = finite_values(table[0], slot.columns)
    lower, upper = fitted.lower[index], fitted.upper[index]
    clipped = np.clip(finite, lower, upper)
    center, spread = expected_center_and_scale(
        scale_name(feature), feature.clip.strategy, clipped, finite, lower, upper
    )
    applied_close(fitted.field("center")[index], center, feature.scale.log)
    applied_close(fitted.field("scale")[index], spread, feature.scale.log)
    assert fitted.field("flags")[index] == 0


@pytest.mark.parametrize("index", slots_where(lambda s: s.scale.strategy == "robust"))
def test_robust_matches_scikit_learn_robust_scaler_on_the_clipped_data(
    fitted, table, index, finite_values
):
    slot = SLOTS[index]
    finite = finite_values(table[0], slot.columns)
    clipped = np.clip(finite, fitted.lower[index], fitted.upper[index])
    percentiles = (100 * slot.scale.lower, 100 * slot.scale.upper)
    reference = RobustScaler(quantile_range=percentiles).fit(clipped[:, np.newaxis])
    float32_close(fitted.field("center")[index], reference.center_[0])
    float32_close(fitted.field("scale")[index], reference.scale_[0])


@pytest.mark.parametrize("index", slots_where(lambda s: s.clip.strategy != "mad"))
def test_bounds_are_the_float32_first_phase_bounds_unless_mad(fitted, index):
    for name in ("lower", "upper"):
        phase0 = fitted.field(f"phase0_{name}")[index]
        expected = float(np.float32(np.clip(phase0, -F32_MAX, F32_MAX)))
        assert fitted.field(name)[index] == expected


MAD_SLOTS = slots_where(lambda slot: slot.clip.strategy == "mad")


@pytest.mark.parametrize("index", MAD_SLOTS)
def test_mad_bounds_are_median_minus_plus_k_times_1_4826_mad(fitted, index):
    median, mad = fitted.field("q0.5")[index], fitted.field("mad")[index]
    k = SLOTS[index].clip.k
    assert fitted.field("lower")[index] == np.float32(median - k * 1.4826 * mad)
    assert fitted.field("upper")[index] == np.float32(median + k * 1.4826 * mad)


@pytest.mark.parametrize("index", MAD_SLOTS)
def test_mad_is_the_median_absolute_deviation_from_the_median(
    fitted, table, index, finite_values, assert_quantile_rank
):
    finite = finite_values(table[0], SLOTS[index].columns)
    median = np.quantile(finite, 0.5, method="inverted_cdf")
    assert fitted.field("q0.5")[index] == median  # exact below 85,000 values
    deviations = np.abs(finite - median)
    assert_quantile_rank(fitted.field("mad")[index], deviations, 0.5, MAD_EPSILON)


def test_mad_field_is_nan_for_slots_without_a_mad_clip(fitted):
    needs = np.array([slot.clip.strategy == "mad" for slot in SLOTS])
    mads = fitted.field("mad")
    assert np.isnan(mads[~needs]).all()
    assert np.isfinite(mads[needs]).all()


@EVERY_SLOT
def test_clipped_counts_count_every_value_outside_the_bounds(fitted, table, index):
    x = table[0][:, list(SLOTS[index].columns)].astype(np.float64)
    lower, upper = fitted.lower[index], fitted.upper[index]
    with np.errstate(invalid="ignore"):
        below, above = (x < lower).sum(), (x > upper).sum()
    # Every column holds 20 -Inf and 20 +Inf, which always count.
    assert below >= 20 * x.shape[1] and above >= 20 * x.shape[1]
    assert fitted.field("clipped_below")[index] == below
    assert fitted.field("clipped_above")[index] == above


@EVERY_SLOT
def test_fit_count_is_the_number_of_finite_values(fitted, index):
    assert fitted.field("fit_count")[index] == 2_001 * len(SLOTS[index].columns)


def test_fit_part_moments_apply_each_slots_bounds_and_g_to_its_own_columns():
    config = parse_config(
        {
            "features": {
                "logged": {"scale": "log_zscore"},
                "pair": {"shape": [2], "elementwise": False},
                "each": {"shape": [2], "scale": "none"},
            }
        }
    )
    x = np.array(
        [
            [100.0, -3.0, 8.0, 0.5, -7.0],
            [1.0, 2.0, np.inf, 4.0, 2.0],
            [-50.0, np.nan, 1.0, -np.inf, 9.0],
        ]
    )
    # Slots: logged [-10, 10]; pair (columns 1, 2) [0, 5]; each [1, 2], [0, 3].
    lower, upper = np.array([-10.0, 0.0, 1.0, 0.0]), np.array([10.0, 5.0, 2.0, 3.0])
    moments, histograms = fit_part(x, plan_slots(config), lower, upper, None)
    assert histograms is None
    columns = [
        g(np.clip([100.0, 1.0, -50.0], -10, 10)),  # g only where log_zscore
        np.clip([-3.0, 2.0], 0, 5),
        np.clip([8.0, 1.0], 0, 5),
        np.clip([0.5, 4.0], 1, 2),
        np.clip([-7.0, 2.0, 9.0], 0, 3),
    ]
    np.testing.assert_allclose(moments.mean, [np.mean(c) for c in columns])
    np.testing.assert_allclose(moments.m2, [np.var(c) * len(c) for c in columns])
    assert moments.below.tolist() == [1, 1, 0, 2, 1]  # -Inf counts
    assert moments.above.tolist() == [1, 0, 2, 1, 1]  # +Inf counts


@pytest.mark.parametrize("value", [1e16, -1e17, 3e38])
def test_histograms_of_one_value_beyond_2_53_are_numpys(value):
    """One value repeated, so large that the raw range's `lo - 0.5` and
    `hi + 0.5` round back to it: its edges take few distinct values, and
    the fine edges are all equal. The raw counts are numpy.histogram's over
    the same edges; every value is counted once in the output's fine
    buckets."""
    from tanhguard.transforms.first_phase import FirstPhaseCombineFn
    from tanhguard.transforms.fit_phase import fit_plan
    from tanhguard.transforms.slots import slot_output_bounds

    config = parse_config({"features": {"x": {}}})
    x = np.full((1000, 1), value, np.float32)
    first = FirstPhaseCombineFn(config)
    accumulator = first.add_input(first.create_accumulator(), [x, np.isnan(x)])
    parameters = first.extract_output(accumulator)
    slots = plan_slots(config)
    plan = fit_plan(slots, parameters, np.full(1, np.nan), slot_output_bounds(config))
    _, histograms = fit_part(x, slots, *plan)
    raw_edges = plan[2].raw[0]
    expected, _ = np.histogram(x[:, 0].astype(np.float64), bins=raw_edges)
    np.testing.assert_array_equal(histograms.raw[0], expected)
    assert histograms.raw[0].sum() + histograms.below[0] + histograms.above[0] == 1000
    assert histograms.fine[0].sum() == 1000


# --- final_bounds on hand-made parameters -----------------------------------


def hand_parameters(config, **fields):
    """A parameters vector with the given `[S]` fields (zero elsewhere)."""
    slots = len(plan_slots(config))
    parameters = np.zeros(phase0_length(slots))
    for name, values in fields.items():
        parameters[field_slice(name, slots)] = values
    return parameters


FINAL_BOUNDS_CASES = [
    pytest.param(
        {"strategy": "mad", "k": 3.5},
        {"q0.5": 0.1},
        0.3,
        (0.1 - 3.5 * 1.4826 * 0.3, 0.1 + 3.5 * 1.4826 * 0.3),
        id="mad_bounds_are_median_minus_plus_k_1_4826_mad_rounded_to_float32",
    ),
    pytest.param(
        {"strategy": "mad", "k": 3.5},
        {"q0.5": 1e38},
        1e38,
        (1e38 - 3.5 * 1.4826 * 1e38, F32_MAX),
        id="mad_bounds_beyond_float32_are_clamped_to_its_range",
    ),
    pytest.param(
        {"strategy": "mad", "k": 2.0},
        {"q0.5": 5.0},
        0.0,
        (5.0, 5.0),
        id="mad_of_zero_gives_equal_bounds_at_the_median",
    ),
    pytest.param(
        "sigma",
        {"phase0_lower": -1e39, "phase0_upper": 1e39, "q0.5": 0.0},
        np.nan,
        (-F32_MAX, F32_MAX),
        id="other_bounds_beyond_float32_are_clamped_to_its_range",
    ),
    pytest.param(
        {"strategy": "fixed", "lower": 0.1, "upper": 0.7},
        {"phase0_lower": 0.1, "phase0_upper": 0.7},
        np.nan,
        (0.1, 0.7),
        id="other_bounds_keep_their_first_phase_values_rounded_to_float32",
    ),
]


@pytest.mark.parametrize(("clip", "fields", "mad", "expected"), FINAL_BOUNDS_CASES)
def test_final_bounds(clip, fields, mad, expected):
    config = parse_config({"features": {"f": {"clip": clip}}})
    slots = plan_slots(config)
    lower, upper = final_bounds(slots, hand_parameters(config, **fields), [mad])
    clamped = np.clip(np.array(expected, np.float64), -F32_MAX, F32_MAX)
    # The rounding is visible: 0.1 and 0.7 are not float32 numbers.
    assert [lower[0], upper[0]] == clamped.astype(np.float32).tolist()


# --- MadCombineFn on data large enough for a rank error ----------------------

MAD_CONFIG = parse_config(
    {
        "features": {
            "plain": {"clip": "quantile"},
            "pooled": {"shape": [8], "elementwise": False, "clip": "mad"},
            "each": {"shape": [2], "clip": {"strategy": "mad", "k": 2.0}},
        }
    }
)
MAD_SLOTS_OF_CONFIG = plan_slots(MAD_CONFIG)


@pytest.fixture(scope="module")
def mad_run(analysis):
    """MADs of 24,000 rows: the pooled slot holds 192,000 values, past the two
    85,000-value buffers after which its summary compacts; four accumulators."""
    rng = np.random.default_rng(8)
    rows = 24_000
    x = rng.lognormal(1.0, 1.2, (rows, 11)) * np.where(rng.random(11) < 0.5, -1, 1)
    x[rng.random((rows, 11)) < 0.02] = np.nan
    x[rng.random((rows, 11)) < 0.005] = np.inf
    medians = []
    for slot in MAD_SLOTS_OF_CONFIG:
        values = x[:, list(slot.columns)].ravel()
        values = values[np.isfinite(values)]
        medians.append(np.quantile(values, 0.5, method="inverted_cdf"))
    parameters = hand_parameters(MAD_CONFIG, **{"q0.5": medians})
    batches = [
        [x[i : i + 3_000], parameters[np.newaxis]] for i in range(0, rows, 3_000)
    ]
    combine_fn = MadCombineFn(MAD_SLOTS_OF_CONFIG)
    accumulators = []
    for group in ((0, 5), (1, 2, 3), (4,), (6, 7)):
        accumulator = combine_fn.create_accumulator()
        for index in group:
            accumulator = combine_fn.add_input(accumulator, batches[index])
        accumulators.append(accumulator)
    mads = combine_fn.extract_output(combine_fn.merge_accumulators(accumulators))
    pooled = np.isfinite(x[:, list(MAD_SLOTS_OF_CONFIG[1].columns)]).sum()
    assert pooled > 2 * 85_000  # the premise: the pooled summary compacts
    return x, medians, mads


@pytest.mark.parametrize(
    "index",
    [
        pytest.param(1, id="shared_vector_pools_its_elements"),
        pytest.param(2, id="elementwise_element_0_has_its_own_mad"),
        pytest.param(3, id="elementwise_element_1_has_its_own_mad"),
    ],
)
def test_mad_combine_is_within_the_rank_error_of_numpy(
    mad_run, index, assert_quantile_rank
):
    x, medians, mads = mad_run
    values = x[:, list(MAD_SLOTS_OF_CONFIG[index].columns)].ravel()
    values = values[np.isfinite(values)]
    deviations = np.abs(values - medians[index])
    assert_quantile_rank(mads[index], deviations, 0.5, MAD_EPSILON)


def test_mad_combine_gives_nan_for_slots_without_a_mad_clip(mad_run):
    _, _, mads = mad_run
    assert np.isnan(mads[0]) and np.isfinite(mads[1:]).all()


# --- edge cases ---------------------------------------------------------------


def run_one(analysis, spec, values, missing=None, name="f"):
    config = parse_config({"features": {name: spec}})
    x = np.asarray(values, np.float32).reshape(len(values), -1)
    missing = np.zeros(x.shape, bool) if missing is None else missing
    return analysis.run(config, x, missing, (len(x) // 3, 2 * len(x) // 3))


CONSTANT = np.float32(0.1)  # not a float32-exact decimal: float64 sums round
CONSTANT_CASES = [
    pytest.param("zscore", CONSTANT, 0.0, id="zscore_gives_scale_0"),
    pytest.param("robust", CONSTANT, 0.0, id="robust_gives_scale_0_without_fallback"),
    pytest.param("minmax", CONSTANT, 0.0, id="minmax_gives_scale_0"),
    pytest.param(
        "log_zscore",
        g(np.float64(CONSTANT)),
        0.0,
        # The float64 std of g over the rows is about 3e-17, not 0: below
        # README's 1e-12 x |mean| it still counts as constant.
        id="log_zscore_gives_scale_0_despite_rounding_noise",
    ),
    pytest.param("none", 0.0, 1.0, id="none_keeps_scale_1"),
]


@pytest.mark.parametrize(("scale", "center", "spread"), CONSTANT_CASES)
def test_constant_feature(analysis, scale, center, spread):
    values = np.full(2_000, CONSTANT)
    values[::50] = np.nan
    fitted = run_one(analysis, {"scale": scale}, values)
    assert fitted.field("flags")[0] == FLAG_CONSTANT
    applied_close(fitted.field("center")[0], center, scale == "log_zscore")
    assert fitted.field("scale")[0] == spread


def test_values_one_float32_ulp_apart_are_not_constant(analysis):
    values = np.tile([CONSTANT, np.nextafter(CONSTANT, np.float32(1))], 500)
    fitted = run_one(analysis, {"clip": "none"}, values)
    assert fitted.field("flags")[0] == 0
    float32_close(fitted.field("scale")[0], values.astype(np.float64).std())


@pytest.mark.parametrize(
    "unit",
    [
        pytest.param(1e-20, id="values_near_1e-20"),
        pytest.param(1e-31, id="values_near_1e-31_far_above_float32_subnormals"),
    ],
)
def test_tiny_values_that_vary_are_not_constant(analysis, unit):
    # README: constant means a std of 0, or below 1e-12 x |mean| (rounding).
    # Here the std is half the mean, and every value, difference and ratio is
    # a normal float32 (subnormals start below 1.2e-38).
    values = np.tile([unit, 3 * unit], 500).astype(np.float32)
    fitted = run_one(analysis, {"clip": "none"}, values)
    assert fitted.field("flags")[0] == 0
    float32_close(fitted.field("scale")[0], values.astype(np.float64).std())


@pytest.mark.parametrize(
    "clip", ["quantile", "mad", "sigma", "iqr", "minmax"], ids=lambda c: f"{c}_clip"
)
def test_a_single_row_is_a_constant_feature(analysis, clip):
    config = parse_config({"features": {"f": {"clip": clip}}})
    x = np.array([[2.5]], np.float32)
    fitted = analysis.run(config, x, np.zeros((1, 1), bool))
    assert (fitted.lower[0], fitted.upper[0]) == (2.5, 2.5)
    assert fitted.field("flags")[0] == FLAG_CONSTANT
    assert (fitted.field("center")[0], fitted.field("scale")[0]) == (2.5, 0.0)


def mostly_zero():
    values = np.zeros(2_000)
    values[17] = 55.0  # 1 row in 2,000: inside the 0.001..0.999 tails
    return values


def eighty_percent_zero():
    values = np.random.default_rng(4).normal(10, 3, 2_000)
    values[:1_600] = 0.0
    return values


DEGENERATE_CASES = [
    pytest.param(
        {"clip": "quantile"},
        mostly_zero,
        0.0,
        id="quantile_bounds_collapse_on_a_rare_value_to_scale_0",
    ),
    pytest.param(
        {"clip": "mad", "scale": "robust"},
        eighty_percent_zero,
        0.0,
        id="mad_of_zero_collapses_the_bounds_to_scale_0",
    ),
    pytest.param(
        {"clip": "quantile", "scale": "none"},
        mostly_zero,
        1.0,
        id="scale_none_keeps_scale_1_on_collapsed_bounds",
    ),
]


@pytest.mark.parametrize(("spec", "values", "spread"), DEGENERATE_CASES)
def test_degenerate_bounds_on_varying_data(analysis, spec, values, spread):
    fitted = run_one(analysis, spec, values())
    assert fitted.lower[0] == fitted.upper[0] == 0.0
    assert fitted.field("min")[0] < fitted.field("max")[0]
    assert fitted.field("flags")[0] == FLAG_DEGENERATE_BOUNDS
    assert fitted.field("scale")[0] == spread


def test_zero_robust_range_on_varying_data_gives_scale_1(analysis):
    values = eighty_percent_zero()
    fitted = run_one(analysis, {"clip": "minmax", "scale": "robust"}, values)
    # Q1 = Q3 = 0 (80% zeros) but the data vary: scikit-learn's rule, scale 1.
    reference = RobustScaler().fit(values[:, np.newaxis])
    assert reference.scale_[0] == 1.0
    assert (fitted.field("center")[0], fitted.field("scale")[0]) == (0.0, 1.0)
    assert fitted.field("flags")[0] == FLAG_ZERO_ROBUST_RANGE


def test_robust_quantiles_are_those_of_the_clipped_data(analysis):
    # The clip [-2, 30] cuts through the interquartile range of N(0, 10)
    # (Q1 about -6.7): Q1 of the clipped data is the bound, not the data's Q1.
    values = np.random.default_rng(9).normal(0.0, 10.0, 2_001).astype(np.float32)
    spec = {"clip": {"strategy": "fixed", "lower": -2.0, "upper": 30.0}}
    fitted = run_one(analysis, spec | {"scale": "robust"}, values)
    clipped = np.clip(values.astype(np.float64), -2.0, 30.0)
    q1, median, q3 = np.quantile(clipped, [0.25, 0.5, 0.75], method="inverted_cdf")
    assert q1 == -2.0
    assert fitted.field("center")[0] == np.float32(median)
    assert fitted.field("scale")[0] == np.float32(q3 - q1)
    reference = RobustScaler().fit(clipped[:, np.newaxis])
    float32_close(fitted.field("scale")[0], reference.scale_[0])


def test_values_near_float32_max_give_clamped_bounds_and_finite_scale(analysis):
    rng = np.random.default_rng(5)
    values = rng.choice([-3.0e38, 3.0e38, 1.0, -2.0], 2_000).astype(np.float32)
    fitted = run_one(analysis, {"clip": {"strategy": "sigma", "k": 4.0}}, values)
    # mean -+ 4 std is about -+1.2e39, beyond float32: clamped to its range.
    assert (fitted.lower[0], fitted.upper[0]) == (-F32_MAX, F32_MAX)
    finite = values.astype(np.float64)
    float32_close(fitted.field("center")[0], finite.mean())
    float32_close(fitted.field("scale")[0], finite.std())


def test_log_zscore_keeps_the_float64_spread_of_values_far_from_zero(analysis):
    # Timestamps near 1.7e9 s, one day apart at most: g(x) is about 21.25 for
    # all of them and its std about 1e-5, below float32's resolution at 21.25
    # (about 1.9e-6 per step), so only a float64 center keeps the spread.
    rng = np.random.default_rng(6)
    values = (1.7e9 + rng.uniform(0, 86_400, 2_000)).astype(np.float32)
    fitted = run_one(analysis, {"clip": "none", "scale": "log_zscore"}, values)
    logged = g(values.astype(np.float64))
    np.testing.assert_allclose(fitted.field("center")[0], logged.mean(), rtol=1e-12)
    np.testing.assert_allclose(fitted.field("scale")[0], logged.std(), rtol=1e-9)
    assert np.float32(fitted.field("center")[0]) != fitted.field("center")[0]


NO_DATA_CASES = [
    pytest.param("zscore", (10.0, 20.0), id="zscore_maps_the_fixed_bounds_onto_pm1"),
    pytest.param("robust", (10.0, 20.0), id="robust_maps_the_fixed_bounds_onto_pm1"),
    pytest.param("minmax", (10.0, 20.0), id="minmax_maps_the_fixed_bounds_onto_pm1"),
    pytest.param(
        "log_zscore",
        ((g(-10.0) + g(30.0)) / 2, (g(30.0) - g(-10.0)) / 2),
        id="log_zscore_maps_g_of_the_fixed_bounds_onto_pm1",
    ),
    pytest.param("none", (0.0, 1.0), id="none_keeps_center_0_and_scale_1"),
]


@pytest.mark.parametrize(("scale", "expected"), NO_DATA_CASES)
@pytest.mark.parametrize(
    "impute",
    ["zero", {"strategy": "constant", "value": 3.0}],
    ids=["zero_impute", "constant_impute"],
)
def test_no_finite_values_with_fixed_clip_and_constant_impute(
    analysis, scale, expected, impute
):
    spec = {
        "clip": {"strategy": "fixed", "lower": -10.0, "upper": 30.0},
        "impute": impute,
        "scale": scale,
    }
    values = np.array([np.nan, np.inf, -np.inf, np.nan, np.inf, np.nan])
    missing = np.array([True, False, False, False, False, True])[:, np.newaxis]
    fitted = run_one(analysis, spec, values, missing)
    # Center (lower + upper) / 2 = 10 and scale (upper - lower) / 2 = 20.
    applied_close(fitted.field("center")[0], expected[0], scale == "log_zscore")
    applied_close(fitted.field("scale")[0], expected[1], scale == "log_zscore")
    assert fitted.field("flags")[0] == FLAG_NO_FINITE_VALUES
    assert fitted.field("fit_count")[0] == 0
    # The infinities are still clipped: one -Inf below, two +Inf above.
    assert (fitted.field("clipped_below")[0], fitted.field("clipped_above")[0]) == (
        1,
        2,
    )


NEEDS_DATA_CASES = [
    pytest.param({"impute": "zero"}, id="quantile_clip_needs_data"),
    pytest.param({"clip": "mad", "impute": "zero"}, id="mad_clip_needs_data"),
    pytest.param(
        {"clip": {"strategy": "fixed", "lower": 0, "upper": 1}, "impute": "median"},
        id="median_impute_needs_data",
    ),
    pytest.param(
        {"clip": {"strategy": "fixed", "lower": 0, "upper": 1}, "impute": "mean"},
        id="mean_impute_needs_data",
    ),
]


@pytest.mark.parametrize("spec", NEEDS_DATA_CASES)
def test_no_finite_values_with_a_data_driven_strategy_is_an_error_naming_it(
    analysis, spec
):
    values = np.array([np.nan, np.inf, -np.inf, np.nan])
    with pytest.raises(NoFiniteValuesError, match=r"feature `trip_miles`: no finite"):
        run_one(analysis, spec, values, name="trip_miles")


def test_every_feature_without_finite_values_is_named_in_one_error(analysis):
    config = parse_config({"features": {"a": {}, "ok": {}, "b": {"clip": "mad"}}})
    x = np.array([[np.nan, 1.0, np.inf], [np.nan, 2.0, np.nan]])
    with pytest.raises(NoFiniteValuesError, match=r"features `a`, `b`: no finite"):
        analysis.run(config, x, np.zeros(x.shape, bool))


def test_one_element_without_finite_values_fails_the_whole_vector(analysis):
    config = parse_config({"features": {"ok": {}, "vec": {"shape": [2]}}})
    x = np.array([[1.0, 2.0, np.nan], [2.0, 3.0, np.inf], [3.0, 1.0, np.nan]])
    with pytest.raises(NoFiniteValuesError, match=r"feature `vec`"):
        analysis.run(config, x, np.zeros(x.shape, bool))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_part_histograms_are_numpys_over_each_columns_finite_values(dtype):
    """The raw bins count the finite values (numpy.histogram, below/above the
    edges counted apart); the fine bins count g(clip(x)) of the finite values,
    with values equal to the last edge in a bucket of their own; NaN and
    +-Inf are counted apart."""
    config = parse_config(
        {"features": {"plain": {}, "logged": {"scale": "log_zscore"}}}
    )
    rng = np.random.default_rng(7)
    x = rng.standard_t(2, (5_000, 2)) * [3.0, 40.0]
    x[rng.random(x.shape) < 0.05] = np.nan
    x[rng.random(x.shape) < 0.01] = np.inf
    x[rng.random(x.shape) < 0.01] = -np.inf
    x = x.astype(dtype)
    lower, upper = np.array([-4.0, -50.0]), np.array([5.0, 60.0])
    raw_edges = np.stack([np.linspace(-8, 8, 51), np.linspace(-100, 90, 51)])
    fine_edges = np.stack(
        [np.linspace(-4, 5, 1001), np.linspace(g(-50.0), g(60.0), 1001)]
    )
    _, histograms = fit_part(
        x, plan_slots(config), lower, upper, HistogramGrids(raw_edges, fine_edges)
    )
    for j in range(2):
        column = x[:, j].astype(np.float64)
        finite = column[np.isfinite(column)]
        counts, _ = np.histogram(finite, bins=raw_edges[j])
        assert histograms.raw[j].tolist() == counts.tolist()
        assert histograms.below[j] == np.count_nonzero(finite < raw_edges[j, 0])
        assert histograms.above[j] == np.count_nonzero(finite > raw_edges[j, -1])
        image = np.clip(finite, lower[j], upper[j])
        if j == 1:
            image = g(image)
        top = fine_edges[j, -1]
        fine, _ = np.histogram(image[image < top], bins=fine_edges[j])
        assert histograms.fine[j, :-1].tolist() == fine.tolist()
        assert histograms.fine[j, -1] == np.count_nonzero(image == top)
        assert histograms.imputed[j] == np.count_nonzero(np.isnan(column))
        assert histograms.pos_inf[j] == np.count_nonzero(column == np.inf)
        assert histograms.neg_inf[j] == np.count_nonzero(column == -np.inf)
