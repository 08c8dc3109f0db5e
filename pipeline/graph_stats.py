"""Statistics read back from a saved transform graph.

The fit phase's output, the statistics vector, is an analyzer output:
TFT bakes it into the saved `transform_fn` as a captured constant named
`tanhguard_stats_vector`. Reading it back gives stats.json's numbers from the
graph alone: the batch job does this instead of passing files between workers,
and a TFX user does it on the Transform component's `transform_graph`.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from tanhguard.errors import ArtifactsError
from tanhguard.pipeline.stats_json import unpack_stats_vector
from tanhguard.transforms.config import Config, parse_config
from tanhguard.transforms.preprocessing import CONFIG_NAME, STATS_VECTOR_NAME


class GraphStatsError(ArtifactsError):
    """A transform graph without tanhguard's statistics."""


def _operation(function, name: str, transform_output) -> tf.Operation:
    try:
        return function.graph.get_operation_by_name(name)
    except KeyError:
        raise GraphStatsError(
            f"{transform_output}: the transform graph has no `{name}`; it was not "
            "built by tanhguard's preprocessing_fn"
        ) from None


def read_graph_stats(transform_output: str | Path) -> tuple[Config, np.ndarray]:
    """The config and the statistics vector baked into a transform graph.

    Args:
      transform_output: A TFT output directory: tanhguard's artifacts, or a
        TFX Transform component's `transform_graph` URI.

    Raises:
      GraphStatsError: the graph was not built by tanhguard.
    """
    path = posixpath.join(str(transform_output), "transform_fn")  # gs:// too
    function = tf.saved_model.load(path).transform_fn
    config_op = _operation(function, CONFIG_NAME, transform_output)
    text = tf.make_ndarray(config_op.get_attr("value")).item().decode("utf-8")
    config = parse_config(json.loads(text))
    source = _operation(function, STATS_VECTOR_NAME, transform_output).inputs[0]
    if source.op.type == "Const":  # a vector short enough to be inlined
        return config, tf.make_ndarray(source.op.get_attr("value")).astype(np.float64)
    for external, internal in function.graph.captures:
        if internal.name == source.name:
            return config, np.asarray(external.numpy(), dtype=np.float64)
    raise GraphStatsError(
        f"{transform_output}: `{STATS_VECTOR_NAME}` is not a constant of the graph"
    )


def stats_from_transform_graph(transform_output: str | Path) -> dict[str, Any]:
    """stats.json's `num_rows`, `features` and `config` from a transform graph.

    Args:
      transform_output: tanhguard's artifacts, or a TFX Transform component's
        `transform_graph` URI.
    """
    config, vector = read_graph_stats(transform_output)
    return {**unpack_stats_vector(config, vector), "config": config.to_json_dict()}
