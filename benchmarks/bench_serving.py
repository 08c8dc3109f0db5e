"""Serving speed of the exported preprocessing graph against hand-written ops.

The demo config (configs/demo.yaml: seven features, a constant one, an int
one and a 3-element vector) is analyzed on `--rows` demo rows
(`pipeline/demo.py`) and exported with `tanhguard export`. The same per-feature
formula, `clip((clip(impute(x), lower, upper) - center) / scale, -B, B)`
(a constant feature gives 0; +-Inf clip to the bounds), is then written by
hand as TF ops in a `tf.function` with the numbers read from the same
stats.json, and saved and loaded as a SavedModel of its own, so both sides are
called the same way (a loaded signature, keyword tensors in, a dict out).
Before timing, the two outputs are compared on the demo rows (NaN, +-Inf and
missing cells included): they must agree to float32 rounding.

Timed, in one process, alternating the two sides call by call, median of many
calls:
  transform_features  one tensor per raw feature, batch 1, 1,000 and 100,000;
  serving_default     serialized tf.Example in (tf.io.parse_example, then the
                      ops), batch 1; the hand side parses with FixedLenFeature
                      and NaN defaults (the int feature: its impute value).
The hand side writes a vector feature column by column with scalar numbers
(TensorFlow's CPU kernels broadcast a `[d]` vector over `[batch, d]` several
times slower than a scalar over `[batch]`), and puts its columns together
two ways, stacked along the last axis (faster up to some ten thousand rows)
or stacked as rows and transposed (faster beyond); both are timed and each
row takes the faster (benchmarks/README.md has the variants measured). Both
sides multiply by the reciprocal of the scale.

For reference, it also prints the exported module's own input handling
alone (`wrapper ms`, `pipeline/serving.py`: `transform_features` checks its
dense tensors' shapes and reshapes them for the dense trace of the graph, or,
where export keeps the transform graph, turns them into its sparse inputs:
the route is printed; `serving_default` parses `VarLenFeature`s and checks
their lengths in one assertion), the hand
side's `FixedLenFeature` parse alone, and the hand-written tf.function
called in-process (no SavedModel). Machines are shared and noisy: compare
ratios from one run.

    .venv/bin/python benchmarks/bench_serving.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH_SIZES = (1, 1_000, 100_000)


def make_artifacts(root: Path, rows: int) -> tuple[Path, Path, Path]:
    """Demo rows -> CSV -> `run_analyze` -> `export`; returns (csv, artifacts,
    SavedModel)."""
    from tanhguard.pipeline.analyze import run_analyze
    from tanhguard.pipeline.demo import (
        DEMO_SEED,
        demo_config,
        generate_demo_rows,
        write_demo_csv,
    )
    from tanhguard.pipeline.export import export

    csv_path = root / "demo.csv"
    write_demo_csv(csv_path, generate_demo_rows(rows), DEMO_SEED)
    run_analyze(demo_config(), str(csv_path), root / "artifacts")
    export(root / "artifacts", root / "exported")
    return csv_path, root / "artifacts", root / "exported"


def hand_parameters(stats: dict) -> dict[str, dict]:
    """Per feature, the float32 numbers the hand-written ops apply."""
    parameters = {}
    for name, feature in stats["features"].items():
        if feature["inf"] != "clip" or feature["indicators"]:
            raise ValueError(
                f"feature `{name}`: the hand-written ops cover `inf: clip` "
                "without indicators only"
            )
        scale = np.asarray(feature["scale"]["scale"], np.float64)
        inverse = np.where(scale > 0, 1.0 / np.where(scale > 0, scale, 1.0), 0.0)
        parameters[name] = {
            key: np.asarray(value, np.float32)
            for key, value in {
                "impute": feature["impute"]["value"],
                "lower": feature["clip"]["lower"],
                "upper": feature["clip"]["upper"],
                "center": feature["scale"]["center"],
                "inverse_scale": inverse,
                "bound": feature["output_bound"],
            }.items()
        }
    return parameters


def hand_module(stats: dict, input_specs: dict, transpose: bool):
    """A tf.Module with the two signatures, written by hand from stats.json.

    A vector feature goes column by column with scalar numbers (TensorFlow's
    CPU kernels broadcast a `[d]` vector over `[batch, d]` several times
    slower than a scalar over `[batch]`); its columns are stacked along the
    last axis, or (`transpose`) as rows, then transposed: the first is faster
    up to some ten thousand rows, the second beyond.
    """
    import tensorflow as tf

    parameters = hand_parameters(stats)
    dtypes = {name: spec.dtype for name, spec in input_specs.items()}
    widths = {
        name: (spec.shape[1] if spec.shape.rank == 2 else None)
        for name, spec in input_specs.items()
    }

    def formula(x, p):
        x = tf.where(tf.math.is_nan(x), p["impute"], x)
        x = tf.clip_by_value(x, p["lower"], p["upper"])
        x = (x - p["center"]) * p["inverse_scale"]
        return tf.clip_by_value(x, -p["bound"], p["bound"])

    def transform(features):
        outputs = {}
        for name, p in parameters.items():
            x = tf.cast(features[name], tf.float32)
            if widths[name] is None:
                outputs[name] = formula(x, p)
            else:
                columns = [
                    formula(column, {k: v[i] if v.ndim else v for k, v in p.items()})
                    for i, column in enumerate(tf.unstack(x, num=widths[name], axis=1))
                ]
                outputs[name] = (
                    tf.transpose(tf.stack(columns))
                    if transpose
                    else tf.stack(columns, axis=1)
                )
        return outputs

    parse_spec = {}
    for name, dtype in dtypes.items():
        shape = [] if widths[name] is None else [widths[name]]
        size = widths[name] or 1
        if dtype.is_integer:
            default = [round(float(parameters[name]["impute"]))] * size
        else:
            default = [float("nan")] * size
        parse_spec[name] = tf.io.FixedLenFeature(
            shape, dtype, default_value=default if shape else default[0]
        )

    class HandWritten(tf.Module):
        @tf.function
        def transform_features(self, **features):
            return transform(features)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serving_default(self, examples):
            return transform(tf.io.parse_example(examples, parse_spec))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def parse(self, examples):
            return tf.io.parse_example(examples, parse_spec)

    module = HandWritten()
    signatures = {
        "transform_features": module.transform_features.get_concrete_function(
            **input_specs
        ),
        "serving_default": module.serving_default.get_concrete_function(),
        "parse": module.parse.get_concrete_function(),
    }
    return module, signatures


def wrapper_module(artifacts: Path, input_specs: dict):
    """A tf.Module with the exported module's input handling alone
    (`pipeline/serving.py`), and the route `transform_features` takes.

    `transform_features`' dense tensors checked and reshaped for the dense
    trace (`Preprocessor.dense_inputs`), or, when export keeps the transform
    graph, turned into its sparse inputs (`raw_tensors`); and
    `serving_default`'s parse (`VarLenFeature`s and one assertion on the
    number of values). Each returns the tensors (a sparse one's
    components)."""
    import tensorflow as tf

    from tanhguard.pipeline.serving import Preprocessor, ServingModule

    route = ServingModule(artifacts).tensors_route
    preprocessor = Preprocessor(artifacts)

    def components(sparse: dict) -> dict:
        return {
            f"{key}_{part}": getattr(value, part)
            for key, value in sparse.items()
            for part in ("indices", "values", "dense_shape")
        }

    def handled(features: dict) -> dict:
        if route == "dense":
            return preprocessor.dense_inputs(features)
        return components(preprocessor.raw_tensors(features))

    class Wrapper(tf.Module):
        @tf.function
        def tensors(self, **features):
            return handled(features)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def examples(self, examples):
            return components(preprocessor.parse_examples(examples))

    module = Wrapper()
    signatures = {
        "tensors": module.tensors.get_concrete_function(**input_specs),
        "examples": module.examples.get_concrete_function(),
    }
    return module, signatures, route


def demo_inputs(csv_path: Path, input_specs: dict) -> dict[str, np.ndarray]:
    """The demo CSV's columns in the `transform_features` layout (NaN: missing)."""
    import pyarrow.csv as pa_csv

    table = pa_csv.read_csv(csv_path)
    inputs = {}
    for name, spec in input_specs.items():
        if spec.shape.rank == 2:
            columns = [f"{name}_{i}" for i in range(spec.shape[1])]
            values = np.stack([table[c].to_numpy() for c in columns], axis=1)
        else:
            values = table[name].to_numpy()
        inputs[name] = values.astype(spec.dtype.as_numpy_dtype)
    return inputs


