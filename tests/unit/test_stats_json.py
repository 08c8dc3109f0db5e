"""`unpack_stats_vector` on a statistics vector computed by the first phase and
`fit` on known data: the structure of README's stats.json section, each
strategy's extra fields, lists for elementwise vectors, float32 numbers
written exactly, null for NaN, warnings with their `element i:` prefix."""

import json

import numpy as np
import pytest

from tanhguard.pipeline.stats_json import unpack_stats_vector
from tanhguard.transforms.config import parse_config
from tanhguard.transforms.layout import (
    FLAG_CONSTANT,
    FLAG_DEGENERATE_BOUNDS,
    FLAG_MESSAGES,
    FLAG_NO_FINITE_VALUES,
    FLAG_ZERO_ROBUST_RANGE,
    field_slice,
    phase0_length,
    stats_vector_length,
)
from tanhguard.transforms.slots import element_columns, plan_slots

ROWS = 400
CONFIG = parse_config(
    {
        "features": {
            "fare": {
                "clip": {"strategy": "quantile", "lower": 0.01, "upper": 0.99},
                "scale": {"strategy": "robust", "lower": 0.1, "upper": 0.9},
                "indicators": ["missing", "clipped"],
            },
            "limits": {
                "clip": {"strategy": "fixed", "lower": -40.0, "upper": 90.0},
                "impute": "mean",
                "inf": "missing",
            },
            "tails": {"clip": {"strategy": "sigma", "k": 2.5}},
            "fences": {"clip": {"strategy": "iqr", "k": 2.0}, "scale": "minmax"},
            "miles": {"clip": {"strategy": "mad", "k": 3.5}, "output_bound": 3.0},
            "seen": {"clip": "minmax", "scale": "log_zscore"},
            "raw": {"clip": "none", "scale": "none"},
            "each": {"shape": [3], "clip": "iqr", "scale": "robust"},
            "shared": {"shape": [4], "elementwise": False, "clip": "mad"},
            "empty": {
                "clip": {"strategy": "fixed", "lower": 0.0, "upper": 10.0},
                "impute": {"strategy": "constant", "value": 3.0},
            },
            # One value in 400 is not zero, beyond the 0.99 quantile: both
            # bounds are 0, a degenerate clip.
            "rare": {"clip": {"strategy": "quantile", "lower": 0.01, "upper": 0.99}},
            "spiky": {"clip": "minmax", "scale": "robust"},  # 80% zeros
            "flat": {"shape": [2], "elementwise": False},  # every value 4
        }
    }
)
# README's stats.json section, per feature.
FEATURE_KEYS = {
    "count",
    "missing",
    "nan",
    "pos_inf",
    "neg_inf",
    "mean",
    "std",
    "min",
    "max",
    "quantiles",
    "impute",
    "inf",
    "clip",
    "clipped_below",
    "clipped_above",
    "scale",
    "elementwise",
    "indicators",
    "output_bound",
    "constant",
    "warnings",
    # format_version 4
    "zeros",
    "histogram",
    "output_histogram",
    "quantile_grid",
}
QUANTILE_KEYS = ["0.001", "0.01", "0.25", "0.5", "0.75", "0.99", "0.999"]
COLUMNS = {name: list(c) for name, c in element_columns(CONFIG).items()}
S = len(plan_slots(CONFIG))


def make_table(rng):
    d = sum(feature.size for feature in CONFIG.features.values())
    x = 30.0 + 20.0 * rng.standard_t(3, (ROWS, d))
    x[:, COLUMNS["each"][1]] = 7.0  # one constant element
    x[:, COLUMNS["empty"]] = np.nan
    x[:, COLUMNS["rare"]] = 0.0
    x[123, COLUMNS["rare"]] = 55.0
    spiky = rng.random(ROWS) < 0.8
    x[spiky, COLUMNS["spiky"][0]] = 0.0
    x[:, COLUMNS["flat"]] = 4.0
    missing = np.zeros((ROWS, d), bool)
    for name in ("fare", "limits", "tails", "each", "shared", "empty"):
        for column in COLUMNS[name]:
            rows = rng.permutation(ROWS)
            missing[rows[:12], column] = True
            x[rows[:20], column] = np.nan  # 12 missing, 8 NaN
            x[rows[20:25], column] = np.inf
            x[rows[25:28], column] = -np.inf
    return x.astype(np.float32), missing


@pytest.fixture(scope="module")
def table():
    return make_table(np.random.default_rng(13))


