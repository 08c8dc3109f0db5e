"""Statistics read back from a saved transform graph.

The last analysis phase's output, the statistics vector, is an analyzer output:
TFT bakes it into the saved `transform_fn` as a captured constant named
`tanhguard_stats_vector`. Reading it back gives stats.json's numbers from the
graph alone: the batch job does this instead of passing files between workers,
and a TFX user does it on the Transform component's `transform_graph`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from tanhguard.transforms.config import Config
from tanhguard.transforms.preprocessing import STATS_VECTOR_NAME, unpack_stats_vector


class GraphStatsError(ValueError):
    """A transform graph without tanhguard's statistics."""


def read_stats_vector(transform_output: str | Path) -> np.ndarray:
    """The statistics vector baked into `transform_output/transform_fn`.

    Args:
      transform_output: A TFT output directory: tanhguard's artifacts, or a
        TFX Transform component's `transform_graph` URI.

    Raises:
      GraphStatsError: the graph was not built by tanhguard.
    """
    path = str(Path(transform_output) / "transform_fn")
    function = tf.saved_model.load(path).transform_fn
    try:
        operation = function.graph.get_operation_by_name(STATS_VECTOR_NAME)
    except KeyError:
        raise GraphStatsError(
            f"{transform_output}: the transform graph has no `{STATS_VECTOR_NAME}`; "
            "it was not built by tanhguard's preprocessing_fn"
        ) from None
    source = operation.inputs[0]
    for external, internal in function.graph.captures:
        if internal.name == source.name:
            return np.asarray(external.numpy(), dtype=np.float64)
    raise GraphStatsError(
        f"{transform_output}: `{STATS_VECTOR_NAME}` is not a constant of the graph"
    )


def stats_from_transform_graph(
    transform_output: str | Path, config: Config
) -> dict[str, Any]:
    """stats.json's `num_rows` and `features` for a graph built with `config`.

    Args:
      transform_output: tanhguard's artifacts, or a TFX Transform component's
        `transform_graph` URI.
      config: The config the graph was built with.
    """
    return unpack_stats_vector(config, read_stats_vector(transform_output))
