"""`tanhguard export`: the serving SavedModel, alone or in front of a model.

The SavedModel is `serving.ServingModule` saved with its two signatures
(`serving_default`: serialized `tf.Example`s; `transform_features`: one
tensor per raw feature). This module also keeps the names the README and
users import from it: `Preprocessor`, `attach`, `model_matrix`, ...
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from tanhguard.errors import ExportError
from tanhguard.pipeline.artifacts import load_artifacts_config
from tanhguard.pipeline.keras_attach import (
    attach,
    load_keras_model,
    refuse_guarded,
)
from tanhguard.pipeline.output_dir import check_output, publish_dir
from tanhguard.pipeline.serving import (
    SERVING_SIGNATURE,
    TENSORS_SIGNATURE,
    Preprocessor,
    ServingModule,
    model_inputs,
    model_matrix,
    model_matrix_names,
)

__all__ = [
    "SERVING_SIGNATURE",
    "TENSORS_SIGNATURE",
    "ExportError",
    "Preprocessor",
    "ServingModule",
    "attach",
    "export",
    "load_artifacts_config",
    "load_keras_model",
    "model_inputs",
    "model_matrix",
    "model_matrix_names",
]


def export(
    artifacts: str | Path,
    output: str | Path,
    model=None,
    overwrite: bool = False,
) -> Path:
    """Writes the serving SavedModel (see the module docstring).

    Args:
      artifacts: An artifacts directory from `tanhguard analyze`.
      output: The SavedModel directory; it appears only when complete.
      model: Optional Keras model (tf_keras or Keras 3), in memory, that takes
        the transformed features.
      overwrite: Replace an existing `output`.

    Returns:
      The absolute path of the SavedModel.

    Raises:
      ExportError: `model`'s inputs do not match the preprocessing's outputs
        (the message names both widths), or `model` already holds the
        preprocessing (a model `attach` returned).
      ArtifactsError: `artifacts` is not an artifacts directory.
      OutputError: `output` cannot or must not be written.
    """
    if model is not None:
        refuse_guarded(model, "export")
    check_output(output, [artifacts])  # before the graph is loaded
    module = ServingModule(artifacts, model)
    with publish_dir(output, overwrite=overwrite, protect=[artifacts]) as staging:
        tf.saved_model.save(
            module,
            str(staging),
            signatures={
                SERVING_SIGNATURE: module.serving_default,
                TENSORS_SIGNATURE: module.transform_features,
            },
        )
    return Path(output).absolute()
