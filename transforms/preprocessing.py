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

The graph's structure (the saved `transform_fn`, as a serving call runs it):

- Densify: the sparse inputs (`VarLenFeature`s) take one `tf.cond` together.
  When every row of every one holds its values (dense serving inputs,
  complete `tf.Example`s), their values are the dense tensors already and
  pass through; otherwise each is scattered into NaN (`mappers.densify_all`).
  Dense inputs are only cast.
- Numbers: the statistics vector is an analyzer output, known when TFT traces
  the graph it saves. So the numbers each element applies (`impute_value`,
  `lower`, `upper`, `center`, `scale`, and from them the output clip `low`,
  `high` and a missing value's output) are derived once, at trace time, and
  the graph holds them as scalar constants: a serving call slices, casts and
  tiles no parameter vector. In a trace where the vector is not known yet
  (TFT's analysis), the graph derives them from it instead.
- The formula, column by column: every element of every feature is a
  `[batch]` column with its own scalar numbers, about six ops each
  (`mappers.guard_columns`). A vector feature is unstacked, and its outputs
  are stacked along the last axis, or from `TRANSPOSE_MIN_ROWS` rows on
  (one more `tf.cond`) stacked as rows and transposed. Stacking all columns
  into one `[n, batch]` tensor with `[n, 1]` numbers was measured and not
  kept: TensorFlow's CPU kernels broadcast a column of numbers several times
  slower than a scalar, and at batch 1 it saved nothing. Only `log_zscore`
  columns leave float32.
- Indicators (`__missing`, `__clipped`) exist in the graph only where
  configured.
- The statistics vector stays in the saved graph under `STATS_VECTOR_NAME`,
  a control input of every feature's values, and the config under
  `CONFIG_NAME`, a control input of the vector: control edges only, no op
  computes with either.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from tanhguard.transforms.config import Config, FeatureConfig
from tanhguard.transforms.layout import field_slice
from tanhguard.transforms.mappers import (
    Densified,
    apply_inf_policy,
    column_parameters,
    densify_all,
    guard_columns,
)
from tanhguard.transforms.slots import plan_slots, slot_output_bounds, total_slots

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


def _densify(config: Config, inputs: Mapping[str, Any]) -> dict[str, Densified]:
    """`Densified` per feature (dense `[batch, size]` values, their mask and
    the values flat), from the input keyed by the feature's source column."""
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
    dense = densify_all(
        [
            (inputs[config.source_column(name)], feature.size)
            for name, feature in config.features.items()
        ]
    )
    return dict(zip(config.features, dense, strict=True))


def _side_by_side(
    config: Config, dense: Mapping[str, Densified]
) -> tuple[tf.Tensor, tf.Tensor]:
    """Every feature's `(x, missing)` side by side: `[batch, D]` each."""
    names = list(config.features)
    return (
        tf.concat([dense[name].x for name in names], axis=1),
        tf.concat([dense[name].missing for name in names], axis=1),
    )


# The statistics vector's fields the graph applies (`column_parameters`'
# arguments).
_APPLIED = ("impute_value", "lower", "upper", "center", "scale")


def _per_element(values: Any, feature: FeatureConfig) -> Any:
    """A `[slots]` parameter (numpy or a tensor) spread over the feature's
    `[size]` elements."""
    if feature.slots == feature.size:
        return values
    if isinstance(values, np.ndarray):
        return np.tile(values, feature.size)
    return tf.tile(values, [feature.size])


# From this many rows on, a vector's columns are stacked as rows and
# transposed; below, stacked along the last axis. Stacking along the last axis
# copies one number at a time (about 1 ms for 100,000 x 3 on this machine),
# a transpose costs a fixed 0.1-0.15 ms (then 0.2-0.4 ms for 100,000 x 3).
TRANSPOSE_MIN_ROWS = 16_384


def _rows(values: Any) -> tf.Tensor:
    """The batch size of a raw input (a `SparseTensor`, `RaggedTensor` or
    dense tensor), read from its shape: known as soon as the call starts."""
    if isinstance(values, tf.SparseTensor):
        return values.dense_shape[0]
    if isinstance(values, tf.RaggedTensor):
        return values.nrows()
    return tf.shape(values, out_type=tf.int64)[0]


def _joined(
    vectors: dict[str, list[tf.Tensor]], rows: tf.Tensor
) -> dict[str, tf.Tensor]:
    """Each entry's `[batch]` columns side by side, `[batch, d]`, the faster
    way for the `rows` of the batch (one branch for all of them)."""
    columns = list(vectors.values())
    joined = tf.cond(
        rows >= TRANSPOSE_MIN_ROWS,
        lambda: [tf.transpose(tf.stack(each)) for each in columns],
        lambda: [tf.stack(each, axis=1) for each in columns],
    )
    return dict(zip(vectors, joined, strict=True))


def _columns(dense: Densified, feature: FeatureConfig) -> list[tf.Tensor]:
    """A feature's values as `size` `[batch]` columns."""
    if not feature.is_vector:
        return [tf.identity(dense.flat)]
    return tf.unstack(dense.x, num=feature.size, axis=1)


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
            name: apply_inf_policy(dense[name].x, feature.inf)
            for name, feature in config.features.items()
        }
        if parameters is None or fit_phase is None:
            # Only TFT's analysis needs the analyzers (and Beam, which they
            # import): a graph saved with constants does not.
            from tanhguard.transforms.analyzers import (
                first_phase_analyzer,
                fit_phase_analyzer,
            )
        if parameters is None:
            phase0 = first_phase_analyzer(*_side_by_side(config, dense), config)
        else:
            phase0 = tf.constant(parameters, dtype=tf.float64, name="tanhguard_phase0")
        side_by_side = tf.concat(
            [tf.cast(xs[name], tf.float64) for name in config.features], axis=1
        )
        fitter = fit_phase or fit_phase_analyzer
        known = {} if mads is None else {"mads": np.asarray(mads, np.float64)}
        known["output_bounds"] = slot_output_bounds(config)
        slots = total_slots(config)
        # The statistics vector is an analyzer output, so the saved graph holds
        # it as a constant under this name, with everything stats.json reports.
        # The config rides along as a string constant, a control input of the
        # vector (which every output waits for), so the saved graph keeps it.
        config_json = tf.constant(json.dumps(config.to_json_dict()), name=CONFIG_NAME)
        with tf.control_dependencies([config_json]):
            statistics = fitter(side_by_side, phase0, plan_slots(config), **known)
            vector = tf.identity(statistics, name=STATS_VECTOR_NAME)
        # Known while the graph is built (the saved graph: the analyzer's
        # output is a constant by then), the numbers are derived here and
        # the graph holds them as constants; else the graph slices them
        # from the vector (TFT's analysis trace, which never applies them).
        fitted = tf.get_static_value(statistics)
        source = statistics if fitted is None else np.asarray(fitted, np.float64)
        applied = {key: source[field_slice(key, slots)] for key in _APPLIED}
        columns, plans, offset = [], [], 0
        for name, feature in config.features.items():
            span = slice(offset, offset + feature.slots)
            offset += feature.slots
            # The `log_zscore` path computes in float64 with the float64
            # center and scale the fit phase keeps for it (see `mappers`).
            element_numbers = column_parameters(
                **{key: _per_element(applied[key][span], feature) for key in _APPLIED},
                bound=feature.output_bound,
                log=feature.scale.log,
            )
            # Every output depends on the statistics vector, which keeps it
            # (and the config) in the saved graph.
            with tf.control_dependencies([vector]):
                columns += _columns(dense[name], feature)
            plans += [(feature, numbers) for numbers in element_numbers]
        results = guard_columns(
            columns,
            [numbers for _, numbers in plans],
            infs=[feature.inf for feature, _ in plans],
            indicators=[feature.indicators for feature, _ in plans],
        )
        outputs, vectors, start = {}, {}, 0
        for name, feature in config.features.items():
            own = results[start : start + feature.size]
            start += feature.size
            for output in config.output_names(name):
                kind = output[len(name) :].removeprefix("__")
                values = [result[kind] for result in own]
                if feature.is_vector:
                    vectors[output] = values
                outputs[output] = values[0]
        if vectors:
            first = next(
                name for name, feature in config.features.items() if feature.is_vector
            )
            outputs.update(_joined(vectors, _rows(inputs[config.source_column(first)])))
        return outputs

    return preprocessing_fn
