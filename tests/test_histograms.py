"""stats.json's histograms and quantile grid (format_version 4) against numpy.

One analysis run over a few strategies (quantile, mad with log_zscore, fixed
bounds far outside the data, no clip, a constant feature, an elementwise and
a shared vector), with missing cells, NaN and +-Inf. The oracles:

- the raw histogram is `numpy.histogram(finite values, bins=50, range=(lo,
  hi))`, `lo`/`hi` by the rule README states, from stats.json's own numbers;
- the output histogram is `numpy.histogram` of the formula's outputs (README's
  formula in numpy, float64) over stats.json's edges; the graph's own float32
  outputs differ only where an output lies within float32 rounding of an edge;
- the quantile grid sits within the sketch's rank error of numpy's
  `inverted_cdf` quantile;
- TFX's route (both phases as TFT analyzers) gives the same histograms.
"""

from pathlib import Path

import numpy as np
import pytest
from graph_oracle import apply_graph

from tanhguard.pipeline.analyze import run_analyze
from tanhguard.transforms.config import parse_config
from tanhguard.transforms.statistics import quantile_epsilon

ROWS = 3000
BINS = 50
F32_MAX = float(np.finfo(np.float32).max)
FEATURES = {
    "fare": {},  # quantile 0.001 / 0.999, zscore, median impute
    "mad_log": {
        "clip": {"strategy": "mad", "k": 3.0},
        "scale": "log_zscore",
        "impute": {"strategy": "constant", "value": -5.0},
        "inf": "missing",
    },
    "fixed_far": {
        "clip": {"strategy": "fixed", "lower": -1e6, "upper": 1e6},
        "scale": "minmax",
        "impute": "zero",
    },
    "no_clip": {"clip": "none", "scale": "robust", "output_bound": 3.0},
    "constant": {"impute": "mean"},
    "vec_each": {"shape": [3], "clip": "iqr", "scale": "robust"},
    "vec_shared": {
        "shape": [3],
        "elementwise": False,
        "clip": {"strategy": "sigma", "k": 2.0},
    },
}
CONFIG = parse_config({"features": FEATURES})


def _columns() -> dict[str, np.ndarray]:
    """float32 columns, NaN marking cells left empty in the CSV for the
    scalars (missing) and NaN cells for the vectors."""
    rng = np.random.default_rng(5)

    def heavy(scale: float, shift: float) -> np.ndarray:
        return shift + scale * rng.standard_t(2, ROWS)

    columns = {
        "fare": heavy(5.0, 20.0),
        "mad_log": rng.lognormal(3.0, 1.0, ROWS),
        "fixed_far": heavy(2.0, -3.0),
        "no_clip": heavy(1.0, 0.0),
        "constant": np.full(ROWS, 7.0),
    }
    for i in range(3):
        columns[f"vec_each_{i}"] = heavy(1.0 + i, 10.0 * i)
        columns[f"vec_shared_{i}"] = heavy(3.0, float(i))
    for name, values in columns.items():
        values[rng.choice(ROWS, 40, replace=False)] = np.nan
        if name != "constant":
            values[rng.choice(ROWS, 7, replace=False)] = np.inf
            values[rng.choice(ROWS, 5, replace=False)] = -np.inf
        if name.startswith("fare"):
            values[rng.choice(ROWS, 20, replace=False)] *= 1e4
    return {name: v.astype(np.float32) for name, v in columns.items()}


