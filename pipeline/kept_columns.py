"""Columns copied from the input rows to the output rows unchanged: labels,
ids, weights (`--keep` of `tanhguard transform` and `tanhguard run`).

The transform graph sees the configured features only; kept columns ride
beside them, row for row, in the same record batches (after the features),
and come first in the output rows. Their types are settled before the job
starts (`kept_schema`), so that every output shard has one schema:

- CSV: text, each cell's as it is (a CSV names no types, and a guess would
  change ids: `00042` -> 42, 20-digit ids -> one float); an empty cell is
  missing;
- Parquet: the column's values, as int64 for any integer type, float64 for
  any float type, bool, or text (a dictionary column: its values' type); a
  column of Arrow's `null` type (pandas' all-None column) takes the other
  files' type;
- TFRecord input is not read with kept columns (a `tf.Example` names no
  column types); in TFX, the module's `passthrough` carries them.

Every file must agree (integers and floats meet as float64). A `tf.Example`
holds int64, float32 and bytes lists: in TFRecord output a boolean becomes
0 or 1, a float64 is rounded to float32 (beyond its range, +-inf), text is
UTF-8 bytes; a missing value is an empty list.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from tanhguard.errors import ConfigError, DataError
from tanhguard.transforms.config import Config

# What `--keep` is called in messages.
FLAG = "--keep"


def taken_names(config: Config) -> set[str]:
    """Names a kept column must not have: the features', their source and
    CSV columns', and every output column's (CSV output spells a vector
    output's cells `name_0` ..., `name__missing_0` ... too)."""
    names = set(config.features)
    for name in config.features:
        names.add(config.source_column(name))
        names.update(config.csv_columns(name))
    for name, feature in config.features.items():
        for output in config.output_names(name):
            names.add(output)
            if feature.is_vector:  # as CSV output spells its cells
                names.update(f"{output}_{i}" for i in range(feature.size))
    return names


def check_kept_names(keep: Sequence[str], config: Config) -> None:
    """Raises ConfigError for a kept name given twice, empty, or taken by the
    config (`taken_names`)."""
    seen: set[str] = set()
    taken = taken_names(config)
    for name in keep:
        if not name.strip():
            raise ConfigError(f"{FLAG}: an empty column name")
        if name in seen:
            raise ConfigError(f"{FLAG} `{name}`: given twice")
        seen.add(name)
        if name in taken:
            raise ConfigError(
                f"{FLAG} `{name}`: the config reads or writes a column of that "
                "name (a feature, its source column or an output); a kept column "
                "is copied beside them and needs a name of its own"
            )


def kept_type(kind: pa.DataType) -> pa.DataType | None:
    """The type a kept column of Arrow type `kind` gets, or None if kept
    columns cannot have it (`null`: a column with no value, any type)."""
    if pa.types.is_null(kind):
        return pa.null()
    if pa.types.is_dictionary(kind):
        return kept_type(kind.value_type)
    if pa.types.is_integer(kind):
        return pa.int64()
    if pa.types.is_floating(kind):
        return pa.float64()
    if pa.types.is_boolean(kind):
        return pa.bool_()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pa.string()
    return None


def merge_types(
    found: dict[str, tuple[str, pa.DataType]],
    path: str,
    types: dict[str, pa.DataType],
) -> None:
    """Adds one file's kept types (`types`, by column) to `found` (by column:
    the first file that gave the type, and the type), checking they agree."""
    for name, kind in types.items():
        kept = kept_type(kind)
        if kept is None:
            raise DataError(
                f"{path}: {FLAG} `{name}`: the column has type {kind}; kept "
                "columns are integers, floats, booleans or text"
            )
        if name not in found or pa.types.is_null(found[name][1]):
            found[name] = (path, kept)
            continue
        first_path, before = found[name]
        if before == kept or pa.types.is_null(kept):
            continue
        numbers = {before, kept} == {pa.int64(), pa.float64()}
        if numbers:
            found[name] = (first_path, pa.float64())
            continue
        raise DataError(
            f"{path}: {FLAG} `{name}`: the column has type {kept} here but "
            f"{before} in {first_path}; a kept column needs one type in every file"
        )


def schema_of(found: dict[str, tuple[str, pa.DataType]], keep: Sequence[str]):
    """The kept columns' schema from `merge_types`' types (all null: text)."""
    fields = []
    for name in keep:
        kind = found[name][1]
        fields.append(pa.field(name, pa.string() if pa.types.is_null(kind) else kind))
    return pa.schema(fields)


def with_kept(
    batch: pa.RecordBatch,
    kept: Sequence[pa.Array],
    keep: pa.Schema | None,
    where: str = "",
) -> pa.RecordBatch:
    """`batch` with the kept columns `kept` after its own, as `keep` types
    them (`where`: the file and rows, for the error).

    Raises:
      DataError: a value does not fit the type (an unsigned integer above
        int64's maximum).
    """
    if keep is None:
        return batch
    arrays = list(batch.columns)
    fields = list(batch.schema)
    for field, column in zip(keep, kept, strict=True):
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except pa.ArrowInvalid as error:
                message = " ".join(str(error).split())
                raise DataError(f"{where}: {FLAG} `{field.name}`: {message}") from None
        arrays.append(column)
        fields.append(field)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