@pytest.fixture(scope="module")
def analyzed(analysis, table):
    x, missing = table
    return analysis.run(CONFIG, x, missing, (150, 290), ((0, 2), (1,)))


@pytest.fixture(scope="module")
def stats(analyzed):
    return unpack_stats_vector(CONFIG, analyzed.vector)


def finite_of(table, name):
    values = table[0][:, COLUMNS[name]].astype(np.float64)
    return values[np.isfinite(values)]


def test_top_level_holds_num_rows_and_the_features_in_config_order(stats):
    assert set(stats) == {"num_rows", "features"}
    assert stats["num_rows"] == ROWS and isinstance(stats["num_rows"], int)
    assert list(stats["features"]) == list(CONFIG.features)


@pytest.mark.parametrize("name", list(CONFIG.features))
def test_every_feature_has_the_documented_fields(stats, name):
    feature = stats["features"][name]
    assert set(feature) == FEATURE_KEYS
    assert list(feature["quantiles"]) == QUANTILE_KEYS
    assert set(feature["impute"]) == {"strategy", "value"}


CLIP_CASES = [
    pytest.param(
        "fare",
        {"probabilities": [0.01, 0.99]},
        id="quantile_clip_adds_its_probabilities",
    ),
    pytest.param("limits", {}, id="fixed_clip_adds_nothing_its_values_are_the_bounds"),
    pytest.param("tails", {"k": 2.5}, id="sigma_clip_adds_k"),
    pytest.param("fences", {"k": 2.0}, id="iqr_clip_adds_k"),
    pytest.param(
        "miles",
        {"k": 3.5, "median": ..., "mad": ...},
        id="mad_clip_adds_k_median_and_mad",
    ),
    pytest.param("seen", {}, id="minmax_clip_adds_nothing"),
    pytest.param("raw", {}, id="no_clip_adds_nothing"),
]


@pytest.mark.parametrize(("name", "extra"), CLIP_CASES)
def test_clip_entry_has_the_strategy_and_its_own_fields(stats, analyzed, name, extra):
    index = list(CONFIG.features).index(name)  # every case is a scalar
    clip = stats["features"][name]["clip"]
    expected_keys = {"strategy", "lower", "upper", *extra}
    assert set(clip) == expected_keys
    assert clip["strategy"] == CONFIG.features[name].clip.strategy
    for key, value in extra.items():
        if value is ...:
            source = "q0.5" if key == "median" else "mad"
            value = analyzed.field(source)[index]
            assert np.isfinite(value)
        assert clip[key] == value


def test_mad_of_a_shared_vector_is_one_number_with_its_median(stats, analyzed):
    index = [slot.feature for slot in plan_slots(CONFIG)].index("shared")
    clip = stats["features"]["shared"]["clip"]
    assert clip["median"] == analyzed.field("q0.5")[index]
    assert clip["mad"] == analyzed.field("mad")[index]
    assert clip["k"] == 3.5  # the default


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        pytest.param(
            "fare",
            {"probabilities": [0.1, 0.9]},
            id="robust_scale_adds_its_probabilities",
        ),
        pytest.param(
            "each",
            {"probabilities": [0.25, 0.75]},
            id="robust_scale_reports_the_default_probabilities",
        ),
        pytest.param("tails", {}, id="zscore_scale_adds_nothing"),
        pytest.param("fences", {}, id="minmax_scale_adds_nothing"),
        pytest.param("seen", {}, id="log_zscore_scale_adds_nothing"),
        pytest.param("raw", {}, id="no_scale_adds_nothing"),
    ],
)
def test_scale_entry_has_the_strategy_and_its_own_fields(stats, name, extra):
    scale = stats["features"][name]["scale"]
    assert set(scale) == {"strategy", "center", "scale", *extra}
    assert scale["strategy"] == CONFIG.features[name].scale.strategy
    for key, value in extra.items():
        assert scale[key] == value


def per_slot_values(feature):
    """Every per-slot value of a stats.json feature entry."""
    values = [feature[key] for key in ("count", "missing", "nan", "pos_inf")]
    values += [feature[key] for key in ("neg_inf", "mean", "std", "min", "max")]
    values += list(feature["quantiles"].values())
    values += [feature["impute"]["value"], feature["clip"]["lower"]]
    values += [feature["clip"]["upper"], feature["clipped_below"]]
    values += [feature["clipped_above"], feature["scale"]["center"]]
    values += [feature["scale"]["scale"], feature["constant"]]
    return values


def test_an_elementwise_vector_gives_lists_of_length_d(stats):
    for value in per_slot_values(stats["features"]["each"]):
        assert isinstance(value, list) and len(value) == 3


