"""The transform job: apply an artifacts directory's graph to a dataset.

What TFX Transform calls materialization: every input row becomes one output
row of the transformed features (float32; a vector is a list of d values),
written as sharded Parquet, TFRecord (`tf.Example`, gzip) or CSV files
`part-SSSSS-of-NNNNN.<ext>` in an output directory that appears complete or
not at all.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf
import tensorflow_transform as tft
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.options.pipeline_options import PipelineOptions

from tanhguard.pipeline.artifacts import load_artifacts_config
from tanhguard.pipeline.batch_layout import BATCH_VALUES, csv_field
from tanhguard.pipeline.beam_runner import new_pipeline
from tanhguard.pipeline.formats import FORMATS
from tanhguard.pipeline.job_errors import data_errors_unwrapped
from tanhguard.pipeline.output_dir import publish_dir
from tanhguard.pipeline.readers import (
    ReadRecordBatches,
    kept_schema,
    resolve_inputs,
)
from tanhguard.pipeline.workdir import (
    SCRATCH,
    SaveGlobally,
    copy_tree,
    load_saved,
    work_dir,
)
from tanhguard.transforms.config import Config

logger = logging.getLogger(__name__)


def output_schema(config: Config, keep: pa.Schema | None = None) -> pa.Schema:
    """The kept columns (`kept_columns`), then float32 columns; a vector
    feature is a list of d float32."""
    fields = list(keep) if keep is not None else []
    for name, feature in config.features.items():
        kind = pa.list_(pa.float32()) if feature.is_vector else pa.float32()
        fields += [pa.field(output, kind) for output in config.output_names(name)]
    return pa.schema(fields)


def graph_inputs(batch: pa.RecordBatch, config: Config) -> dict[str, tf.SparseTensor]:
    """A record batch (`batch_layout`) as the saved graph's inputs.

    A `SparseTensor` per feature, keyed by its source column, as TFT's tensor
    adapter for a `VarLenFeature` builds it (`tensor_adapter_config`): row
    `i`'s values at `[i, 0]`, `[i, 1]`, ...; a missing (empty or null) row
    holds none; the dense shape is `[rows, longest row]`. Features whose rows
    all hold the same number of values share one indices tensor.
    """
    rows = batch.num_rows
    shared: dict[int, tuple[tf.Tensor, tf.Tensor]] = {}
    inputs = {}
    for name in config.features:
        column = batch.column(name)
        values = np.asarray(column.flatten())
        lengths = np.asarray(pc.list_value_length(column).fill_null(0), np.int64)
        width = int(lengths.max()) if rows else 0
        if len(values) == rows * width:  # every row holds `width` values
            if width not in shared:
                shared[width] = (
                    tf.constant(_full_indices(rows, width)),
                    tf.constant([rows, width], tf.int64),
                )
            indices, shape = shared[width]
        else:
            starts = np.cumsum(lengths) - lengths
            indices = np.empty((len(values), 2), np.int64)
            indices[:, 0] = np.repeat(np.arange(rows), lengths)
            indices[:, 1] = np.arange(len(values)) - np.repeat(starts, lengths)
            indices = tf.constant(indices)
            shape = tf.constant([rows, width], tf.int64)
        inputs[config.source_column(name)] = tf.SparseTensor(
            indices, tf.constant(values), shape
        )
    return inputs


def _full_indices(rows: int, width: int) -> np.ndarray:
    """`[i, j]` for every row `i` and every `j < width`, row by row."""
    indices = np.empty((rows, width, 2), np.int64)
    indices[:, :, 0] = np.arange(rows)[:, np.newaxis]
    indices[:, :, 1] = np.arange(width)[np.newaxis, :]
    return indices.reshape(-1, 2)


def output_batch(
    outputs: dict[str, Any],
    schema: pa.Schema,
    kept: dict[str, pa.Array] | None = None,
) -> pa.RecordBatch:
    """The graph's outputs (`[rows]` or `[rows, d]` each) in the layout of
    `output_schema`: a float32 column, or a list of d float32 per row; the
    kept columns as `kept` holds them."""
    arrays = []
    for field in schema:
        if kept is not None and field.name in kept:
            arrays.append(kept[field.name])
            continue
        values = np.asarray(outputs[field.name], dtype=np.float32)
        if pa.types.is_list(field.type):
            rows, width = values.shape
            offsets = np.arange(0, rows * width + 1, width, dtype=np.int32)
            arrays.append(
                pa.ListArray.from_arrays(
                    pa.array(offsets), pa.array(values.reshape(-1))
                )
            )
        else:
            arrays.append(pa.array(values.reshape(-1)))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# Values of the record batches the job transforms: a quarter of the
# analysis's (`batch_layout.BATCH_VALUES`; 65,536 rows of ten scalars). The
# graph's inputs and outputs take memory a value (its sparse indices alone
# 16 bytes): on 1M rows x 10 columns the job ran as fast with the analysis's
# batches (4.3-4.6 s, CSV and Parquet, two runs each) and peaked 50-80 MB
# higher (0.97-1.02 GB against 0.89-0.96 GB).
TRANSFORM_BATCH_VALUES = BATCH_VALUES // 4


class _ApplyGraph(beam.DoFn):
    """Record batches -> record batches of `output_schema`, transformed by the
    saved graph (`transform_fn` of a TFT SavedModel), loaded once per DoFn
    instance on the worker: in `setup` when its directory is known when the
    pipeline is built, else on the first batch (a side input gives it)."""

    def __init__(
        self, config: Config, graph_dir: str | None, keep: pa.Schema | None = None
    ):
        super().__init__()
        self._config = config
        self._graph_dir = graph_dir
        self._schema = output_schema(config, keep)
        self._kept = keep.names if keep is not None else []

    def setup(self):
        self._loaded_dir = None
        self._function = None
        if self._graph_dir is not None:
            self._load(self._graph_dir)

    def _load(self, graph_dir: str) -> None:
        self._function = tf.saved_model.load(graph_dir).transform_fn
        self._loaded_dir = graph_dir

    def process(self, batch: pa.RecordBatch, graph_dir: str | None = None):
        graph_dir = graph_dir or self._graph_dir
        if graph_dir != self._loaded_dir:
            self._load(graph_dir)
        outputs = self._function(graph_inputs(batch, self._config))
        kept = {name: batch.column(name) for name in self._kept}
        yield output_batch(
            {
                name: outputs[name].numpy()
                for name in self._schema.names
                if name not in kept
            },
            self._schema,
            kept,
        )


def _csv_lines(batch: pa.RecordBatch) -> Iterator[str]:
    columns = []
    for column in batch.columns:
        values = column.to_pylist()
        if pa.types.is_list(column.type):
            columns.append([",".join(repr(float(v)) for v in row) for row in values])
        elif pa.types.is_float32(column.type):
            columns.append([repr(float(v)) for v in values])
        else:  # a kept column
            columns.append([_kept_cell(v) for v in values])
    for row in zip(*columns, strict=True):
        yield ",".join(row)


def _kept_cell(value: Any) -> str:
    """A kept value as a CSV cell: empty for none, `true`/`false`, a number
    as Python writes it, text as it reads back (`csv_field`)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return csv_field(str(value))


