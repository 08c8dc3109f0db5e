"""Numeric hardening of the graph, the serving inputs and stats.json, each
against an oracle written here in numpy float64 from README's statements:

- the output bound holds as written, also where float32 rounds `B` up;
- an `int` feature given as floats clamps +-Inf and 1e30 to the int64 range
  (+Inf -> `upper`), instead of a cast that saturates to INT64_MIN;
- `log_zscore` on values with a large offset follows the formula in float64;
- batch sizes and vector lengths are checked when the graph runs;
- `clipped_below`/`clipped_above` are fractions of the finite values.
"""

import numpy as np
import pytest
import tensorflow as tf
from graph_oracle import apply_graph

from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.export import ExportError, Preprocessor, export
from tanhguard.transforms.config import parse_config
from tanhguard.transforms.mappers import guard

ROWS = 400
F32_MAX = float(np.finfo(np.float32).max)
CONFIG = parse_config(
    {
        "features": {
            # Census tract ids: an offset of 1.7e10, a spread of 8e5.
            "tract": {"clip": "minmax", "scale": "log_zscore"},
            "tract_z": {"clip": "minmax", "scale": "zscore"},
            "huge": {"clip": "none", "scale": "none", "output_bound": 0.1},
            "hour": {"dtype": "int", "clip": "minmax"},
            "pair": {
                "shape": [2],
                "clip": {"strategy": "quantile", "lower": 0.05, "upper": 0.95},
            },
            "dirty": {
                "clip": {"strategy": "quantile", "lower": 0.05, "upper": 0.95},
                "indicators": ["clipped"],
            },
            "dirty_missing": {
                "clip": {"strategy": "quantile", "lower": 0.05, "upper": 0.95},
                "inf": "missing",
            },
            # No finite value at all: only NaN and +-Inf.
            "no_finite": {
                "clip": {"strategy": "fixed", "lower": 0.0, "upper": 1.0},
                "impute": "zero",
            },
        }
    }
)


def _columns(rng):
    tract = rng.integers(17031010100, 17031843800, ROWS, endpoint=True)
    tract[:2] = [17031010100, 17031843800]
    dirty = rng.normal(50.0, 10.0, ROWS)
    dirty[rng.choice(ROWS, 40, replace=False)] = np.nan
    dirty[:7], dirty[7:10] = np.inf, -np.inf
    no_finite = np.where(np.arange(ROWS) % 3 == 0, np.inf, np.nan)
    no_finite[1] = -np.inf
    return {
        "tract": tract,
        "tract_z": tract,
        "huge": rng.normal(0.0, 1e30, ROWS),
        "hour": rng.integers(0, 24, ROWS),
        "pair_0": rng.normal(0.0, 1.0, ROWS),
        "pair_1": np.where(np.arange(ROWS) % 10 == 0, np.inf, rng.normal(5, 2, ROWS)),
        "dirty": dirty,
        "dirty_missing": dirty,
        "no_finite": no_finite,
    }


def _cell(value) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(float(value))  # nan, inf, -inf as text


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    columns = _columns(np.random.default_rng(7))
    with open(root / "data.csv", "w") as handle:
        handle.write(",".join(columns) + "\n")
        for row in range(ROWS):
            handle.write(",".join(_cell(v[row]) for v in columns.values()) + "\n")
    stats = run_analyze(CONFIG, str(root / "data.csv"), root / "artifacts")
    return {
        "root": root,
        "artifacts": root / "artifacts",
        "stats": stats["features"],
        "columns": columns,
    }


@pytest.fixture(scope="module")
def preprocessor(analyzed):
    return Preprocessor(analyzed["artifacts"])