@pytest.mark.parametrize("name", ["shared", "fare"], ids=["shared_vector", "scalar"])
def test_a_shared_vector_or_scalar_gives_single_numbers(stats, name):
    for value in per_slot_values(stats["features"][name]):
        assert isinstance(value, (int, float, bool))


def test_elementwise_lists_are_in_element_order(stats, table):
    feature = stats["features"]["each"]
    x = table[0][:, COLUMNS["each"]].astype(np.float64)
    means = [column[np.isfinite(column)].mean() for column in x.T]
    np.testing.assert_allclose(feature["mean"], means, rtol=1e-12)
    assert feature["count"] == np.isfinite(x).sum(axis=0).tolist()


def test_a_shared_vector_pools_its_elements(stats, table):
    feature = stats["features"]["shared"]
    finite = finite_of(table, "shared")
    assert feature["count"] == finite.size
    np.testing.assert_allclose(feature["mean"], finite.mean(), rtol=1e-12)


@pytest.mark.parametrize("name", list(CONFIG.features))
def test_counts_are_integers_that_add_up_to_num_rows_times_elements(stats, name):
    feature = stats["features"][name]
    counts = [feature[key] for key in ("count", "missing", "nan", "pos_inf", "neg_inf")]
    size = CONFIG.features[name].size
    if isinstance(counts[0], list):  # elementwise: per element, num_rows each
        totals = [sum(parts) for parts in zip(*counts, strict=True)]
        assert totals == [ROWS] * size
        assert all(isinstance(v, int) for part in counts for v in part)
    else:
        assert sum(counts) == ROWS * size  # README: x d for a shared vector
        assert all(isinstance(v, int) for v in counts)


def as_list(value):
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("name", list(CONFIG.features))
def test_graph_numbers_are_the_applied_values_written_exactly(stats, analyzed, name):
    # float32 values, but a `log_zscore` feature's center and scale are the
    # float64 numbers its path applies (`fit`, `unpack_stats_vector`).
    feature = stats["features"][name]
    log = CONFIG.features[name].scale.log
    slots = [i for i, s in enumerate(plan_slots(CONFIG)) if s.feature == name]
    reported = {
        "lower": feature["clip"]["lower"],
        "upper": feature["clip"]["upper"],
        "center": feature["scale"]["center"],
        "scale": feature["scale"]["scale"],
        "impute_value": feature["impute"]["value"],
    }
    for field, value in reported.items():
        expected = analyzed.field(field)[slots]
        if not (log and field in ("center", "scale")):
            expected = expected.astype(np.float32)
        assert as_list(value) == expected.tolist(), field


def test_a_log_zscore_center_is_not_rounded_to_float32(stats, table):
    feature = stats["features"]["seen"]
    finite = finite_of(table, "seen")
    logged = np.sign(finite) * np.log1p(np.abs(finite))  # README's g; clip minmax
    assert feature["scale"]["center"] == pytest.approx(logged.mean(), rel=1e-12)
    assert float(np.float32(feature["scale"]["center"])) != feature["scale"]["center"]


def test_a_mean_impute_value_is_the_float32_rounded_mean(stats, table):
    feature = stats["features"]["limits"]
    mean = finite_of(table, "limits").mean()
    assert feature["impute"]["value"] == float(np.float32(mean))
    assert feature["mean"] == pytest.approx(mean, rel=1e-12)  # float64 kept


@pytest.mark.parametrize(
    "name",
    ["fare", "each", "shared", "limits", "empty"],
    ids=[
        "scalar",
        "elementwise_vector",
        "shared_vector",
        "inf_missing",
        "no_finite_values_gives_0",
    ],
)
def test_clipped_fractions_are_fractions_of_the_finite_values(stats, table, name):
    # STATS_FORMAT_VERSION 3: finite values clipped below / above over the
    # finite count; +-Inf (counted in pos_inf / neg_inf) are not in them.
    feature = stats["features"][name]
    x = table[0][:, COLUMNS[name]].astype(np.float64)
    if not CONFIG.features[name].elementwise:
        x = x.reshape(-1, 1)
    x = np.where(np.isfinite(x), x, np.nan)
    lower = np.array(as_list(feature["clip"]["lower"]))
    upper = np.array(as_list(feature["clip"]["upper"]))
    finite = np.isfinite(x).sum(axis=0)
    with np.errstate(invalid="ignore"):
        below = (x < lower).sum(axis=0) / np.maximum(finite, 1)
        above = (x > upper).sum(axis=0) / np.maximum(finite, 1)
    if name != "empty":
        assert below.max() > 0 and above.max() > 0  # the test data reach both sides
    np.testing.assert_allclose(as_list(feature["clipped_below"]), below, rtol=1e-15)
    np.testing.assert_allclose(as_list(feature["clipped_above"]), above, rtol=1e-15)


