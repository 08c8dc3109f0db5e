"""The `preprocessing_fn` built from a config, and the layout of its statistics.

For each configured feature `x`, the graph computes

    out = clip((g(clip(impute(x), lower, upper)) - center) / scale, -B, B)

where NaN and missing values (and +-Inf under `inf: missing`) become the impute
value, +Inf becomes `upper` and -Inf becomes `lower`; `lower`/`upper` come from
the clip strategy, `g` is the identity or `sign(v) * log1p(|v|)` for
`log_zscore`, and `center`/`scale` are fitted on the clipped finite training
values. A constant feature gives 0. Every output is finite and inside `[-B, B]`
for every input value.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from tanhguard.transforms.config import (
    REPORTED_QUANTILES,
    Config,
    FeatureConfig,
    RobustScale,
)
from tanhguard.transforms.fitting import (
    COUNT_FIELDS,
    FIT_FIELDS,
    FLAG_CONSTANT,
    FLAG_DEGENERATE_BOUNDS,
    FLAG_MESSAGES,
    GRAPH_FIELDS,
    PHASE0_FIELDS,
    QUANTILE_FIELDS,
    field_slice,
    plan_slots,
    stats_vector_length,
    total_slots,
)
from tanhguard.transforms.mappers import apply_inf_policy, guard
from tanhguard.transforms.nonfinite import densify

ScaleFitter = Callable[[tf.Tensor, tf.Tensor, list], tf.Tensor]
"""Runs the last analysis phase (`tanhguard.transforms.fitting`).

Called once per trace with `(x, parameters, slots)`, plus `mads=` when the
caller knows them: `x` is float64
`[batch, D]`, every feature's elements side by side after the inf policy (NaN
for missing values; D is the total element count); `parameters` is the float64
vector of the first phase (`PHASE0_FIELDS`, field-major over the S slots);
`slots` is `plan_slots(config)`. Returns the float64 statistics vector:
`parameters`, then `FIT_FIELDS` over the slots. The default is the Beam
analyzer `tanhguard.pipeline.scale_fitter.fit_scale`.
"""

# Names of the statistics vector and of the config (JSON) in the saved graph,
# where `tanhguard.pipeline.graph_stats` finds them.
STATS_VECTOR_NAME = "tanhguard_stats_vector"
CONFIG_NAME = "tanhguard_config"


def _densify(
    config: Config, inputs: Mapping[str, Any]
) -> dict[str, tuple[tf.Tensor, tf.Tensor]]:
    """`(x, missing)` per feature: dense `[batch, size]` values and mask."""
    absent = [name for name in config.features if name not in inputs]
    if absent:
        raise ValueError(
            f"features {absent} are configured but not in the inputs. "
            f"Received: {sorted(inputs)}"
        )
    return {
        name: densify(inputs[name], feature.size, name=f"{name}/densify")
        for name, feature in config.features.items()
    }


def _side_by_side(
    config: Config, dense: Mapping[str, tuple[tf.Tensor, tf.Tensor]]
) -> tuple[tf.Tensor, tf.Tensor]:
    """Every feature's `(x, missing)` side by side: `[batch, D]` each."""
    names = list(config.features)
    return (
        tf.concat([dense[name][0] for name in names], axis=1),
        tf.concat([dense[name][1] for name in names], axis=1),
    )


def _per_element(values: tf.Tensor, feature: FeatureConfig) -> tf.Tensor:
    """A float32 `[slots]` parameter spread over the feature's `[size]` elements."""
    values = tf.cast(values, tf.float32)
    if feature.slots == feature.size:
        return values
    return tf.tile(values, [feature.size])


