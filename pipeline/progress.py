"""Progress through `logging`: the stage, rows read per file and the rate.

Every module logs under the `tanhguard` logger (`logging.getLogger(__name__)`
in `tanhguard.*`); library functions never print. The command line shows
INFO and above on stderr as `tanhguard: ...` lines (`configure_logging`);
`--quiet` keeps warnings and errors, `--verbose` adds debug lines.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from types import ModuleType
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


def quiet_third_party(import_tensorflow: bool) -> None:
    """Keeps TensorFlow's, absl's and the Google libraries' start-up lines
    off the terminal (`--verbose` does not call this).

    TensorFlow logs from C++ before Python's logging exists: the oneDNN,
    CUDA-driver and CPU-feature lines and absl's "All log messages before
    absl::InitializeLog()" go straight to file descriptor 2.
    `TF_CPP_MIN_LOG_LEVEL=3` (unless the user set it) removes the ones TF
    logs later (a failed `cuInit` when the first op runs, also in Beam's
    worker processes, which inherit it); the absl lines ignore it, so fd 2 is
    pointed at a temporary file for the import itself and the captured text
    is written back if the import fails (not when a signal stops it).
    Third-party Python warnings (FutureWarning, DeprecationWarning from
    google-auth, Beam, TFT) are ignored; tanhguard's own warnings are not.
    """
    global _QUIET
    _QUIET = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", module=r"(?!tanhguard)")
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if import_tensorflow:
        load_tensorflow()


# Whether `quiet_third_party` was called: `load_tensorflow` then captures
# TensorFlow's start-up lines.
_QUIET = False


def load_tensorflow() -> ModuleType:
    """`tensorflow`, imported quietly if `quiet_third_party` was called.

    A command that may not need TensorFlow (`analyze` over local CSV or
    Parquet files) imports it here when it does (a TFRecord input, a
    `gs://` path), with the same capture of its start-up lines.
    """
    if "tensorflow" in sys.modules or not _QUIET:
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        except Exception:  # not a signal (KeyboardInterrupt, SystemExit)
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            sys.stderr.flush()
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tensorflow


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
