"""The two analysis phases as TFT analyzers (`ptransform_analyzer`s).

Each wraps the Beam transform of its phase, so the same code runs in the
batch job, inside TFX's Transform component, and on any Beam runner. Their
outputs become constants of the saved graph.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from tanhguard.transforms.config import Config
from tanhguard.transforms.first_phase import FirstPhase
from tanhguard.transforms.fit_phase import FitPhase
from tanhguard.transforms.layout import phase0_length, stats_vector_length
from tanhguard.transforms.slots import Slot, total_slots


def first_phase_analyzer(x: tf.Tensor, missing: tf.Tensor, config: Config) -> tf.Tensor:
    """The first phase: the float64 parameters vector.

    Args:
      x: float32 `[batch, D]`, every feature's elements side by side, NaN
        where missing.
      missing: bool `[batch, D]`.
      config: The validated config.
    """
    (vector,) = tft.experimental.ptransform_analyzer(
        [x, missing],
        FirstPhase(config),
        output_dtypes=[tf.float64],
        output_shapes=[[phase0_length(total_slots(config))]],
        name="tanhguard_first_phase",
    )
    return vector


def fit_phase_analyzer(
    x: tf.Tensor,
    parameters: tf.Tensor,
    slots: list[Slot],
    mads: np.ndarray | None = None,
    output_bounds: np.ndarray | None = None,
) -> tf.Tensor:
    """The fit phase: the float64 statistics vector (parameters, then
    `FIT_FIELDS`). `mads`, when known (see `fit_phase.MadCombineFn`), saves
    the analyzer its own MAD pass; `output_bounds` turns on the histograms.

    Args:
      x: float64 `[batch, D]`, after the inf policy (NaN for missing values).
      parameters: The first phase's vector.
      slots: `plan_slots(config)`.
      mads: Optional MAD per slot (NaN where the clip is not `mad`).
      output_bounds: Each slot's output bound as the graph applies it
        (`slots.float32_bound`); without it the histogram fields are NaN.
    """
    (vector,) = tft.experimental.ptransform_analyzer(
        [x, tf.reshape(parameters, [1, -1])],
        FitPhase(slots, mads, output_bounds),
        output_dtypes=[tf.float64],
        output_shapes=[[stats_vector_length(len(slots))]],
        name="tanhguard_fit_scale",
    )
    return vector
