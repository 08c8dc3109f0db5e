"""The last analysis phase: fit `center`/`scale` and write the statistics.

Implemented as a TFT `ptransform_analyzer`, so it runs inside
`tft_beam.AnalyzeDataset` on any Beam runner. It merges per-batch moments of
the clipped data with Chan's parallel update in float64, decides which
elements are constant (the one place that rule lives), and writes the full
statistics vector that stats.json is made from: the values the graph applies.
"""

from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

# A scale this small relative to the center is float rounding, not spread: a
# column of one repeated float32 value has a float64 std of about 1e-16 * |c|,
# while two float32 values one ulp apart differ by about 6e-8 * |c|.
RELATIVE_ZERO_SCALE = 1e-12
ABSOLUTE_ZERO_SCALE = 1e-30


class Moments(NamedTuple):
    """Count, mean and sum of squared deviations per column, plus parameters."""

    parameters: np.ndarray
    count: float
    mean: np.ndarray
    m2: np.ndarray


def batch_moments(batch: list[np.ndarray]) -> Moments:
    """Moments of one batch of `(clipped [rows, D], parameters [1, K0])`."""
    clipped = np.asarray(batch[0], dtype=np.float64)
    mean = clipped.mean(axis=0)
    m2 = ((clipped - mean) ** 2).sum(axis=0)
    return Moments(np.asarray(batch[1])[0], float(clipped.shape[0]), mean, m2)


def merge_moments(parts) -> Moments | None:
    """Chan et al.'s pairwise merge of `Moments`; parameters are kept as is."""
    merged = None
    for part in parts:
        if part is None or part.count == 0:
            continue
        if merged is None:
            merged = part
            continue
        count = merged.count + part.count
        delta = part.mean - merged.mean
        mean = merged.mean + delta * (part.count / count)
        m2 = merged.m2 + part.m2 + delta**2 * (merged.count * part.count / count)
        merged = Moments(merged.parameters, count, mean, m2)
    return merged


def centers_and_scales(moments: Moments) -> np.ndarray:
    """`[centers..., scales...]` (zscore), scale 0 for a constant element."""
    std = np.sqrt(np.maximum(moments.m2 / moments.count, 0.0))
    tiny = np.maximum(RELATIVE_ZERO_SCALE * np.abs(moments.mean), ABSOLUTE_ZERO_SCALE)
    scale = np.where(std <= tiny, 0.0, std)
    # The graph applies float32 values; fit, write and apply those.
    center32 = moments.mean.astype(np.float32).astype(np.float64)
    scale32 = scale.astype(np.float32).astype(np.float64)
    return np.concatenate([center32, scale32])


class FitScaleAndWriteStats(beam.PTransform):
    """PCollection of batches -> one `[2 * D]` vector; writes the statistics."""

    def __init__(self, stats_path: str | None):
        super().__init__()
        self._stats_path = stats_path

    def expand(self, batches: beam.PCollection) -> list[beam.PCollection]:
        stats_path = self._stats_path

        def finish(moments: Moments) -> np.ndarray:
            fitted = centers_and_scales(moments)
            if stats_path is not None:
                with tf.io.gfile.GFile(stats_path, "wb") as handle:
                    np.save(handle, np.concatenate([moments.parameters, fitted]))
            return fitted

        fitted = (
            batches
            | "BatchMoments" >> beam.Map(batch_moments)
            | "MergeMoments" >> beam.CombineGlobally(merge_moments).without_defaults()
            | "Finish" >> beam.Map(finish)
        )
        return [fitted]


def scale_fitter(stats_path: str | None, elements: int):
    """A `ScaleFitter` for `build_preprocessing_fn`.

    Args:
      stats_path: Where to write the statistics vector (any `tf.io.gfile`
        path), or None to write nothing.
      elements: D, the total element count of the config's features.
    """

    def fit(clipped: tf.Tensor, parameters: tf.Tensor) -> tf.Tensor:
        (fitted,) = tft.experimental.ptransform_analyzer(
            [clipped, tf.reshape(parameters, [1, -1])],
            FitScaleAndWriteStats(stats_path),
            output_dtypes=[tf.float64],
            output_shapes=[[2 * elements]],
            name="tanhguard_fit_scale",
        )
        return fitted

    return fit