def _write_csv(path: Path, columns: dict[str, np.ndarray], missing) -> None:
    names = list(columns)
    with open(path, "w") as handle:
        handle.write(",".join(names) + "\n")
        for row in range(ROWS):
            cells = []
            for name in names:
                value = float(columns[name][row])
                empty = name in missing and row in missing[name]
                cells.append("" if empty else repr(value))
            handle.write(",".join(cells) + "\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("histograms")
    columns = _columns()
    # Half of the scalar NaN cells are empty (missing) instead.
    missing = {
        name: set(np.flatnonzero(np.isnan(columns[name]))[::2].tolist())
        for name in ("fare", "mad_log", "fixed_far", "no_clip", "constant")
    }
    _write_csv(root / "data.csv", columns, missing)
    stats = run_analyze(CONFIG, str(root / "data.csv"), root / "artifacts")
    return {"root": root, "columns": columns, "stats": stats}


def _slots():
    """(feature, element index or None, raw values of the slot as float32)."""
    columns = _columns()
    for name, feature in CONFIG.features.items():
        if not feature.is_vector:
            yield name, None, columns[name]
        elif feature.elementwise:
            for i in range(feature.size):
                yield name, i, columns[f"{name}_{i}"]
        else:
            stacked = np.stack([columns[f"{name}_{i}"] for i in range(3)], axis=1)
            yield name, None, stacked.ravel()


SLOT_IDS = [f"{n}[{i}]" if i is not None else n for n, i, _ in _slots()]


def _pick(value, index):
    return value[index] if index is not None else value


def _float32_bound(bound: float) -> float:
    """The largest float32 not above `bound` (README: outputs never exceed B
    as written)."""
    rounded = np.float32(bound)
    if float(rounded) > bound:
        rounded = np.nextafter(rounded, np.float32(0))
    return float(rounded)


def _outputs(feature: dict, index, raw: np.ndarray) -> np.ndarray:
    """README's formula in float64 with stats.json's numbers."""
    x = raw.astype(np.float64)
    if feature["inf"] == "missing":
        x = np.where(np.isinf(x), np.nan, x)
    lower = _pick(feature["clip"]["lower"], index)
    upper = _pick(feature["clip"]["upper"], index)
    impute = float(np.float32(_pick(feature["impute"]["value"], index)))
    clipped = np.clip(np.where(np.isnan(x), impute, x), lower, upper)
    if feature["scale"]["strategy"] == "log_zscore":
        clipped = np.sign(clipped) * np.log1p(np.abs(clipped))
    center = _pick(feature["scale"]["center"], index)
    scale = _pick(feature["scale"]["scale"], index)
    if scale == 0:
        return np.zeros_like(clipped)
    bound = _float32_bound(feature["output_bound"])
    return np.clip((clipped - center) / scale, -bound, bound)


@pytest.mark.parametrize(("name", "index", "raw"), list(_slots()), ids=SLOT_IDS)
def test_histogram_counts_add_up_to_the_counts_of_stats_json(run, name, index, raw):
    feature = run["stats"]["features"][name]
    histogram = _pick(feature["histogram"], index)
    count = _pick(feature["count"], index)
    assert sum(histogram["counts"]) + histogram["below"] + histogram["above"] == count
    assert len(histogram["edges"]) == BINS + 1 == len(histogram["counts"]) + 1
    output = _pick(feature["output_histogram"], index)
    per_row = 1 if CONFIG.features[name].elementwise else CONFIG.features[name].size
    assert sum(output["counts"]) == run["stats"]["num_rows"] * per_row
    assert len(output["edges"]) == len(output["counts"]) + 1
    assert np.all(np.diff(output["edges"]) > 0)
    bound = CONFIG.features[name].output_bound
    assert -bound <= output["edges"][0] and output["edges"][-1] <= bound


def _documented_range(feature: dict, index, finite: np.ndarray) -> tuple[float, float]:
    """README: [q0.001, q0.999] widened to the clip bounds (not a bound at the
    float32 limit), never beyond the finite min and max; one value v: v +- 0.5."""
    quantiles = feature["quantiles"]
    lower = _pick(feature["clip"]["lower"], index)
    upper = _pick(feature["clip"]["upper"], index)
    lo = _pick(quantiles["0.001"], index)
    hi = _pick(quantiles["0.999"], index)
    if abs(lower) < F32_MAX:
        lo = min(lo, lower)
    if abs(upper) < F32_MAX:
        hi = max(hi, upper)
    lo, hi = max(lo, float(finite.min())), min(hi, float(finite.max()))
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


@pytest.mark.parametrize(("name", "index", "raw"), list(_slots()), ids=SLOT_IDS)
def test_raw_histogram_is_numpys_over_the_documented_range(run, name, index, raw):
    feature = run["stats"]["features"][name]
    histogram = _pick(feature["histogram"], index)
    finite = raw[np.isfinite(raw)].astype(np.float64)
    lo, hi = _documented_range(feature, index, finite)
    counts, edges = np.histogram(finite, bins=BINS, range=(lo, hi))
    np.testing.assert_array_equal(histogram["edges"], edges)
    np.testing.assert_array_equal(histogram["counts"], counts)
    assert histogram["below"] == int((finite < lo).sum())
    assert histogram["above"] == int((finite > hi).sum())


@pytest.mark.parametrize(("name", "index", "raw"), list(_slots()), ids=SLOT_IDS)
def test_output_histogram_is_numpys_over_its_edges(run, name, index, raw):
    feature = run["stats"]["features"][name]
    output = _pick(feature["output_histogram"], index)
    outputs = _outputs(feature, index, raw)
    counts, _ = np.histogram(outputs, bins=output["edges"])
    np.testing.assert_array_equal(output["counts"], counts)


def test_output_histogram_matches_the_graphs_own_outputs(run):
    """The graph computes in float32: an output may round across an edge
    that lies within float32 rounding of it, nothing else differs."""
    columns = run["columns"]
    raw = {}
    for name, feature in CONFIG.features.items():
        if feature.is_vector:
            raw[name] = np.stack([columns[f"{name}_{i}"] for i in range(3)], axis=1)
        else:
            raw[name] = columns[name]
    graph = apply_graph(run["root"] / "artifacts", raw)
    for name, feature in CONFIG.features.items():
        out = graph[name].astype(np.float64).reshape(ROWS, -1)
        stats = run["stats"]["features"][name]
        parts = (
            [(i, out[:, i]) for i in range(feature.size)]
            if feature.is_vector and feature.elementwise
            else [(None, out.ravel())]
        )
        for index, values in parts:
            output = _pick(stats["output_histogram"], index)
            edges = np.asarray(output["edges"])
            counts, _ = np.histogram(values, bins=edges)
            near = np.abs(values[:, None] - edges[None, :]) <= 1e-6 * np.maximum(
                1.0, np.abs(edges)
            )
            moved = np.abs(counts - np.asarray(output["counts"])).sum()
            assert moved <= 2 * near.any(axis=1).sum(), (name, index)


@pytest.mark.parametrize(("name", "index", "raw"), list(_slots()), ids=SLOT_IDS)
def test_quantile_grid_is_within_the_rank_error_of_numpy(run, name, index, raw):
    grid = _pick(run["stats"]["features"][name]["quantile_grid"], index)
    probabilities = grid["probabilities"]
    assert len(probabilities) == len(grid["values"]) == 101
    expected = [0.001, *(k / 100 for k in range(1, 100)), 0.999]
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-12)
    finite = np.sort(raw[np.isfinite(raw)])
    n = finite.size
    # The sketch's rank error on the 1,000-point grid (README), one rank for
    # ties and rounding.
    tolerance = quantile_epsilon(1000) * n + 1
    for p, value in zip(probabilities, grid["values"], strict=True):
        low = np.quantile(finite, max(p - tolerance / n, 0.0), method="inverted_cdf")
        high = np.quantile(finite, min(p + tolerance / n, 1.0), method="inverted_cdf")
        assert low <= np.float32(value) <= high, (p, value, low, high)


