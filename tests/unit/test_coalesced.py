"""`batch_layout.coalesced`: consecutive record batches joined into batches of
at least a number of rows, values and order kept; `batch_rows`: how many."""

import numpy as np
import pyarrow as pa
import pytest

from tanhguard.pipeline import batch_layout
from tanhguard.pipeline.batch_layout import batch_rows, coalesced
from tanhguard.transforms.config import parse_config


def _batches(sizes, start=0):
    """Batches of `sizes` rows: `x` counts up from `start`, `v` is a list
    column (two values a row, none every third row)."""
    batches = []
    for size in sizes:
        x = np.arange(start, start + size, dtype=np.float32)
        v = [None if int(i) % 3 == 0 else [i, -i] for i in x.tolist()]
        batches.append(
            pa.RecordBatch.from_arrays(
                [pa.array(x), pa.array(v, type=pa.list_(pa.float32()))],
                names=["x", "v"],
            )
        )
        start += size
    return batches


# The ways of joining this pyarrow has: a table's `combine_chunks` (every
# pyarrow) and `concat_batches` (pyarrow 19 and later).
JOINS = ["table"] + (["concat_batches"] if hasattr(pa, "concat_batches") else [])


@pytest.fixture(params=JOINS)
def join(request, monkeypatch):
    if request.param == "table":
        monkeypatch.delattr(pa, "concat_batches", raising=False)
    return request.param


@pytest.mark.parametrize(
    "sizes, rows, expected",
    [
        ([3, 3, 3, 3, 3], 7, [9, 6]),  # joined until 7 are reached; the rest
        ([10, 2, 2], 5, [10, 4]),  # a batch that holds enough passes as is
        ([4, 4], 8, [8]),
        ([5], 100, [5]),  # fewer rows than asked: one batch of them
        ([0, 6, 0, 2], 4, [6, 2]),
    ],
)
def test_joins_consecutive_batches_keeping_rows_in_order(join, sizes, rows, expected):
    source = _batches(sizes)
    joined = list(coalesced(iter(source), rows))
    assert [batch.num_rows for batch in joined] == expected
    whole = pa.Table.from_batches(source)
    assert pa.Table.from_batches(joined).equals(whole)
    for batch in joined:
        assert batch.schema == source[0].schema


def test_batches_without_rows_give_one_empty_batch(join):
    joined = list(coalesced(_batches([0, 0]), 4))
    assert [batch.num_rows for batch in joined] == [0]
    assert joined[0].schema.names == ["x", "v"]


def test_no_batches_give_none():
    assert list(coalesced(iter([]), 4)) == []


@pytest.mark.parametrize(
    "features, rows",
    [
        ({f"f{i}": {} for i in range(10)}, 262_144),  # 10 values a row
        ({"v": {"shape": [200]}, "x": {}}, 10 * 2**18 // 201),
        ({"v": {"shape": [20_000_000]}}, 1),  # wider than a batch: a row
    ],
)
def test_a_batch_holds_about_batch_values_values(features, rows):
    config = parse_config({"features": features})
    assert batch_layout.BATCH_VALUES == 10 * 2**18  # 10 MiB of float32
    assert batch_rows(config) == rows
