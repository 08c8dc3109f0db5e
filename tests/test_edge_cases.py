"""Edge cases, each with its documented behaviour: constant and degenerate
features, no finite values, integers, float32 extremes, a single row."""

import numpy as np
import pytest
from graph_oracle import apply_graph, element, expected_output
from hypothesis import given, settings
from hypothesis import strategies as st

from tanhguard.errors import DataError
from tanhguard.pipeline.analyze import run_analyze
from tanhguard.transforms.config import parse_config
from tanhguard.transforms.mappers import guard

ROWS = 2000
F32_MAX = float(np.finfo(np.float32).max)

EDGE_CONFIG = parse_config(
    {
        "features": {
            "constant": {},
            "empty_fixed": {
                "clip": {"strategy": "fixed", "lower": 0, "upper": 10},
                "impute": {"strategy": "constant", "value": 3},
            },
            "count": {"dtype": "int", "clip": "minmax"},
            "huge": {"clip": {"strategy": "sigma", "k": 4}},
            "mostly_zero": {},
            "zero_iqr": {"clip": "minmax", "scale": "robust"},
        }
    }
)


def _write(path, columns, rows):
    names = list(columns)
    with open(path, "w") as handle:
        handle.write(",".join(names) + "\n")
        for row in range(rows):
            handle.write(",".join(columns[name][row] for name in names) + "\n")


@pytest.fixture(scope="module")
def edges(tmp_path_factory):
    rng = np.random.default_rng(5)
    huge = rng.choice([-3.0e38, 3.0e38, 1.0, -2.0], ROWS).astype(np.float32)
    mostly_zero = np.zeros(ROWS)
    mostly_zero[17] = 55.0  # 1 row in 2,000: inside the 0.001..0.999 tails
    zero_iqr = np.where(rng.random(ROWS) < 0.8, 0.0, rng.normal(10, 3, ROWS))
    counts = rng.integers(-5, 1_000_000, ROWS)
    columns = {
        "constant": ["4.0"] * ROWS,
        "empty_fixed": [""] * ROWS,
        "count": [str(v) for v in counts],
        "huge": [repr(float(v)) for v in huge],
        "mostly_zero": [repr(float(v)) for v in mostly_zero],
        "zero_iqr": [repr(float(v)) for v in zero_iqr],
    }
    root = tmp_path_factory.mktemp("edges")
    _write(root / "edges.csv", columns, ROWS)
    stats = run_analyze(EDGE_CONFIG, str(root / "edges.csv"), root / "artifacts")
    return {
        "stats": stats["features"],
        "artifacts": root / "artifacts",
        "huge": huge,
        "counts": counts,
    }


PROBE = np.array([np.nan, np.inf, -np.inf, 0.0, 4.0, 3.0, 1e30, -F32_MAX], np.float32)


def _outputs(edges):
    """The graph on PROBE (the integer feature gets 0..7)."""
    raw = {name: PROBE for name in EDGE_CONFIG.features}
    raw["count"] = np.arange(len(PROBE), dtype=np.int64)
    return apply_graph(edges["artifacts"], raw)


def test_constant_feature_outputs_zero_with_a_warning(edges):
    feature = edges["stats"]["constant"]
    assert feature["constant"] is True
    assert feature["scale"]["scale"] == 0.0
    assert [w.split(":")[0] for w in feature["warnings"]] == ["constant"]
    np.testing.assert_array_equal(_outputs(edges)["constant"], np.zeros(len(PROBE)))


def test_feature_without_values_works_with_fixed_clip_and_constant_impute(edges):
    feature = edges["stats"]["empty_fixed"]
    assert feature["count"] == 0 and feature["missing"] == ROWS
    assert any(w.startswith("no finite training values") for w in feature["warnings"])
    # The fixed bounds [0, 10] are mapped onto [-1, 1]: center 5, scale 5.
    assert (feature["scale"]["center"], feature["scale"]["scale"]) == (5.0, 5.0)
    got = _outputs(edges)["empty_fixed"]
    # NaN -> 3 -> (3 - 5) / 5; +Inf -> 10 -> 1; -Inf -> 0 -> -1; 4 -> -0.2.
    np.testing.assert_allclose(got[:5], [-0.4, 1.0, -1.0, -1.0, -0.2], rtol=1e-6)


def test_integer_feature_statistics_are_exact(edges):
    feature = edges["stats"]["count"]
    counts = edges["counts"]
    assert (feature["min"], feature["max"]) == (counts.min(), counts.max())
    assert (feature["clip"]["lower"], feature["clip"]["upper"]) == (
        counts.min(),
        counts.max(),
    )
    np.testing.assert_allclose(feature["mean"], counts.mean(), rtol=1e-9)


def test_values_near_float32_max_keep_statistics_finite(edges):
    feature = edges["stats"]["huge"]
    values = edges["huge"].astype(np.float64)
    np.testing.assert_allclose(feature["mean"], values.mean(), rtol=1e-9)
    np.testing.assert_allclose(feature["std"], values.std(), rtol=1e-9)
    # mean +- 4 std is far beyond float32: the bounds are clamped to its range.
    assert (feature["clip"]["lower"], feature["clip"]["upper"]) == (-F32_MAX, F32_MAX)
    for key in ("center", "scale"):
        assert np.isfinite(feature["scale"][key])
    output = _outputs(edges)["huge"]
    assert np.all(np.isfinite(output)) and np.all(np.abs(output) <= 5.0)


