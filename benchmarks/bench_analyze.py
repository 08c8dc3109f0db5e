"""Speed and memory of `tanhguard analyze` against a lower bound and plain TFT.

For each format (CSV, Parquet, TFRecord of tf.Example) the same N rows x 10
float features (heavy-tailed, 1% NaN) are written once, then timed in the same
run, each in its own process (so peak memory is its own; each time includes
the imports its job needs, not the interpreter's start):

  lower bound  the fastest straightforward code for the same job: one process
               reads the file (pyarrow.csv.read_csv / pyarrow.parquet.read_table
               with their defaults; for TFRecord tf.data batches of 65,536
               records through tf.io.parse_example) and, per column as float32,
               keeps the finite values once and computes their count, mean,
               variance and `np.quantile` at the 7 reported probabilities
               (transforms/layout.py REPORTED_QUANTILES) plus the default clip's
               (0.001, 0.999) (`column_statistics`). Variants tried on the 1M-row
               Parquet table (statistics only, best of 5 on this shared 2-core
               machine; reading: 0.03 s Parquet, 0.95 s CSV):
                 per column float32, finite values once, x.mean(), x.var(),
                   np.quantile (it partitions)                     0.22 s  kept
                 the same with one explicit np.partition over the
                   needed ranks and linear interpolation           0.23 s
                 per column float32, np.nanmean, np.nanvar,
                   np.nanquantile                                  0.27 s
                 stacked float64 matrix, the np.partition variant  0.44 s
                 stacked float64 matrix, np.nan* over axis 0
                   (this benchmark's former baseline)              0.69 s
               For TFRecord, parsing with `.map(num_parallel_calls=AUTOTUNE)`
               was no faster than the plain loop (both 4.5-6 s for 1M rows).
  tanhguard    `run_analyze` with the default config (quantile clip + zscore)
               on the default runner.
  plain TFT    TFT as a user writes it: tfx_bsl's TFXIO for the format
               (CsvTFXIO, ParquetTFXIO, TFExampleRecord) with a FixedLenFeature
               float32 schema (ParquetTFXIO reads only list columns, so Parquet
               is read with beam.io.ReadFromParquetBatched and each column
               wrapped as one-value lists for its tensor adapter), a
               preprocessing_fn that takes `tft.quantiles`
               (1000 buckets, epsilon 1e-4: the 0.001 grid the reported
               probabilities sit on) of the finite values, imputes NaN with the
               median, clips to the 0.001 / 0.999 boundaries and applies
               `tft.scale_to_z_score`; `tft_beam.AnalyzeDataset` and
               `WriteTransformFn` on the default (Direct) runner. Skipped above
               `--tft-max-rows` (default 3M; at 1M rows it takes 22-100 s and
               2.4-2.9 GB per format on this machine, at 3M rows about 100 s
               and 3.6 GB for CSV); the table says when it was skipped.

It prints seconds, the ratios to the lower bound, and peak resident memory.
Then the transform job (`run_transform` to Parquet, on the CSV input) against
reading the CSV with pyarrow and writing it as Parquet, in rows per second.
Then the fixed cost: the wall time of the `tanhguard analyze` command on a 3-row
CSV, and in another process a breakdown measured from outside the product
code with time.perf_counter: the process start, `import tensorflow`, `import
apache_beam, tensorflow_transform`, the tanhguard modules, then the command
line's `main` with `run_analyze` split into the first pass, the TFT job
(building the pipeline and tracing the graph; running it) and writing
stats.json, by wrapping the analyze module's functions and Beam's
`Pipeline.run` (no profiler: its overhead would inflate the Python-heavy
tracing), and the process exit. It prints the machine's load average before
and after, since other work on the machine slows every number. Machines are
shared and noisy: compare ratios from one run, not absolute times.

    .venv/bin/python benchmarks/bench_analyze.py --rows 1000000
    .venv/bin/python benchmarks/bench_analyze.py --rows 10000000 \
        --formats csv,parquet --parts analyze
    .venv/bin/python benchmarks/bench_analyze.py --parts fixed-cost
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

FEATURES = [f"f{i}" for i in range(10)]
TFT_MAX_ROWS = 3_000_000
PARTS = ("analyze", "transform", "fixed-cost")
FORMATS = ("csv", "parquet", "tfrecord")


def baseline_probabilities() -> tuple[float, ...]:
    """The reported quantiles plus the default clip's, sorted."""
    from tanhguard.transforms.config import parse_config
    from tanhguard.transforms.layout import REPORTED_QUANTILES

    clip = parse_config({"features": {"x": {}}}).defaults.clip
    return tuple(sorted({*REPORTED_QUANTILES, clip.lower, clip.upper}))


