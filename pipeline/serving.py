"""Serving: the preprocessing graph as a module with two signatures.

  serving_default      `examples`: a batch of serialized `tf.Example` strings
                       (the TF Serving convention), each feature under its
                       source column (its `column`, else its name), as the
                       training data has it. A feature absent from an
                       example is missing, and imputed.
  transform_features   one dense tensor per raw feature, named after the
                       feature (not its `column`: signature inputs are names):
                       float32 (int64 for `dtype: int`), shape `[batch]` for a
                       scalar and `[batch, d]` for a vector; NaN is missing.
                       It runs the transform graph's function traced on
                       dense inputs, when that trace is bitwise equal to the
                       graph on probe rows (`dense_route`); else the graph.

Both return the transformed features (`name`, `name__missing`, ...), or, with
a model attached, the model's outputs (`predictions` for a single output).

A model takes the transformed features either as named inputs (a functional
model whose input names are output names of the graph), or as one matrix: the
outputs in config order (`model_matrix`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from tanhguard.errors import ArtifactsError, ExportError
from tanhguard.pipeline.artifacts import (
    load_artifacts_config,
    passes_full_inputs_through,
)
from tanhguard.pipeline.batch_layout import raw_feature_spec
from tanhguard.pipeline.dense_route import (
    dense_preprocessing_fn,
    first_difference,
    probe_inputs,
)
from tanhguard.transforms.config import Config
from tanhguard.transforms.preprocessing import TRANSPOSE_MIN_ROWS

logger = logging.getLogger(__name__)

# Above this many elements (a scalar is one, a `[d]` vector d), `export`
# keeps the transform graph for `transform_features` (`ServingModule`): the
# second trace and the probe cost export time that grows faster than the
# graph (256 scalars: 32 s against 19 s, for a 12-14% faster call; a
# 1,024-element vector and 100 scalars: 67 s against 17 s, for 1-3%).
DENSE_ROUTE_MAX_ELEMENTS = 256

SERVING_SIGNATURE = "serving_default"
TENSORS_SIGNATURE = "transform_features"

# The float64 values an int64 holds: -2**63 exactly, and below 2**63 at most
# 2**63 - 1024 (float64's spacing there). A cast beyond them saturates to
# INT64_MIN, whatever the sign, so +Inf would become the lowest value.
_INT64_LOWEST = -(2.0**63)
_INT64_HIGHEST = float(np.nextafter(2.0**63, 0.0))
_INT64_MAX = 2**63 - 1
_REPR_FEATURES = 5  # feature names a Preprocessor's repr shows


def model_matrix_names(config: Config) -> list[str]:
    """The graph outputs, in the column order of `model_matrix`."""
    return config.model_matrix_names()


def model_matrix(outputs: Mapping[str, tf.Tensor], config: Config) -> tf.Tensor:
    """The transformed features side by side: float32 `[batch, columns]`.

    Columns follow the config: each feature's value (d columns for a vector),
    then its indicators.
    """
    columns = []
    for output in model_matrix_names(config):
        value = tf.convert_to_tensor(outputs[output])
        columns.append(tf.reshape(value, [tf.shape(value)[0], -1]))
    return tf.concat(columns, axis=1)


def _full_indices(shape: tf.Tensor) -> tf.Tensor:
    """int64 `[batch * size, 2]`: every position of a `shape` `[batch, size]`
    tensor, row-major (`tf.where` over ones writes them faster than
    TensorFlow's range, broadcasting or division ops compute them)."""
    return tf.where(tf.ones(shape, tf.bool))


def _int_feature(value: tf.Tensor) -> tf.Tensor | tf.SparseTensor:
    """Numbers -> an `int` feature's int64 values.

    Integers are kept (uint64 beyond int64 becomes its max): the values as
    they are, every one present. Floats (pandas stores an int column with
    gaps as float64), `[batch, size]`, are rounded, NaN is missing, and the
    rest is clamped to the int64 range before the cast: +Inf and 1e30 become
    the largest int64-representable value (then the clip's `upper`), -Inf
    the lowest; a SparseTensor of the values present.
    """
    if value.dtype.is_integer:
        if value.dtype == tf.uint64:
            value = tf.minimum(value, tf.constant(_INT64_MAX, tf.uint64))
        return tf.cast(value, tf.int64)
    wide = tf.cast(value, tf.float64)
    indices = tf.where(~tf.math.is_nan(wide))
    present = tf.round(tf.gather_nd(wide, indices))
    values = tf.cast(tf.clip_by_value(present, _INT64_LOWEST, _INT64_HIGHEST), tf.int64)
    return tf.SparseTensor(indices, values, tf.shape(value, out_type=tf.int64))


def _wanted(feature) -> str:
    """The shape a feature's raw values take, as messages name it."""
    return f"[batch, {feature.size}]" if feature.is_vector else "[batch]"


class Preprocessor(tf.Module):
    """The preprocessing graph of an artifacts directory, callable on raw data.

    >>> preprocessor = Preprocessor("demo-output/artifacts")  # doctest: +SKIP
    >>> preprocessor({"fare": [12.5, float("nan")], ...})     # doctest: +SKIP
    """

    def __init__(self, artifacts: str | Path):
        super().__init__(name="tanhguard_preprocessor")
        self.artifacts = Path(artifacts).absolute()
        self.config = load_artifacts_config(artifacts)
        self.transform_output = tft.TFTransformOutput(str(artifacts))
        self.tft_layer = self.transform_output.transform_features_layer()
        # Whether full inputs may go without indices (see `raw_tensors`).
        self._full_inputs_pass_through = passes_full_inputs_through(artifacts)

    def __repr__(self) -> str:
        names = list(self.config.features)
        shown = ", ".join(names[:_REPR_FEATURES])
        if len(names) > _REPR_FEATURES:
            shown += f", ... ({len(names) - _REPR_FEATURES} more)"
        bounds = sorted({f.output_bound for f in self.config.features.values()})
        bound = bounds[0] if len(bounds) == 1 else f"{bounds[0]}..{bounds[-1]}"
        return (
            f"Preprocessor({len(names)} features: {shown}; output_bound={bound}; "
            f"{len(self.output_widths())} outputs, {self.matrix_width()} "
            f"model_matrix columns; artifacts='{self.artifacts}')"
        )

    def output_widths(self) -> dict[str, int]:
        """Each graph output's width (1 for a scalar, d for a vector), in the
        column order of `model_matrix`."""
        spec = self.transform_output.transformed_feature_spec()
        return {
            name: int(np.prod(spec[name].shape, dtype=np.int64))
            for name in model_matrix_names(self.config)
        }

    def matrix_width(self) -> int:
        """The number of columns of `model_matrix`."""
        return sum(self.output_widths().values())

    def raw_tensors(self, raw: Mapping[str, Any]) -> dict[str, tf.SparseTensor]:
        """Validates and converts raw features (keyed by feature name) to the
        graph's sparse inputs (keyed by source column).

        Values may be any numeric type (float64 and int64 are cast); NaN in an
        `int` feature is a missing value, and its other values are rounded and
        clamped to the int64 range (+Inf -> the largest); an absent feature is
        missing in every row.

        Every feature must have the same batch size (the first given
        feature's) and its shape: `[batch]` (or `[batch, 1]`) for a scalar,
        `[batch, d]` for a vector. Eager calls check the shapes here; in a
        graph (the SavedModel's `transform_features` signature) one assertion
        checks each feature's rows and number of values when it runs, with an
        `InvalidArgumentError` that names the first feature in error.

        A given feature's values are all present (but NaN in an `int` one
        given as floats): the features of one size share their indices (all
        `[batch, size]` positions, row-major) and dense shape, a few ops
        whatever the number of features. In a graph, when every feature is
        given and none is an `int` one given as floats, every input is full,
        and the transform graph passes full inputs through without reading
        their indices: then they are given empty, which saves writing 16
        bytes a value (0.2 ms of a 1.3 ms call of the demo config at 100,000
        rows). Only for a graph that has that branch
        (`passes_full_inputs_through`); an older one gets every position.

        Raises:
          ExportError: an unknown feature name, a wrong shape or batch size,
            or no feature.
        """
        if not isinstance(raw, Mapping):
            hint = ""
            if hasattr(raw, "columns"):  # a pandas DataFrame
                hint = " (from a DataFrame: {name: df[name].to_numpy() ...})"
            raise ExportError(
                "expected the raw features as a dict keyed by feature name "
                f"({', '.join(self.config.features)}){hint}. Received: "
                f"{type(raw).__name__}"
            )
        unknown = sorted(set(raw) - set(self.config.features))
        if unknown:
            raise ExportError(
                f"unknown feature(s) {unknown}; the preprocessing knows "
                f"{sorted(self.config.features)}"
            )
        if not raw:
            raise ExportError("no raw features given")
        dense: dict[str, tf.Tensor] = {}
        for name, value in raw.items():
            feature = self.config.features[name]
            value = tf.convert_to_tensor(value)
            if not (value.dtype.is_floating or value.dtype.is_integer):
                raise ExportError(
                    f"feature `{name}`: values must be numbers. Received: "
                    f"dtype {value.dtype.name}"
                )
            rank = value.shape.rank  # None in a trace of unknown rank:
            # Keras relaxes a model's trace to that when the shapes of its
            # calls differ; the graph's shape check holds it when it runs.
            expected = (1, 2) if not feature.is_vector else (2,)
            last = value.shape[-1] if rank else None
            if rank is not None and (
                rank not in expected
                or (rank == 2 and last is not None and last != feature.size)
            ):
                raise ExportError(
                    f"feature `{name}`: expected shape {_wanted(feature)}. "
                    f"Received: {value.shape.as_list() if rank else value.shape}"
                )
            if dense:
                self._same_batch(name, value, *next(iter(dense.items())))
            dense[name] = value
        batch = tf.shape(next(iter(dense.values())), out_type=tf.int64)[0]
        checks = [] if tf.executing_eagerly() else [self._shape_check(dense, batch)]
        converted, rounded = {}, set()
        for name, value in dense.items():
            if self.config.features[name].dtype != "int":
                value = tf.cast(value, tf.float32)
            elif value.dtype.is_integer:
                value = _int_feature(value)
            else:  # rounded, NaN missing: a SparseTensor of its own
                rounded.add(name)
            converted[name] = value
        shapes: dict[int, tf.Tensor] = {}
        columns: dict[str, tf.Tensor] = {}
        # Made here, so that each reshape below holds the control dependency
        # itself (an op made in the block does not when an input does).
        widths = {
            name: tf.constant([-1, self.config.features[name].size])
            for name in converted
        }
        with tf.control_dependencies(checks):
            # Checked before anything reads them. Through `[batch, size]`: a
            # loaded signature's `[None]` input may hold `[batch, 1]` when
            # the graph runs, and TensorFlow's graph optimizer drops a
            # reshape to `[-1]` of a tensor declared `[None]` (not one with
            # a control dependency to `[batch, 1]`, nor the one after).
            for name, feature in self.config.features.items():
                if feature.size not in shapes:
                    shapes[feature.size] = tf.stack(
                        [batch, tf.constant(feature.size, tf.int64)]
                    )
                if name in converted:
                    columns[name] = tf.reshape(converted[name], widths[name])
        indices: dict[int, tf.Tensor] = {}
        if (
            checks
            and self._full_inputs_pass_through
            and not rounded
            and len(columns) == len(self.config.features)
        ):
            # Full (the shape check holds them to `batch * size` values):
            # the graph's full branch takes the values as they are. In a
            # graph, with no known length: a `SparseTensor` checks that its
            # indices are as long as its values when both lengths are known
            # (as they always are eagerly, where speed matters less).
            unread = tf.raw_ops.PlaceholderWithDefault(
                input=tf.zeros([0, 2], tf.int64), shape=[None, 2]
            )
            indices = {size: unread for size in shapes}
        # The graph's inputs are keyed by source column (`Config.source_column`).
        sparse = {}
        for name, feature in self.config.features.items():
            key = self.config.source_column(name)
            shape = shapes[feature.size]
            if name not in columns:
                dtype = tf.int64 if feature.dtype == "int" else tf.float32
                sparse[key] = tf.SparseTensor(
                    tf.zeros([0, 2], tf.int64), tf.zeros([0], dtype), shape
                )
            elif name in rounded:
                sparse[key] = _int_feature(columns[name])
            else:
                if feature.size not in indices:
                    indices[feature.size] = _full_indices(shape)
                sparse[key] = tf.SparseTensor(
                    indices[feature.size], tf.reshape(columns[name], [-1]), shape
                )
        return sparse

    def dense_inputs(self, raw: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The `transform_features` signature's tensors (every feature, of
        its declared dtype) as the preprocessing_fn's dense inputs:
        `[batch, size]`, keyed by source column, read only once the
        assertion `raw_tensors` makes in a graph has held."""
        dense = {name: raw[name] for name in self.config.features}
        batch = tf.shape(next(iter(dense.values())), out_type=tf.int64)[0]
        # Made before the block, so that each reshape holds the control
        # dependency itself (see `raw_tensors`).
        widths = {
            name: tf.constant([-1, feature.size])
            for name, feature in self.config.features.items()
        }
        with tf.control_dependencies([self._shape_check(dense, batch)]):
            return {
                self.config.source_column(name): tf.reshape(value, widths[name])
                for name, value in dense.items()
            }

    @staticmethod
    def _same_batch(
        name: str, value: tf.Tensor, first_name: str, first: tf.Tensor
    ) -> None:
        """Raises `ExportError` if `value`'s and `first`'s batch sizes are both
        known and differ."""
        if value.shape.rank is None or first.shape.rank is None:
            return
        rows, first_rows = value.shape[0], first.shape[0]
        if rows is not None and first_rows is not None and rows != first_rows:
            raise ExportError(
                f"feature `{name}`: batch size {rows}, but feature "
                f"`{first_name}` has {first_rows}; every feature needs one "
                "value (or vector) per row"
            )

    def _shape_check(
        self, dense: Mapping[str, tf.Tensor], batch: tf.Tensor
    ) -> tf.Operation:
        """One assertion, when the graph runs, that each feature has `batch`
        rows (the first feature's) and `batch * size` values.

        A loaded signature does not hold its inputs to their declared shapes
        (`[None]`, `[None, d]`): unchecked, a `[batch, d + 1]` vector or a
        `[batch, 2]` scalar would flatten into more rows, and a transposed
        `[d, batch]` vector would be read across its rows. The assertion's
        `InvalidArgumentError` names the first feature in error: a wrong
        batch size (`features `a` and `x` differ in batch size`) before a wrong
        width (`feature `x`: expected shape [batch, d]`)."""
        first = next(iter(dense))
        counts, factors, messages = [], [], []
        for name, value in dense.items():
            feature = self.config.features[name]
            if name != first:
                counts.append(tf.shape(value, out_type=tf.int64)[0])
                factors.append(1)
                messages.append(
                    f"features `{first}` and `{name}` differ in batch size; "
                    "every feature needs one value (or vector) per row"
                )
            counts.append(tf.size(value, out_type=tf.int64))
            factors.append(feature.size)
            messages.append(f"feature `{name}`: expected shape {_wanted(feature)}")
        equal = tf.equal(tf.stack(counts), batch * np.array(factors, np.int64))
        # The first check that fails (the last if none, a message unused):
        # the lowest position not equal, with no ties to break.
        last = len(messages) - 1
        first_error = tf.reduce_min(
            tf.where(equal, last, np.arange(len(messages), dtype=np.int32))
        )
        return tf.debugging.Assert(
            tf.reduce_all(equal), [tf.gather(tf.constant(messages), first_error)]
        )

    def __call__(self, raw: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        """The transformed features of a batch of raw features."""
        return self.tft_layer(self.raw_tensors(raw))

    def parse_examples(self, examples: tf.Tensor) -> dict[str, tf.SparseTensor]:
        """Parses serialized `tf.Example`s (keyed by source column, as the
        graph's inputs are); one assertion checks that no example holds more
        values than its feature's size, naming the first feature in error.

        `tf.io.parse_example` writes a `VarLenFeature`'s indices in row-major
        order, the order the graph takes (no reordering)."""
        parsed = tf.io.parse_example(examples, raw_feature_spec(self.config))
        keys, sizes, messages = [], [], []
        for name, feature in self.config.features.items():
            keys.append(self.config.source_column(name))
            sizes.append(feature.size)
            messages.append(
                f"feature `{name}`: an example holds more than {feature.size} value(s)"
            )
        # The largest position of each feature (the lowest int64 if none).
        widest = tf.stack([tf.reduce_max(parsed[key].indices[:, 1]) for key in keys])
        fits = widest < np.array(sizes, np.int64)
        # The first feature in error (the last if none, a message unused).
        first_error = tf.reduce_min(
            tf.where(fits, len(keys) - 1, np.arange(len(keys), dtype=np.int32))
        )
        check = tf.debugging.Assert(
            tf.reduce_all(fits), [tf.gather(tf.constant(messages), first_error)]
        )
        with tf.control_dependencies([check]):
            return {
                key: tf.SparseTensor(
                    tf.identity(value.indices), value.values, value.dense_shape
                )
                for key, value in parsed.items()
            }


def _input_names(model) -> list[str]:
    names = getattr(model, "input_names", None)  # tf_keras
    if names is None:
        names = [tensor.name for tensor in getattr(model, "inputs", None) or []]
    return list(names)


def _input_width(tensor) -> int | None:
    """The columns a model input takes: its last dimension (1 for `[batch]`),
    None if unknown."""
    shape = list(tensor.shape)
    if len(shape) < 2:
        return 1
    return None if shape[-1] is None else int(shape[-1])


def _listing(widths: Mapping[str, int], limit: int = 12) -> str:
    """`fare, fare__missing, embedding[3], ...`: outputs with their widths."""
    shown = [
        name if width == 1 else f"{name}[{width}]" for name, width in widths.items()
    ]
    if len(shown) > limit:
        shown = [*shown[:limit], f"... ({len(shown) - limit} more)"]
    return ", ".join(shown)


def check_model_inputs(model, preprocessor: Preprocessor) -> None:
    """Checks that `model` takes what the preprocessing produces.

    A model takes either named inputs, each the name of a graph output and
    as wide as it, or one `[batch, columns]` matrix as wide as
    `model_matrix`. A model whose inputs are not known yet (a subclassed
    model never called) is not checked.

    Raises:
      ExportError: the widths (or input names) differ; the message names the
        model's and the preprocessing's.
    """
    inputs = list(getattr(model, "inputs", None) or [])
    if not inputs:
        return
    names = _input_names(model)
    widths = preprocessor.output_widths()
    if names and all(name in widths for name in names):
        for name, tensor in zip(names, inputs, strict=True):
            width = _input_width(tensor)
            if width is not None and width != widths[name]:
                raise ExportError(
                    f"model input `{name}` expects {width} column(s), the "
                    f"preprocessing output `{name}` has {widths[name]}"
                )
        return
    columns = preprocessor.matrix_width()
    produced = f"the preprocessing produces {columns}: {_listing(widths)}"
    if len(inputs) != 1:
        unknown = [name for name in names if name not in widths]
        raise ExportError(
            f"model has {len(inputs)} inputs and {unknown} are not preprocessing "
            f"outputs; a model takes one matrix input ({produced}) or named "
            "inputs among the preprocessing outputs"
        )
    shape = list(inputs[0].shape)
    if len(shape) != 2:
        raise ExportError(
            f"model input has shape {shape}; a model takes a matrix "
            f"[batch, columns] ({produced})"
        )
    width = _input_width(inputs[0])
    if width is not None and width != columns:
        raise ExportError(f"model expects {width} input columns, {produced}")


def model_inputs(model, outputs: Mapping[str, tf.Tensor], config: Config) -> Any:
    """What to feed `model`: named outputs, or the `model_matrix`."""
    names = _input_names(model)
    known = set(model_matrix_names(config))
    if names and all(name in known for name in names):
        if len(names) == 1:
            return outputs[names[0]]
        return {name: outputs[name] for name in names}
    return model_matrix(outputs, config)


def _model_outputs(model, preprocessed, config: Config) -> dict[str, tf.Tensor]:
    result = model(model_inputs(model, preprocessed, config))
    if isinstance(result, Mapping):
        return dict(result)
    if isinstance(result, (list, tuple)):
        return {f"output_{i}": value for i, value in enumerate(result)}
    return {"predictions": result}


class ServingModule(tf.Module):
    """What is saved: the preprocessing, an optional model, two signatures.

    `transform_features` runs the preprocessing_fn traced on its dense
    inputs when that trace is bitwise equal to the transform graph on the
    probe rows (`dense_route`), else the transform graph, as
    `serving_default` always does; `tensors_route` says which
    (`"dense"` or `"transform graph"`), `tensors_route_reason` why not the
    dense one (None when it is taken)."""

    def __init__(self, artifacts: str | Path, model=None):
        super().__init__(name="tanhguard_serving")
        self.preprocessor = Preprocessor(artifacts)
        if model is not None:
            check_model_inputs(model, self.preprocessor)
        self.model = model
        config = self.preprocessor.config
        self.serving_default = tf.function(
            self._serve_examples,
            input_signature=[tf.TensorSpec([None], tf.string, name="examples")],
        )
        signature = [
            {
                name: tf.TensorSpec(
                    [None, feature.size] if feature.is_vector else [None],
                    tf.int64 if feature.dtype == "int" else tf.float32,
                    name=name,
                )
                for name, feature in config.features.items()
            }
        ]
        self._dense_fn: Callable | None = None
        self.tensors_route_reason = self._take_dense_route(signature)
        self.tensors_route = "transform graph" if self._dense_fn is None else "dense"
        self.transform_features = tf.function(
            self._serve_tensors, input_signature=signature
        )

    def _take_dense_route(self, signature: list) -> str | None:
        """Sets `_dense_fn` if the dense trace equals the transform graph on
        the probe rows (with a vector feature, at a batch below
        `TRANSPOSE_MIN_ROWS` and one at it, where vectors are put together
        another way); else says why not, on the log too."""
        preprocessor = self.preprocessor
        elements = sum(f.size for f in preprocessor.config.features.values())
        if elements > DENSE_ROUTE_MAX_ELEMENTS:
            reason = (
                f"the config has {elements:,} elements (more than "
                f"{DENSE_ROUTE_MAX_ELEMENTS}), where a second trace and its check "
                "would cost the export more than the dense inputs save a call"
            )
            logger.info("transform_features takes the transform graph: %s", reason)
            return reason
        try:
            reason = self._dense_route_differs(signature)
        except Exception as error:  # whatever fails, the saved graph serves
            # TensorFlow's messages from a trace end with the error itself.
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            last = f": {lines[-1]}" if lines else ""
            reason = f"tracing it again failed: {type(error).__name__}{last}"
        if reason is not None:
            logger.warning(
                "transform_features takes the transform graph, not its faster "
                "trace on dense inputs: %s",
                reason,
            )
        return reason

    def _dense_route_differs(self, signature: list) -> str | None:
        """None (and `_dense_fn` set) if the dense trace equals the transform
        graph on the probe rows; else what differs."""
        preprocessor = self.preprocessor
        try:
            config, vector, dense_fn = dense_preprocessing_fn(preprocessor.artifacts)
        except ArtifactsError as error:
            return str(error)
        if config.to_json_dict() != preprocessor.config.to_json_dict():
            return "the transform graph's config differs from the artifacts' config"

        graph = tf.function(self._by_graph, input_signature=signature)
        dense = tf.function(
            lambda raw: self._by_dense(raw, dense_fn), input_signature=signature
        )
        probe = probe_inputs(config, vector)
        batches = [probe]
        if any(feature.is_vector for feature in config.features.values()):
            rows = len(next(iter(probe.values())))
            tiles = -(-TRANSPOSE_MIN_ROWS // rows)
            batches.append({k: np.concatenate([v] * tiles) for k, v in probe.items()})
        for batch in batches:
            inputs = {name: tf.constant(value) for name, value in batch.items()}
            expected = {k: v.numpy() for k, v in graph(inputs).items()}
            got = {k: v.numpy() for k, v in dense(inputs).items()}
            difference = first_difference(expected, got)
            if difference is not None:
                rows = len(next(iter(batch.values())))
                return (
                    f"its trace by this tanhguard differs from it on {rows:,} "
                    f"probe rows (the artifacts come from another version?): "
                    f"{difference}"
                )
        self._dense_fn = dense_fn
        return None

    def _finish(self, preprocessed: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        if self.model is None:
            return dict(preprocessed)
        return _model_outputs(self.model, preprocessed, self.preprocessor.config)

    def _serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        preprocessor = self.preprocessor
        return self._finish(
            preprocessor.tft_layer(preprocessor.parse_examples(examples))
        )

    def _by_graph(self, raw: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The signature's tensors through the transform graph."""
        preprocessor = self.preprocessor
        return dict(preprocessor.tft_layer(preprocessor.raw_tensors(raw)))

    def _by_dense(
        self, raw: Mapping[str, tf.Tensor], dense_fn: Callable
    ) -> dict[str, tf.Tensor]:
        """The signature's tensors through the dense trace `dense_fn`."""
        return dense_fn(self.preprocessor.dense_inputs(raw))

    def _serve_tensors(self, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        if self._dense_fn is not None:
            return self._finish(self._by_dense(raw, self._dense_fn))
        return self._finish(self._by_graph(raw))
