"""The batch job's numpy densify against the graph's (`densify`), which TFX's
route uses: the first phase must see the same values either way."""

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from tanhguard.pipeline.batch_layout import dense_batch
from tanhguard.transforms.config import parse_config
from tanhguard.transforms.mappers import densify, densify_all


def test_dense_batch_equals_the_graph_densify_on_sparse_inputs():
    config = parse_config(
        {
            "features": {
                "x": {},
                "n": {"dtype": "int"},
                "v": {"shape": [3]},
            }
        }
    )
    rows = {
        "x": [[1.5], [], None, [float("nan")], [float("inf")], [-2.0]],
        "n": [[3], [2**40 + 1], [], None, [-7], [0]],
        "v": [[1.0, 2.0, 3.0], [], None, [4.0, float("-inf"), 6.0], [7.0], [8.0, 9.0]],
    }
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(rows["x"], pa.list_(pa.float32())),
            pa.array(rows["n"], pa.list_(pa.int64())),
            pa.array(rows["v"], pa.list_(pa.float32())),
        ],
        names=["x", "n", "v"],
    )
    x, missing = dense_batch(batch, config)
    expected_x, expected_missing = [], []
    for name, feature in config.features.items():
        column = rows[name]
        indices = [
            [r, c] for r, row in enumerate(column) for c in range(len(row or []))
        ]
        values = [v for row in column for v in (row or [])]
        sparse = tf.SparseTensor(
            tf.constant(indices or np.zeros((0, 2)), tf.int64),
            tf.constant(values, tf.int64 if feature.dtype == "int" else tf.float32),
            [len(column), feature.size],
        )
        dense, mask = densify(sparse, feature.size)
        expected_x.append(dense.numpy())
        expected_missing.append(mask.numpy())
    np.testing.assert_array_equal(x, np.concatenate(expected_x, axis=1))
    np.testing.assert_array_equal(missing, np.concatenate(expected_missing, axis=1))
    assert x.shape == (6, 5) and x.dtype == np.float32
    # 2**40 + 1 rounds to float32 the same way in both (to 2**40).
    assert x[1, 1] == np.float32(2**40)


def _sparse(rows: list, dtype=tf.float32) -> tf.SparseTensor:
    """A `VarLenFeature`-like SparseTensor of `rows` (lists of values)."""
    indices = [[r, c] for r, row in enumerate(rows) for c in range(len(row))]
    values = [v for row in rows for v in row]
    width = max((len(row) for row in rows), default=0)
    return tf.SparseTensor(
        tf.constant(indices or np.zeros((0, 2)), tf.int64),
        tf.constant(values, dtype),
        [len(rows), width],
    )


def _expected(rows: list, size: int) -> np.ndarray:
    """The dense view in numpy: float32, NaN where a row has no value."""
    dense = np.full((len(rows), size), np.nan, np.float32)
    for r, row in enumerate(rows):
        dense[r, : len(row)] = np.asarray(row, np.float64).astype(np.float32)
    return dense


# Every row full (the values pass through), some rows short (scattered into
# NaN), and an int feature; densified one by one and all at once, eagerly
# and in a graph.
FULL = [[1.5, 2.0], [float("nan"), float("inf")], [-3.0, 4.0]]
SHORT = [[1.0, 2.0], [], [3.0]]
INTS = [[2**40 + 1], [-7], [0]]


@pytest.mark.parametrize("in_graph", [False, True], ids=["eager", "graph"])
def test_full_and_short_sparse_features_densify_as_numpy_does(in_graph):
    features = [(_sparse(FULL), 2), (_sparse(SHORT), 2), (_sparse(INTS, tf.int64), 1)]

    def run():
        return [(d.x, d.missing, d.flat) for d in densify_all(features)]

    got = tf.function(run)() if in_graph else run()
    want = [_expected(FULL, 2), _expected(SHORT, 2), _expected(INTS, 1)]
    for (x, missing, flat), expected, rows in zip(
        got, want, (FULL, SHORT, INTS), strict=True
    ):
        np.testing.assert_array_equal(x.numpy(), expected)
        np.testing.assert_array_equal(flat.numpy(), expected.ravel())
        present = np.zeros(expected.shape, bool)
        for r, row in enumerate(rows):
            present[r, : len(row)] = True
        np.testing.assert_array_equal(missing.numpy(), ~present)
    # Each alone (a full one takes the other branch than with a short one).
    for (values, size), expected in zip(features, want, strict=True):
        np.testing.assert_array_equal(densify(values, size)[0].numpy(), expected)


def test_a_row_with_more_values_than_the_size_is_an_error_when_the_graph_runs():
    # Three rows, six values in all: as many as 3 x 2, but row 0 holds three.
    too_long = _sparse([[1.0, 2.0, 3.0], [4.0, 5.0], [6.0]])
    with pytest.raises(tf.errors.InvalidArgumentError):
        densify(too_long, 2)
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.function(lambda: densify(too_long, 2))()


def test_dense_and_ragged_inputs_densify_as_numpy_does():
    dense = np.array([[1.0, np.nan], [np.inf, -2.0]], np.float32)
    x, missing = densify(tf.constant(dense), 2)
    np.testing.assert_array_equal(x.numpy(), dense)
    assert not missing.numpy().any()
    x, _ = densify(tf.constant([3, -4], tf.int64), 1)
    np.testing.assert_array_equal(x.numpy(), [[3.0], [-4.0]])
    ragged = tf.ragged.constant([[1.0, 2.0], [], [3.0]])
    x, missing = densify(ragged, 2)
    np.testing.assert_array_equal(x.numpy(), _expected([[1.0, 2.0], [], [3.0]], 2))
    np.testing.assert_array_equal(
        missing.numpy(), [[False, False], [True, True], [False, True]]
    )