def column_statistics(
    values: np.ndarray, probabilities: tuple[float, ...]
) -> dict[str, object]:
    """The lower bound's statistics of one column, in float32.

    Returns:
      `{"count", "mean", "var", "quantiles"}` over the finite values (numpy's
      linear interpolation); mean, var and quantiles are NaN when there are
      none.
    """
    column = np.asarray(values, dtype=np.float32)
    finite = column[np.isfinite(column)]
    if finite.size == 0:
        nan = np.float32(np.nan)
        return {
            "count": 0,
            "mean": nan,
            "var": nan,
            "quantiles": np.full(len(probabilities), np.nan, np.float32),
        }
    return {
        "count": int(finite.size),
        "mean": finite.mean(),
        "var": finite.var(),
        "quantiles": np.quantile(finite, probabilities).astype(np.float32),
    }


def write_data(
    root: Path, rows: int, formats: tuple[str, ...] = FORMATS, seed: int = 0
) -> dict[str, Path]:
    """The same rows in each of `formats`; returns the paths by format."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq
    import tensorflow as tf
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.public import tfxio

    rng = np.random.default_rng(seed)
    columns = {}
    for i, name in enumerate(FEATURES):
        values = (rng.standard_t(2, rows) * (1 + i)).astype(np.float32)
        values[rng.random(rows) < 0.01] = np.nan
        columns[name] = values
    table = pa.table(columns)
    paths = {fmt: root / f"data.{fmt}" for fmt in formats}
    if "csv" in paths:
        pa_csv.write_csv(table, paths["csv"])
    if "parquet" in paths:
        pq.write_table(table, paths["parquet"])
    if "tfrecord" not in paths:
        return paths
    spec = {name: tf.io.VarLenFeature(tf.float32) for name in FEATURES}
    encoder = tfxio.RecordBatchToExamplesEncoder(
        schema_utils.schema_from_feature_spec(spec)
    )
    with tf.io.TFRecordWriter(str(paths["tfrecord"])) as writer:
        for batch in table.to_batches(max_chunksize=65536):
            offsets = pa.array(np.arange(batch.num_rows + 1, dtype=np.int32))
            lists = [pa.ListArray.from_arrays(offsets, c) for c in batch.columns]
            as_lists = pa.RecordBatch.from_arrays(lists, names=FEATURES)
            for record in encoder.encode(as_lists):
                writer.write(record)
    return paths


def read_columns(fmt: str, path: str) -> dict[str, np.ndarray]:
    """The file's columns as float32 arrays, read the straightforward way."""
    if fmt in ("csv", "parquet"):
        if fmt == "csv":
            import pyarrow.csv as pa_csv

            table = pa_csv.read_csv(path)
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        return {n: table[n].to_numpy().astype(np.float32) for n in FEATURES}
    import tensorflow as tf

    spec = {n: tf.io.FixedLenFeature([], tf.float32) for n in FEATURES}
    parts: dict[str, list[np.ndarray]] = {n: [] for n in FEATURES}
    for records in tf.data.TFRecordDataset(path).batch(65536):
        parsed = tf.io.parse_example(records, spec)
        for n in FEATURES:
            parts[n].append(parsed[n].numpy())
    return {n: np.concatenate(parts[n]) for n in FEATURES}


def lower_bound(fmt: str, path: str) -> None:
    """Reads the file in one process and computes the statistics with numpy."""
    probabilities = baseline_probabilities()
    for values in read_columns(fmt, path).values():
        column_statistics(values, probabilities)


