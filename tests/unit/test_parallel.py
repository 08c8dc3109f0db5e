"""`transforms.parallel`: the thread count from `TANHGUARD_THREADS`, and the
per-column map, which must give the serial results in order, on the pool's
threads when it pays."""

import os
import threading

import numpy as np
import pytest

from tanhguard.errors import ConfigError
from tanhguard.transforms.config import parse_config
from tanhguard.transforms.first_phase import FirstPhaseCombineFn
from tanhguard.transforms.fit_phase import FitPhaseCombineFn
from tanhguard.transforms.parallel import (
    MIN_PARALLEL_ROWS,
    THREADS_ENV,
    map_columns,
    thread_count,
)
from tanhguard.transforms.slots import plan_slots


def test_thread_count_defaults_to_the_usable_cpus(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert thread_count() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value, expected", [("1", 1), ("3", 3), (" 2 ", 2)])
def test_thread_count_reads_the_variable(monkeypatch, value, expected):
    monkeypatch.setenv(THREADS_ENV, value)
    assert thread_count() == expected


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_thread_count_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(THREADS_ENV, value)
    with pytest.raises(ConfigError, match=f"{THREADS_ENV} must be a positive"):
        thread_count()


def _where(item):
    return item * item, threading.current_thread().name


def test_map_columns_keeps_order_and_uses_the_pool_for_big_batches(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "2")
    big = map_columns(_where, range(8), MIN_PARALLEL_ROWS)
    assert [value for value, _ in big] == [i * i for i in range(8)]
    assert all(name.startswith("tanhguard") for _, name in big)
    small = map_columns(_where, range(8), MIN_PARALLEL_ROWS - 1)
    assert {name for _, name in small} == {threading.current_thread().name}
    monkeypatch.setenv(THREADS_ENV, "1")
    serial = map_columns(_where, range(8), MIN_PARALLEL_ROWS)
    assert {name for _, name in serial} == {threading.current_thread().name}


def _both_phases(batches, config):
    first = FirstPhaseCombineFn(config)
    accumulator = first.create_accumulator()
    for batch in batches:
        accumulator = first.add_input(accumulator, batch)
    parameters = first.extract_output(accumulator)
    slots = plan_slots(config)
    fit = FitPhaseCombineFn(slots, parameters, None, np.full(len(slots), 5.0))
    accumulator = fit.create_accumulator()
    for x, _ in batches:
        accumulator = fit.add_input(accumulator, x)
    return fit.extract_output(accumulator)


def test_threads_give_the_serial_statistics_to_the_bit(monkeypatch):
    config = parse_config(
        {
            "features": {
                "a": {},
                "b": {"scale": "log_zscore", "clip": {"strategy": "sigma"}},
                "v": {"shape": [3]},
                "pooled": {"shape": [2], "elementwise": False},
            }
        }
    )
    rng = np.random.default_rng(3)
    batches = []
    for _ in range(3):
        x = (rng.standard_t(2, (MIN_PARALLEL_ROWS * 2, 7)) * 10).astype(np.float32)
        x[rng.random(x.shape) < 0.02] = np.inf
        missing = rng.random(x.shape) < 0.05
        x[missing] = np.nan
        batches.append([x, missing])
    monkeypatch.setenv(THREADS_ENV, "1")
    serial = _both_phases(batches, config)
    monkeypatch.setenv(THREADS_ENV, "3")
    threaded = _both_phases(batches, config)
    np.testing.assert_array_equal(threaded, serial)