def _csv_header(schema: pa.Schema, config: Config) -> str:
    """The CSV output's header: a vector output (the feature's, or one of its
    indicators) as `name_0` ... `name_{d-1}`, as its rows spell it; names
    quoted as cells are."""
    sizes = {
        output: feature.size
        for name, feature in config.features.items()
        for output in config.output_names(name)
    }
    names = []
    for field in schema:
        if pa.types.is_list(field.type):
            names += [f"{field.name}_{i}" for i in range(sizes[field.name])]
        else:
            names.append(field.name)
    return ",".join(_kept_cell(name) for name in names)


def examples_from_batch(batch: pa.RecordBatch, encoder_schema) -> list[bytes]:
    """Serialized `tf.Example`s of a record batch's rows (scalar columns become
    one-value lists); `encoder_schema` is a TF Metadata schema of its columns."""
    from tfx_bsl.coders import example_coder

    lists = []
    for column in batch.columns:
        if pa.types.is_list(column.type):
            lists.append(column)
        else:
            lists.append(_one_value_lists(column))
    as_lists = pa.RecordBatch.from_arrays(lists, names=batch.schema.names)
    encoder = example_coder.RecordBatchToExamplesEncoder(encoder_schema)
    return encoder.encode(as_lists)


# A kept column's type in a `tf.Example` (`kept_columns`): its list type.
_EXAMPLE_TYPES = {
    pa.int64(): pa.int64(),
    pa.bool_(): pa.int64(),
    pa.float64(): pa.float32(),
    pa.float32(): pa.float32(),
    pa.string(): pa.binary(),
}


