"""The batch job's numpy densify against the graph's (`densify`), which TFX's
route uses: the first phase must see the same values either way."""

import numpy as np
import pyarrow as pa
import tensorflow as tf

from tanhguard.pipeline.batch_layout import dense_batch
from tanhguard.transforms.config import parse_config
from tanhguard.transforms.mappers import densify


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