WARNING_CASES = [
    pytest.param(
        "each",
        [f"element 1: {FLAG_MESSAGES[FLAG_CONSTANT]}"],
        [False, True, False],
        id="constant_element_of_a_vector_is_named",
    ),
    pytest.param(
        "empty",
        [FLAG_MESSAGES[FLAG_NO_FINITE_VALUES]],
        False,
        id="no_finite_values_warn_without_being_constant",
    ),
    pytest.param(
        "rare",
        [FLAG_MESSAGES[FLAG_DEGENERATE_BOUNDS]],
        True,
        id="degenerate_bounds_warn_and_are_constant",
    ),
    pytest.param(
        "spiky",
        [FLAG_MESSAGES[FLAG_ZERO_ROBUST_RANGE]],
        False,
        id="zero_robust_range_warns_but_is_not_constant",
    ),
    pytest.param("fare", [], False, id="ordinary_feature_has_no_warnings"),
    pytest.param(
        "flat",
        [FLAG_MESSAGES[FLAG_CONSTANT]],
        True,
        id="constant_shared_vector_warns_once_without_prefix",
    ),
]


@pytest.mark.parametrize(("name", "warnings", "constant"), WARNING_CASES)
def test_warnings_and_constant(stats, name, warnings, constant):
    feature = stats["features"][name]
    assert feature["warnings"] == warnings
    assert feature["constant"] == constant


def test_an_undefined_number_becomes_null(analyzed):
    vector = analyzed.vector.copy()
    index = list(CONFIG.features).index("fare")
    vector[field_slice("mean", S)][index] = np.nan
    vector[field_slice("std", S)][index] = np.inf
    feature = unpack_stats_vector(CONFIG, vector)["features"]["fare"]
    assert (feature["mean"], feature["std"]) == (None, None)


def test_min_and_max_of_a_feature_without_finite_values_are_null(stats):
    feature = stats["features"]["empty"]
    assert (feature["min"], feature["max"]) == (None, None)


def test_mean_std_and_quantiles_of_a_feature_without_finite_values_are_null(stats):
    # README: "a value that is undefined (no finite values) is `null`".
    feature = stats["features"]["empty"]
    assert feature["count"] == 0
    assert (feature["mean"], feature["std"]) == (None, None)
    assert set(feature["quantiles"].values()) == {None}


def test_the_whole_entry_is_strict_json(stats):
    assert json.loads(json.dumps(stats, allow_nan=False)) == stats


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param(
            "fare",
            {
                "inf": "clip",
                "elementwise": True,
                "indicators": ["missing", "clipped"],
                "output_bound": 5.0,
                "impute": "median",
            },
            id="defaults_and_indicators_are_reported",
        ),
        pytest.param(
            "limits",
            {
                "inf": "missing",
                "elementwise": True,
                "indicators": [],
                "output_bound": 5.0,
                "impute": "mean",
            },
            id="inf_missing_and_mean_impute_are_reported",
        ),
        pytest.param(
            "miles",
            {
                "inf": "clip",
                "elementwise": True,
                "indicators": [],
                "output_bound": 3.0,
                "impute": "median",
            },
            id="a_custom_output_bound_is_reported",
        ),
        pytest.param(
            "shared",
            {
                "inf": "clip",
                "elementwise": False,
                "indicators": [],
                "output_bound": 5.0,
                "impute": "median",
            },
            id="a_shared_vector_is_not_elementwise",
        ),
    ],
)
def test_config_settings_are_reported(stats, name, expected):
    feature = stats["features"][name]
    got = {key: feature[key] for key in expected if key != "impute"}
    got["impute"] = feature["impute"]["strategy"]
    assert got == expected


@pytest.mark.parametrize(
    "length",
    [
        pytest.param(stats_vector_length(S) - 1, id="one_number_short"),
        pytest.param(stats_vector_length(S) + 1, id="one_number_too_many"),
        pytest.param(phase0_length(S), id="only_the_first_phase_parameters"),
    ],
)
def test_a_vector_of_the_wrong_length_is_a_value_error(analyzed, length):
    vector = np.resize(analyzed.vector, length)
    with pytest.raises(ValueError, match=r"stats vector has shape"):
        unpack_stats_vector(CONFIG, vector)
