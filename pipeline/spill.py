"""The first pass's parsed values, kept on local disk for the later passes.

Every analysis pass needs the same float32 values, `[rows, D]` per batch
(`batch_layout.dense_batch`). Parsing CSV text or `tf.Example` records into
them is most of a pass's cost: on 3M rows x 10 columns of CSV, 1.7 s of CPU
per pass, where writing the parsed batches as `.npy` files takes 0.23 s and
reading them back 0.02 s (Parquet: 0.28 s to read and lay out, so Parquet is
read again instead). So for CSV and TFRecord input the first pass also writes
each batch it parses into the work directory's scratch space, and the later
passes (the MADs, the fit) read those files instead of the input.

It is an optimization only, with the input as its fallback:
- only when the scratch directory is local (no `--temp_location`, see
  `workdir`), and not with `TANHGUARD_SPILL=0`;
- a batch is written only while the filesystem keeps `_RESERVE_FRACTION` of
  its size and `_RESERVE_BYTES` free after it; past that, nothing more is
  written and the later passes read the input again;
- the later passes use the files only if they hold exactly the rows the
  first pass counted (a batch missing or repeated: the input is read again);
- the files are removed after the last pass (and with the scratch space,
  whatever happens).
They take 4 bytes a value (400 MB for 10M rows x 10 columns).
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import apache_beam as beam
import numpy as np

from tanhguard.errors import ConfigError
from tanhguard.pipeline import files as fs

if TYPE_CHECKING:
    import pyarrow as pa

    from tanhguard.transforms.config import Config

logger = logging.getLogger(__name__)

SPILL_ENV = "TANHGUARD_SPILL"
SPILLED_FORMATS = ("csv", "tfrecord")
_RESERVE_BYTES = 1 << 30  # free bytes a batch must leave on the filesystem
_RESERVE_FRACTION = 0.1  # and this share of the filesystem's size
_FULL = "FULL"  # a file whose presence says a batch was not written


def spill_enabled() -> bool:
    """`TANHGUARD_SPILL`: `1` (the default) or `0`.

    Raises:
      ConfigError: any other value.
    """
    value = os.environ.get(SPILL_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise ConfigError(f"{SPILL_ENV} must be 0 or 1. Received: {value!r}")
    return value != "0"


def spill_dir(scratch: str, fmt: str) -> str | None:
    """Where the first pass keeps its parsed batches, or None when it does
    not (see the module's docstring)."""
    if fmt not in SPILLED_FORMATS or not fs.is_local(scratch) or not spill_enabled():
        return None
    return posixpath.join(scratch, "parsed")


def _room_for(directory: str, size: int) -> bool:
    usage = shutil.disk_usage(directory)
    reserve = max(_RESERVE_BYTES, int(usage.total * _RESERVE_FRACTION))
    return usage.free - size >= reserve


def write_batch(directory: str, x: np.ndarray) -> None:
    """Keeps one parsed batch (or marks the spill incomplete, when the disk
    is short of room). Called by the first pass's workers."""
    os.makedirs(directory, exist_ok=True)
    if os.path.exists(os.path.join(directory, _FULL)):
        return
    if not _room_for(directory, x.nbytes):
        open(os.path.join(directory, _FULL), "wb").close()
        return
    name = uuid.uuid4().hex
    partial = os.path.join(directory, f".{name}.partial")
    with open(partial, "wb") as handle:
        np.save(handle, x, allow_pickle=False)
    os.replace(partial, os.path.join(directory, f"{name}.npy"))


def spilled(batch: pa.RecordBatch, config: Config, directory: str) -> list[np.ndarray]:
    """`dense_batch`, keeping `x` in `directory` (the first pass's input)."""
    from tanhguard.pipeline.batch_layout import dense_batch

    x, missing = dense_batch(batch, config)
    write_batch(directory, x)
    return [x, missing]


def _batches(directory: str) -> list[str]:
    return sorted(
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if name.endswith(".npy")
    )


def usable(directory: str | None, rows: int) -> bool:
    """Whether `directory` holds every parsed batch: exactly `rows` rows
    (the first phase's count) and no batch left out for lack of room."""
    if directory is None or not os.path.isdir(directory):
        return False
    if os.path.exists(os.path.join(directory, _FULL)):
        logger.info("the disk is short of room: the next passes read the input again")
        return False
    kept = sum(np.load(path, mmap_mode="r").shape[0] for path in _batches(directory))
    if kept != rows:
        logger.info(
            "the parsed values kept hold %d rows, not %d: the next passes read "
            "the input again",
            kept,
            rows,
        )
    return kept == rows


class ReadSpilled(beam.PTransform):
    """The batches `write_batch` kept -> a PCollection of float32 `[rows, D]`."""

    def __init__(self, directory: str):
        super().__init__()
        self._directory = directory

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        def load(path: str) -> Iterator[np.ndarray]:
            yield np.load(path, allow_pickle=False)

        return (
            pipeline
            | "ListBatches" >> beam.Create(_batches(self._directory))
            | "Reshuffle" >> beam.Reshuffle()
            | "Load" >> beam.FlatMap(load)
        )


def remove(directory: str | None) -> None:
    """Removes the kept batches (after the last pass that reads them)."""
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
