"""NumPy's sorting kernels on AMD Zen 4: AVX2 instead of AVX-512.

NumPy 2 sorts and partitions with x86-simd-sort, and picks its AVX-512
kernels on any CPU with AVX-512. Their partition step stores with
`vpcompress` to memory, which Zen 4 (AMD family 25 with AVX-512) runs in
microcode: on the 2-core Zen 4 machine tanhguard is measured on, `np.sort`
of 1M float32 took 31.5 ms with the AVX-512 kernels and 5.6 ms with the AVX2
ones, `np.partition` 6.2 ms and 1.1 ms; every other NumPy operation the
analysis uses ran at the same speed either way (numpy/x86-simd-sort#6,
numpy/numpy#32690). The analysis sorts every value it reads (its quantile
summaries), so the command line asks NumPy, through its own switch
`NPY_DISABLE_CPU_FEATURES`, to leave the AVX-512 kernels out on such a CPU.

It is set only when the user has not set the variable (an empty value keeps
AVX-512), before NumPy is imported, and for NumPy 2 only: NumPy 1.26 has no
AVX2 sort, and without AVX-512 it sorts 2x slower. It reaches the processes
the command starts (the graph process, Beam's workers) through the
environment.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import MutableMapping

NPY_DISABLE = "NPY_DISABLE_CPU_FEATURES"
# NumPy 2's names for its AVX-512 dispatch targets, old and new (a name this
# NumPy does not know is ignored).
AVX512_TARGETS = (
    "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL"
)


def slow_avx512_sort(cpuinfo: str) -> bool:
    """Whether `/proc/cpuinfo`'s text describes AMD Zen 4: family 25 with
    AVX-512 (Zen 3, also family 25, has none; Zen 5 is family 26)."""
    first = cpuinfo.split("\n\n", 1)[0]
    fields: dict[str, str] = {}
    for line in first.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return (
        fields.get("vendor_id") == "AuthenticAMD"
        and fields.get("cpu family") == "25"
        and "avx512f" in fields.get("flags", "").split()
    )


def _numpy_major() -> int:
    try:
        return int(importlib.metadata.version("numpy").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return 0


def prefer_avx2_sort(
    environ: MutableMapping[str, str] = os.environ,
    cpuinfo_path: str = "/proc/cpuinfo",
    numpy_loaded: bool | None = None,
) -> bool:
    """Sets `NPY_DISABLE_CPU_FEATURES` to the AVX-512 targets on Zen 4 with
    NumPy 2, unless it is set or NumPy is imported (`numpy_loaded`, by
    default: in this process). Returns whether it did."""
    if numpy_loaded is None:
        numpy_loaded = "numpy" in sys.modules
    if NPY_DISABLE in environ or numpy_loaded or _numpy_major() < 2:
        return False
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as handle:
            cpuinfo = handle.read(1 << 16)
    except OSError:  # not Linux
        return False
    if not slow_avx512_sort(cpuinfo):
        return False
    environ[NPY_DISABLE] = AVX512_TARGETS
    return True