def test_both_phases_inside_tft_give_the_same_histograms(run, tmp_path):
    """TFX's route (both phases as TFT analyzers, `mad` with its own pass
    inside the fit analyzer) against the batch job's."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam

    from tanhguard.pipeline.analyze import AnalyzeFeatures
    from tanhguard.pipeline.graph_stats import stats_from_transform_graph
    from tanhguard.pipeline.readers import ReadRecordBatches

    with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=str(tmp_path)):
        batches = pipeline | ReadRecordBatches(
            [str(run["root"] / "data.csv")], CONFIG, "csv"
        )
        transform_fn = batches | AnalyzeFeatures(CONFIG)  # no parameters given
        _ = transform_fn | tft_beam.WriteTransformFn(str(tmp_path / "out"))
    in_tft = stats_from_transform_graph(tmp_path / "out")["features"]
    for name, want in run["stats"]["features"].items():
        for key in ("histogram", "output_histogram", "quantile_grid", "zeros"):
            got = in_tft[name][key]
            assert _rounded(got) == _rounded(want[key]), (name, key)


def _rounded(value):
    """Floats to 12 significant digits (moments merge in another order)."""
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    if isinstance(value, float):
        return float(f"{value:.12g}")
    return value


def test_zeros_counts_the_finite_zeros(tmp_path):
    config = parse_config({"features": {"x": {"impute": "zero"}}})
    values = ["0", "0.0", "-0.0", "1", "", "nan", "2", "0"]
    (tmp_path / "z.csv").write_text("x\n" + "\n".join(values) + "\n")
    stats = run_analyze(config, str(tmp_path / "z.csv"), tmp_path / "out")
    # Literal: four cells are a zero; the empty cell (missing, imputed 0) and
    # NaN are not finite training values.
    assert stats["features"]["x"]["zeros"] == 4
    assert stats["format_version"] == 4
