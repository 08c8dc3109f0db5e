"""glibc's malloc setting (`pipeline/malloc.py`): set once, where it can be,
and it keeps freed memory for the next batch."""

import os
import subprocess
import sys

import pytest

from tanhguard.errors import ConfigError
from tanhguard.pipeline.malloc import (
    MALLOC_ENV,
    MMAP_THRESHOLD,
    MMAP_THRESHOLD_ENV,
    TRIM_THRESHOLD,
    TRIM_THRESHOLD_ENV,
    is_glibc,
    keep_freed_memory,
    malloc_enabled,
)

needs_glibc = pytest.mark.skipif(not is_glibc(), reason="glibc's malloc only")

# A batch's worth of numpy temporaries (a 65,536-row float64 column: 0.5 MB
# each), made and freed again and again; prints the page faults (first
# touches of fresh memory) of the last 200 rounds.
_BATCHES = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from tanhguard.pipeline.malloc import keep_freed_memory
    assert keep_freed_memory()
x = np.random.default_rng(0).standard_normal(65536)
def batch():
    a = x * 2.0
    b = a.astype(np.int64)
    c = x[x > 0.1]
    d = np.sort(a)
for _ in range(20):
    batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in (MMAP_THRESHOLD_ENV, TRIM_THRESHOLD_ENV)
    }
    done = subprocess.run(
        [sys.executable, "-c", _BATCHES, mode],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return int(done.stdout.split()[-1])


@needs_glibc
def test_freed_memory_is_reused_instead_of_mapped_again():
    default, kept = _faults("default"), _faults("keep")
    # glibc's defaults give a batch's blocks back and fault them in again
    # (over 400 pages a round on the machine this was written on); kept,
    # the rounds reuse them (none).
    assert default > 1000
    assert kept < default / 10


@needs_glibc
def test_sets_the_variables_for_the_processes_it_starts():
    environ = {}
    assert keep_freed_memory(environ) is True
    assert environ == {
        MMAP_THRESHOLD_ENV: str(MMAP_THRESHOLD),
        TRIM_THRESHOLD_ENV: str(TRIM_THRESHOLD),
    }


@pytest.mark.parametrize(
    "variable, value",
    [
        (MMAP_THRESHOLD_ENV, "131072"),
        (TRIM_THRESHOLD_ENV, "131072"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072"),
        (MALLOC_ENV, "0"),
    ],
)
def test_a_users_own_setting_is_left_alone(variable, value):
    environ = {variable: value}
    assert keep_freed_memory(environ) is False
    assert environ == {variable: value}


@needs_glibc
def test_other_tunables_do_not_count_as_a_malloc_choice():
    environ = {"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F", MALLOC_ENV: "1"}
    assert keep_freed_memory(environ) is True
    assert environ[TRIM_THRESHOLD_ENV] == str(TRIM_THRESHOLD)


def test_the_switch_takes_0_or_1_and_names_itself_otherwise():
    assert malloc_enabled({}) is True
    assert malloc_enabled({MALLOC_ENV: "1"}) is True
    assert malloc_enabled({MALLOC_ENV: " 0 "}) is False
    with pytest.raises(ConfigError, match="TANHGUARD_MALLOC must be 0 or 1"):
        malloc_enabled({MALLOC_ENV: "off"})
    # Left alone by the command line; `malloc_enabled` reports it where a
    # job starts (`run_analyze`).
    environ = {MALLOC_ENV: "off"}
    assert keep_freed_memory(environ) is False