def tanhguard(fmt: str, path: str) -> None:
    # As the command line does: the graph process starts importing
    # TensorFlow before this process imports Beam and the analysis job.
    from tanhguard.pipeline import graph_process

    graph_process.start_early(path, fmt)
    from tanhguard.pipeline.analyze import run_analyze
    from tanhguard.transforms.config import parse_config

    config = parse_config({"features": {name: {} for name in FEATURES}})
    with tempfile.TemporaryDirectory() as out:
        run_analyze(config, path, Path(out) / "artifacts", fmt=fmt)


def plain_tft(fmt: str, path: str) -> None:
    """The same analysis as a user writes it with TFT alone."""
    import apache_beam as beam
    import pyarrow as pa
    import tensorflow as tf
    import tensorflow_transform as tft
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.public import tfxio
    from tfx_bsl.tfxio.parquet_tfxio import ParquetTFXIO

    spec = {n: tf.io.FixedLenFeature([], tf.float32) for n in FEATURES}
    schema = schema_utils.schema_from_feature_spec(spec)
    if fmt == "csv":
        source = tfxio.CsvTFXIO(
            path, column_names=FEATURES, schema=schema, skip_header_lines=1
        )
    elif fmt == "parquet":
        source = ParquetTFXIO(path, column_names=FEATURES, schema=schema)
    else:
        source = tfxio.TFExampleRecord(path, schema=schema)

    def list_batches(table):
        # ParquetTFXIO's tensor adapter takes the TFXIO layout (a list per
        # cell), which its own reader yields only for list columns.
        for batch in table.to_batches():
            offsets = pa.array(np.arange(batch.num_rows + 1, dtype=np.int64))
            lists = [pa.LargeListArray.from_arrays(offsets, c) for c in batch.columns]
            yield pa.RecordBatch.from_arrays(lists, names=batch.schema.names)

    def preprocessing_fn(inputs):
        outputs = {}
        for name in FEATURES:
            x = inputs[name]
            finite = tf.boolean_mask(x, tf.math.is_finite(x))
            # 999 boundaries at 0.001, 0.002, ..., 0.999.
            bounds = tft.quantiles(finite, num_buckets=1000, epsilon=1e-4)[0]
            lower, median, upper = bounds[0], bounds[499], bounds[998]
            imputed = tf.where(tf.math.is_nan(x), median, x)
            clipped = tf.clip_by_value(imputed, lower, upper)
            outputs[name] = tft.scale_to_z_score(clipped)
        return outputs

    with (
        tempfile.TemporaryDirectory() as out,
        beam.Pipeline() as pipeline,
        tft_beam.Context(temp_dir=out),
    ):
        if fmt == "parquet":
            raw = (
                pipeline
                | "Read" >> beam.io.ReadFromParquetBatched(path, columns=FEATURES)
                | "AsLists" >> beam.FlatMap(list_batches)
            )
        else:
            raw = pipeline | "Read" >> source.BeamSource()
        transform_fn = (
            raw,
            source.TensorAdapterConfig(),
        ) | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn)
        _ = transform_fn | "Write" >> tft_beam.WriteTransformFn(
            str(Path(out) / "transform_fn")
        )


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


