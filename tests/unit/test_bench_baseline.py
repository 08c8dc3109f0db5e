"""The analyze benchmark's lower bound computes the statistics it claims.

`benchmarks/bench_analyze.py` times its baseline against tanhguard; a baseline
that skipped work would make the ratio dishonest. The oracle is numpy in
float64 over the finite values, written out here; float32 tolerance.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_analyze.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_analyze", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_baseline_probabilities_are_the_reported_quantiles_and_the_clip(bench):
    # transforms/layout.py REPORTED_QUANTILES; the default clip's 0.001 and
    # 0.999 are among them.
    assert bench.baseline_probabilities() == (
        0.001,
        0.01,
        0.25,
        0.5,
        0.75,
        0.99,
        0.999,
    )


@pytest.mark.parametrize(
    "special",
    [[], [np.nan] * 7, [np.nan, np.inf, -np.inf, np.nan]],
    ids=["finite only", "with nan", "with nan and infinities"],
)
def test_column_statistics_match_float64_numpy_over_finite_values(bench, special):
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.standard_t(2, 5000) * 40.0 + 3.0, special])
    rng.shuffle(values)
    probabilities = bench.baseline_probabilities()
    got = bench.column_statistics(values.astype(np.float32), probabilities)
    finite = values.astype(np.float32).astype(np.float64)
    finite = finite[np.isfinite(finite)]
    assert got["count"] == 5000
    np.testing.assert_allclose(got["mean"], finite.mean(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["var"], finite.var(), rtol=1e-5)
    np.testing.assert_allclose(
        got["quantiles"], np.quantile(finite, probabilities), rtol=1e-6, atol=1e-6
    )


def test_column_statistics_of_no_finite_values_are_nan(bench):
    got = bench.column_statistics(np.array([np.nan, np.inf], np.float32), (0.5,))
    assert got["count"] == 0
    assert np.isnan(got["mean"]) and np.isnan(got["var"])
    assert np.isnan(got["quantiles"]).all()


def test_loading_the_benchmark_imports_no_tensorflow():
    # Each timed kind imports what it needs in its own process; the
    # benchmark's parent process and this test stay TensorFlow-free.
    code = (
        "import importlib.util, sys;"
        f"spec = importlib.util.spec_from_file_location('b', {str(BENCH)!r});"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m);"
        "m.baseline_probabilities();"
        "print('tensorflow' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
