"""`SaturationMonitor`: each epoch, how saturated every tanh layer is.

At the end of each epoch the callback runs one validation batch through the
model, layer by layer (`tanhguard.pipeline.audit.observe_pre_activations`,
the walk the audit's `--data` uses), and writes two figures per tanh-bearing
activation into the epoch's `logs`, where the History and the TensorBoard
callbacks pick them up:

  tanh_saturation/<layer>   share of activations with |tanh(z)| > 0.99
  tanh_max_abs_z/<layer>    the largest |z| (NaN if some z is NaN)

`z` is the pre-activation; `<layer>` is the layer's path in the model
(`outer/dense` for a nested model) and, for a recurrent layer, the part in
brackets (`lstm[cell_input]`, `lstm[cell]`, `gru[candidate]`, `rnn` for a
SimpleRNN). Tanh-bearing: a Dense or convolution whose activation is tanh or
stable_tanh, an `Activation` layer with either, the tanh parts of SimpleRNN,
LSTM and GRU; with `include_unknown` (the default) also an activation
Keras does not name (a custom function, which may be a hand-written tanh),
as `tanhguard audit` does. A hand-written tanh, `(e^z - e^-z)/(e^z + e^-z)`,
is NaN once |z| passes 88.72 in float32: `on_overflow="stop"` ends training
there.

>>> monitor = SaturationMonitor(x_val[:256], on_overflow="stop")  # doctest: +SKIP
>>> history = model.fit(x, y, epochs=5, callbacks=[monitor, board])  # doctest: +SKIP
>>> history.history["tanh_saturation/dense"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import numpy as np

from tanhguard.errors import ConfigError, ExportError
from tanhguard.pipeline.audit import (
    OBSERVED_SATURATION,
    OVERFLOW_FLOAT32,
    observe_pre_activations,
)
from tanhguard.pipeline.interval_bounds import TANH_NAMES, activation_name, is_model

logger = logging.getLogger(__name__)

SATURATION_KEY = "tanh_saturation"
MAX_ABS_Z_KEY = "tanh_max_abs_z"
ON_OVERFLOW = (None, "warn", "stop")
# Recurrent parts that go through the cell's `recurrent_activation` (sigmoid
# by default); the other parts go through its `activation` (tanh).
_RECURRENT_GATES = ("input", "forget", "output", "update", "reset")


def _layers_by_path(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, layer) for every layer that is not a model, as the audit's
    walk names them."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if is_model(layer):
            yield from _layers_by_path(layer, path + "/")
        else:
            yield path, layer


def _activation_of(layer: Any, part: str) -> str | None:
    """The name of the activation applied to `(layer, part)`'s z (None:
    not one Keras names)."""
    if part:
        cell = layer.cell
        which = "recurrent_activation" if part in _RECURRENT_GATES else "activation"
        return activation_name(getattr(cell, which, None))
    return activation_name(getattr(layer, "activation", None))


def _label(path: str, part: str) -> str:
    return f"{path}[{part}]" if part else path


def _first_batch(validation_x: Any) -> Any:
    """The inputs of a `tf.data.Dataset`'s first element (x of `(x, y)`)."""
    import tensorflow as tf

    if isinstance(validation_x, tf.data.Dataset):
        element = next(iter(validation_x))
        if isinstance(element, tuple):
            element = element[0]
        return element
    return validation_x


def _model_inputs(model: Any, batch: Any) -> list:
    """One value per `model.inputs` from an array, a list or a dict by input
    name."""
    from tanhguard.pipeline.serving import _input_names

    inputs = list(getattr(model, "inputs", None) or [])
    if not inputs:
        raise ExportError(
            f"SaturationMonitor: model `{model.name}` has no defined inputs; build "
            "it with `Input(...)` (a Sequential or Functional model)"
        )
    if isinstance(batch, Mapping):
        names = _input_names(model)
        missing = [name for name in names if name not in batch]
        if missing:
            raise ConfigError(
                f"SaturationMonitor: `validation_x` has no value for the model "
                f"input(s) {missing}. Received keys: {sorted(batch)}"
            )
        return [batch[name] for name in names]
    values = list(batch) if isinstance(batch, (list, tuple)) else [batch]
    if len(values) != len(inputs):
        raise ConfigError(
            f"SaturationMonitor: model `{model.name}` has {len(inputs)} inputs; "
            f"`validation_x` must give one array per input. Received: "
            f"{len(values)} array(s)"
        )
    return values


