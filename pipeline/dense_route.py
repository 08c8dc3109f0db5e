"""`transform_features` on dense inputs: the transform graph's function traced
again, and proven equal to it before it is served.

The transform graph TFT saves takes `SparseTensor`s (its raw schema is
`VarLenFeature`s, as TFX gives them). A call with dense tensors pays for
turning them into sparse ones, and the graph for testing whether every input
is full and branching on it (`mappers.densify_all`): some 50 small ops, about
a tenth of a batch-1 call (benchmarks/README.md). The preprocessing_fn takes
dense tensors as they are, so the exported `transform_features` signature
runs it traced on dense inputs (`dense_preprocessing_fn`), with the config
and the statistics vector read back from the transform graph itself
(`graph_stats.read_graph_stats`): after the densify, the same ops with the
same constants.

The served graph must be the one the model was trained with. This trace is
made by the tanhguard that exports, which need not be the one that analyzed
(an upgrade in between, a TFX graph made elsewhere). So `export` runs both
on a batch of probe rows (`probe_inputs`: NaN, +-Inf, float32 and int64
extremes, zeros, the clip bounds and their neighbours, the impute value,
heavy-tailed and uniform draws around the bounds) and keeps the dense trace
only when every output is bitwise equal (`first_difference`); otherwise
`transform_features` takes the transform graph, as `serving_default`
always does (`serving.ServingModule`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from tanhguard.errors import ArtifactsError
from tanhguard.transforms.config import Config
from tanhguard.transforms.layout import field_slice, phase0_length, stats_vector_length
from tanhguard.transforms.slots import total_slots

# Random draws per element of the probe batch, of each of the two kinds.
_DRAWS = 64
_PROBE_SEED = 20261130  # any fixed seed: the probe is the same every export

_FLOAT32 = np.finfo(np.float32)
_FLOAT_SPECIALS = np.array(
    [
        np.nan,
        np.inf,
        -np.inf,
        0.0,
        -0.0,
        1.0,
        -1.0,
        _FLOAT32.max,
        -_FLOAT32.max,
        _FLOAT32.tiny,  # the smallest normal
        -_FLOAT32.tiny,
        _FLOAT32.smallest_subnormal,
        1e30,
        -1e30,
    ],
    np.float32,
)
_INT64 = np.iinfo(np.int64)
_INT_SPECIALS = np.array(
    [_INT64.min, _INT64.max, 0, 1, -1, 2**24 + 1, -(2**24) - 1, 2**53 + 1],
    np.int64,
)


def dense_preprocessing_fn(
    artifacts: str | Path,
) -> tuple[
    Config, np.ndarray, Callable[[Mapping[str, tf.Tensor]], dict[str, tf.Tensor]]
]:
    """The config and the statistics vector baked into `artifacts`'
    transform graph, and the preprocessing_fn with that vector as constants,
    for dense inputs keyed by source column (`[batch, size]` each).

    Raises:
      ArtifactsError: the graph was not built by tanhguard
        (`graph_stats.GraphStatsError`).
    """
    from tanhguard.pipeline.graph_stats import read_graph_stats
    from tanhguard.transforms.preprocessing import build_preprocessing_fn

    config, vector = read_graph_stats(artifacts)
    expected = stats_vector_length(total_slots(config))
    if vector.shape != (expected,):
        raise ArtifactsError(
            f"{artifacts}: the transform graph's statistics vector holds "
            f"{vector.size:,} values, where this tanhguard's layout has "
            f"{expected:,} (written by another version)"
        )

    def constant_fit(*_args, **_kwargs) -> tf.Tensor:
        # A constant of the graph being traced: one made here, eagerly,
        # would be captured, and fed to every call as an input.
        return tf.constant(vector, dtype=tf.float64)

    preprocessing_fn = build_preprocessing_fn(
        config,
        fit_phase=constant_fit,
        parameters=vector[: phase0_length(total_slots(config))],
    )
    # Traced as TFT traces it, but without AutoGraph converting the config's
    # methods (which it cannot, and says so on stderr).
    return config, vector, tf.autograph.experimental.do_not_convert(preprocessing_fn)


def _applied(config: Config, vector: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Per feature, the `[size]` numbers the graph applies to its elements."""
    slots = total_slots(config)
    numbers: dict[str, dict[str, np.ndarray]] = {}
    offset = 0
    for name, feature in config.features.items():
        span = slice(offset, offset + feature.slots)
        offset += feature.slots
        numbers[name] = {}
        for key in ("impute_value", "lower", "upper", "center", "scale"):
            values = vector[field_slice(key, slots)][span]
            numbers[name][key] = np.resize(values, feature.size)
        numbers[name]["center_plus"] = numbers[name]["center"] + numbers[name]["scale"]
        numbers[name]["center_minus"] = numbers[name]["center"] - numbers[name]["scale"]
    return numbers


