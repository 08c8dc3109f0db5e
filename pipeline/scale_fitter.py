"""The last analysis phase on Beam: `mad` bounds, center/scale, statistics.

Implemented as a TFT `ptransform_analyzer`, so it runs inside
`tft_beam.AnalyzeDataset` on any Beam runner. TFT analyzers that depend on
this phase's outputs would need a third TFT phase, which stalls Beam's
FnApiRunner; the passes this phase needs (the MAD sketch, then the moments of
the clipped data) are plain Beam stages inside this one analyzer instead.
The arithmetic is `tanhguard.transforms.fitting`.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from tanhguard.pipeline.quantiles import MAX_ELEMENTS
from tanhguard.transforms.analyzers import quantile_epsilon
from tanhguard.transforms.fitting import (
    ColumnMoments,
    Slot,
    column_moments,
    final_bounds,
    fit,
    merge_moments,
    needs_mad,
    phase0_field,
    slot_bounds_per_column,
    stats_vector_length,
)
from tanhguard.transforms.quantile_summary import (
    QuantileSummary,
    capacity_for,
    merge_lists,
)

# The MAD summary's rank error: the same as the reported quantiles'.
_MAD_CAPACITY = capacity_for(quantile_epsilon(1_000), MAX_ELEMENTS)


class MadCombineFn(beam.CombineFn):
    """Batches `(x [rows, D], parameters [1, K0])` -> the MAD per slot (NaN
    for slots without a `mad` clip): the median of `|x - median|` over the
    finite values."""

    def __init__(self, slots: list[Slot]):
        self._slots = slots
        self._mad_slots = [i for i, slot in enumerate(slots) if slot.clip == "mad"]

    def create_accumulator(self) -> list[QuantileSummary]:
        return [QuantileSummary(_MAD_CAPACITY) for _ in self._mad_slots]

    def add_input(self, summaries, batch):
        x = np.asarray(batch[0], dtype=np.float64)
        median = phase0_field(np.asarray(batch[1])[0], "q0.5", len(self._slots))
        for summary, index in zip(summaries, self._mad_slots, strict=True):
            values = x[:, list(self._slots[index].columns)].ravel()
            values = values[np.isfinite(values)]
            summary.add(np.abs(values - median[index]))
        return summaries

    def merge_accumulators(self, accumulators):
        return merge_lists(accumulators)

    def extract_output(self, summaries) -> np.ndarray:
        mads = np.full(len(self._slots), np.nan)
        for summary, index in zip(summaries, self._mad_slots, strict=True):
            if summary.count:
                mads[index] = summary.quantiles([0.5])[0]
        return mads


def _merge_with_parameters(parts):
    """Merges `(parameters, ColumnMoments)` pairs; the parameters are the same
    in every batch, so the first is kept."""
    merged = None
    for parameters, moments in parts:
        if merged is None:
            merged = (parameters, moments)
        else:
            merged = (merged[0], merge_moments(merged[1], moments))
    return merged


class FitScale(beam.PTransform):
    """Batches of `(x [rows, D], parameters [1, K0])` -> the statistics vector:
    the parameters, then `FIT_FIELDS` (see `tanhguard.transforms.fitting`)."""

    def __init__(self, slots: list[Slot], mads: np.ndarray | None = None):
        super().__init__()
        self._slots = slots
        self._mads = mads

    def expand(self, batches: beam.PCollection) -> list[beam.PCollection]:
        slots = self._slots
        columns = sum(len(slot.columns) for slot in slots)

        def batch_moments(batch, mads: np.ndarray) -> tuple[np.ndarray, ColumnMoments]:
            parameters = np.asarray(batch[1])[0]
            lower, upper = final_bounds(slots, parameters, mads)
            lower_col, upper_col, log_col = slot_bounds_per_column(
                slots, lower, upper, columns
            )
            return parameters, column_moments(batch[0], lower_col, upper_col, log_col)

        def finish(merged, mads: np.ndarray) -> np.ndarray:
            parameters, moments = merged
            return np.concatenate([parameters, fit(slots, parameters, mads, moments)])

        if self._mads is not None or not needs_mad(slots):
            # One pass: every batch carries the parameters, and the MADs are
            # known (given, or none is needed), so the moments need no side
            # input and Beam fuses the whole chain (the batches are never
            # materialized or pickled between stages).
            mads = self._mads if self._mads is not None else np.full(len(slots), np.nan)
            return [
                batches
                | "BatchMoments" >> beam.Map(batch_moments, mads=mads)
                | "MergeMoments"
                >> beam.CombineGlobally(_merge_with_parameters).without_defaults()
                | "Finish" >> beam.Map(finish, mads=mads)
            ]
        # `mad` needs the MAD before the moments of the clipped data: two
        # passes over the batches, the MAD as a side input of the second (the
        # runner keeps the batches between them; the batch job avoids this by
        # computing the MADs in a pass of their own and passing `mads`).
        mads = (
            batches
            | "MadSketch"
            >> beam.CombineGlobally(MadCombineFn(slots)).without_defaults()
        )
        fitted = (
            batches
            | "BatchMoments"
            >> beam.Map(batch_moments, mads=beam.pvalue.AsSingleton(mads))
            | "MergeMoments"
            >> beam.CombineGlobally(_merge_with_parameters).without_defaults()
            | "Finish" >> beam.Map(finish, mads=beam.pvalue.AsSingleton(mads))
        )
        return [fitted]


def fit_scale(
    x: tf.Tensor,
    parameters: tf.Tensor,
    slots: list[Slot],
    mads: np.ndarray | None = None,
) -> tf.Tensor:
    """The `ScaleFitter` of `build_preprocessing_fn`: a TFT analyzer whose
    output, the statistics vector, becomes a constant of the saved graph.
    `mads`, when known (see `MadCombineFn`), saves the analyzer its own MAD
    pass."""
    (vector,) = tft.experimental.ptransform_analyzer(
        [x, tf.reshape(parameters, [1, -1])],
        FitScale(slots, mads),
        output_dtypes=[tf.float64],
        output_shapes=[[stats_vector_length(len(slots))]],
        name="tanhguard_fit_scale",
    )
    return vector
