"""Serving: the preprocessing graph as a module with two signatures.

  serving_default      `examples`: a batch of serialized `tf.Example` strings
                       (the TF Serving convention). A feature absent from an
                       example is missing, and imputed.
  transform_features   one dense tensor per raw feature, named after it:
                       float32 (int64 for `dtype: int`), shape `[batch]` for a
                       scalar and `[batch, d]` for a vector; NaN is missing.

Both return the transformed features (`name`, `name__missing`, ...), or, with
a model attached, the model's outputs (`predictions` for a single output).

A model takes the transformed features either as named inputs (a functional
model whose input names are output names of the graph), or as one matrix: the
outputs in config order (`model_matrix`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf
import tensorflow_transform as tft

from tanhguard.errors import ExportError
from tanhguard.pipeline.artifacts import load_artifacts_config
from tanhguard.pipeline.batch_layout import raw_feature_spec
from tanhguard.transforms.config import Config

SERVING_SIGNATURE = "serving_default"
TENSORS_SIGNATURE = "transform_features"


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


def _dense_to_sparse(values: tf.Tensor) -> tf.SparseTensor:
    """`[batch, size]` -> a SparseTensor with every value present."""
    indices = tf.where(tf.ones_like(values, dtype=tf.bool))
    return tf.SparseTensor(
        indices, tf.reshape(values, [-1]), tf.shape(values, out_type=tf.int64)
    )


class Preprocessor(tf.Module):
    """The preprocessing graph of an artifacts directory, callable on raw data.

    >>> preprocessor = Preprocessor("demo-output/artifacts")  # doctest: +SKIP
    >>> preprocessor({"fare": [12.5, float("nan")], ...})     # doctest: +SKIP
    """

    def __init__(self, artifacts: str | Path):
        super().__init__(name="tanhguard_preprocessor")
        self.config = load_artifacts_config(artifacts)
        self.tft_layer = tft.TFTransformOutput(
            str(artifacts)
        ).transform_features_layer()

    def raw_tensors(self, raw: Mapping[str, Any]) -> dict[str, tf.SparseTensor]:
        """Validates and converts raw features to the graph's sparse inputs.

        Values may be any numeric type (float64 and int64 are cast); NaN in an
        `int` feature is a missing value; an absent feature is missing in every
        row.

        Raises:
          ExportError: an unknown feature name, a wrong shape, or no feature.
        """
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
            rank = value.shape.rank
            expected = (1, 2) if not feature.is_vector else (2,)
            last = value.shape[-1] if rank else None
            if rank not in expected or (
                rank == 2 and last is not None and last != feature.size
            ):
                wanted = f"[batch, {feature.size}]" if feature.is_vector else "[batch]"
                raise ExportError(
                    f"feature `{name}`: expected shape {wanted}. "
                    f"Received: {value.shape.as_list() if rank else value.shape}"
                )
            dense[name] = tf.reshape(value, [-1, feature.size])
        batch = tf.shape(next(iter(dense.values())))[0]
        sparse = {}
        for name, feature in self.config.features.items():
            if name not in dense:
                dtype = tf.int64 if feature.dtype == "int" else tf.float32
                sparse[name] = tf.SparseTensor(
                    tf.zeros([0, 2], tf.int64),
                    tf.zeros([0], dtype),
                    tf.cast(tf.stack([batch, feature.size]), tf.int64),
                )
                continue
            value = dense[name]
            if feature.dtype == "int":
                present = ~tf.math.is_nan(tf.cast(value, tf.float64))
                indices = tf.where(present)
                values = tf.cast(
                    tf.round(tf.gather_nd(tf.cast(value, tf.float64), indices)),
                    tf.int64,
                )
                sparse[name] = tf.SparseTensor(
                    indices, values, tf.shape(value, out_type=tf.int64)
                )
            else:
                sparse[name] = _dense_to_sparse(tf.cast(value, tf.float32))
        return sparse

    def __call__(self, raw: Mapping[str, Any]) -> dict[str, tf.Tensor]:
        """The transformed features of a batch of raw features."""
        return self.tft_layer(self.raw_tensors(raw))

    def parse_examples(self, examples: tf.Tensor) -> dict[str, tf.SparseTensor]:
        """Parses serialized `tf.Example`s; checks vector lengths per feature."""
        parsed = tf.io.parse_example(examples, raw_feature_spec(self.config))
        checks = []
        for name, feature in self.config.features.items():
            positions = parsed[name].indices[:, 1]
            checks.append(
                tf.debugging.assert_less(
                    positions,
                    tf.constant(feature.size, tf.int64),
                    message=(
                        f"feature `{name}`: an example holds more than "
                        f"{feature.size} value(s)"
                    ),
                )
            )
        with tf.control_dependencies(checks):
            return {name: tf.sparse.reorder(value) for name, value in parsed.items()}


def _input_names(model) -> list[str]:
    names = getattr(model, "input_names", None)  # tf_keras
    if names is None:
        names = [tensor.name for tensor in getattr(model, "inputs", None) or []]
    return list(names)


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
    """What is saved: the preprocessing, an optional model, two signatures."""

    def __init__(self, artifacts: str | Path, model=None):
        super().__init__(name="tanhguard_serving")
        self.preprocessor = Preprocessor(artifacts)
        self.model = model
        config = self.preprocessor.config
        self.serving_default = tf.function(
            self._serve_examples,
            input_signature=[tf.TensorSpec([None], tf.string, name="examples")],
        )
        self.transform_features = tf.function(
            self._serve_tensors,
            input_signature=[
                {
                    name: tf.TensorSpec(
                        [None, feature.size] if feature.is_vector else [None],
                        tf.int64 if feature.dtype == "int" else tf.float32,
                        name=name,
                    )
                    for name, feature in config.features.items()
                }
            ],
        )

    def _finish(self, raw: dict[str, tf.SparseTensor]) -> dict[str, tf.Tensor]:
        preprocessed = self.preprocessor.tft_layer(raw)
        if self.model is None:
            return dict(preprocessed)
        return _model_outputs(self.model, preprocessed, self.preprocessor.config)

    def _serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._finish(self.preprocessor.parse_examples(examples))

    def _serve_tensors(self, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return self._finish(self.preprocessor.raw_tensors(raw))
