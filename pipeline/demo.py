"""`tanhguard demo`: the problem and the cure on deterministic synthetic data."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tanhguard.transforms.config import Config, parse_config

DEMO_SEED = 20261129

logger = logging.getLogger(__name__)


def demo_config() -> Config:
    """The demo's config, shipped as configs/demo.yaml."""
    text = (resources.files("tanhguard.configs") / "demo.yaml").read_text("utf-8")
    return parse_config(yaml.safe_load(text))


def generate_demo_rows(rows: int, seed: int = DEMO_SEED) -> dict[str, np.ndarray]:
    """Synthetic columns that reproduce how raw data breaks tanh units.

    Returns:
      Column name -> float64 values, NaN where the CSV cell is empty or `nan`
      (see `write_demo_csv` for which is which).
    """
    rng = np.random.default_rng(seed)
    fare = rng.lognormal(mean=2.5, sigma=1.0, size=rows)
    fare[rng.random(rows) < 0.0005] = 9.9e6  # data-entry errors
    sensor = rng.normal(20.0, 5.0, size=rows)
    bad = rng.random(rows)
    sensor[bad < 0.01] = np.inf
    sensor[(bad >= 0.01) & (bad < 0.02)] = -np.inf
    sensor[(bad >= 0.02) & (bad < 0.05)] = np.nan
    columns = {
        "fare": fare,
        "tip_ratio": rng.standard_cauchy(size=rows) * 3.0,
        "trip_distance": rng.gamma(2.0, 2.5, size=rows) * 1000.0,  # metres, not km
        "sensor": sensor,
        "constant": np.full(rows, 7.5),
        "passengers": rng.integers(1, 7, size=rows).astype(np.float64),
    }
    for i in range(3):
        columns[f"embedding_{i}"] = rng.normal(0.0, 1.0 + 2 * i, size=rows)
    return columns


def write_demo_csv(path: Path, columns: dict[str, np.ndarray], seed: int) -> None:
    """Writes the columns as CSV; 1% of `fare` cells are left empty (missing)."""
    rng = np.random.default_rng(seed + 1)
    names = list(columns)
    rows = len(columns[names[0]])
    empty_fare = rng.random(rows) < 0.01
    formatted = {}
    for name in names:
        values = columns[name]
        if name == "passengers":
            cells = [str(int(v)) for v in values]
        else:
            cells = [repr(float(v)) for v in values]  # nan, inf, -inf as text
        formatted[name] = cells
    for row in np.flatnonzero(empty_fare):
        formatted["fare"][row] = ""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(",".join(names) + "\n")
        for row in range(rows):
            handle.write(",".join(formatted[name][row] for name in names) + "\n")


def naive_tanh(x: np.ndarray) -> np.ndarray:
    """tanh as often hand-written: `(e^x - e^-x) / (e^x + e^-x)`, float32.

    For |x| > ~89, e^x overflows float32 and the result is inf/inf = NaN.
    """
    x = x.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        return (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x))


