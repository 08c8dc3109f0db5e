"""Trainer module for the example pipeline: a small tf_keras tanh model on
tanhguard's transformed features, served behind the transform graph (TFX's
usual `tft_layer` pattern)."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx_bsl.public import tfxio

LABEL = "label"


def _dataset(file_pattern, data_accessor, transform_output, batch_size: int):
    return data_accessor.tf_dataset_factory(
        file_pattern,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=LABEL),
        transform_output.transformed_metadata.schema,
    ).repeat()


def _feature_shapes(transform_output) -> dict[str, tuple[int, ...]]:
    """Transformed feature -> per-row shape, the label excluded."""
    spec = transform_output.transformed_feature_spec()
    return {
        name: tuple(feature.shape) for name, feature in spec.items() if name != LABEL
    }


def _build_model(shapes: dict[str, tuple[int, ...]]) -> tf_keras.Model:
    inputs = {
        name: tf_keras.Input(shape=shape, name=name) for name, shape in shapes.items()
    }
    columns = [
        tf_keras.layers.Reshape((-1,))(
            value if shapes[name] else tf_keras.layers.Reshape((1,))(value)
        )
        for name, value in inputs.items()
    ]
    x = tf_keras.layers.Concatenate()(columns)
    x = tf_keras.layers.Dense(16, activation="tanh")(x)
    x = tf_keras.layers.Dense(8, activation="tanh")(x)
    output = tf_keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    model = tf_keras.Model(inputs, output)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def _serving_function(model, transform_output):
    model.tft_layer = transform_output.transform_features_layer()
    shapes = _feature_shapes(transform_output)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(serialized):
        raw_spec = transform_output.raw_feature_spec()
        raw_spec.pop(LABEL)
        parsed = tf.io.parse_example(serialized, raw_spec)
        transformed = model.tft_layer(parsed)
        return {"probability": model({name: transformed[name] for name in shapes})}

    return serve


def run_fn(fn_args: FnArgs) -> None:
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    train = _dataset(fn_args.train_files, fn_args.data_accessor, transform_output, 64)
    evaluate = _dataset(fn_args.eval_files, fn_args.data_accessor, transform_output, 64)
    model = _build_model(_feature_shapes(transform_output))
    model.fit(
        train,
        steps_per_epoch=fn_args.train_steps,
        validation_data=evaluate,
        validation_steps=fn_args.eval_steps,
        verbose=0,
    )
    model.save(
        fn_args.serving_model_dir,
        save_format="tf",
        signatures={"serving_default": _serving_function(model, transform_output)},
    )