def saturation_figures(
    model: Any, validation_x: Any, include_unknown: bool = True
) -> dict[str, float]:
    """The saturation share and max |z| of each tanh-bearing activation.

    Args:
      model: A built tf_keras or Keras 3 Sequential or Functional model.
      validation_x: One batch: an array (one input), a list of arrays (one per
        input), a dict by input name, or a `tf.data.Dataset` (its first
        batch).
      include_unknown: Also report activations Keras does not name.

    Returns:
      `{"tanh_saturation/<layer>": share, "tanh_max_abs_z/<layer>": max |z|}`
      as Python floats, layers in model order. Share: the fraction of the
      batch's z with |tanh(z)| > 0.99 (NaN z do not count). Max |z|: NaN if
      some z is NaN, inf if some z is infinite. Empty for a model with no
      tanh-bearing activation.

    Raises:
      ExportError: the model has no defined inputs.
      ConfigError: `validation_x` does not match the model's inputs.
    """
    inputs = _model_inputs(model, _first_batch(validation_x))
    layers = dict(_layers_by_path(model))
    figures: dict[str, float] = {}
    for (path, part), z in observe_pre_activations(model, inputs).items():
        name = _activation_of(layers[path], part) if path in layers else None
        if name not in TANH_NAMES and not (include_unknown and name is None):
            continue
        z = np.asarray(z, np.float64)
        label = _label(path, part)
        if z.size == 0:
            continue
        with np.errstate(invalid="ignore"):
            share = float(np.mean(np.abs(np.tanh(z)) > OBSERVED_SATURATION))
        largest = float(np.max(np.abs(z)))  # NaN propagates
        figures[f"{SATURATION_KEY}/{label}"] = share
        figures[f"{MAX_ABS_Z_KEY}/{label}"] = largest
    return figures


class SaturationMonitor(keras.callbacks.Callback):
    """Logs each tanh layer's saturation and max |pre-activation| per epoch.

    Works with `fit` in both Keras families (Keras 3 and tf_keras). List it
    before a `TensorBoard` callback so that TensorBoard sees the figures
    (History always does).

    Args:
      validation_x: The batch measured each epoch: an array, a list of arrays
        (one per model input), a dict by input name, or a `tf.data.Dataset`
        (its first batch). A few hundred rows are enough; the whole batch
        goes through the model at once.
      on_overflow: What to do when some |z| passes `overflow_threshold` (or
        is NaN): None (the default) only logs the figures, "warn" also logs
        a warning naming the layers, "stop" also sets
        `model.stop_training = True`.
      overflow_threshold: Where a hand-written tanh overflows: 88.72, the
        float32 threshold (`tanhguard.pipeline.audit.OVERFLOW_FLOAT32`).
      include_unknown: Also measure activations Keras does not name (a
        custom function may be a hand-written tanh).

    Attributes:
      figures: The last epoch's figures (`saturation_figures`).
      overflowed: The layers whose |z| passed the threshold in the last
        epoch.

    Raises:
      ConfigError: `on_overflow` or `overflow_threshold` is not valid.
    """

    # Keras 3 may run batch hooks asynchronously: this class has none.
    async_safe = True
    # tf_keras's CallbackList asks these of every callback.
    _supports_tf_logs = False
    _chief_worker_only = None

    def __init__(
        self,
        validation_x: Any,
        on_overflow: str | None = None,
        overflow_threshold: float = OVERFLOW_FLOAT32,
        include_unknown: bool = True,
    ) -> None:
        super().__init__()
        if on_overflow not in ON_OVERFLOW:
            raise ConfigError(
                f"SaturationMonitor: `on_overflow` must be one of {ON_OVERFLOW}. "
                f"Received: {on_overflow!r}"
            )
        if not (
            isinstance(overflow_threshold, (int, float))
            and math.isfinite(overflow_threshold)
            and overflow_threshold > 0
        ):
            raise ConfigError(
                "SaturationMonitor: `overflow_threshold` must be a finite positive "
                f"number. Received: {overflow_threshold!r}"
            )
        self.validation_x = validation_x
        self.on_overflow = on_overflow
        self.overflow_threshold = float(overflow_threshold)
        self.include_unknown = include_unknown
        self.figures: dict[str, float] = {}
        self.overflowed: list[str] = []

    def _implements_train_batch_hooks(self) -> bool:
        return False

    def _implements_test_batch_hooks(self) -> bool:
        return False

    def _implements_predict_batch_hooks(self) -> bool:
        return False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        model = self.model
        self.figures = saturation_figures(
            model, self.validation_x, self.include_unknown
        )
        if logs is not None:
            logs.update(self.figures)
        prefix = f"{MAX_ABS_Z_KEY}/"
        self.overflowed = [
            key[len(prefix) :]
            for key, value in self.figures.items()
            if key.startswith(prefix) and not value <= self.overflow_threshold
        ]
        if not self.overflowed or self.on_overflow is None:
            return
        worst = ", ".join(
            f"`{label}` (max |z| {self.figures[prefix + label]:.4g})"
            for label in self.overflowed
        )
        action = "stopping training" if self.on_overflow == "stop" else "continuing"
        logger.warning(
            "SaturationMonitor: epoch %d: a pre-activation passes the hand-written "
            "tanh's overflow threshold %.2f in layer %s; %s",
            epoch + 1,
            self.overflow_threshold,
            worst,
            action,
        )
        if self.on_overflow == "stop":
            model.stop_training = True
