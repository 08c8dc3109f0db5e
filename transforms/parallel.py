"""Per-column work of the analysis on every core of the machine.

The first phase's quantile summaries and the fit phase's per-column counts
are independent across columns, and their cost is in numpy loops (sorts,
ufuncs, bincount) that release the GIL. Run in a pool of threads, one pass
over a batch uses every core of the process, whatever the Beam runner: the
in-process DirectRunner executes one bundle at a time on one thread.

`TANHGUARD_THREADS` sets the pool's size (default: the CPUs this process may
run on); 1 runs everything on the calling thread. Batches under
`MIN_PARALLEL_ROWS` rows are not worth a hand-off.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from tanhguard.errors import ConfigError

THREADS_ENV = "TANHGUARD_THREADS"
MIN_PARALLEL_ROWS = 4096

T = TypeVar("T")
R = TypeVar("R")

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def thread_count() -> int:
    """The pool's size: `TANHGUARD_THREADS`, else the usable CPUs.

    Raises:
      ConfigError: `TANHGUARD_THREADS` is not a positive integer.
    """
    configured = os.environ.get(THREADS_ENV, "").strip()
    if configured:
        try:
            count = int(configured)
        except ValueError:
            count = 0
        if count < 1:
            raise ConfigError(
                f"{THREADS_ENV} must be a positive integer. Received: {configured!r}"
            )
        return count
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _executor(size: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != size:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(size, thread_name_prefix="tanhguard")
            _pool_size = size
        return _pool


def map_columns(function: Callable[[T], R], items: Sequence[T], rows: int) -> list[R]:
    """`[function(item) for item in items]`, on the pool when it pays (more
    than one thread and item, and at least `MIN_PARALLEL_ROWS` rows)."""
    size = min(thread_count(), len(items))
    if size < 2 or rows < MIN_PARALLEL_ROWS:
        return [function(item) for item in items]
    return list(_executor(thread_count()).map(function, items))