def build_preprocessing_fn(
    config: Config,
    fit_scale: ScaleFitter | None = None,
    parameters: np.ndarray | None = None,
    mads: np.ndarray | None = None,
) -> Callable[[Mapping[str, Any]], dict[str, tf.Tensor]]:
    """Builds a TFT `preprocessing_fn` for a validated config.

    Args:
      config: The validated config.
      fit_scale: The `ScaleFitter` that runs the last analysis phase; the
        default is the Beam analyzer (imported when the function is traced:
        the last phase is a Beam `PTransform` by nature).
      parameters: The first phase's parameters vector, from
        `tanhguard.pipeline.statistics.FirstPhaseCombineFn` run over the same
        data. Given, the graph uses them as constants and has one analysis
        phase; by default, that combiner runs in this graph as a TFT analyzer
        (two phases, the way TFX runs it). The saved graph applies the same numbers
        either way.
      mads: With `parameters`, the MAD of each slot (NaN where the clip is
        not `mad`), from `tanhguard.pipeline.scale_fitter.MadCombineFn` run
        over the same data; it saves the last phase its own MAD pass.

    Returns:
      A function from raw features (one `SparseTensor` or dense tensor per
      configured feature) to float32 outputs: for each feature, `name` and its
      indicators (`name__missing`, `name__clipped`, if configured), `[batch]`
      for scalar features and `[batch, d]` for vector features.
    """

    def preprocessing_fn(inputs: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        dense = _densify(config, inputs)
        xs = {
            name: apply_inf_policy(dense[name][0], feature.inf)
            for name, feature in config.features.items()
        }
        if parameters is None:
            from tanhguard.pipeline.statistics import first_phase_analyzer

            phase0 = first_phase_analyzer(*_side_by_side(config, dense), config)
        else:
            phase0 = tf.constant(parameters, dtype=tf.float64, name="tanhguard_phase0")
        side_by_side = tf.concat(
            [tf.cast(xs[name], tf.float64) for name in config.features], axis=1
        )
        fitter = fit_scale
        known = {} if mads is None else {"mads": np.asarray(mads, np.float64)}
        if fitter is None:
            from tanhguard.pipeline.scale_fitter import fit_scale as fitter
        slots = total_slots(config)
        # The statistics vector is an analyzer output, so the saved graph holds
        # it as a constant under this name, with everything stats.json reports.
        # The config rides along as a string constant; the assertion keeps it
        # in the saved graph (stateful ops are never pruned).
        config_json = tf.constant(json.dumps(config.to_json_dict()), name=CONFIG_NAME)
        keep_config = tf.debugging.assert_greater(
            tf.strings.length(config_json), 0, name="tanhguard_config_present"
        )
        with tf.control_dependencies([keep_config]):
            vector = tf.identity(
                fitter(side_by_side, phase0, plan_slots(config), **known),
                name=STATS_VECTOR_NAME,
            )
        applied = {
            key: vector[field_slice(key, slots)]
            for key in (*GRAPH_FIELDS, "impute_value")
        }
        outputs, offset = {}, 0
        for name, feature in config.features.items():
            span = slice(offset, offset + feature.slots)
            offset += feature.slots
            out, missing, clipped = guard(
                xs[name],
                impute_value=_per_element(applied["impute_value"][span], feature),
                lower=_per_element(applied["lower"][span], feature),
                upper=_per_element(applied["upper"][span], feature),
                center=_per_element(applied["center"][span], feature),
                scale=_per_element(applied["scale"][span], feature),
                bound=feature.output_bound,
                log=feature.scale.strategy == "log_zscore",
            )
            named = {"": out, "__missing": missing, "__clipped": clipped}
            for output in config.output_names(name):
                value = named[output[len(name) :]]
                outputs[output] = (
                    value if feature.is_vector else tf.reshape(value, [-1])
                )
        return outputs

    return preprocessing_fn


def _to_json_number(value: float) -> float | None:
    """JSON has no NaN/Inf: they become null."""
    return float(value) if np.isfinite(value) else None


def unpack_stats_vector(config: Config, vector: np.ndarray) -> dict[str, Any]:
    """Turns the statistics vector into stats.json's `num_rows` and `features`.

    Returns:
      `{"num_rows": N, "features": {...}}` where `features[name]` holds the
      counts, moments, quantiles, the derived clip, impute and scale
      parameters, the fractions of values clipped below and above, and
      warnings: plain numbers for a scalar or shared vector feature, lists of
      length d for an elementwise vector feature. The clip, impute and scale
      parameters are the float32 values the graph applies, written exactly.
    """
    vector = np.asarray(vector, dtype=np.float64)
    slots = plan_slots(config)
    count = len(slots)
    expected = stats_vector_length(count)
    if vector.shape != (expected,):
        raise ValueError(
            f"stats vector has shape {vector.shape}; the config needs ({expected},)"
        )
    num_rows = int(vector[0])
    rows_of = {
        field: vector[field_slice(field, count)] for field in PHASE0_FIELDS + FIT_FIELDS
    }
    for field in ("lower", "upper", "center", "scale", "impute_value"):
        rows_of[field] = rows_of[field].astype(np.float32).astype(np.float64)
    features: dict[str, Any] = {}
    offset = 0
    for name, feature in config.features.items():
        span = slice(offset, offset + feature.slots)
        offset += feature.slots
        values_per_slot = num_rows * (feature.size // feature.slots)
        features[name] = _feature_stats(
            feature,
            {field: rows[span] for field, rows in rows_of.items()},
            values_per_slot,
        )
    return {"num_rows": num_rows, "features": features}


# Flags under which the clipped training values are one number.
_CONSTANT_OUTPUT = FLAG_CONSTANT | FLAG_DEGENERATE_BOUNDS


def _feature_stats(
    feature: FeatureConfig, raw: dict[str, np.ndarray], values_per_slot: int
) -> dict[str, Any]:
    """stats.json's entry for one feature from its `[slots]` fields."""
    listed = feature.is_vector and feature.elementwise

    def shaped(values: np.ndarray, kind: type = float) -> Any:
        if kind is int:
            items = [int(v) for v in values]
        elif kind is bool:
            items = [bool(v) for v in values]
        else:
            items = [_to_json_number(v) for v in values]
        return items if listed else items[0]

    def fraction(values: np.ndarray) -> np.ndarray:
        return values / max(values_per_slot, 1)

    clip = feature.clip.model_dump()
    clip_entry: dict[str, Any] = {
        "strategy": clip.pop("strategy"),
        "lower": shaped(raw["lower"]),
        "upper": shaped(raw["upper"]),
    }
    if feature.clip.strategy == "quantile":
        clip_entry["probabilities"] = [clip.pop("lower"), clip.pop("upper")]
    clip.pop("lower", None)  # `fixed`: the configured values are the bounds
    clip.pop("upper", None)
    clip_entry.update(clip)
    if feature.clip.strategy == "mad":
        clip_entry["median"] = shaped(raw["q0.5"])
        clip_entry["mad"] = shaped(raw["mad"])
    scale_entry: dict[str, Any] = {
        "strategy": feature.scale.strategy,
        "center": shaped(raw["center"]),
        "scale": shaped(raw["scale"]),
    }
    if isinstance(feature.scale, RobustScale):
        scale_entry["probabilities"] = [feature.scale.lower, feature.scale.upper]
    warnings = []
    for index, flags in enumerate(raw["flags"].astype(int)):
        where = f"element {index}: " if listed else ""
        warnings += [
            where + message for bit, message in FLAG_MESSAGES.items() if flags & bit
        ]
    return {
        **{key: shaped(raw[key], int) for key in COUNT_FIELDS},
        **{key: shaped(raw[key]) for key in ("mean", "std", "min", "max")},
        "quantiles": {
            str(p): shaped(raw[field])
            for p, field in zip(REPORTED_QUANTILES, QUANTILE_FIELDS, strict=True)
        },
        "impute": {
            "strategy": feature.impute.strategy,
            "value": shaped(raw["impute_value"]),
        },
        "inf": feature.inf,
        "clip": clip_entry,
        "clipped_below": shaped(fraction(raw["clipped_below"])),
        "clipped_above": shaped(fraction(raw["clipped_above"])),
        "scale": scale_entry,
        "elementwise": feature.elementwise,
        "indicators": list(feature.indicators),
        "output_bound": feature.output_bound,
        "constant": shaped(raw["flags"].astype(int) & _CONSTANT_OUTPUT != 0, bool),
        "warnings": warnings,
    }
