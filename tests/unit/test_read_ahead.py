"""`read_ahead`: the items in order, errors where they happened, a bounded
look-ahead, and a clean stop when the caller leaves early."""

import threading
import time

import pytest

from tanhguard.pipeline.read_ahead import read_ahead


class Source:
    """A generator's worth of items that records what was asked of it."""

    def __init__(self, count: int, fail_at: int | None = None):
        self.count = count
        self.fail_at = fail_at
        self.produced = 0
        self.closed = threading.Event()
        self.thread_names: set[str] = set()

    def __iter__(self):
        try:
            for i in range(self.count):
                self.thread_names.add(threading.current_thread().name)
                if i == self.fail_at:
                    raise ValueError(f"bad item {i}")
                self.produced += 1
                yield i * i
        finally:
            self.closed.set()


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_gives_every_item_in_order_read_on_another_thread(depth):
    source = Source(50)
    assert list(read_ahead(iter(source), depth)) == [i * i for i in range(50)]
    assert threading.current_thread().name not in source.thread_names
    assert source.closed.is_set()


def test_an_error_comes_after_the_items_before_it():
    got = []
    with pytest.raises(ValueError, match="bad item 7"):
        for item in read_ahead(iter(Source(20, fail_at=7))):
            got.append(item)
    assert got == [i * i for i in range(7)]


@pytest.mark.parametrize("depth", [1, 3])
def test_reads_at_most_depth_items_ahead(depth):
    source = Source(100)
    items = read_ahead(iter(source), depth)
    assert next(items) == 0
    # One item taken, `depth` in the queue, one more waiting to be put.
    assert _wait_for(lambda: source.produced == depth + 2)
    time.sleep(0.3)
    assert source.produced == depth + 2
    items.close()


def test_leaving_early_stops_the_thread_and_closes_the_source():
    source = Source(10**6)
    before = {t.ident for t in threading.enumerate()}
    items = read_ahead(iter(source))
    assert next(items) == 0
    items.close()
    assert source.closed.wait(10)
    assert _wait_for(
        lambda: (
            not [
                t
                for t in threading.enumerate()
                if t.ident not in before and t.name == "tanhguard-read-ahead"
            ]
        )
    )
    assert source.produced < 10


def test_depth_below_one_is_an_error():
    with pytest.raises(ValueError, match="depth must be at least 1"):
        read_ahead(iter([1]), 0)


def test_a_close_on_the_reading_thread_does_not_wait_for_itself():
    # The garbage collector may finalize a dropped generator on the reading
    # thread; the source's own code runs there too.
    errors, handed = [], threading.Event()
    holder = {}

    def source():
        yield 1
        handed.wait(10)
        try:
            holder["items"].close()
        except BaseException as error:
            errors.append(error)
        yield 2

    items = read_ahead(source(), depth=1)
    holder["items"] = items
    assert next(items) == 1
    handed.set()
    assert _wait_for(
        lambda: (
            not [t for t in threading.enumerate() if t.name == "tanhguard-read-ahead"]
        )
    )
    assert errors == []
    with pytest.raises(StopIteration):
        next(items)