class _Spans:
    """Wall time of calls to wrapped functions, as (label, start, end)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []

    def wrap(self, owner, attribute: str, label: str) -> None:
        """Times every call of `owner.attribute` (skipped if it is absent)."""
        original = getattr(owner, attribute, None)
        if original is None:
            return

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spans.append((label, started, time.perf_counter()))

        setattr(owner, attribute, timed)

    def total(self, label: str) -> float | None:
        found = [end - start for name, start, end in self.spans if name == label]
        return sum(found) if found else None

    def outside(self, label: str, others: tuple[str, ...]) -> float:
        """Time in `label` calls that do not lie inside a call of `others`."""
        enclosing = [(s, e) for name, s, e in self.spans if name in others]
        return sum(
            end - start
            for name, start, end in self.spans
            if name == label and not any(s <= start and end <= e for s, e in enclosing)
        )


def fixed_cost_breakdown(fmt: str, path: str) -> None:
    """Runs `tanhguard analyze` in this process, timing its phases.

    As the command line does, the graph process (`pipeline/graph_process.py`,
    which imports TensorFlow and TFT, then traces and saves the graph) is
    started first. Then the imports this process needs are timed one by
    one, and the command line's `main` runs with the analyze module's
    functions it calls by name (`run_analyze`, each pass, the wait for the
    graph process, and the writers of stats.tfdv.pb and report.html) wrapped
    in timers from outside. A function the module no longer has is left out,
    and its time shows in the rest. The config is `path` with the suffix
    `.yaml`.
    """
    phases: dict[str, float] = {}
    started = time.perf_counter()
    from tanhguard.pipeline import graph_process

    graph_process.start_early()
    phases["start the graph process (it imports TensorFlow meanwhile)"] = (
        time.perf_counter() - started
    )
    started = time.perf_counter()
    import apache_beam  # noqa: F401

    phases["import apache_beam"] = time.perf_counter() - started
    started = time.perf_counter()
    from tanhguard.pipeline import analyze, cli

    phases["import tanhguard's command line and analyze job"] = (
        time.perf_counter() - started
    )
    spans = _Spans()
    steps = {
        "first_phase": "  first pass (first_phase: a Beam pipeline)",
        "mad_phase": "  MAD pass (mad_phase: a Beam pipeline)",
        "fit_phase": "  fit pass (fit_phase: a Beam pipeline)",
        "write_graph": "  trace and save the graph in this process (write_graph)",
        "GraphProcess.wait": (
            "  wait for the graph process (what of its imports, trace and "
            "save outlasts the passes and the report)"
        ),
        "write_tfdv_stats": "  stats.tfdv.pb",
        "write_report": "  report.html",
    }
    for name in ("run_analyze", "_analyze", *steps):
        spans.wrap(analyze, name, name)
    spans.wrap(graph_process.GraphProcess, "wait", "GraphProcess.wait")
    with tempfile.TemporaryDirectory() as out:
        command = ["analyze", "--config", str(Path(path).with_suffix(".yaml"))]
        command += ["--data", path, "--format", fmt, "--output", f"{out}/a"]
        started = time.perf_counter()
        status = cli.main(command)
        main_seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"tanhguard analyze exited with {status}")
    total = spans.total("run_analyze")
    if total is None:
        phases["main (tanhguard analyze)"] = main_seconds
    else:
        run_start, run_end = next(
            (s, e) for name, s, e in spans.spans if name == "run_analyze"
        )
        phases["command line before run_analyze"] = run_start - started
        phases["run_analyze"] = total
        timed = 0.0
        for name, label in steps.items():
            seconds = spans.total(name)
            if seconds is not None:
                phases[label] = seconds
                timed += seconds
        phases["  the rest (inputs, staging, stats.json, publish)"] = total - timed
        phases["command line after run_analyze (summary)"] = (
            started + main_seconds - run_end
        )
    print(json.dumps({"phases": phases, "main_done_epoch": time.time()}))


KINDS = {
    "lower": lower_bound,
    "tanhguard": tanhguard,
    "tft": plain_tft,
    "copy": copy_lower_bound,
    "transform": tanhguard_transform,
    "fixed": fixed_cost_breakdown,
}


def load_line() -> str:
    """The machine's load averages: runs on a busy machine read slower."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} {five:.1f} {fifteen:.1f} ({os.cpu_count()} CPUs)"


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