def tiled(inputs: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The first `batch` rows, repeating the data as needed."""
    rows = len(next(iter(inputs.values())))
    index = np.arange(batch) % rows
    return {name: values[index] for name, values in inputs.items()}


def serialized_examples(inputs: dict[str, np.ndarray], batch: int) -> list[bytes]:
    """`batch` tf.Examples of the rows; a NaN float cell is left absent."""
    import tensorflow as tf

    rows = tiled(inputs, batch)
    records = []
    for i in range(batch):
        feature = {}
        for name, values in rows.items():
            cell = np.atleast_1d(values[i])
            if values.dtype.kind == "i":
                feature[name] = tf.train.Feature(
                    int64_list=tf.train.Int64List(value=cell.tolist())
                )
            elif not np.isnan(cell).all():
                feature[name] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=cell.tolist())
                )
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        records.append(example.SerializeToString())
    return records


def max_difference(left: dict, right: dict) -> float:
    """The largest absolute difference between two output dicts."""
    if sorted(left) != sorted(right):
        raise AssertionError(f"outputs differ: {sorted(left)} vs {sorted(right)}")
    worst = 0.0
    for name in left:
        a = np.asarray(left[name], np.float64)
        b = np.asarray(right[name], np.float64)
        if a.shape != b.shape or not np.isfinite(a).all():
            raise AssertionError(f"`{name}`: shapes {a.shape} vs {b.shape}")
        worst = max(worst, float(np.max(np.abs(a - b), initial=0.0)))
    return worst


def median_ms(calls: list, repetitions: int) -> list[float]:
    """Median milliseconds of each call, alternating them call by call.

    The order rotates from one round to the next, so that no call always
    follows the same one (a call runs slower after some than after others:
    caches, the thread pools' state)."""
    for call in calls:  # warm up: first-call costs are not serving costs
        for _ in range(3):
            call()
    times = [[] for _ in calls]
    for round_ in range(repetitions):
        for index in range(len(calls)):
            index = (index + round_) % len(calls)
            started = time.perf_counter()
            calls[index]()
            times[index].append(time.perf_counter() - started)
    return [statistics.median(spent) * 1e3 for spent in times]


def load_line() -> str:
    """The machine's load averages: runs on a busy machine read slower."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} {five:.1f} {fifteen:.1f} ({os.cpu_count()} CPUs)"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="analyzed rows")
    parser.add_argument(
        "--repetitions",
        type=int,
        default=2000,
        help="calls per side at batch 1 (fewer at larger batches)",
    )
    args = parser.parse_args(argv)
    import tensorflow as tf

    print(load_line())

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv_path, artifacts, exported_dir = make_artifacts(root, args.rows)
        stats = json.loads((artifacts / "stats.json").read_text())
        exported = tf.saved_model.load(str(exported_dir))
        graph = exported.signatures["transform_features"]
        graph_serving = exported.signatures["serving_default"]
        input_specs = graph.structured_input_signature[1]
        # The hand side two ways (how a vector's columns are put together);
        # each row takes the faster.
        hands, hands_serving, hands_in_process = [], [], []
        for transpose in (False, True):
            module, signatures = hand_module(stats, input_specs, transpose)
            saved = root / f"hand_{transpose}"
            tf.saved_model.save(module, str(saved), signatures=signatures)
            hand_loaded = tf.saved_model.load(str(saved))
            hands.append(hand_loaded.signatures["transform_features"])
            hands_serving.append(hand_loaded.signatures["serving_default"])
            hands_in_process.append(module.transform_features)
        hand_parse = hand_loaded.signatures["parse"]
        module, signatures, route = wrapper_module(artifacts, input_specs)
        tf.saved_model.save(module, str(root / "wrapper"), signatures=signatures)
        wrapper_loaded = tf.saved_model.load(str(root / "wrapper"))
        wrapper = wrapper_loaded.signatures["tensors"]
        wrapper_parse = wrapper_loaded.signatures["examples"]

        inputs = demo_inputs(csv_path, input_specs)
        rows = len(next(iter(inputs.values())))
        as_tensors = {n: tf.constant(v) for n, v in inputs.items()}
        records = tf.constant(serialized_examples(inputs, min(rows, 2000)))
        difference = max(
            *(max_difference(graph(**as_tensors), h(**as_tensors)) for h in hands),
            *(
                max_difference(graph_serving(examples=records), h(examples=records))
                for h in hands_serving
            ),
        )
        print(
            f"demo config, {args.rows:,} rows analyzed; exported vs hand-written "
            f"outputs on the demo rows: max |difference| {difference:.2g}; "
            f"transform_features route: {route}"
        )
        if difference > 1e-5:
            raise AssertionError("the hand-written ops do not match the graph")

        print(
            f"{'signature':<20}{'batch':>8}{'exported ms':>13}{'hand ms':>9}"
            f"{'ratio':>7}{'wrapper ms':>12}{'hand tf.function ms':>21}"
        )
        for batch in BATCH_SIZES:
            feed = {n: tf.constant(v) for n, v in tiled(inputs, batch).items()}
            # 2000, 500 and 50 calls per side by default.
            repetitions = {1: 1, 1_000: 4, 100_000: 40}[batch]
            repetitions = max(20, args.repetitions // repetitions)
            ours, theirs, theirs_t = median_ms(
                [
                    lambda feed=feed: graph(**feed),
                    *(lambda feed=feed, h=h: h(**feed) for h in hands),
                ],
                repetitions,
            )
            # The references apart: not interleaved with the ratio's calls.
            inputs_only, direct, direct_t = median_ms(
                [
                    lambda feed=feed: wrapper(**feed),
                    *(lambda feed=feed, h=h: h(**feed) for h in hands_in_process),
                ],
                max(20, repetitions // 4),
            )
            theirs, direct = min(theirs, theirs_t), min(direct, direct_t)
            print(
                f"{'transform_features':<20}{batch:>8,}{ours:>13.3f}{theirs:>9.3f}"
                f"{ours / theirs:>7.2f}{inputs_only:>12.3f}{direct:>21.3f}",
                flush=True,
            )
        one = tf.constant(serialized_examples(inputs, 1))
        ours, theirs, theirs_t = median_ms(
            [
                lambda: graph_serving(examples=one),
                *(lambda h=h: h(examples=one) for h in hands_serving),
            ],
            args.repetitions,
        )
        parse_only, hand_parse_only = median_ms(
            [
                lambda: wrapper_parse(examples=one),
                lambda: hand_parse(examples=one),
            ],
            max(20, args.repetitions // 4),
        )
        theirs = min(theirs, theirs_t)
        print(
            f"{'serving_default':<20}{1:>8,}{ours:>13.3f}{theirs:>9.3f}"
            f"{ours / theirs:>7.2f}{parse_only:>12.3f}{'-':>21}"
        )
        print(
            f"serving_default's parse alone: {parse_only:.3f} ms (VarLenFeature, "
            f"one length assertion) vs the hand side's FixedLenFeature parse "
            f"{hand_parse_only:.3f} ms"
        )
    print(load_line())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
