"""Every clip x scale pair, and every impute x inf pair, in one analysis run:
each derived number against an independent computation (numpy, scikit-learn,
the formulas in README), the graph against the documented formula, and the
bounded-output promise as a property."""

import itertools
from pathlib import Path

import numpy as np
import pytest
from graph_oracle import apply_graph, element, expected_output
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import RobustScaler

from tanhguard.pipeline.analyze import run_analyze
from tanhguard.transforms.config import parse_config
from tanhguard.transforms.statistics import quantile_epsilon

ROWS = 2000
CLIPS = {
    "fixed": {"strategy": "fixed", "lower": -40.0, "upper": 90.0},
    "quantile": {"strategy": "quantile", "lower": 0.01, "upper": 0.99},
    "sigma": {"strategy": "sigma", "k": 2.0},
    "iqr": "iqr",
    "mad": {"strategy": "mad", "k": 3.0},
    "minmax": "minmax",
    "none": "none",
}
SCALES = {
    "zscore": "zscore",
    "robust": "robust",
    "minmax": "minmax",
    "log_zscore": "log_zscore",
    "none": "none",
}
IMPUTES = {
    "median": "median",
    "mean": "mean",
    "zero": "zero",
    "constant": {"strategy": "constant", "value": 7.5},
}
INF_POLICIES = ("clip", "missing")
# Every clip x scale pair; impute and inf policy cycle so that every impute x
# inf pair also occurs (35 features: one analysis run stays about a minute).
COMBINATIONS = [
    (clip, scale, list(IMPUTES)[i % 4], INF_POLICIES[(i // 4) % 2])
    for i, (clip, scale) in enumerate(itertools.product(CLIPS, SCALES))
]
# Half-width of the sketch's rank error on the 1,000-step grid, plus one.
EPSILON = quantile_epsilon(1000)


def feature_name(clip, scale, impute, inf):
    return f"c_{clip}__s_{scale}__i_{impute}__f_{inf}"


def _column(index: int, rng: np.random.Generator) -> np.ndarray:
    """Heavy-tailed values (Student t, 2 dof) with NaN, +-Inf and outliers."""
    values = 20 + 10 * rng.standard_t(2, ROWS) * (1 + index % 5)
    values[rng.choice(ROWS, 30, replace=False)] *= 1e4  # unit errors, x1e4
    values[rng.choice(ROWS, 25, replace=False)] = np.nan
    values[rng.choice(ROWS, 10, replace=False)] = np.inf
    values[rng.choice(ROWS, 10, replace=False)] = -np.inf
    return values.astype(np.float32)


def _config_and_columns():
    rng = np.random.default_rng(11)
    features, columns = {}, {}
    for index, (clip, scale, impute, inf) in enumerate(COMBINATIONS):
        name = feature_name(clip, scale, impute, inf)
        features[name] = {
            "clip": CLIPS[clip],
            "scale": SCALES[scale],
            "impute": IMPUTES[impute],
            "inf": inf,
            "indicators": ["missing", "clipped"] if index % 7 == 0 else [],
        }
        columns[name] = _column(index, rng)
    base = _column(1, rng)
    for vector, elementwise in (("vec_each", True), ("vec_shared", False)):
        features[vector] = {
            "shape": [3],
            "elementwise": elementwise,
            "clip": "iqr",
            "scale": "robust",
            "indicators": ["clipped"],
        }
        for i in range(3):
            columns[f"{vector}_{i}"] = base * (i + 1) + 100 * i
    return parse_config({"features": features}), columns


def _write_csv(path: Path, columns: dict) -> None:
    names = list(columns)
    table = np.stack([columns[name] for name in names], axis=1)
    with open(path, "w") as handle:
        handle.write(",".join(names) + "\n")
        for row in table:
            handle.write(",".join(repr(float(v)) for v in row) + "\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config, columns = _config_and_columns()
    root = tmp_path_factory.mktemp("strategies")
    _write_csv(root / "data.csv", columns)
    stats = run_analyze(config, str(root / "data.csv"), root / "artifacts")
    return {"config": config, "columns": columns, "stats": stats, "root": root}


F32 = np.float32
F32_MAX = float(np.finfo(np.float32).max)


def _features_with(run, **wanted):
    """(name, stats) of the scalar combination features matching `wanted`."""
    found = []
    for clip, scale, impute, inf in COMBINATIONS:
        combo = {"clip": clip, "scale": scale, "impute": impute, "inf": inf}
        if all(combo[key] == value for key, value in wanted.items()):
            name = feature_name(clip, scale, impute, inf)
            found.append((name, run["stats"]["features"][name]))
    assert found, wanted
    return found


def _finite(run, name):
    values = run["columns"][name].astype(np.float64)
    return np.sort(values[np.isfinite(values)])


def _assert_rank(value, sorted_values, probability, label):
    """`value` sits at `probability` of `sorted_values` within the sketch's
    rank error (epsilon * n, plus one for ties and rounding)."""
    n = sorted_values.size
    tolerance = EPSILON * n + 1
    low = np.searchsorted(sorted_values, value, side="left")
    high = np.searchsorted(sorted_values, value, side="right")
    target = probability * n
    assert low - tolerance <= target <= high + tolerance, (label, value, target)


def _value_window(sorted_values, probability):
    """The values within the sketch's rank error of a quantile."""
    n = sorted_values.size
    tolerance = int(np.ceil(EPSILON * n)) + 1
    rank = probability * (n - 1)
    low = sorted_values[max(int(np.floor(rank)) - tolerance, 0)]
    high = sorted_values[min(int(np.ceil(rank)) + tolerance, n - 1)]
    return low, high


def test_every_combination_has_statistics(run):
    assert set(run["stats"]["features"]) == set(run["config"].features)
    assert run["stats"]["num_rows"] == ROWS


@pytest.mark.parametrize("clip", list(CLIPS))
def test_clip_bounds_agree_with_an_independent_computation(run, clip):
    for name, feature in _features_with(run, clip=clip):
        finite = _finite(run, name)
        lower, upper = feature["clip"]["lower"], feature["clip"]["upper"]
        if clip == "fixed":
            assert (lower, upper) == (-40.0, 90.0)
        elif clip == "quantile":
            _assert_rank(lower, finite, 0.01, name)
            _assert_rank(upper, finite, 0.99, name)
        elif clip == "sigma":
            # feature-engine's gaussian capping: mean -+ k * std.
            k, mean, std = 2.0, finite.mean(), finite.std()
            np.testing.assert_allclose(
                [lower, upper], [mean - k * std, mean + k * std], rtol=1e-6
            )
        elif clip == "iqr":
            q1, q3 = feature["quantiles"]["0.25"], feature["quantiles"]["0.75"]
            _assert_rank(q1, finite, 0.25, name)
            _assert_rank(q3, finite, 0.75, name)
            np.testing.assert_allclose(
                [lower, upper], [q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)], rtol=1e-6
            )
        elif clip == "mad":
            median, mad = feature["clip"]["median"], feature["clip"]["mad"]
            _assert_rank(median, finite, 0.5, name)
            _assert_rank(mad, np.sort(np.abs(finite - median)), 0.5, name)
            half = 3.0 * 1.4826 * mad
            np.testing.assert_allclose(
                [lower, upper], [median - half, median + half], rtol=1e-6
            )
        elif clip == "minmax":
            assert (lower, upper) == (finite.min(), finite.max())
        else:
            assert (lower, upper) == (-F32_MAX, F32_MAX)


@pytest.mark.parametrize("scale", list(SCALES))
def test_scale_parameters_agree_with_an_independent_computation(run, scale):
    for name, feature in _features_with(run, scale=scale):
        lower, upper = F32(feature["clip"]["lower"]), F32(feature["clip"]["upper"])
        # Scalers are fitted on the finite training values after clipping.
        clipped = np.clip(_finite(run, name).astype(F32), lower, upper)
        clipped = np.sort(clipped.astype(np.float64))
        center, fitted = feature["scale"]["center"], feature["scale"]["scale"]
        if scale == "zscore":
            np.testing.assert_allclose(
                [center, fitted], [clipped.mean(), clipped.std()], rtol=1e-6
            )
        elif scale == "log_zscore":
            g = np.sign(clipped) * np.log1p(np.abs(clipped))
            np.testing.assert_allclose([center, fitted], [g.mean(), g.std()], rtol=1e-6)
        elif scale == "robust":
            reference = RobustScaler(quantile_range=(25.0, 75.0)).fit(
                clipped.reshape(-1, 1)
            )
            c_low, c_high = _value_window(clipped, 0.5)
            q1_low, q1_high = _value_window(clipped, 0.25)
            q3_low, q3_high = _value_window(clipped, 0.75)
            for label, value in (("ours", center), ("sklearn", reference.center_[0])):
                assert c_low <= value <= c_high, (name, label, value)
            for label, value in (("ours", fitted), ("sklearn", reference.scale_[0])):
                assert q3_low - q1_high <= value <= q3_high - q1_low, (name, label)
        elif scale == "minmax":
            if feature["clip"]["strategy"] == "none":
                # No clip bounds: the training range is mapped onto [-1, 1].
                lower, upper = F32(feature["min"]), F32(feature["max"])
            expected = [lower / 2.0 + upper / 2.0, upper / 2.0 - lower / 2.0]
            np.testing.assert_allclose([center, fitted], expected, rtol=1e-6)
        else:
            assert (center, fitted) == (0.0, 1.0)


@pytest.mark.parametrize("impute", list(IMPUTES))
def test_impute_value_agrees_with_an_independent_computation(run, impute):
    for name, feature in _features_with(run, impute=impute):
        value = feature["impute"]["value"]
        finite = _finite(run, name)
        if impute == "median":
            _assert_rank(value, finite, 0.5, name)
        elif impute == "mean":
            assert value == F32(finite.mean())
        elif impute == "zero":
            assert value == 0.0
        else:
            assert value == 7.5


def _after_inf_policy(x, inf):
    return np.where(np.isinf(x), np.nan, x) if inf == "missing" else x


def test_clipped_fractions_are_fractions_of_the_finite_values(run):
    # README: the finite training values below `lower` / above `upper`, over
    # the finite count (+-Inf, which the `__clipped` indicator flags, and
    # NaN are left out whatever the inf policy).
    for clip, scale, impute, inf in COMBINATIONS:
        name = feature_name(clip, scale, impute, inf)
        feature = run["stats"]["features"][name]
        x = run["columns"][name]
        finite = x[np.isfinite(x)]
        below = (finite < F32(feature["clip"]["lower"])).sum() / finite.size
        above = (finite > F32(feature["clip"]["upper"])).sum() / finite.size
        assert feature["clipped_below"] == pytest.approx(below), name
        assert feature["clipped_above"] == pytest.approx(above), name


def _scaled_columns(probe, size):
    with np.errstate(over="ignore"):  # float32 extremes times 2 become +-Inf
        return np.stack([probe * F32(i + 1) for i in range(size)], axis=1)


PROBE = np.array(
    [
        np.nan,
        np.inf,
        -np.inf,
        0.0,
        -0.0,
        1.0,
        20.0,
        -55.5,
        1e4,
        1e30,
        -1e30,
        F32_MAX,
        -F32_MAX,
        1e-45,
        7.5,
        3.0e5,
    ],
    dtype=np.float32,
)


def _probe_batch(config, probe):
    """The probe for scalars; probe * (i + 1) for element i of vectors."""
    batch = {}
    for name, feature in config.features.items():
        batch[name] = (
            _scaled_columns(probe, feature.size) if feature.is_vector else probe
        )
    return batch


def test_graph_applies_the_formula_with_the_numbers_in_stats_json(run):
    config, features = run["config"], run["stats"]["features"]
    outputs = apply_graph(run["root"] / "artifacts", _probe_batch(config, PROBE))
    for name, feature_config in config.features.items():
        feature = features[name]
        columns = range(feature_config.size) if feature_config.is_vector else [None]
        for column in columns:
            index = column if feature_config.elementwise else None
            x = PROBE if column is None else _scaled_columns(PROBE, column + 1)[:, -1]
            got = outputs[name] if column is None else outputs[name][:, column]
            numbers = element(feature, index)
            np.testing.assert_allclose(
                got,
                expected_output(numbers, x),
                rtol=2e-6,
                atol=2e-6,
                err_msg=name,
            )
            policy_x = _after_inf_policy(x, feature["inf"])
            if "missing" in feature["indicators"]:
                missing = outputs[f"{name}__missing"]
                missing = missing if column is None else missing[:, column]
                np.testing.assert_array_equal(missing, np.isnan(policy_x))
            if "clipped" in feature["indicators"]:
                clipped = outputs[f"{name}__clipped"]
                clipped = clipped if column is None else clipped[:, column]
                with np.errstate(invalid="ignore"):
                    outside = (policy_x < F32(numbers["lower"])) | (
                        policy_x > F32(numbers["upper"])
                    )
                np.testing.assert_array_equal(clipped, outside, err_msg=name)


def test_inf_policy_clip_sends_inf_to_the_bounds_and_missing_imputes_it(run):
    features = run["stats"]["features"]
    outputs = apply_graph(
        run["root"] / "artifacts",
        _probe_batch(run["config"], np.array([np.inf, -np.inf], np.float32)),
    )
    for name, feature in _features_with(run, scale="none"):
        lower, upper = feature["clip"]["lower"], feature["clip"]["upper"]
        bound = feature["output_bound"]
        if feature["inf"] == "clip":
            expected = np.clip([upper, lower], -bound, bound)
        else:
            imputed = np.clip(feature["impute"]["value"], lower, upper)
            expected = np.clip([imputed, imputed], -bound, bound)
        np.testing.assert_allclose(outputs[name], expected, rtol=1e-6, err_msg=name)
    assert {f["inf"] for f in features.values()} == {"clip", "missing"}


def test_vector_statistics_are_per_element_or_pooled(run):
    features = run["stats"]["features"]
    each, shared = features["vec_each"], features["vec_shared"]
    columns = [run["columns"][f"vec_each_{i}"].astype(np.float64) for i in range(3)]
    for i, values in enumerate(columns):
        finite = np.sort(values[np.isfinite(values)])
        np.testing.assert_allclose(each["mean"][i], finite.mean(), rtol=1e-9)
        _assert_rank(each["quantiles"]["0.25"][i], finite, 0.25, f"vec_each[{i}]")
    pooled = np.concatenate(
        [run["columns"][f"vec_shared_{i}"].astype(np.float64) for i in range(3)]
    )
    pooled = np.sort(pooled[np.isfinite(pooled)])
    np.testing.assert_allclose(shared["mean"], pooled.mean(), rtol=1e-9)
    _assert_rank(shared["quantiles"]["0.75"], pooled, 0.75, "vec_shared")
    assert isinstance(shared["clip"]["lower"], float)
    assert len(each["clip"]["lower"]) == 3
    assert shared["count"] == pooled.size


float32_values = st.one_of(
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.sampled_from([F32_MAX, -F32_MAX, 1e-45, -0.0, 1e30, -1e30]),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(float32_values, min_size=1, max_size=32))
def test_every_output_is_finite_and_bounded_and_indicators_are_0_or_1(run, values):
    config = run["config"]
    probe = np.array(values, dtype=np.float32)
    outputs = apply_graph(run["root"] / "artifacts", _probe_batch(config, probe))
    for name, feature in config.features.items():
        value = outputs[name]
        assert np.all(np.isfinite(value)), name
        assert np.all(np.abs(value) <= feature.output_bound), name
        for output in config.output_names(name)[1:]:
            assert set(np.unique(outputs[output])) <= {0.0, 1.0}, output


@pytest.fixture(scope="module")
def serving_module(run):
    from tanhguard.pipeline.serving import ServingModule

    return ServingModule(run["root"] / "artifacts")


def test_export_serves_every_combination_by_the_dense_trace(serving_module):
    # Its probe rows found no difference for any clip, scale, impute and
    # inf policy, indicators and vectors (log_zscore computes in float64).
    assert serving_module.tensors_route == "dense", serving_module.tensors_route_reason


@settings(max_examples=25, deadline=None)
@given(st.lists(float32_values, min_size=1, max_size=32))
def test_the_dense_trace_is_bitwise_the_saved_graph_on_any_values(
    run, serving_module, values
):
    import tensorflow as tf

    batch = _probe_batch(run["config"], np.array(values, dtype=np.float32))
    want = apply_graph(run["root"] / "artifacts", batch)
    got = serving_module.transform_features(
        {name: tf.constant(value) for name, value in batch.items()}
    )
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_array_equal(
            got[name].numpy().view(np.uint32), value.view(np.uint32), err_msg=name
        )


def test_both_phases_inside_tft_give_the_statistics_of_the_two_pass_job(run, tmp_path):
    """TFX's route (both phases as TFT analyzers over one input, the graph
    densifying) against the batch job's (the first phase straight on Beam,
    densified in numpy, then the graph with its result as constants)."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam

    from tanhguard.pipeline.analyze import AnalyzeFeatures
    from tanhguard.pipeline.graph_stats import read_graph_stats
    from tanhguard.pipeline.readers import ReadRecordBatches
    from tanhguard.transforms.layout import FIT_FIELDS, PHASE0_FIELDS, field_slice
    from tanhguard.transforms.slots import plan_slots

    config = run["config"]
    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(tmp_path)):
        batches = pipeline | ReadRecordBatches(
            [str(run["root"] / "data.csv")], config, "csv"
        )
        transform_fn = batches | AnalyzeFeatures(config)  # no parameters given
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "out"))
    _, in_tft = read_graph_stats(tmp_path / "out")
    _, two_pass = read_graph_stats(run["root"] / "artifacts")
    count = len(plan_slots(config))
    assert in_tft.shape == two_pass.shape
    assert in_tft[0] == two_pass[0] == ROWS
    for field in PHASE0_FIELDS + FIT_FIELDS:
        where = field_slice(field, count)
        np.testing.assert_allclose(
            in_tft[where], two_pass[where], rtol=1e-12, atol=0, err_msg=field
        )
