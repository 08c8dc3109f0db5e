"""The record-batch layout every reader produces and the analysis consumes.

Each configured feature is a `list<float32>` (or `list<int64>`) column: a row
holds one value for a scalar, d values for a vector `[d]`, and no value when
missing. TFT reads these batches through `tensor_adapter_config` (a
`SparseTensor` per feature, as a `tf.io.VarLenFeature` gives), and the batch
job's own passes through `dense_batch` (numpy, the same view the graph's
`densify` gives).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.tfxio import tensor_adapter

from tanhguard.errors import DataError
from tanhguard.transforms.config import Config


def arrow_value_type(dtype: str) -> pa.DataType:
    """The Arrow type of a feature's values: int64 for `dtype: int`."""
    return pa.int64() if dtype == "int" else pa.float32()


def arrow_schema(config: Config) -> pa.Schema:
    """The record batch schema: one list column per configured feature."""
    return pa.schema(
        [
            pa.field(name, pa.list_(arrow_value_type(feature.dtype)))
            for name, feature in config.features.items()
        ]
    )


def raw_feature_spec(config: Config) -> dict[str, tf.io.VarLenFeature]:
    """The raw features as `tf.Example` parsing specs: a `VarLenFeature` each
    (float32, or int64 for `dtype: int`), so an absent value stays missing."""
    return {
        name: tf.io.VarLenFeature(tf.int64 if feature.dtype == "int" else tf.float32)
        for name, feature in config.features.items()
    }


def tensor_adapter_config(config: Config) -> tensor_adapter.TensorAdapterConfig:
    """How TFT turns the record batches into tensors: a `SparseTensor` each.

    The same representation a `tf.io.VarLenFeature` gives when parsing
    `tf.Example`s, so missing values stay distinguishable from NaN.
    """
    representations = {
        name: schema_pb2.TensorRepresentation(
            varlen_sparse_tensor=schema_pb2.TensorRepresentation.VarLenSparseTensor(
                column_name=name
            )
        )
        for name in config.features
    }
    return tensor_adapter.TensorAdapterConfig(arrow_schema(config), representations)


def _column_values(array: pa.Array, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """A column's values (NaN or 0 where empty) and its validity mask."""
    valid = np.asarray(array.is_valid(), dtype=bool)
    if dtype == "int":
        values = np.asarray(array.fill_null(0), dtype=np.int64)
    else:
        values = np.asarray(array.fill_null(np.nan), dtype=np.float32)
    return values, valid


def feature_column(
    path: str,
    name: str,
    columns: Sequence[str],
    arrays: Sequence[pa.Array],
    dtype: str,
    first_row: int,
) -> pa.ListArray:
    """The `list<...>` column of one feature from its columns `arrays` (one
    per element) for a block of rows starting at row `first_row`.

    Raises:
      DataError: an integer vector with some elements empty.
    """
    parts = [_column_values(array, dtype) for array in arrays]
    values = np.stack([p[0] for p in parts], axis=1)
    valid = np.stack([p[1] for p in parts], axis=1)
    present = valid.any(axis=1)
    partial = present & ~valid.all(axis=1)
    # A float vector with some empty cells: those elements are NaN.
    if partial.any() and dtype == "int":
        row = first_row + int(np.argmax(partial))
        raise DataError(
            f"{path}: row {row}: feature `{name}`: some of its columns "
            f"{list(columns)} are empty and some are not; an integer vector "
            "must be complete or entirely empty"
        )
    kept = values[present].reshape(-1)
    offsets = np.zeros(len(present) + 1, dtype=np.int32)
    np.cumsum(present * len(columns), out=offsets[1:])
    return pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(kept, type=arrow_value_type(dtype))
    )


def conform(
    path: str, batch: pa.RecordBatch, config: Config, noun: str, first: int
) -> pa.RecordBatch:
    """Casts decoded list columns to the layout, checking vector lengths.

    Raises:
      DataError: a row (`noun` `first` + i) holds a number of values other
        than the feature's size (or none).
    """
    schema = arrow_schema(config)
    arrays = []
    for name, feature in config.features.items():
        column = batch.column(name).cast(schema.field(name).type)
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        lengths = np.nan_to_num(lengths.astype(np.float64), nan=0.0)
        bad = (lengths != 0) & (lengths != feature.size)
        if bad.any():
            index = int(np.argmax(bad))
            raise DataError(
                f"{path}: {noun} {first + index}: feature `{name}`: holds "
                f"{int(lengths[index])} value(s); `shape` needs "
                f"{feature.size} (or none: missing)"
            )
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def dense_batch(batch: pa.RecordBatch, config: Config) -> list[np.ndarray]:
    """A record batch -> `[x, missing]`, the first phase's input.

    `x` is float32 `[rows, D]`, every feature's elements side by side in
    config order, NaN where a value is missing; `missing` is its bool mask.
    The same as `tanhguard.transforms.mappers.densify` in the graph: a row
    with fewer values than the feature's size misses its trailing elements.
    The readers have checked that no row holds more (`conform`).
    """
    rows = batch.num_rows
    parts, masks = [], []
    for name, feature in config.features.items():
        column = batch.column(name)
        lengths = pc.list_value_length(column).fill_null(0)
        lengths = np.asarray(lengths, dtype=np.int64)
        values = np.asarray(column.flatten(), dtype=np.float32)
        if feature.size == 1:
            present = (lengths == 1)[:, np.newaxis]
        else:
            present = np.arange(feature.size)[np.newaxis, :] < lengths[:, np.newaxis]
        x = np.full((rows, feature.size), np.nan, np.float32)
        x[present] = values
        parts.append(x)
        masks.append(~present)
    return [np.concatenate(parts, axis=1), np.concatenate(masks, axis=1)]
