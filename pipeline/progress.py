"""Progress through `logging`: the stage, rows read per file and the rate.

Every module logs under the `tanhguard` logger (`logging.getLogger(__name__)`
in `tanhguard.*`); library functions never print. The command line shows
INFO and above on stderr as `tanhguard: ...` lines (`configure_logging`);
`--quiet` keeps warnings and errors, `--verbose` adds debug lines.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger("tanhguard")

# Seconds between two progress lines for one file.
INTERVAL = 5.0

_HANDLER_NAME = "tanhguard-cli"


def configure_logging(level: int = logging.INFO) -> None:
    """Shows the `tanhguard` logger's records at `level` and above on stderr,
    as `tanhguard: message` (replacing the handler a previous call set)."""
    root = logging.getLogger("tanhguard")
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("tanhguard: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def counted(path: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Passes `batches` through, logging rows read and the rate per file.

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
            logger.info(
                "reading %s: %s rows (%s rows/s)", path, f"{rows:,}", f"{rate:,.0f}"
            )
            last = now
        yield batch
    elapsed = time.monotonic() - started
    logger.info(
        "read %s: %s rows in %.1f s (%s rows/s)",
        path,
        f"{rows:,}",
        elapsed,
        f"{rows / max(elapsed, 1e-9):,.0f}",
    )
