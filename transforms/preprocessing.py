"""The `preprocessing_fn` built from a config: the graph.

For each configured feature `x`, the graph computes

    out = clip((g(clip(impute(x), lower, upper)) - center) / scale, -B, B)

where NaN and missing values (and +-Inf under `inf: missing`) become the impute
value, +Inf becomes `upper` and -Inf becomes `lower`; `lower`/`upper` come from
the clip strategy, `g` is the identity or `sign(v) * log1p(|v|)` for
`log_zscore`, and `center`/`scale` are fitted on the clipped finite training
values. A constant feature gives 0. Every output is finite and inside `[-B, B]`
for every input value. `log_zscore` features compute `g`, the centering and
the scaling in float64; the others compute in float32.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from tanhguard.transforms.analyzers import first_phase_analyzer, fit_phase_analyzer
from tanhguard.transforms.config import Config, FeatureConfig
from tanhguard.transforms.layout import GRAPH_FIELDS, field_slice
from tanhguard.transforms.mappers import (
    apply_inf_policy,
    densify,
    float32_bound,
    guard,
)
from tanhguard.transforms.slots import plan_slots, total_slots

FitPhaseAnalyzer = Callable[..., tf.Tensor]
"""Runs the fit phase (`tanhguard.transforms.fit_phase`).

Called once per trace with `(x, parameters, slots, output_bounds=...)`, plus
`mads=` when the caller knows them (`output_bounds`: each slot's output bound
as the graph applies it, which turns on the histograms): `x` is float64
`[batch, D]`, every feature's elements side by side after the inf policy (NaN
for missing values; D is the total element count); `parameters` is the float64
vector of the first phase (`PHASE0_FIELDS`, field-major over the S slots);
`slots` is `plan_slots(config)`. Returns the float64 statistics vector:
`parameters`, then `FIT_FIELDS` over the slots. The default is the TFT
analyzer `tanhguard.transforms.analyzers.fit_phase_analyzer`.
"""

# Names of the statistics vector and of the config (JSON) in the saved graph,
# where `tanhguard.pipeline.graph_stats` finds them.
STATS_VECTOR_NAME = "tanhguard_stats_vector"
CONFIG_NAME = "tanhguard_config"


def _densify(
    config: Config, inputs: Mapping[str, Any]
) -> dict[str, tuple[tf.Tensor, tf.Tensor]]:
    """`(x, missing)` per feature: dense `[batch, size]` values and mask,
    from the input keyed by the feature's source column."""
    absent = [
        config.source_column(name)
        for name in config.features
        if config.source_column(name) not in inputs
    ]
    if absent:
        raise ValueError(
            f"features {absent} are configured but not in the inputs. "
            f"Received: {sorted(inputs)}"
        )
    return {
        name: densify(
            inputs[config.source_column(name)], feature.size, name=f"{name}/densify"
        )
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


def _per_element(
    values: tf.Tensor, feature: FeatureConfig, dtype: tf.DType = tf.float32
) -> tf.Tensor:
    """A `[slots]` parameter spread over the feature's `[size]` elements, as
    `dtype` (float32; float64 for the `log_zscore` path's center and scale)."""
    values = tf.cast(values, dtype)
    if feature.slots == feature.size:
        return values
    return tf.tile(values, [feature.size])


def build_preprocessing_fn(
    config: Config,
    fit_phase: FitPhaseAnalyzer | None = None,
    parameters: np.ndarray | None = None,
    mads: np.ndarray | None = None,
) -> Callable[[Mapping[str, Any]], dict[str, tf.Tensor]]:
    """Builds a TFT `preprocessing_fn` for a validated config.

    Args:
      config: The validated config.
      fit_phase: The `FitPhaseAnalyzer` that runs the fit phase; the default
        is the TFT analyzer `analyzers.fit_phase_analyzer`.
      parameters: The first phase's parameters vector, from
        `tanhguard.transforms.first_phase.FirstPhaseCombineFn` run over the same
        data. Given, the graph uses them as constants and has one analysis
        phase; by default, that combiner runs in this graph as a TFT analyzer
        (two phases, the way TFX runs it). The saved graph applies the same numbers
        either way.
      mads: With `parameters`, the MAD of each slot (NaN where the clip is
        not `mad`), from `tanhguard.transforms.fit_phase.MadCombineFn` run
        over the same data; it saves the last phase its own MAD pass.

    Returns:
      A function from raw features (one `SparseTensor` or dense tensor per
      configured feature, keyed by its source column: `column`, else the
      feature's name, as a `tf.Example` and the raw metadata key it) to
      float32 outputs, keyed by feature name: for each feature, `name` and its
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
            phase0 = first_phase_analyzer(*_side_by_side(config, dense), config)
        else:
            phase0 = tf.constant(parameters, dtype=tf.float64, name="tanhguard_phase0")
        side_by_side = tf.concat(
            [tf.cast(xs[name], tf.float64) for name in config.features], axis=1
        )
        fitter = fit_phase or fit_phase_analyzer
        known = {} if mads is None else {"mads": np.asarray(mads, np.float64)}
        known["output_bounds"] = np.array(
            [
                float(float32_bound(config.features[slot.feature].output_bound))
                for slot in plan_slots(config)
            ]
        )
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
            # The `log_zscore` path computes in float64 with the float64
            # center and scale the fit phase keeps for it (see `mappers`).
            fitted = tf.float64 if feature.scale.log else tf.float32
            out, missing, clipped = guard(
                xs[name],
                impute_value=_per_element(applied["impute_value"][span], feature),
                lower=_per_element(applied["lower"][span], feature),
                upper=_per_element(applied["upper"][span], feature),
                center=_per_element(applied["center"][span], feature, fitted),
                scale=_per_element(applied["scale"][span], feature, fitted),
                bound=feature.output_bound,
                log=feature.scale.log,
            )
            named = {"": out, "__missing": missing, "__clipped": clipped}
            for output in config.output_names(name):
                value = named[output[len(name) :]]
                outputs[output] = (
                    value if feature.is_vector else tf.reshape(value, [-1])
                )
        return outputs

    return preprocessing_fn