class _ChildPeaks:
    """The peak resident memory (VmHWM) of this process's child processes,
    sampled every 20 ms on a thread: `tanhguard analyze` saves its graph in a
    process of its own (`pipeline/graph_process.py`), which lives as long as
    the analysis. VmHWM only grows, so the last sample is its peak but for
    what it adds in its last 20 ms."""

    def __init__(self) -> None:
        self.peaks: dict[int, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            for pid in self._children():
                try:
                    with open(f"/proc/{pid}/status") as status:
                        for line in status:
                            if line.startswith("VmHWM:"):
                                kb = float(line.split()[1])
                                self.peaks[pid] = max(self.peaks.get(pid, 0.0), kb)
                except OSError:  # it has ended
                    pass

    @staticmethod
    def _children() -> list[int]:
        found = []
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/children") as handle:
                    found += [int(pid) for pid in handle.read().split()]
            except OSError:
                pass
        return found

    def stop(self) -> float:
        """The children's peaks summed, in KiB."""
        self._done.set()
        self._thread.join()
        return sum(self.peaks.values())


def _child(kind: str, fmt: str, path: str) -> None:
    if kind in ("tanhguard", "transform", "fixed"):
        # What the command line sets before TensorFlow is imported (see
        # `cli.KERAS_FREE_COMMANDS`); the plain TFT peer sets it itself.
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    print(json.dumps({"child_start_epoch": time.time()}))
    children = _ChildPeaks() if kind == "tanhguard" else None
    started = time.perf_counter()
    KINDS[kind](fmt, path)
    seconds = time.perf_counter() - started
    peak_kb = _peak_kb() + (children.stop() if children else 0.0)
    print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024}))


def _run_child(command: list[str], what: str) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    result = {}
    for line in done.stdout.strip().splitlines():
        if line.startswith("{"):
            result.update(json.loads(line))
    return result


def _measure(kind: str, fmt: str, path: Path) -> dict:
    command = [sys.executable, __file__, "--child", kind, fmt, str(path)]
    return _run_child(command, f"{kind} {fmt}")


def _best(kind: str, fmt: str, path: Path, runs: list[dict]) -> dict:
    """One more `_measure` into `runs`; returns the fastest of `runs`, with
    the highest peak memory of them."""
    runs.append(_measure(kind, fmt, path))
    return {
        "seconds": min(run["seconds"] for run in runs),
        "peak_mb": max(run["peak_mb"] for run in runs),
    }


def _analyze_table(paths: dict[str, Path], formats: list[str], args) -> None:
    run_tft = args.rows <= args.tft_max_rows
    print(
        f"{'format':<10}{'lower s':>9}{'tanhguard s':>13}{'ratio':>7}"
        f"{'TFT s':>8}{'ratio':>7}{'lower MB':>10}{'tanhguard MB':>14}"
        f"{'TFT MB':>8}"
    )
    for fmt in formats:
        # Alternating runs, each side's fastest: a burst of other work on
        # the shared machine slows one run, not the ratio.
        lows: list[dict] = []
        runs: list[dict] = []
        for _ in range(args.repeat):
            low = _best("lower", fmt, paths[fmt], lows)
            ours = _best("tanhguard", fmt, paths[fmt], runs)
        line = (
            f"{fmt:<10}{low['seconds']:>9.1f}{ours['seconds']:>13.1f}"
            f"{ours['seconds'] / low['seconds']:>7.1f}"
        )
        if run_tft:
            peer = _measure("tft", fmt, paths[fmt])
            line += f"{peer['seconds']:>8.1f}{peer['seconds'] / low['seconds']:>7.1f}"
        else:
            line += f"{'-':>8}{'-':>7}"
        line += f"{low['peak_mb']:>10.0f}{ours['peak_mb']:>14.0f}"
        line += f"{peer['peak_mb']:>8.0f}" if run_tft else f"{'-':>8}"
        print(line, flush=True)
        if args.repeat > 1:
            pairs = " ".join(
                f"{run['seconds'] / lower['seconds']:.1f}"
                for lower, run in zip(lows, runs, strict=True)
            )
            print(f"  {fmt}: ratio of each pair of runs: {pairs}", flush=True)
    if not run_tft:
        print(
            f"plain TFT not run: {args.rows:,} rows > --tft-max-rows "
            f"{args.tft_max_rows:,}"
        )
    if args.repeat > 1:
        print(
            f"lower and tanhguard: the fastest of {args.repeat} alternating runs "
            "(peak memory: the highest); plain TFT: one run"
        )


def _transform_line(path: Path, rows: int) -> None:
    copy = _measure("copy", "csv", path)
    job = _measure("transform", "csv", path)
    floor = rows / copy["seconds"]
    ours = rows / job["transform_seconds"]
    print(
        f"transform csv -> parquet: {ours:,.0f} rows/s; pyarrow read + "
        f"write: {floor:,.0f} rows/s (ratio {floor / ours:.1f})",
        flush=True,
    )


