"""Reading the next batches on a thread while the caller works on this one.

Arrow's streaming CSV reader parses a block when it is asked for the next
batch, on the asking thread, so the analysis's work on a batch and the
parsing of the next one take turns, and one of the machine's two cores idles
most of the time. Arrow parses with the interpreter lock released, so a
thread that asks for the batches ahead of the caller (`read_ahead`) runs
beside it. A generator with a bounded queue is all it takes; Arrow has no
option for it (its `use_threads` spreads one block's columns over threads,
which the streaming reader then waits for), and `concurrent.futures` would
need one future per batch and the same bookkeeping to stop early.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")

# Seconds between the reading thread's looks at whether the caller has
# stopped, while the queue is full.
_POLL_SECONDS = 0.1
# Seconds the caller waits for the reading thread to stop when it leaves
# early (the thread finishes at most the batch it is reading).
_JOIN_SECONDS = 5.0
_END = object()


def read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """`items`, read on a thread of their own up to `depth` items ahead.

    What `items` raises is raised here, in order, after the items before it.
    Leaving early (`close()`, an error raised here, or the generator's end
    when nothing refers to it any more) stops the thread and closes `items`
    on it, so its files are closed too. Until then the thread waits for room
    in the queue: a generator dropped in a reference cycle keeps it, and the
    file, until the garbage collector finalizes the generator.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1. Received: {depth}")
    return _read_ahead(items, depth)


def _read_ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stopped = threading.Event()

    def put(entry: tuple[bool, object]) -> bool:
        while not stopped.is_set():
            try:
                ready.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, _END))
        except BaseException as error:  # handed to the caller, raised there
            put((False, error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=read, name="tanhguard-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = ready.get()
            if not ok:
                raise item  # type: ignore[misc]
            if item is _END:
                return
            yield item  # type: ignore[misc]
    finally:
        stopped.set()
        # Not on the reading thread itself: a generator left in a reference
        # cycle is finalized by whichever thread runs the garbage collector.
        if threading.current_thread() is not thread:
            thread.join(_JOIN_SECONDS)
