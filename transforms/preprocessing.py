"""The `preprocessing_fn` built from a config, and the layout of its statistics.

For each configured feature `x`, the graph computes

    out = clip((clip(impute(x), lower, upper) - center) / scale, -B, B)

where NaN and missing values become the impute value, +Inf becomes `upper` and
-Inf becomes `lower`; `lower`/`upper` come from the clip strategy and
`center`/`scale` from the scaler fitted on the clipped data. A constant feature
gives 0. Every output is finite and inside `[-B, B]` for every input value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from tanhguard.transforms.analyzers import FeatureStatistics, quantile_grid
from tanhguard.transforms.bounds import clip_bounds
from tanhguard.transforms.config import (
    REPORTED_QUANTILES,
    Config,
    FeatureConfig,
    QuantileClip,
)
from tanhguard.transforms.nonfinite import densify, impute_and_clip
from tanhguard.transforms.scalers import scale_and_bound

ScaleFitter = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
"""Fits `center` and `scale` on the clipped data, in the last analysis phase.

Called once per trace with `(clipped, parameters)`: `clipped` is float64
`[batch, D]`, every feature's clipped, imputed elements side by side (D is the
total element count); `parameters` is the float64 vector of everything the
first phase derived (see `PHASE0_FIELDS`). Returns float64 `[2 * D]`: the D
centers, then the D scales, a scale of 0 marking a constant element. The batch
job's fitter (`tanhguard.pipeline.scale_fitter`) also writes the statistics.
"""

# Per-feature statistics of the first phase, in the order they are packed into
# the parameters vector; each takes `d` entries (one per element).
COUNT_FIELDS = ("count", "missing", "nan", "pos_inf", "neg_inf")
MOMENT_FIELDS = ("mean", "std", "min", "max")
QUANTILE_FIELDS = tuple(f"q{p}" for p in REPORTED_QUANTILES)
BOUND_FIELDS = ("lower", "upper", "impute_value")
PHASE0_FIELDS = COUNT_FIELDS + MOMENT_FIELDS + QUANTILE_FIELDS + BOUND_FIELDS


def total_elements(config: Config) -> int:
    """D: the number of model inputs, summed over features."""
    return sum(feature.size for feature in config.features.values())


def phase0_length(config: Config) -> int:
    """Length of the parameters vector: 1 (row count) + fields x D."""
    return 1 + len(PHASE0_FIELDS) * total_elements(config)


def stats_vector_length(config: Config) -> int:
    """Length of the full statistics vector: parameters, centers, scales."""
    return phase0_length(config) + 2 * total_elements(config)


def _required_probabilities(feature: FeatureConfig) -> list[float]:
    probabilities = list(REPORTED_QUANTILES)
    if isinstance(feature.clip, QuantileClip):
        probabilities += [feature.clip.lower, feature.clip.upper]
    return probabilities


def _clip_feature(
    name: str, raw: Any, feature: FeatureConfig
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """`clip(impute(x), lower, upper)` for one feature, and its statistics."""
    with tf.name_scope(name):
        x, missing = densify(raw, feature.size)
        stats = FeatureStatistics(
            x, missing, quantile_grid(_required_probabilities(feature)), "stats"
        )
        # `impute` has one strategy so far: the median of the finite values.
        impute_value = stats.quantile(0.5)
        lower, upper = clip_bounds(feature.clip, stats, feature.size)
        clipped = impute_and_clip(x, impute_value, lower, upper)
    fields = {
        "count": stats.count,
        "missing": stats.missing,
        "nan": stats.nan,
        "pos_inf": stats.pos_inf,
        "neg_inf": stats.neg_inf,
        "mean": stats.mean,
        "std": stats.std,
        "min": stats.min,
        "max": stats.max,
        **{
            field: stats.quantile(p)
            for field, p in zip(QUANTILE_FIELDS, REPORTED_QUANTILES, strict=True)
        },
        "lower": lower,
        "upper": upper,
        "impute_value": impute_value,
    }
    return clipped, fields


def build_preprocessing_fn(
    config: Config, fit_scale: ScaleFitter
) -> Callable[[Mapping[str, Any]], dict[str, tf.Tensor]]:
    """Builds a TFT `preprocessing_fn` for a validated config.

    Args:
      config: The validated config.
      fit_scale: The `ScaleFitter` that fits `center`/`scale` (zscore: the mean
        and std of the clipped, imputed data over every training row).

    Returns:
      A function from raw features (one `SparseTensor` or dense tensor per
      configured feature) to float32 outputs of the same names: `[batch]` for
      scalar features, `[batch, d]` for vector features.
    """

    def preprocessing_fn(inputs: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        absent = [name for name in config.features if name not in inputs]
        if absent:
            raise ValueError(
                f"features {absent} are configured but not in the inputs. "
                f"Received: {sorted(inputs)}"
            )
        clipped, packed, rows = {}, [], None
        for name, feature in config.features.items():
            clipped[name], fields = _clip_feature(name, inputs[name], feature)
            if rows is None:
                # Every row is counted once in exactly one of the count fields.
                rows = tf.add_n([fields[key][:1] for key in COUNT_FIELDS])
            packed += [tf.cast(fields[key], tf.float64) for key in PHASE0_FIELDS]
        parameters = tf.concat([rows, *packed], axis=0)
        side_by_side = tf.concat(
            [tf.cast(clipped[name], tf.float64) for name in config.features], axis=1
        )
        centers_and_scales = fit_scale(side_by_side, parameters)
        elements = total_elements(config)
        centers = centers_and_scales[:elements]
        scales = centers_and_scales[elements:]
        outputs, offset = {}, 0
        for name, feature in config.features.items():
            span = slice(offset, offset + feature.size)
            offset += feature.size
            output = scale_and_bound(
                clipped[name], centers[span], scales[span], feature.output_bound
            )
            outputs[name] = output if feature.is_vector else tf.reshape(output, [-1])
        return outputs

    return preprocessing_fn


def _to_json_number(value: float) -> float | None:
    """JSON has no NaN/Inf: they become null."""
    return float(value) if np.isfinite(value) else None


def unpack_stats_vector(config: Config, vector: np.ndarray) -> dict[str, Any]:
    """Turns the packed statistics vector into stats.json's `features` map.

    Returns:
      `{"num_rows": N, "features": {...}}` where `features[name]` holds the
      counts, moments, quantiles, clip/scale parameters and impute value of
      each feature: plain numbers for a scalar feature, lists of length d for a
      vector feature.
      Parameters are the float32 values the graph applies, written exactly.
    """
    vector = np.asarray(vector, dtype=np.float64)
    expected = stats_vector_length(config)
    if vector.shape != (expected,):
        raise ValueError(
            f"stats vector has shape {vector.shape}; the config needs ({expected},)"
        )
    num_rows = int(vector[0])
    elements = total_elements(config)
    centers = vector[phase0_length(config) :][:elements]
    scales = vector[phase0_length(config) :][elements:]
    offset, element = 1, 0
    features: dict[str, Any] = {}
    for name, feature in config.features.items():
        size = feature.size
        raw: dict[str, np.ndarray] = {}
        for field in PHASE0_FIELDS:
            raw[field] = vector[offset : offset + size]
            offset += size
        raw["center"] = centers[element : element + size]
        raw["scale"] = scales[element : element + size]
        element += size

        def shaped(values: np.ndarray, kind: type = float, is_vector=feature.is_vector):
            if kind is int:
                items = [int(v) for v in values]
            elif kind is bool:
                items = [bool(v) for v in values]
            else:
                items = [_to_json_number(v) for v in values]
            return items if is_vector else items[0]

        float32 = {
            key: raw[key].astype(np.float32).astype(np.float64)
            for key in ("lower", "upper", "center", "scale", "impute_value")
        }
        features[name] = {
            **{key: shaped(raw[key], int) for key in COUNT_FIELDS},
            **{key: shaped(raw[key]) for key in MOMENT_FIELDS},
            "quantiles": {
                str(p): shaped(raw[field])
                for p, field in zip(REPORTED_QUANTILES, QUANTILE_FIELDS, strict=True)
            },
            "clip": {
                "strategy": feature.clip.strategy,
                "lower": shaped(float32["lower"]),
                "upper": shaped(float32["upper"]),
            },
            "scale": {
                "strategy": feature.scale.strategy,
                "center": shaped(float32["center"]),
                "scale": shaped(float32["scale"]),
            },
            "impute_value": shaped(float32["impute_value"]),
            "output_bound": feature.output_bound,
            "constant": shaped(raw["scale"] == 0.0, bool),
        }
    return {"num_rows": num_rows, "features": features}