def _fixed_cost(root: Path) -> None:
    """`tanhguard analyze` on a 3-row CSV: wall time, then the breakdown."""
    csv_path = root / "tiny.csv"
    csv_path.write_text(
        ",".join(FEATURES)
        + "\n"
        + "".join(",".join(str(r + i) for i in range(10)) + "\n" for r in range(3))
    )
    config_path = root / "tiny.yaml"  # JSON is YAML
    config_path.write_text(json.dumps({"features": {n: {} for n in FEATURES}}))
    script = Path(sys.executable).with_name("tanhguard")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from tanhguard.pipeline.cli import main; main()"]
    )
    command += ["analyze", "--config", str(config_path), "--data", str(csv_path)]
    command += ["--output", str(root / "tiny-artifacts")]
    started = time.perf_counter()
    _run_child(command, "tanhguard analyze (3 rows)")
    wall = time.perf_counter() - started
    print(f"fixed cost: `tanhguard analyze` on a 3-row CSV: {wall:.1f} s wall")
    spawned = time.time()
    result = _measure("fixed", "csv", csv_path)
    exited = time.time()
    print("breakdown (the same command in another process; seconds):")
    phases = {
        "process start (python, numpy, this script)": (
            result["child_start_epoch"] - spawned
        ),
        **result["phases"],
        "process exit (atexit handlers, interpreter teardown)": (
            exited - result["main_done_epoch"]
        ),
    }
    for phase, seconds in phases.items():
        print(f"  {seconds:6.2f}  {phase}")
    print(f"  {exited - spawned:6.2f}  total, that process's wall", flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", default="csv,parquet,tfrecord")
    parser.add_argument(
        "--tft-max-rows",
        type=int,
        default=TFT_MAX_ROWS,
        help="run plain TFT only up to this many rows (default %(default)s)",
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="comma-separated, of: " + ", ".join(PARTS),
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the lower bound and tanhguard this many times each, "
        "alternating, and report each one's fastest (default %(default)s)",
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0
    if args.repeat < 1:
        parser.error("--repeat: at least 1")
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; choose from {list(PARTS)}")
    formats = args.formats.split(",")
    if sorted(set(formats) - set(FORMATS)):
        parser.error(f"--formats: choose from {list(FORMATS)}")
    # Every child (the lower bound and the peer too) gets the NumPy sorting
    # kernels the command line picks (AVX2 on AMD Zen 4: `pipeline/simd.py`);
    # this process has imported NumPy, its children have not.
    # So does glibc's malloc setting (`pipeline/malloc.py`), which the
    # children read from the environment when they start.
    from tanhguard.pipeline.malloc import TRIM_THRESHOLD_ENV, keep_freed_memory
    from tanhguard.pipeline.simd import NPY_DISABLE, prefer_avx2_sort

    prefer_avx2_sort(os.environ, numpy_loaded=False)
    keep_freed_memory(os.environ)
    print(
        load_line(),
        f"{NPY_DISABLE}={os.environ.get(NPY_DISABLE, '')!r}",
        f"{TRIM_THRESHOLD_ENV}={os.environ.get(TRIM_THRESHOLD_ENV, '')!r}",
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "analyze" in parts or "transform" in parts:
            started = time.perf_counter()
            needed = {*formats, "csv"} if "transform" in parts else set(formats)
            paths = write_data(root, args.rows, tuple(sorted(needed)))
            # Flushed to disk before any run: the kernel's write-back of the
            # new files would otherwise slow the first runs (seen at 10M).
            os.sync()
            print(
                f"{args.rows:,} rows x {len(FEATURES)} features written in "
                f"{time.perf_counter() - started:.1f} s",
                flush=True,
            )
        if "analyze" in parts:
            _analyze_table(paths, formats, args)
        if "transform" in parts and "csv" in formats:
            _transform_line(paths["csv"], args.rows)
        if "fixed-cost" in parts:
            _fixed_cost(root)
    print(load_line())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