def _apply_tft(analyzed, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """TFT's own API on `x` for feature `name` (the others get zeros)."""
    raw = {}
    for other, feature in CONFIG.features.items():
        dtype = np.int64 if feature.dtype == "int" else np.float32
        shape = (len(x), feature.size) if feature.is_vector else (len(x),)
        raw[other] = np.zeros(shape, dtype)
    raw[name] = x
    return apply_graph(analyzed["artifacts"], raw)


def _float64_formula(feature: dict, x, log: bool = False) -> np.ndarray:
    """README's formula in float64 with stats.json's numbers (no inf policy:
    every test input here is NaN, +-Inf or finite under `inf: clip`)."""
    x = np.asarray(x, np.float64)
    imputed = np.where(np.isnan(x), feature["impute"]["value"], x)
    clipped = np.clip(imputed, feature["clip"]["lower"], feature["clip"]["upper"])
    if log:
        clipped = np.sign(clipped) * np.log1p(np.abs(clipped))
    center, scale = feature["scale"]["center"], feature["scale"]["scale"]
    if scale == 0.0:
        return np.zeros_like(clipped)
    bound = feature["output_bound"]
    return np.clip((clipped - center) / scale, -bound, bound)


def _largest_float32_not_above(bound: float) -> float:
    rounded = np.float32(bound)
    if float(rounded) > bound:  # (compared as float64: exact)
        rounded = np.nextafter(rounded, np.float32(0))
    return float(rounded)


# 1. The output bound as written.


def test_outputs_stay_within_an_output_bound_that_float32_rounds_up(
    analyzed, preprocessor
):
    assert float(np.float32(0.1)) > 0.1  # the case: 0.10000000149
    columns = analyzed["columns"]
    probe = np.array([1e30, -1e30, F32_MAX, -F32_MAX, np.inf, -np.inf, np.nan])
    huge = np.concatenate([columns["huge"], probe]).astype(np.float32)
    by_tft = _apply_tft(analyzed, "huge", huge)["huge"]
    by_preprocessor = preprocessor({"huge": huge})["huge"].numpy()
    limit = _largest_float32_not_above(0.1)
    for out in (by_tft, by_preprocessor):
        assert float(out.max()) <= 0.1 and float(out.min()) >= -0.1
        assert (float(out.max()), float(out.min())) == (limit, -limit)


@pytest.mark.parametrize("log", [False, True], ids=["identity", "log_zscore"])
@pytest.mark.parametrize("bound", [0.1, 0.3, 1 / 3, 1e-3, 123.456, 5.0, F32_MAX])
def test_guard_never_exceeds_the_bound_as_written(bound, log):
    x = np.array([[1e30], [-1e30], [np.inf], [-np.inf], [F32_MAX], [-F32_MAX]])
    one = np.float32([1.0])
    out, _, _ = guard(
        x.astype(np.float32),
        impute_value=np.float32([0.0]),
        lower=np.float32([-F32_MAX]),
        upper=np.float32([F32_MAX]),
        center=np.float32([0.0]),
        scale=np.float32([1e-30]) if bound < F32_MAX else one,
        bound=bound,
        log=log,
    )
    out = out.numpy()
    assert out.dtype == np.float32
    assert float(out.max()) <= bound and float(out.min()) >= -bound
    if bound < F32_MAX:  # saturates: the largest float32 not above the bound
        assert float(out.max()) == _largest_float32_not_above(bound)


# 2. An `int` feature given as floats.


def test_int_feature_given_as_floats_clamps_infinities_to_the_int64_range(
    analyzed, preprocessor
):
    feature = analyzed["stats"]["hour"]
    assert (feature["clip"]["lower"], feature["clip"]["upper"]) == (0.0, 23.0)
    values = np.array([np.inf, 1e30, 23.0, 0.0, -np.inf, -1e30, 9.6, np.nan])
    got = preprocessor({"hour": values})["hour"].numpy()
    # +Inf and 1e30 are above every int64: `upper`, as README promises for
    # +Inf; 9.6 rounds to 10; NaN is missing, so imputed.
    rounded = np.where(np.isnan(values), np.nan, np.round(values))
    np.testing.assert_allclose(
        got, _float64_formula(feature, rounded), rtol=1e-6, atol=1e-6
    )
    assert got[0] == got[1] == got[2] > got[3] == got[4] == got[5]


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(np.array([2**64 - 1, 23, 0], np.uint64), id="uint64"),
        pytest.param(np.array([2**63 - 1, 23, -(2**63)], np.int64), id="int64"),
        pytest.param(np.array([3e38, 23, -3e38], np.float32), id="float32"),
    ],
)
def test_int_feature_values_beyond_int64_clip_to_the_nearest_bound(
    analyzed, preprocessor, values
):
    feature = analyzed["stats"]["hour"]
    got = preprocessor({"hour": values})["hour"].numpy()
    expected = _float64_formula(feature, np.clip(values.astype(np.float64), -1, 24))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


