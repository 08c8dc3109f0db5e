"""Speed and memory of `tanhguard analyze` against a lower bound, per format.

For each format (CSV, Parquet, TFRecord of tf.Example) the same N rows x 10
float features (heavy-tailed, 1% NaN) are written once, then timed in the same
run, each in its own process (so peak memory is its own):

  lower bound  one process reads the file (pyarrow.csv / pyarrow.parquet; for
               TFRecord tf.data with tf.io.parse_example) and computes the same
               statistics with numpy (count, mean, var, np.nanquantile at the
               default clip probabilities);
  tanhguard    `run_analyze` with the default config (quantile clip + zscore)
               on the default runner.

It prints seconds, the ratio tanhguard / lower bound, and peak resident memory.
Then the transform job (`run_transform` to Parquet, on the CSV input) against
reading the CSV with pyarrow and writing it as Parquet, in rows per second.
Machines are shared and noisy: compare ratios from one run, not absolute times.

    .venv/bin/python benchmarks/bench_analyze.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FEATURES = [f"f{i}" for i in range(10)]


def write_data(root: Path, rows: int, seed: int = 0) -> dict[str, Path]:
    """The same rows as CSV, Parquet and TFRecord; returns the paths."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq
    import tensorflow as tf
    from tensorflow_transform.tf_metadata import schema_utils

    from tanhguard.pipeline.transform_job import examples_from_batch

    rng = np.random.default_rng(seed)
    columns = {}
    for i, name in enumerate(FEATURES):
        values = (rng.standard_t(2, rows) * (1 + i)).astype(np.float32)
        values[rng.random(rows) < 0.01] = np.nan
        columns[name] = values
    table = pa.table(columns)
    paths = {
        "csv": root / "data.csv",
        "parquet": root / "data.parquet",
        "tfrecord": root / "data.tfrecord",
    }
    pa_csv.write_csv(table, paths["csv"])
    pq.write_table(table, paths["parquet"])
    spec = {name: tf.io.VarLenFeature(tf.float32) for name in FEATURES}
    schema = schema_utils.schema_from_feature_spec(spec)
    with tf.io.TFRecordWriter(str(paths["tfrecord"])) as writer:
        for batch in table.to_batches(max_chunksize=65536):
            for record in examples_from_batch(batch, schema):
                writer.write(record)
    return paths


def lower_bound(fmt: str, path: str) -> None:
    """Reads the file in one process and computes the statistics with numpy."""
    import numpy as np

    if fmt == "csv":
        import pyarrow.csv as pa_csv

        table = pa_csv.read_csv(path)
        matrix = np.stack([table[n].to_numpy() for n in FEATURES], axis=1)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        matrix = np.stack([table[n].to_numpy() for n in FEATURES], axis=1)
    else:
        import tensorflow as tf

        spec = {n: tf.io.FixedLenFeature([], tf.float32) for n in FEATURES}
        parts = []
        for records in tf.data.TFRecordDataset(path).batch(65536):
            parsed = tf.io.parse_example(records, spec)
            parts.append(np.stack([parsed[n].numpy() for n in FEATURES], axis=1))
        matrix = np.concatenate(parts)
    matrix = matrix.astype(np.float64)
    finite = np.isfinite(matrix)
    _ = finite.sum(axis=0)
    _ = np.nanmean(matrix, axis=0), np.nanvar(matrix, axis=0)
    _ = np.nanquantile(matrix, [0.001, 0.5, 0.999], axis=0)


def tanhguard(fmt: str, path: str) -> None:
    from tanhguard.pipeline.analyze import run_analyze
    from tanhguard.transforms.config import parse_config

    config = parse_config({"features": {name: {} for name in FEATURES}})
    with tempfile.TemporaryDirectory() as out:
        run_analyze(config, path, Path(out) / "artifacts", fmt=fmt)


def copy_lower_bound(fmt: str, path: str) -> None:
    """Read the CSV with pyarrow and write it as Parquet: the I/O floor."""
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory() as out:
        pq.write_table(pa_csv.read_csv(path), Path(out) / "copy.parquet")


def tanhguard_transform(fmt: str, path: str) -> None:
    from tanhguard.pipeline.analyze import run_analyze
    from tanhguard.pipeline.transform_job import run_transform
    from tanhguard.transforms.config import parse_config

    config = parse_config({"features": {name: {} for name in FEATURES}})
    with tempfile.TemporaryDirectory() as out:
        run_analyze(config, path, Path(out) / "artifacts", fmt=fmt)
        started = time.perf_counter()
        run_transform(Path(out) / "artifacts", path, Path(out) / "rows", fmt=fmt)
        print(json.dumps({"transform_seconds": time.perf_counter() - started}))


KINDS = {
    "lower": lower_bound,
    "tanhguard": tanhguard,
    "copy": copy_lower_bound,
    "transform": tanhguard_transform,
}


def _peak_kb() -> float:
    """This process's peak resident memory, in KiB.

    Linux's VmHWM: the peak of this program's own memory. `ru_maxrss` is not:
    a process started by fork and exec keeps the peak of the image it
    replaced, here the parent's, which holds the generated table.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _child(kind: str, fmt: str, path: str) -> None:
    started = time.perf_counter()
    KINDS[kind](fmt, path)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_mb": _peak_kb() / 1024}))


def _measure(kind: str, fmt: str, path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, fmt, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {fmt} failed:\n{done.stderr[-3000:]}")
    result = {}
    for line in done.stdout.strip().splitlines():
        if line.startswith("{"):
            result.update(json.loads(line))
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", default="csv,parquet,tfrecord")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        paths = write_data(Path(tmp), args.rows)
        print(
            f"{args.rows:,} rows x {len(FEATURES)} features written in "
            f"{time.perf_counter() - started:.1f} s"
        )
        print(
            f"{'format':<10}{'lower s':>9}{'tanhguard s':>13}{'ratio':>8}"
            f"{'lower MB':>10}{'tanhguard MB':>14}"
        )
        for fmt in args.formats.split(","):
            low = _measure("lower", fmt, paths[fmt])
            ours = _measure("tanhguard", fmt, paths[fmt])
            print(
                f"{fmt:<10}{low['seconds']:>9.1f}{ours['seconds']:>13.1f}"
                f"{ours['seconds'] / low['seconds']:>8.1f}"
                f"{low['peak_mb']:>10.0f}{ours['peak_mb']:>14.0f}",
                flush=True,
            )
        if "csv" in args.formats.split(","):
            copy = _measure("copy", "csv", paths["csv"])
            job = _measure("transform", "csv", paths["csv"])
            floor = args.rows / copy["seconds"]
            ours = args.rows / job["transform_seconds"]
            print(
                f"transform csv -> parquet: {ours:,.0f} rows/s; pyarrow read + "
                f"write: {floor:,.0f} rows/s (ratio {floor / ours:.1f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
