"""Progress lines on stderr: the stage, rows read and the rate."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pyarrow as pa

# Seconds between two progress lines for one file.
INTERVAL = 5.0


def say(message: str, quiet: bool) -> None:
    """One progress line on stderr, unless `quiet`."""
    if not quiet:
        print(f"tanhguard: {message}", file=sys.stderr, flush=True)


def counted(
    path: str, batches: Iterator[pa.RecordBatch], quiet: bool
) -> Iterator[pa.RecordBatch]:
    """Passes `batches` through, reporting rows read and the rate per file.

    The analysis reads every file once per pass (twice, three times with a
    `mad` clip), so a file is reported that often; `tanhguard run` reads it
    once more to transform it.
    """
    started = last = time.monotonic()
    rows = 0
    for batch in batches:
        rows += batch.num_rows
        now = time.monotonic()
        if now - last >= INTERVAL:
            rate = rows / max(now - started, 1e-9)
            say(f"reading {path}: {rows:,} rows ({rate:,.0f} rows/s)", quiet)
            last = now
        yield batch
    elapsed = time.monotonic() - started
    say(
        f"read {path}: {rows:,} rows in {elapsed:.1f} s "
        f"({rows / max(elapsed, 1e-9):,.0f} rows/s)",
        quiet,
    )
