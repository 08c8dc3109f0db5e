"""Keras: a model of the same family (tf_keras or Keras 3) behind the
preprocessing, that saves and loads in its family's formats, and loading a
model file of either family.

`attach(model, artifacts)` returns a `GuardedModel`: two layers, the
preprocessing graph (`Preprocessing`, no weights) then `model`. Both classes
exist once per Keras family and are registered as serializable under the
package `tanhguard` (`tanhguard>GuardedModel`, `tanhguard>Preprocessing`)
when this module is imported, so that `keras.saving.load_model` (or
`tf_keras.models.load_model`) finds them after

    import tanhguard.pipeline.keras_attach

(`tanhguard.attach` and `tanhguard.pipeline.export` import it too;
`load_keras_model` needs no import beyond its own). A `.keras` file holds the
preprocessing graph itself (the artifacts' graph, schema and stats.json, as
the layer's assets): it loads without the artifacts directory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import keras
import numpy as np
import tf_keras

from tanhguard.errors import ExportError
from tanhguard.pipeline.artifacts import STATS_FILE, TRANSFORM_FN_DIR
from tanhguard.pipeline.serving import Preprocessor, check_model_inputs, model_inputs

# What a saved model carries of an artifacts directory: all the preprocessing
# needs (not the rows a `tanhguard run` writes beside them).
_CARRIED = (STATS_FILE, TRANSFORM_FN_DIR, "transformed_metadata", "metadata")
PACKAGE = "tanhguard"


def load_keras_model(path: str | Path):
    """Loads a Keras model file: tf_keras (SavedModel dir, `.h5`, `.keras`) or
    Keras 3 (`.keras`), including a model `attach` returned.

    A model using `stable_tanh` by name loads too (it is registered here).
    Lambda layers in a `.keras` file need Keras's `safe_mode=False`, and
    custom layers their module imported: load such a model in Python and
    pass the model object instead of its path.

    Raises:
      ExportError: the path is missing, cannot be loaded, or holds something
        other than a Keras model (e.g. a `tf.Module` SavedModel).
    """
    import tanhguard.pipeline.activations  # noqa: F401  (registers stable_tanh)

    text = str(path)
    if "://" in text:
        raise ExportError(
            f"{text}: a model is loaded from a local path; copy it locally first"
        )
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{path}: no such model file or directory")
    try:
        if path.suffix == ".keras" and _keras_major_version(path) >= 3:
            model = keras.saving.load_model(path)
        else:
            model = tf_keras.models.load_model(path)
    except ExportError:
        raise
    except Exception as error:  # Keras raises many types for a bad file
        first = " ".join(str(error).split())[:300]
        raise ExportError(
            f"{path}: cannot load a Keras model: {type(error).__name__}: {first}"
        ) from None
    if not isinstance(model, (keras.Model, tf_keras.Model)):
        raise ExportError(
            f"{path}: not a Keras model (a {type(model).__name__}); --model takes "
            "a tf_keras or Keras 3 model file"
        )
    return model


def refuse_guarded(model, what: str) -> None:
    """An `ExportError` when `model` already holds tanhguard's preprocessing
    (a model `attach` returned): `what` it would do names the alternative."""
    if is_guarded(model):
        raise ExportError(
            f"model `{model.name}` already holds tanhguard's preprocessing (a "
            f"model `attach` returned); {what} the model it wraps, "
            "`guarded.model`, which takes the transformed features"
        )


def _keras_major_version(path: Path) -> int:
    """The Keras major version recorded in a `.keras` archive (2 if absent)."""
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read("metadata.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
        raise ExportError(f"{path}: not a `.keras` archive: {error}") from None
    version = str(metadata.get("keras_version", "2"))
    return int(version.split(".")[0]) if version.split(".")[0].isdigit() else 2


def _copy_artifacts(source: Path, target: Path) -> None:
    """Copies what the preprocessing needs of an artifacts directory."""
    target.mkdir(parents=True, exist_ok=True)
    for name in _CARRIED:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, dirs_exist_ok=True)
        elif (source / name).exists():
            shutil.copy2(source / name, target / name)


def _define_classes(family) -> SimpleNamespace:
    """`Preprocessing` and `GuardedModel` for one Keras family (the `keras` or
    `tf_keras` module), registered under the package `tanhguard`."""
    register = family.saving.register_keras_serializable(package=PACKAGE)

    @register
    class Preprocessing(family.layers.Layer):
        """tanhguard's preprocessing graph as a layer: a dict of raw features
        in, the transformed features (a dict by output name) out.

        Args:
          artifacts: An artifacts directory. None when Keras loads a saved
            model: the graph then comes from the saved file's assets.
        """

        def __init__(self, artifacts: str | Path | None = None, **kwargs):
            kwargs.setdefault("name", "tanhguard")
            kwargs["trainable"] = False
            super().__init__(**kwargs)
            self.preprocessor = None if artifacts is None else Preprocessor(artifacts)
            self._loaded_copy = None  # the assets a loaded model reads from
            self.built = True  # no weights to build

        def call(self, raw):
            if self.preprocessor is None:
                raise ExportError(
                    f"layer `{self.name}`: no preprocessing graph (a model "
                    "saved without its assets; save it as `.keras`, or build "
                    "it again with `attach`)"
                )
            return self.preprocessor(raw)

        def get_config(self) -> dict[str, Any]:
            return super().get_config()

        def save_assets(self, dir_path: str) -> None:
            _copy_artifacts(self.preprocessor.artifacts, Path(dir_path))

        def load_assets(self, dir_path: str) -> None:
            # The archive's assets are removed once loading ends: the graph is
            # read from a copy that lives as long as this layer.
            self._loaded_copy = tempfile.TemporaryDirectory(prefix="tanhguard-")
            copy = Path(self._loaded_copy.name) / "artifacts"
            _copy_artifacts(Path(dir_path), copy)
            self.preprocessor = Preprocessor(copy)

    @register
    class GuardedModel(family.Model):
        """`model` behind tanhguard's preprocessing: raw features in.

        Args:
          model: The model that takes the transformed features.
          preprocessing: The `Preprocessing` layer in front of it.
        """

        def __init__(self, model, preprocessing, **kwargs):
            kwargs.setdefault("name", f"tanhguard_{model.name}")
            super().__init__(**kwargs)
            self.preprocessing = preprocessing
            self.model = model
            # Nothing left to build: `model` is (its inputs were checked),
            # and the preprocessing has no weights.
            self.built = model.built

        def call(self, raw):
            preprocessed = self.preprocessing(raw)
            config = self.preprocessing.preprocessor.config
            return self.model(model_inputs(self.model, preprocessed, config))

        def get_config(self) -> dict[str, Any]:
            return {
                "name": self.name,
                "model": family.saving.serialize_keras_object(self.model),
                "preprocessing": family.saving.serialize_keras_object(
                    self.preprocessing
                ),
            }

        def build_from_config(self, config: dict[str, Any]) -> None:
            # Nothing to build: `model` comes built from its own config and the
            # preprocessing has no weights (its graph arrives with the assets,
            # after this runs, so it cannot be called here).
            self.built = True

        @classmethod
        def from_config(cls, config: dict[str, Any], custom_objects=None):
            config = dict(config)
            for key in ("model", "preprocessing"):
                config[key] = family.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects
                )
            return cls(**config)

    return SimpleNamespace(Preprocessing=Preprocessing, GuardedModel=GuardedModel)


KERAS3 = _define_classes(keras)
TF_KERAS = _define_classes(tf_keras)


def attach(model, artifacts: str | Path):
    """A model of the same Keras family that takes raw features.

    Args:
      model: A tf_keras or Keras 3 model that takes the transformed features:
        one matrix of `model_matrix`'s width, or named inputs among the
        preprocessing's outputs.
      artifacts: An artifacts directory from `tanhguard analyze`.

    Returns:
      A `GuardedModel` of `model`'s family whose input is a dict of raw
      features (numpy arrays or tensors, any numeric dtype; NaN is missing)
      and whose output is `model`'s. It saves as `.keras` (the preprocessing
      graph inside), or with tf_keras also as a SavedModel, and loads back with
      `load_keras_model` or the family's own `load_model` once this module is
      imported. `export(artifacts, output, model)` saves the same composition
      as a serving SavedModel.

    Raises:
      ExportError: `model` is not a Keras model, or its inputs do not match
        the preprocessing's outputs (the message names both widths).
    """
    if isinstance(model, tf_keras.Model):
        classes = TF_KERAS
    elif isinstance(model, keras.Model):
        classes = KERAS3
    else:
        raise ExportError(
            f"`model` must be a tf_keras or Keras 3 model. Received: {type(model)}"
        )
    refuse_guarded(model, "attach")
    preprocessing = classes.Preprocessing(artifacts)
    check_model_inputs(model, preprocessing.preprocessor)
    guarded = classes.GuardedModel(model, preprocessing)
    if classes is TF_KERAS:
        # tf_keras saves, as a SavedModel, the signature of the first call:
        # make it every feature, float32 (int64 for an `int` feature).
        guarded(_one_missing_row(preprocessing.preprocessor.config))
    return guarded


def is_guarded(model) -> bool:
    """Whether `model` is a model `attach` returned (or one loaded back)."""
    return isinstance(model, (KERAS3.GuardedModel, TF_KERAS.GuardedModel))


def _one_missing_row(config) -> dict[str, np.ndarray]:
    """A batch of one row, every feature present in its serving dtype: NaN
    (missing) for a float feature, 0 for an `int` one."""
    return {
        name: np.full(
            (1, feature.size) if feature.is_vector else (1,),
            0 if feature.dtype == "int" else np.nan,
            np.int64 if feature.dtype == "int" else np.float32,
        )
        for name, feature in config.features.items()
    }