def test_degenerate_quantile_range_outputs_zero_with_a_warning(edges):
    feature = edges["stats"]["mostly_zero"]
    assert feature["clip"]["lower"] == feature["clip"]["upper"] == 0.0
    assert [w.split(":")[0] for w in feature["warnings"]] == ["degenerate clip bounds"]
    assert feature["constant"] is True
    np.testing.assert_array_equal(_outputs(edges)["mostly_zero"], np.zeros(len(PROBE)))


def test_zero_robust_range_falls_back_to_scale_one_like_scikit_learn(edges):
    feature = edges["stats"]["zero_iqr"]
    assert feature["quantiles"]["0.25"] == feature["quantiles"]["0.75"] == 0.0
    assert (feature["scale"]["center"], feature["scale"]["scale"]) == (0.0, 1.0)
    assert any(w.startswith("zero quantile range") for w in feature["warnings"])
    assert feature["constant"] is False


def test_single_row_is_analyzed_as_constant(tmp_path):
    config = parse_config(
        {
            "features": {
                "q": {},
                "m": {"clip": "mad", "scale": "robust"},
                "s": {"clip": "sigma", "scale": "log_zscore"},
                "i": {"clip": "iqr", "scale": "minmax"},
                "v": {"shape": [2], "clip": "minmax"},
            }
        }
    )
    path = tmp_path / "one.csv"
    path.write_text("q,m,s,i,v_0,v_1\n2.5,-1,7,0,3,4\n")
    stats = run_analyze(config, str(path), tmp_path / "out")
    assert stats["num_rows"] == 1
    assert stats["features"]["q"]["clip"]["lower"] == 2.5
    assert stats["features"]["m"]["clip"]["mad"] == 0.0
    for name in ("q", "m", "s", "i"):
        assert stats["features"][name]["constant"] is True, name
    assert stats["features"]["v"]["constant"] == [True, True]
    probe = np.array([np.nan, 1e30, -1e30, 2.0], np.float32)
    raw = {name: probe for name in ("q", "m", "s", "i")}
    raw["v"] = np.stack([probe, probe], axis=1)
    for name, output in apply_graph(tmp_path / "out", raw).items():
        np.testing.assert_array_equal(output, np.zeros_like(output), err_msg=name)


def test_feature_without_finite_values_is_an_error_naming_it(tmp_path):
    config = parse_config({"features": {"ok": {}, "all_nan": {}}})
    path = tmp_path / "nan.csv"
    path.write_text("ok,all_nan\n" + "".join(f"{i},nan\n" for i in range(20)))
    output = tmp_path / "out"
    with pytest.raises(DataError, match=r"feature `all_nan`: no finite training"):
        run_analyze(config, str(path), output)
    assert not output.exists()


# The formula's promise, for any parameters the fitter may produce (it checks
# them: finite, lower <= upper, scale >= 0) and any float32 input.
def _flush_subnormals(values):
    values = np.asarray(values, np.float32)
    return np.where(np.abs(values) < np.finfo(np.float32).tiny, np.float32(0), values)


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
any32 = st.floats(width=32, allow_nan=True, allow_infinity=True)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(any32, min_size=1, max_size=16),
    bounds=st.lists(finite32, min_size=2, max_size=2).map(sorted),
    impute=finite32,
    center=finite32,
    scale=st.one_of(st.just(0.0), st.floats(0, F32_MAX, width=32)),
    bound=st.floats(1e-3, 1e6),
    log=st.booleans(),
)
def test_guard_output_is_finite_and_bounded_for_any_parameters(
    values, bounds, impute, center, scale, bound, log
):
    x = np.array(values, np.float32).reshape(-1, 1)
    out, missing, clipped = guard(
        x,
        impute_value=np.float32([impute]),
        lower=np.float32([bounds[0]]),
        upper=np.float32([bounds[1]]),
        center=np.float32([center]),
        scale=np.float32([scale]),
        bound=bound,
        log=log,
    )
    out = out.numpy()
    assert np.all(np.isfinite(out)) and np.all(np.abs(out) <= np.float32(bound))
    # TensorFlow's CPU kernels flush float32 subnormals to zero; so does the
    # oracle.
    x = _flush_subnormals(x)
    bounds = [float(_flush_subnormals(np.float32(b))) for b in bounds]
    impute, center, scale = (
        float(_flush_subnormals(np.float32(v))) for v in (impute, center, scale)
    )
    np.testing.assert_array_equal(missing.numpy(), np.isnan(x))
    with np.errstate(invalid="ignore"):
        outside = (x < np.float32(bounds[0])) | (x > np.float32(bounds[1]))
    np.testing.assert_array_equal(clipped.numpy(), outside)
    numbers = {
        "impute": impute,
        "lower": bounds[0],
        "upper": bounds[1],
        "center": center,
        "scale": scale,
        "log": log,
        "inf": "clip",
        "bound": bound,
    }
    np.testing.assert_allclose(
        out, expected_output(numbers, x), rtol=1e-5, atol=1e-6 * bound
    )


def test_edge_outputs_follow_the_formula(edges):
    outputs = _outputs(edges)
    for name in ("huge", "zero_iqr", "empty_fixed"):
        numbers = element(edges["stats"][name], None)
        np.testing.assert_allclose(
            outputs[name], expected_output(numbers, PROBE), rtol=1e-6, err_msg=name
        )
