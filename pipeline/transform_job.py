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
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.options.pipeline_options import PipelineOptions

from tanhguard.pipeline.artifacts import load_artifacts_config
from tanhguard.pipeline.batch_layout import tensor_adapter_config
from tanhguard.pipeline.formats import FORMATS
from tanhguard.pipeline.job_errors import data_errors_unwrapped
from tanhguard.pipeline.output_dir import publish_dir
from tanhguard.pipeline.readers import ReadRecordBatches, resolve_inputs
from tanhguard.pipeline.workdir import (
    SCRATCH,
    SaveGlobally,
    copy_tree,
    load_saved,
    work_dir,
)
from tanhguard.transforms.config import Config

logger = logging.getLogger(__name__)


def output_schema(config: Config) -> pa.Schema:
    """float32 columns; a vector feature is a list of d float32."""
    fields = []
    for name in config.model_matrix_names():
        feature = config.features[name.split("__")[0]]
        kind = pa.list_(pa.float32()) if feature.is_vector else pa.float32()
        fields.append(pa.field(name, kind))
    return pa.schema(fields)


def _flatten(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """TFT's list-per-row columns to the output layout."""
    arrays = []
    for field in schema:
        column = batch.column(field.name)
        if pa.types.is_list(field.type):
            arrays.append(column.cast(field.type))
        elif pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            arrays.append(column.flatten().cast(pa.float32()))
        else:
            arrays.append(column.cast(pa.float32()))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _csv_lines(batch: pa.RecordBatch) -> Iterator[str]:
    columns = []
    for column in batch.columns:
        values = column.to_pylist()
        if pa.types.is_list(column.type):
            columns.append([",".join(repr(float(v)) for v in row) for row in values])
        else:
            columns.append([repr(float(v)) for v in values])
    for row in zip(*columns, strict=True):
        yield ",".join(row)


def _csv_header(schema: pa.Schema, config: Config) -> str:
    names = []
    for field in schema:
        feature = config.features.get(field.name)
        if feature is not None and feature.is_vector:
            names += [f"{field.name}_{i}" for i in range(feature.size)]
        else:
            names.append(field.name)
    return ",".join(names)


def examples_from_batch(batch: pa.RecordBatch, encoder_schema) -> list[bytes]:
    """Serialized `tf.Example`s of a record batch's rows (scalar columns become
    one-value lists); `encoder_schema` is a TF Metadata schema of its columns."""
    from tfx_bsl.coders import example_coder

    lists = []
    for column in batch.columns:
        if pa.types.is_list(column.type):
            lists.append(column)
        else:
            offsets = pa.array(np.arange(len(column) + 1, dtype=np.int32))
            lists.append(pa.ListArray.from_arrays(offsets, column))
    as_lists = pa.RecordBatch.from_arrays(lists, names=batch.schema.names)
    encoder = example_coder.RecordBatchToExamplesEncoder(encoder_schema)
    return encoder.encode(as_lists)


class TransformAndWrite(beam.PTransform):
    """Record batches -> sharded files of rows transformed by `transform_fn`
    (the pair `tft_beam.AnalyzeDataset` or `ReadTransformFn` gives)."""

    def __init__(
        self,
        config: Config,
        transform_fn,
        prefix: str,
        output_format: str,
        count_path: str | None = None,
    ):
        super().__init__()
        self._config = config
        self._transform_fn = transform_fn
        self._prefix = prefix
        self._format = output_format
        self._count_path = count_path

    def expand(self, batches):
        config, transform_fn = self._config, self._transform_fn
        schema = output_schema(config)
        transformed, _ = (
            (batches, tensor_adapter_config(config)),
            transform_fn,
        ) | "Transform" >> tft_beam.TransformDataset(output_record_batches=True)
        flat = transformed | "Flatten" >> beam.Map(
            lambda pair: _flatten(pair[0], schema)
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
) -> dict[str, Any]:
    """Transforms the rows of `data` with the graph in `artifacts`.

    Returns:
      `{"rows": N, "files": [...], "seconds": s}` for the written shards.

    Raises:
      DataError / ExportError: bad input files or artifacts, named.
      ValueError: an unknown `output_format`.
    """
    if output_format not in FORMATS:
        raise ValueError(
            f"`--output-format` must be one of {FORMATS}. Received: {output_format}"
        )
    started = time.monotonic()
    config = load_artifacts_config(artifacts)
    files, fmt, _ = resolve_inputs(data, config, fmt)
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
            with (
                beam.Pipeline(options=options) as pipeline,
                tft_beam.Context(temp_dir=scratch),
            ):
                batches = pipeline | "Read" >> ReadRecordBatches(files, config, fmt)
                transform_fn = pipeline | "ReadTransformFn" >> (
                    tft_beam.ReadTransformFn(graph)
                )
                _ = batches | "TransformAndWrite" >> TransformAndWrite(
                    config,
                    transform_fn,
                    posixpath.join(work, "part"),
                    output_format,
                    count_path,
                )
            rows = int(load_saved(count_path))
        written = sorted(p for p in staging.iterdir() if p.name.startswith("part"))
        names = [str(Path(output).absolute() / p.name) for p in written]
    seconds = time.monotonic() - started
    logger.info(
        "wrote %s rows in %d file(s) in %.1f s", f"{rows:,}", len(names), seconds
    )
    return {"rows": rows, "files": names, "seconds": seconds}


transform = run_transform
"""`tanhguard transform` as a function (the public name of `run_transform`)."""


def _write(flat, prefix: str, output_format: str, schema: pa.Schema, config: Config):
    if output_format == "parquet":
        return (
            flat
            | "ToTables" >> beam.Map(lambda batch: pa.Table.from_batches([batch]))
            | "WriteParquet"
            >> beam.io.WriteToParquetBatched(
                prefix, schema, file_name_suffix=".parquet"
            )
        )
    elif output_format == "tfrecord":
        import tensorflow as tf
        from tensorflow_transform.tf_metadata import schema_utils

        spec = {field.name: tf.io.VarLenFeature(tf.float32) for field in schema}
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
