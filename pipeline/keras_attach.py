"""Keras: a model of the same family (tf_keras or Keras 3) behind the
preprocessing, and loading a model file of either family."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tanhguard.errors import ExportError
from tanhguard.pipeline.serving import Preprocessor, model_inputs


def load_keras_model(path: str | Path):
    """Loads a Keras model file: tf_keras (SavedModel dir, `.h5`, `.keras`) or
    Keras 3 (`.keras`).

    Raises:
      ExportError: the path is missing or not a Keras model.
    """
    path = Path(path)
    if not path.exists():
        raise ExportError(f"{path}: no such model file or directory")
    import tf_keras

    try:
        if path.suffix == ".keras" and _keras_major_version(path) >= 3:
            import keras

            return keras.saving.load_model(path)
        return tf_keras.models.load_model(path)
    except (OSError, ValueError, KeyError) as error:
        raise ExportError(f"{path}: cannot load a Keras model: {error}") from None


def _keras_major_version(path: Path) -> int:
    """The Keras major version recorded in a `.keras` archive (2 if absent)."""
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read("metadata.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
        raise ExportError(f"{path}: not a `.keras` archive: {error}") from None
    version = str(metadata.get("keras_version", "2"))
    return int(version.split(".")[0]) if version.split(".")[0].isdigit() else 2


def _guarded_call(preprocessor: Preprocessor, model, raw: Mapping[str, Any]):
    preprocessed = preprocessor(raw)
    return model(model_inputs(model, preprocessed, preprocessor.config))


def attach(model, artifacts: str | Path):
    """A model of the same Keras family that takes raw features.

    Args:
      model: A tf_keras or Keras 3 model that takes the transformed features.
      artifacts: An artifacts directory from `tanhguard analyze`.

    Returns:
      A model whose input is a dict of raw features (numpy arrays or tensors,
      any numeric dtype; NaN is missing) and whose output is `model`'s.
      `export(artifacts, output, model)` saves the same composition.
    """
    preprocessor = Preprocessor(artifacts)
    import tf_keras

    if isinstance(model, tf_keras.Model):
        base = tf_keras.Model
    else:
        import keras

        if not isinstance(model, keras.Model):
            raise ExportError(
                f"`model` must be a tf_keras or Keras 3 model. Received: {type(model)}"
            )
        base = keras.Model

    class GuardedModel(base):
        """`model` behind tanhguard's preprocessing."""

        def __init__(self):
            super().__init__(name=f"tanhguard_{model.name}")
            self.inner = model
            self.preprocessor = preprocessor

        def call(self, raw):
            return _guarded_call(self.preprocessor, self.inner, raw)

    return GuardedModel()