def _one_value_lists(column: pa.Array) -> pa.ListArray:
    """A scalar column as lists of one value each, none for a null, of the
    type a `tf.Example` holds (`_EXAMPLE_TYPES`)."""
    values = column.cast(_EXAMPLE_TYPES[column.type])
    if column.null_count == 0:
        offsets = np.arange(len(column) + 1, dtype=np.int32)
    else:
        valid = np.asarray(column.is_valid(), dtype=np.int32)
        offsets = np.concatenate([[0], np.cumsum(valid)]).astype(np.int32)
        values = values.filter(column.is_valid())
    return pa.ListArray.from_arrays(pa.array(offsets), values)


class TransformAndWrite(beam.PTransform):
    """Record batches -> sharded files of rows transformed by a saved graph.

    `transform_fn` is a TFT output directory (holding `transform_fn/`, as
    `tft.TFTransformOutput` reads it), or the pair `tft_beam.AnalyzeDataset`
    or `ReadTransformFn` gives. Each worker loads the graph once and calls
    it on every record batch as it comes (`_ApplyGraph`).
    """

    def __init__(
        self,
        config: Config,
        transform_fn,
        prefix: str,
        output_format: str,
        count_path: str | None = None,
        keep: pa.Schema | None = None,
    ):
        super().__init__()
        self._config = config
        self._transform_fn = transform_fn
        self._prefix = prefix
        self._format = output_format
        self._count_path = count_path
        self._keep = keep

    def expand(self, batches):
        config, transform_fn, keep = self._config, self._transform_fn, self._keep
        schema = output_schema(config, keep)
        if isinstance(transform_fn, (str, Path)):
            graph_dir = posixpath.join(
                str(transform_fn), tft.TFTransformOutput.TRANSFORM_FN_DIR
            )
            flat = batches | "Transform" >> beam.ParDo(
                _ApplyGraph(config, graph_dir, keep)
            )
        else:
            graph_dir = beam.pvalue.AsSingleton(transform_fn[0])
            flat = batches | "Transform" >> beam.ParDo(
                _ApplyGraph(config, None, keep), graph_dir
            )
        if self._count_path is not None:
            # The row count, without reading the shards back.
            _ = (
                flat
                | "RowsPerBatch" >> beam.Map(lambda batch: batch.num_rows)
                | "CountRows" >> SaveGlobally(sum, self._count_path)
            )
        return _write(flat, self._prefix, self._format, schema, config)


def run_transform(
    artifacts: str | Path,
    data: str,
    output: str | Path,
    output_format: str = "parquet",
    beam_args: Sequence[str] = (),
    overwrite: bool = False,
    fmt: str | None = None,
    keep: Sequence[str] = (),
) -> dict[str, Any]:
    """Transforms the rows of `data` with the graph in `artifacts`; the
    columns `keep` (CSV and Parquet input) are copied into the output rows
    unchanged, first (`kept_columns`).

    Returns:
      `{"rows": N, "files": [...], "seconds": s}` for the written shards.

    Raises:
      DataError / ExportError: bad input files or artifacts, named.
      OptionsError: `beam_args` that Beam rejects (`beam_runner.new_pipeline`).
      ValueError: an unknown `output_format`.
    """
    if output_format not in FORMATS:
        raise ValueError(
            f"`--output-format` must be one of {FORMATS}. Received: {output_format}"
        )
    started = time.monotonic()
    config = load_artifacts_config(artifacts)
    files, fmt, _ = resolve_inputs(data, config, fmt)
    kept = kept_schema(files, fmt, keep, config)
    logger.info("transforming %d %s file(s) matching %s", len(files), fmt, data)
    protect = [*files, artifacts]
    with publish_dir(output, overwrite=overwrite, protect=protect) as staging:
        options = PipelineOptions(list(beam_args))
        with data_errors_unwrapped(), work_dir(options, staging) as work:
            scratch = posixpath.join(work, SCRATCH)
            tf.io.gfile.makedirs(scratch)
            count_path = posixpath.join(scratch, "rows.npy")
            graph = str(artifacts)
            if work != str(staging):  # the workers read the graph there too
                graph = posixpath.join(scratch, "artifacts")
                for part in (
                    tft.TFTransformOutput.TRANSFORM_FN_DIR,
                    tft.TFTransformOutput.TRANSFORMED_METADATA_DIR,
                ):
                    copy_tree(
                        posixpath.join(str(artifacts), part),
                        posixpath.join(graph, part),
                    )
            with new_pipeline(options) as pipeline:
                batches = pipeline | "Read" >> ReadRecordBatches(
                    files, config, fmt, TRANSFORM_BATCH_VALUES, kept
                )
                _ = batches | "TransformAndWrite" >> TransformAndWrite(
                    config,
                    graph,
                    posixpath.join(work, "part"),
                    output_format,
                    count_path,
                    kept,
                )
            rows = int(load_saved(count_path, sum))
        written = sorted(p for p in staging.iterdir() if p.name.startswith("part"))
        names = [str(Path(output).absolute() / p.name) for p in written]
    seconds = time.monotonic() - started
    logger.info(
        "wrote %s rows in %d file(s) in %.1f s", f"{rows:,}", len(names), seconds
    )
    return {"rows": rows, "files": names, "seconds": seconds}