def _float_candidates(points: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """float32 probe values for one element with the numbers `points`."""
    with np.errstate(over="ignore", invalid="ignore"):
        at = np.array(list(points.values()), np.float64).astype(np.float32)
        finite = at[np.isfinite(at)]
        neighbours = np.concatenate(
            [
                np.nextafter(finite, np.float32(np.inf)),
                np.nextafter(finite, np.float32(-np.inf)),
            ]
        )
        center, scale = points["center"], points["scale"]
        if not (np.isfinite(center) and np.isfinite(scale) and scale > 0):
            center, scale = 0.0, 1.0
        lower, upper = points["lower"], points["upper"]
        if not (np.isfinite(lower) and np.isfinite(upper) and upper > lower):
            lower, upper = center - scale, center + scale
        width = upper - lower
        heavy = center + scale * rng.standard_cauchy(_DRAWS)
        around = rng.uniform(lower - width, upper + width, _DRAWS)
        drawn = np.concatenate([heavy, around]).astype(np.float32)
    return np.concatenate([_FLOAT_SPECIALS, at, neighbours, drawn])


def _int_candidates(points: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """int64 probe values for one element of an `int` feature."""
    floats = _float_candidates(points, rng).astype(np.float64)
    finite = floats[np.isfinite(floats)]
    rounded = np.clip(
        np.round(finite), float(_INT64.min), float(np.nextafter(2.0**63, 0))
    )
    return np.concatenate([_INT_SPECIALS, rounded.astype(np.int64)])


def probe_inputs(config: Config, vector: np.ndarray) -> dict[str, np.ndarray]:
    """A probe batch for the config, keyed by feature name: float32 (int64
    for `dtype: int`) `[rows]` for a scalar, `[rows, d]` for a vector.

    Each element gets the special values above, the numbers the graph
    applies to it (impute value, clip bounds, center, center +- scale) and
    their float32 neighbours, and draws around them; its column repeats its
    list to the longest one's length, rotated by the element's place so that
    the rows mix the elements' cases."""
    rng = np.random.default_rng(_PROBE_SEED)
    numbers = _applied(config, np.asarray(vector, np.float64))
    columns: dict[str, list[np.ndarray]] = {}
    for name, feature in config.features.items():
        candidates = _int_candidates if feature.dtype == "int" else _float_candidates
        columns[name] = [
            candidates(
                {key: float(values[i]) for key, values in numbers[name].items()}, rng
            )
            for i in range(feature.size)
        ]
    rows = max(len(column) for each in columns.values() for column in each)
    inputs: dict[str, np.ndarray] = {}
    place = 0
    for name, feature in config.features.items():
        elements = []
        for column in columns[name]:
            elements.append(np.roll(np.resize(column, rows), 7 * place))
            place += 1
        stacked = np.stack(elements, axis=1)
        inputs[name] = stacked if feature.is_vector else stacked[:, 0]
    return inputs


def first_difference(left: Mapping[str, Any], right: Mapping[str, Any]) -> str | None:
    """None when the two outputs have the same names, dtypes, shapes and
    bits (NaN's included), else what differs first."""
    if set(left) != set(right):
        return f"outputs {sorted(left)} against {sorted(right)}"
    for name in sorted(left):
        a, b = np.asarray(left[name]), np.asarray(right[name])
        if a.dtype != b.dtype or a.shape != b.shape:
            return (
                f"output `{name}`: {a.dtype}{list(a.shape)} against "
                f"{b.dtype}{list(b.shape)}"
            )
        bits = [np.ascontiguousarray(x).reshape(-1).view(np.uint8) for x in (a, b)]
        width = a.dtype.itemsize
        unequal = np.flatnonzero(
            (bits[0].reshape(-1, width) != bits[1].reshape(-1, width)).any(axis=1)
        )
        if len(unequal):
            where = np.unravel_index(int(unequal[0]), a.shape)
            place = f"row {where[0]}" + (f", element {where[1]}" if a.ndim > 1 else "")
            return f"output `{name}`: {a[where]!s} against {b[where]!s} at {place}"
    return None