# 3. `log_zscore` of values with a large offset, in float64.

# The float64 formula against the graph, in output units: the float32 output
# rounds by at most 2**-24 x |out| (6e-8), and float64 arithmetic adds about
# 1e-16 x |g| / scale (2e-10 here, with g = 23.6 and scale 1.4e-5), so 1e-6
# leaves a margin of 16 and is still 1e5 times below the float32 path's
# error on these values (about 0.1: one float32 step of g, 1.9e-6, is 0.13
# of the scale).
TOLERANCE = 1e-6


def _tract_probe(analyzed):
    tract = analyzed["columns"]["tract"].astype(np.float32)
    probe = np.array([np.nan, np.inf, -np.inf, 0.0, 1.7e10, 1.71e10], np.float32)
    return np.concatenate([tract, probe])


def test_log_zscore_of_a_large_offset_follows_the_float64_formula(
    analyzed, preprocessor
):
    feature = analyzed["stats"]["tract"]
    x = _tract_probe(analyzed)
    expected = _float64_formula(feature, x, log=True)
    for got in (
        _apply_tft(analyzed, "tract", x)["tract"],
        preprocessor({"tract": x})["tract"].numpy(),
    ):
        error = np.abs(got.astype(np.float64) - expected)
        assert np.all(error <= TOLERANCE * np.maximum(1.0, np.abs(expected))), (
            error.max()
        )


def test_log_zscore_center_and_scale_are_the_float64_statistics_of_g(analyzed):
    # stats.json reports what the graph applies: the float64 mean and std of
    # g over the (float32) training values, not their float32 roundings
    # (which are 1e-8 relative away, 0.07 of the scale for the center).
    feature = analyzed["stats"]["tract"]
    values = analyzed["columns"]["tract"].astype(np.float32).astype(np.float64)
    clipped = np.clip(values, feature["clip"]["lower"], feature["clip"]["upper"])
    g = np.sign(clipped) * np.log1p(np.abs(clipped))
    assert feature["scale"]["center"] == pytest.approx(g.mean(), rel=1e-13)
    assert feature["scale"]["scale"] == pytest.approx(g.std(), rel=1e-9)


def test_log_zscore_of_a_large_offset_standardizes_the_training_rows(
    analyzed, preprocessor
):
    values = analyzed["columns"]["tract"].astype(np.float32)
    out = preprocessor({"tract": values})["tract"].numpy().astype(np.float64)
    assert abs(out.mean()) <= 1e-5 and abs(out.std() - 1.0) <= 1e-5


def test_zscore_of_a_large_offset_follows_the_formula_with_its_float32_center(
    analyzed, preprocessor
):
    # README's documented limit: the float32 input near 1.7e10 is a multiple
    # of 1024; the float32 center is within half of that of the mean, and
    # the output follows the formula with the numbers in stats.json.
    feature = analyzed["stats"]["tract_z"]
    values = analyzed["columns"]["tract_z"].astype(np.float32).astype(np.float64)
    assert np.all(values % 1024 == 0)
    assert abs(feature["scale"]["center"] - values.mean()) <= 512
    x = _tract_probe(analyzed)
    got = preprocessor({"tract_z": x})["tract_z"].numpy().astype(np.float64)
    expected = _float64_formula(feature, x)
    assert np.all(np.abs(got - expected) <= TOLERANCE * np.maximum(1, abs(expected)))


# 4. Batch sizes and vector lengths.


