"""The AVX2-sort switch for AMD Zen 4 (`pipeline/simd.py`)."""

import importlib.metadata

import pytest

from tanhguard.pipeline.simd import (
    AVX512_TARGETS,
    NPY_DISABLE,
    prefer_avx2_sort,
    slow_avx512_sort,
)


def _cpuinfo(vendor: str, family: int, flags: str) -> str:
    processor = (
        f"processor\t: {{n}}\nvendor_id\t: {vendor}\ncpu family\t: {family}\n"
        f"model\t\t: 17\nflags\t\t: fpu sse2 {flags}\n"
    )
    return "\n".join(processor.format(n=n) for n in range(2))


@pytest.mark.parametrize(
    "vendor, family, flags, slow",
    [
        ("AuthenticAMD", 25, "avx2 avx512f avx512bw avx512_bf16", True),  # Zen 4
        ("AuthenticAMD", 25, "avx2", False),  # Zen 3: no AVX-512
        ("AuthenticAMD", 26, "avx2 avx512f avx512bw", False),  # Zen 5
        ("GenuineIntel", 6, "avx2 avx512f avx512bw", False),  # Ice Lake
        ("AuthenticAMD", 25, "avx2 avx512fake", False),  # a flag is a whole word
    ],
)
def test_slow_avx512_sort_is_zen_4_only(vendor, family, flags, slow):
    assert slow_avx512_sort(_cpuinfo(vendor, family, flags)) is slow


@pytest.fixture
def zen4(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(_cpuinfo("AuthenticAMD", 25, "avx2 avx512f"))
    return str(path)


def test_zen_4_with_numpy_2_gets_the_avx2_kernels(zen4):
    environ = {}
    done = prefer_avx2_sort(environ, zen4, numpy_loaded=False)
    numpy_2 = int(importlib.metadata.version("numpy").split(".")[0]) >= 2
    # NumPy 1.26 (the TFX environment) has no AVX2 sort: it is left alone.
    assert done is numpy_2
    assert environ == ({NPY_DISABLE: AVX512_TARGETS} if numpy_2 else {})


@pytest.mark.parametrize("value", ["", "AVX512_SPR"])
def test_a_users_setting_is_kept(zen4, value):
    environ = {NPY_DISABLE: value}
    assert not prefer_avx2_sort(environ, zen4, numpy_loaded=False)
    assert environ == {NPY_DISABLE: value}


def test_nothing_changes_once_numpy_is_imported_or_elsewhere(zen4, tmp_path):
    environ = {}
    assert not prefer_avx2_sort(environ, zen4, numpy_loaded=True)
    assert not prefer_avx2_sort(environ, str(tmp_path / "absent"), numpy_loaded=False)
    intel = tmp_path / "intel"
    intel.write_text(_cpuinfo("GenuineIntel", 6, "avx512f"))
    assert not prefer_avx2_sort(environ, str(intel), numpy_loaded=False)
    assert environ == {}