def pre_activations(inputs: np.ndarray, seed: int = DEMO_SEED) -> np.ndarray:
    """A small fixed-weight dense layer (8 units), before its activation."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0.0, 0.5, size=(inputs.shape[1], 8)).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        return inputs.astype(np.float32) @ weights


def raw_matrix(columns: dict[str, np.ndarray], config: Config) -> np.ndarray:
    """Stacks the raw input columns in config order: `[rows, inputs]`."""
    parts = []
    for name in config.features:
        for column in config.csv_columns(name):
            parts.append(np.asarray(columns[column], dtype=np.float32))
    return np.stack(parts, axis=1)


def compare_tanh(raw: np.ndarray, transformed: np.ndarray) -> dict[str, Any]:
    """Rows whose tanh-layer activations contain NaN, and saturated units."""
    raw_pre = pre_activations(raw)
    cured_pre = pre_activations(transformed)

    def saturated(pre: np.ndarray) -> float:
        # Units where even a correct float32 tanh is exactly +-1 (zero gradient).
        finite = np.isfinite(pre)
        return float(np.mean(np.abs(np.tanh(pre[finite])) == 1.0))

    return {
        "rows": raw.shape[0],
        "raw_nan_rows": int(np.isnan(naive_tanh(raw_pre)).any(axis=1).sum()),
        "raw_nan_input_rows": int(np.isnan(raw).any(axis=1).sum()),
        "raw_saturated_fraction": saturated(raw_pre),
        "transformed_nan_rows": int(np.isnan(naive_tanh(cured_pre)).any(axis=1).sum()),
        "transformed_saturated_fraction": saturated(cured_pre),
        "transformed_nonfinite_inputs": int((~np.isfinite(transformed)).sum()),
    }


def transform_columns(artifacts: Path, csv_path: Path, config: Config) -> np.ndarray:
    """Applies the saved TFT graph to the CSV rows; returns the model matrix
    (`tanhguard.pipeline.serving.model_matrix`)."""
    import tensorflow_transform as tft
    from tfx_bsl.tfxio import tensor_adapter

    from tanhguard.pipeline.batch_layout import tensor_adapter_config
    from tanhguard.pipeline.csv_reader import read_csv_batches
    from tanhguard.pipeline.serving import model_matrix

    adapter = tensor_adapter.TensorAdapter(tensor_adapter_config(config))
    output = tft.TFTransformOutput(str(artifacts))
    blocks = [
        model_matrix(
            output.transform_raw_features(adapter.ToBatchTensors(batch)), config
        ).numpy()
        for batch in read_csv_batches(str(csv_path), config)
    ]
    return np.concatenate(blocks, axis=0).astype(np.float32)


@contextlib.contextmanager
def _naming_published_paths(staging: Path, output: Path) -> Iterator[None]:
    """Shows the staging directory's paths in tanhguard's progress lines as
    the paths they will have once published (a record factory, so that the
    loggers of modules the job imports later are covered too)."""
    previous = logging.getLogRecordFactory()
    old, new = str(staging), str(output)

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if record.name.startswith("tanhguard") and isinstance(record.args, tuple):
            record.args = tuple(
                a.replace(old, new) if isinstance(a, str) else a for a in record.args
            )
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


def run_demo(output: str | Path, rows: int = 20_000) -> dict[str, Any]:
    """Generates the data, analyzes it, and compares tanh on raw and
    transformed inputs; `demo_report` turns the result into text.

    Returns:
      `{"stats", "comparison", "artifacts", "data", "rows", "output_bound"}`.
    """
    from tanhguard.pipeline.analyze import run_analyze
    from tanhguard.pipeline.artifacts import write_stats
    from tanhguard.pipeline.html_report import write_report
    from tanhguard.pipeline.output_dir import publish_dir
    from tanhguard.pipeline.tfdv_stats import write_tfdv_stats

    output = Path(output).absolute()
    config = demo_config()
    columns = generate_demo_rows(rows)
    # A previous demo's output is replaced; a directory tanhguard did not
    # write never is (`publish_dir` refuses it).
    with publish_dir(output, overwrite=True) as staging:
        (staging / "data").mkdir()
        csv_path = staging / "data" / "demo.csv"
        write_demo_csv(csv_path, columns, DEMO_SEED)
        logger.info("generated %s rows: %s", f"{rows:,}", output / "data")
        artifacts = staging / "artifacts"
        with _naming_published_paths(staging, output):
            stats = run_analyze(config, str(csv_path), artifacts)
        raw = raw_matrix(columns, config)
        transformed = transform_columns(artifacts, csv_path, config)
        # stats.json names the data where it will be, not in the staging dir.
        published = str(output / "data" / "demo.csv")
        stats["data"] = {**stats["data"], "pattern": published, "files": [published]}
        write_stats(artifacts, stats)
        write_tfdv_stats(artifacts, stats)
        write_report(artifacts)
    return {
        "stats": stats,
        "comparison": compare_tanh(raw, transformed),
        "artifacts": str(output / "artifacts"),
        "data": str(output / "data" / "demo.csv"),
        "rows": rows,
        "output_bound": config.defaults.output_bound,
    }


def demo_report(result: dict[str, Any]) -> str:
    """What `tanhguard demo` prints, in the order of the story: the problem
    on raw inputs, the cure on tanhguard's outputs, then what tanhguard
    measured and chose per feature."""
    from tanhguard.pipeline.html_report import report_warnings
    from tanhguard.pipeline.report import summary_table

    warnings = [(name, text) for name, _, text in report_warnings(result["stats"])]
    comparison, rows = result["comparison"], result["rows"]
    bound = f"{result['output_bound']:g}"
    return "\n".join(
        [
            f"{rows:,} rows of synthetic taxi-like data: heavy tails, values in the "
            "wrong unit, NaN,",
            f"+-Inf and empty cells: {result['data']}",
            "",
            "The problem: a dense tanh layer (float32) on the raw inputs",
            "  tanh written as (e^x - e^-x)/(e^x + e^-x): NaN on "
            f"{comparison['raw_nan_rows']:,} of {rows:,} rows",
            f"    ({comparison['raw_nan_input_rows']:,} rows hold NaN inputs; the "
            "rest overflow e^x)",
            "  tf.tanh: "
            f"{comparison['raw_saturated_fraction']:.1%} of units saturated "
            "(exactly +-1, zero gradient)",
            "",
            "The cure: the same layer on tanhguard's outputs",
            "  tanh written as (e^x - e^-x)/(e^x + e^-x): NaN on "
            f"{comparison['transformed_nan_rows']:,} of {rows:,} rows",
            f"    (every input is finite and within +-{bound})",
            "  tf.tanh: "
            f"{comparison['transformed_saturated_fraction']:.1%} of units saturated",
            "",
            "What tanhguard measured and chose, per feature:",
            summary_table(result["stats"], warnings),
            "",
            "Artifacts (report.html, stats.json, stats.tfdv.pb, transform_fn/, "
            f"...): {result['artifacts']}",
            f"Next: tanhguard export --artifacts {result['artifacts']} "
            "--output serving/",
        ]
    )