def test_mismatched_batch_sizes_are_an_export_error_naming_the_feature(preprocessor):
    message = r"feature `hour`: batch size 2, but feature `tract` has 4"
    with pytest.raises(ExportError, match=message):
        preprocessor({"tract": np.ones(4), "hour": np.ones(2)})
    with pytest.raises(ExportError, match=r"feature `tract`: batch size 3"):
        preprocessor({"pair": np.ones((4, 2)), "tract": np.ones(3)})


def _all_features(rows: int, **given) -> dict[str, tf.Tensor]:
    raw = {}
    for name, feature in CONFIG.features.items():
        shape = [rows, feature.size] if feature.is_vector else [rows]
        dtype = tf.int64 if feature.dtype == "int" else tf.float32
        raw[name] = tf.ones(shape, dtype)
    return {**raw, **given}


@pytest.fixture(scope="module")
def signature(analyzed):
    path = export(analyzed["artifacts"], analyzed["root"] / "served")
    return tf.saved_model.load(str(path)).signatures["transform_features"]


def test_saved_model_signature_checks_batch_sizes_and_vector_lengths(signature):
    outputs = signature(**_all_features(4))
    assert {name: value.shape[0] for name, value in outputs.items()} == {
        name: 4 for name in outputs
    }
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"features `tract` and `hour` differ in"
    ):
        signature(**_all_features(4, hour=tf.ones([2], tf.int64)))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"features `tract` and `pair` differ in"
    ):
        signature(**_all_features(4, pair=tf.ones([3, 2])))
    # The signature declares [None, 2], but a loaded signature does not hold
    # its inputs to that: the graph checks.
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"feature `pair`: expected shape"
    ):
        signature(**_all_features(4, pair=tf.ones([4, 3])))


def test_traced_preprocessor_checks_vector_lengths_unknown_when_traced(
    preprocessor,
):
    call = tf.function(
        preprocessor.__call__,
        input_signature=[
            {
                "tract": tf.TensorSpec([None], tf.float32),
                "pair": tf.TensorSpec([None, None], tf.float32),
            }
        ],
    )
    outputs = call({"tract": tf.ones([3]), "pair": tf.ones([3, 2])})
    assert outputs["pair"].shape == [3, 2]
    # Unchecked, [3, 4] would reshape into [6, 2].
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"feature `pair`: expected shape"
    ):
        call({"tract": tf.ones([3]), "pair": tf.ones([3, 4])})
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"features `tract` and `pair` differ in"
    ):
        call({"tract": tf.ones([3]), "pair": tf.ones([2, 2])})


# 5. Clipped fractions of the finite values.


def _element(value, index: int):
    """Element `index` of an elementwise vector's list; a number as it is."""
    return value[index] if isinstance(value, list) else value


@pytest.mark.parametrize("name", ["dirty", "dirty_missing", "pair", "no_finite"])
def test_clipped_fractions_are_fractions_of_the_finite_values(analyzed, name):
    feature, columns = analyzed["stats"][name], analyzed["columns"]
    parts = [columns[f"{name}_{i}"] for i in range(2)] if name == "pair" else None
    for index, x in enumerate(parts or [columns[name]]):
        finite = x[np.isfinite(x)].astype(np.float32).astype(np.float64)
        lower = _element(feature["clip"]["lower"], index)
        upper = _element(feature["clip"]["upper"], index)
        count = max(finite.size, 1)  # no finite value: 0
        below, above = (finite < lower).sum() / count, (finite > upper).sum() / count
        assert _element(feature["count"], index) == finite.size
        got_below = _element(feature["clipped_below"], index)
        got_above = _element(feature["clipped_above"], index)
        assert got_below == pytest.approx(below, abs=1e-15)
        assert got_above == pytest.approx(above, abs=1e-15)
        if name != "no_finite":
            assert 0 < got_below < 0.1 and 0 < got_above < 0.1  # data reach both


def test_clipped_indicator_still_flags_infinities(analyzed):
    feature = analyzed["stats"]["dirty"]
    x = np.array([np.inf, -np.inf, feature["quantiles"]["0.5"], np.nan], np.float32)
    flags = _apply_tft(analyzed, "dirty", x)["dirty__clipped"]
    np.testing.assert_array_equal(flags, [1.0, 1.0, 0.0, 0.0])