transform = run_transform
"""`tanhguard transform` as a function (the public name of `run_transform`)."""


# Bytes of a column chunk's Parquet dictionary (1,024 float32 values) beyond
# which it is written without one (PLAIN).
DICTIONARY_LIMIT = 4096


class _ParquetSink(filebasedsink.FileBasedSink):
    """Record batches -> Parquet shards, one row group per batch.

    As `beam.io.WriteToParquetBatched` writes them (no compression, the same
    nested-type names), but with a small dictionary limit
    (`DICTIONARY_LIMIT`): an indicator or a constant output keeps its
    dictionary, a continuous one falls back to PLAIN early. With Arrow's
    default (1 MiB, more than a batch's distinct values) every output was
    dictionary-encoded in full: on batches of 40,000 rows x 10 continuous
    floats, 7x the time of writing them PLAIN, in files 1.5x larger.
    """

    def __init__(self, prefix: str, schema: pa.Schema):
        super().__init__(
            prefix,
            coder=None,
            file_name_suffix=".parquet",
            mime_type="application/x-parquet",
            compression_type=CompressionTypes.UNCOMPRESSED,
        )
        self._schema = schema

    def open(self, temp_path):
        handle = super().open(temp_path)
        writer = pq.ParquetWriter(
            handle,
            self._schema,
            compression="none",
            use_compliant_nested_type=False,
            dictionary_pagesize_limit=DICTIONARY_LIMIT,
        )
        return handle, writer

    def write_record(self, file_handle, value: pa.RecordBatch) -> None:
        file_handle[1].write_table(pa.Table.from_batches([value]))

    def close(self, file_handle) -> None:
        handle, writer = file_handle
        writer.close()
        handle.close()


def _write(flat, prefix: str, output_format: str, schema: pa.Schema, config: Config):
    if output_format == "parquet":
        return flat | "WriteParquet" >> beam.io.Write(_ParquetSink(prefix, schema))
    elif output_format == "tfrecord":
        import tensorflow as tf
        from tensorflow_transform.tf_metadata import schema_utils

        kinds = {pa.int64(): tf.int64, pa.float32(): tf.float32, pa.binary(): tf.string}
        spec = {
            field.name: tf.io.VarLenFeature(
                tf.float32
                if field.name in config.model_matrix_names()
                else kinds[_EXAMPLE_TYPES[field.type]]
            )
            for field in schema
        }
        encoder_schema = schema_utils.schema_from_feature_spec(spec)
        return (
            flat
            | "ToExamples" >> beam.FlatMap(examples_from_batch, encoder_schema)
            | "WriteTFRecord"
            >> beam.io.WriteToTFRecord(prefix, file_name_suffix=".tfrecord.gz")
        )
    return (
        flat
        | "ToLines" >> beam.FlatMap(_csv_lines)
        | "WriteCsv"
        >> beam.io.WriteToText(
            prefix,
            file_name_suffix=".csv",
            header=_csv_header(schema, config),
        )
    )
