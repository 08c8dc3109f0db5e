"""The fit phase: `mad` bounds, then center and scale of the clipped data.

From the first phase's parameters and one more look at the data it derives
what the graph applies:

- the `mad` clip's bounds (the median of `|x - median|` needs the median
  first: `MadCombineFn`, a pass of its own);
- `center` and `scale` over the finite values after clipping (and `g`), by
  each slot's scale strategy;
- the fraction of values clipped below and above, and per-slot warning flags;
- the histograms of stats.json, counted while the moments are (`fit_part`):
  the raw finite values in equal bins over the central range, and `g(clip(x))`
  in `OUTPUT_FINE_BINS` equal bins that become the output's histogram once
  the scaler is fitted (the scaler is monotone, see
  `statistics.output_histogram`).

`fit` is the arithmetic; `FitPhase` is the Beam transform that feeds it, run
inside TFT by `analyzers.fit_phase_analyzer`. TFT analyzers that depend on
this phase's outputs would need a third TFT phase, which stalls Beam's
FnApiRunner; the passes this phase needs (the MAD summary, then the moments
of the clipped data) are plain Beam stages inside this one analyzer instead.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np

from tanhguard.errors import NoFiniteValuesError
from tanhguard.transforms.layout import (
    FIT_FIELDS,
    FLAG_CONSTANT,
    FLAG_DEGENERATE_BOUNDS,
    FLAG_NO_FINITE_VALUES,
    FLAGS_CONSTANT_OUTPUT,
    GRAPH_FIELDS,
    HISTOGRAM_BINS,
    HISTOGRAM_FIELDS,
    OUT_COUNT_FIELDS,
    OUT_EDGE_FIELDS,
    OUTPUT_FINE_BINS,
    PHASE0_FIELDS,
    RAW_COUNT_FIELDS,
    RAW_EDGE_FIELDS,
    field_slice,
)
from tanhguard.transforms.moments import (
    ColumnMoments,
    mean_and_m2,
    merge_moments,
    pooled,
    split_finite,
)
from tanhguard.transforms.parallel import map_columns
from tanhguard.transforms.quantile_summary import (
    MAX_ELEMENTS,
    QuantileSummary,
    capacity_for,
    merge_lists,
)
from tanhguard.transforms.slots import Slot, needs_mad
from tanhguard.transforms.statistics import (
    bin_counts,
    histogram_edges,
    histogram_range,
    output_histogram,
    sorted_bin_counts,
)
from tanhguard.transforms.strategies import FLOAT32_MAX, ClippedSlot, log_transform

# A scale this small relative to the center is float rounding, not spread: a
# column of one repeated float32 value has a float64 std of about 1e-16 * |c|,
# while two float32 values one ulp apart differ by about 6e-8 * |c|.
# A std below the smallest normal float32 cannot be applied: TensorFlow's CPU
# kernels flush subnormals to zero.
RELATIVE_ZERO_SCALE = 1e-12
ABSOLUTE_ZERO_SCALE = float(np.finfo(np.float32).tiny)

# The MAD summary's rank error: the same as the reported quantiles' (a tenth
# of a step of the 1,000-point grid).
_MAD_CAPACITY = capacity_for(0.1 / 1_000, MAX_ELEMENTS)


def phase0_field(parameters: np.ndarray, field: str, slots: int) -> np.ndarray:
    """The `[S]` values of one phase-0 field."""
    return np.asarray(parameters[field_slice(field, slots)], dtype=np.float64)


def _to_float32_range(values: np.ndarray) -> np.ndarray:
    """Clamps to the finite float32 range and rounds to float32 (NaN stays)."""
    clamped = np.clip(values, -FLOAT32_MAX, FLOAT32_MAX)
    return clamped.astype(np.float32).astype(np.float64)


def _as_applied(values: np.ndarray, log: np.ndarray) -> np.ndarray:
    """A center or scale per slot, at the precision the graph applies it:
    float64 on the `log_zscore` path (where `g` squeezes the spread of values
    far from 0 into digits float32 lacks), float32 elsewhere; clamped to the
    finite float32 range either way."""
    clamped = np.clip(values, -FLOAT32_MAX, FLOAT32_MAX)
    return np.where(log, clamped, _to_float32_range(values))


def check_finite_data(slots: list[Slot], parameters: np.ndarray) -> None:
    """Raises `NoFiniteValuesError` naming every data-driven feature (an
    element of a vector counts) without a finite value.

    The first phase's parameters are enough: the batch job calls this right
    after its first pass, before any other pass starts.
    """
    counts = phase0_field(parameters, "count", len(slots))
    empty = []
    for slot, count in zip(slots, counts, strict=True):
        if count == 0 and slot.needs_data and slot.feature not in empty:
            empty.append(slot.feature)
    if empty:
        names = ", ".join(f"`{name}`" for name in empty)
        raise NoFiniteValuesError(
            f"feature{'s' if len(empty) > 1 else ''} {names}: no finite training "
            "values (every value is missing, NaN or +-Inf), so clip bounds and "
            "impute values cannot be derived. Fix the data, or give each a "
            "`fixed` clip and a `zero` or `constant` impute."
        )


def final_bounds(
    slots: list[Slot], parameters: np.ndarray, mads: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`(lower, upper)` per slot, float32-rounded, as the graph applies them.

    The first phase derived every strategy's bounds but `mad`'s, which come
    from the median and `mads` here. Bounds are clamped to the finite float32
    range.
    """
    count = len(slots)
    lower = phase0_field(parameters, "phase0_lower", count).copy()
    upper = phase0_field(parameters, "phase0_upper", count).copy()
    median = phase0_field(parameters, "q0.5", count)
    for index, slot in enumerate(slots):
        lower[index], upper[index] = slot.clip.final_bounds(
            lower[index], upper[index], median[index], mads[index]
        )
    return _to_float32_range(lower), _to_float32_range(upper)


@dataclasses.dataclass(frozen=True)
class ColumnHistograms:
    """Per column of `[rows, D]`: the raw histogram's counts, and the counts
    the output's histogram is made of."""

    raw: np.ndarray  # [D, HISTOGRAM_BINS]
    below: np.ndarray  # [D] finite values left of the raw range
    above: np.ndarray  # [D] ... and right of it
    fine: np.ndarray  # [D, OUTPUT_FINE_BINS + 1] g(clip(x)), finite x
    imputed: np.ndarray  # [D] NaN after the inf policy: the impute value
    pos_inf: np.ndarray  # [D] +Inf (clipped to `upper`)
    neg_inf: np.ndarray  # [D] -Inf (clipped to `lower`)


def merge_histograms(
    left: ColumnHistograms | None, right: ColumnHistograms | None
) -> ColumnHistograms | None:
    """Adds two batches' counts (either may be None: nothing seen yet)."""
    if left is None or right is None:
        return right if left is None else left
    return ColumnHistograms(
        *(
            getattr(left, field.name) + getattr(right, field.name)
            for field in dataclasses.fields(ColumnHistograms)
        )
    )


@dataclasses.dataclass(frozen=True)
class HistogramGrids:
    """Per slot: the raw histogram's edges `[S, K + 1]` and the fine edges of
    `g(clip(x))` `[S, F + 1]` (float64, equal widths)."""

    raw: np.ndarray
    fine: np.ndarray


def histogram_grids(
    slots: list[Slot], parameters: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> HistogramGrids:
    """The bins the fit phase counts in, from the first phase's statistics and
    the final clip bounds.

    The raw bins cover `statistics.histogram_range`. The fine bins cover the
    clipped finite values, `g(clip(min))` to `g(clip(max))`; when that is one
    number `v` they are `[v - 1, v]`, so that every value lands in the top
    bucket (values equal to the last edge).
    """
    count = len(slots)
    field = {
        name: phase0_field(parameters, name, count)
        for name in ("count", "min", "max", "q0.001", "q0.999")
    }
    lo, hi = histogram_range(field, lower, upper)
    raw = histogram_edges(lo, hi, HISTOGRAM_BINS)
    log = np.array([slot.scale.log for slot in slots], dtype=bool)
    with np.errstate(invalid="ignore"):
        ends = [np.clip(field[name], lower, upper) for name in ("min", "max")]
    fine_lo, fine_hi = (np.where(log, log_transform(end), end) for end in ends)
    usable = (field["count"] > 0) & np.isfinite(fine_lo) & np.isfinite(fine_hi)
    fine_lo = np.where(usable, fine_lo, 0.0)
    fine_hi = np.where(usable, fine_hi, 1.0)
    fine_lo = np.where(fine_lo >= fine_hi, fine_hi - 1.0, fine_lo)
    fine = histogram_edges(fine_lo, fine_hi, OUTPUT_FINE_BINS)
    return HistogramGrids(raw, fine)


def _histogram_fields(
    slots: list[Slot],
    parameters: np.ndarray,
    out: dict[str, np.ndarray],
    histograms: ColumnHistograms,
    output_bounds: np.ndarray,
) -> dict[str, np.ndarray]:
    """`HISTOGRAM_FIELDS` per slot from the counts and the fitted scaler."""
    count = len(slots)
    lower, upper = out["lower"], out["upper"]
    grids = histogram_grids(slots, parameters, lower, upper)
    impute = _to_float32_range(phase0_field(parameters, "impute_value", count))
    fields = {name: np.full(count, np.nan) for name in HISTOGRAM_FIELDS}
    for index, slot in enumerate(slots):
        where = list(slot.columns)
        raw = histograms.raw[where].sum(axis=0)
        for name, value in zip(RAW_EDGE_FIELDS, grids.raw[index], strict=True):
            fields[name][index] = value
        for name, value in zip(RAW_COUNT_FIELDS, raw, strict=True):
            fields[name][index] = value
        fields["raw_below"][index] = histograms.below[where].sum()
        fields["raw_above"][index] = histograms.above[where].sum()

        lo, hi = float(lower[index]), float(upper[index])
        center, scale = float(out["center"][index]), float(out["scale"][index])
        bound = float(output_bounds[index])

        def g(value: float, log: bool = slot.scale.log) -> float:
            return float(log_transform(np.float64(value))) if log else value

        def image(values, center=center, scale=scale, bound=bound):
            if scale == 0.0:
                return np.zeros_like(values)
            return np.clip((values - center) / scale, -bound, bound)

        imputed = g(min(max(float(impute[index]), lo), hi))
        points = [
            (imputed, histograms.imputed[where].sum()),
            (g(hi), histograms.pos_inf[where].sum()),
            (g(lo), histograms.neg_inf[where].sum()),
        ]
        edges, counts = output_histogram(
            grids.fine[index],
            histograms.fine[where].sum(axis=0),
            points,
            image,
            HISTOGRAM_BINS,
            bound,
        )
        fields["out_bins"][index] = counts.size
        for name, value in zip(OUT_EDGE_FIELDS, edges, strict=False):
            fields[name][index] = value
        for name, value in zip(OUT_COUNT_FIELDS, counts, strict=False):
            fields[name][index] = value
    return fields


def _flags(clipped: ClippedSlot, minimum: float, maximum: float) -> int:
    if clipped.count == 0:
        return FLAG_NO_FINITE_VALUES
    if clipped.lower == clipped.upper and minimum < maximum:
        # The data varies but the bounds collapse it to one number.
        return FLAG_DEGENERATE_BOUNDS
    if clipped.std <= max(RELATIVE_ZERO_SCALE * abs(clipped.mean), ABSOLUTE_ZERO_SCALE):
        return FLAG_CONSTANT
    return 0


def fit(
    slots: list[Slot],
    parameters: np.ndarray,
    mads: np.ndarray,
    moments: ColumnMoments,
    histograms: ColumnHistograms | None = None,
    output_bounds: np.ndarray | None = None,
) -> np.ndarray:
    """The `FIT_FIELDS` vector (field-major over slots) for the graph and stats.

    `center` and `scale` are float32 values, except for `log_zscore` slots,
    which the graph computes in float64 (`tanhguard.transforms.mappers`).
    Constant slots (the std of the clipped finite values is 0 up to float
    rounding) get scale 0, which the graph turns into an output of 0; the
    `none` scaler keeps scale 1. A slot with no finite values (allowed only
    when neither its clip nor its impute value needs data) maps its bounds
    onto [-1, 1].

    The histogram fields come from `histograms` (see `fit_part`) and
    each slot's output bound as the graph applies it (`output_bounds`, the
    float32 value `slots.float32_bound` gives); without them they are NaN.

    Raises:
      NoFiniteValuesError: see `check_finite_data`.
      ValueError: a derived number is not finite (a bug, never silently used).
    """
    check_finite_data(slots, parameters)
    count = len(slots)
    lower, upper = final_bounds(slots, parameters, mads)
    field = {name: phase0_field(parameters, name, count) for name in PHASE0_FIELDS}
    out = {name: np.zeros(count) for name in FIT_FIELDS if name not in HISTOGRAM_FIELDS}
    out["lower"], out["upper"] = lower, upper
    out["mad"] = np.where([s.clip.needs_mad for s in slots], mads, np.nan)
    for index, slot in enumerate(slots):
        merged = pooled(moments, slot.columns)
        lo, hi = float(lower[index]), float(upper[index])
        minimum, maximum = field["min"][index], field["max"][index]
        clipped = ClippedSlot(
            lower=lo,
            upper=hi,
            range=slot.clip.scale_range(lo, hi, minimum, maximum),
            count=float(merged.count[0]),
            mean=float(merged.mean[0]),
            std=float(merged.std[0]),
            fields={name: float(values[index]) for name, values in field.items()},
        )
        flags = _flags(clipped, minimum, maximum)
        if clipped.count == 0:
            center, scale = slot.scale.range_center_and_scale(lo, hi)
        else:
            collapsed = bool(flags & FLAGS_CONSTANT_OUTPUT)
            center, scale, extra = slot.scale.center_and_scale(clipped, collapsed)
            flags |= extra
            if collapsed and slot.scale.zero_scale_when_constant:
                scale = 0.0
        out["center"][index] = center
        out["scale"][index] = scale
        out["fit_count"][index] = clipped.count
        out["clipped_below"][index] = merged.below[0]
        out["clipped_above"][index] = merged.above[0]
        out["flags"][index] = flags
    log = np.array([slot.scale.log for slot in slots], dtype=bool)
    out["center"] = _as_applied(out["center"], log)
    out["scale"] = _as_applied(out["scale"], log)
    if histograms is not None and output_bounds is not None:
        out.update(
            _histogram_fields(
                slots, parameters, out, histograms, np.asarray(output_bounds)
            )
        )
    else:
        out.update({name: np.full(count, np.nan) for name in HISTOGRAM_FIELDS})
    for name in GRAPH_FIELDS:
        bad = ~np.isfinite(out[name])
        if bad.any():
            slot = slots[int(np.argmax(bad))]
            raise ValueError(
                f"feature `{slot.feature}`: derived `{name}` is not finite. "
                f"Received: {out[name][bad][0]}"
            )
    return np.concatenate([out[name] for name in FIT_FIELDS])


class MadCombineFn(beam.CombineFn):
    """Batches `(x [rows, D], parameters [1, K0])` -> the MAD per slot (NaN
    for slots without a `mad` clip): the median of `|x - median|` over the
    finite values."""

    def __init__(self, slots: list[Slot]):
        self._slots = slots
        self._mad_slots = [i for i, slot in enumerate(slots) if slot.clip.needs_mad]

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


def fit_plan(
    slots: list[Slot],
    parameters: np.ndarray,
    mads: np.ndarray,
    output_bounds: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, HistogramGrids | None]:
    """What every batch of the fit phase needs from the first phase: the
    final `(lower, upper)` per slot, and with `output_bounds` (see `fit`) the
    histogram grids."""
    lower, upper = final_bounds(slots, parameters, mads)
    grids = None
    if output_bounds is not None:
        grids = histogram_grids(slots, parameters, lower, upper)
    return lower, upper, grids


def _count_below(ordered: np.ndarray, bound: float) -> int:
    """How many of the sorted values are below `bound` (none for NaN)."""
    if np.isnan(bound):
        return 0
    return int(np.searchsorted(ordered, bound, side="left"))


def _count_above(ordered: np.ndarray, bound: float) -> int:
    """How many of the sorted values are above `bound` (none for NaN)."""
    if np.isnan(bound):
        return 0
    return ordered.size - int(np.searchsorted(ordered, bound, side="right"))


def fit_part(
    x: np.ndarray,
    slots: list[Slot],
    lower: np.ndarray,
    upper: np.ndarray,
    grids: HistogramGrids | None,
) -> tuple[ColumnMoments, ColumnHistograms | None]:
    """One batch's share of the fit phase: per column, the moments of
    `g(clip(x))` over the finite values, the values clipped below and above
    (+-Inf included), and with `grids` the histogram counts: the raw finite
    values in the raw bins, `g(clip(x))` of the finite values in the fine
    bins (+-Inf are point masses at the bounds, counted apart, as are the
    imputed values).

    Each column is processed on its own: its finite values are sorted once,
    then clipped, mapped by `g` and summed; the counts (clipped, and every
    bin but the fine ones of a `log_zscore` slot) are searches among the
    sorted values. At 10M rows x 10 columns this took 0.9 s on one core,
    against 1.75 s binning each value by its position.

    Args:
      x: `[rows, D]` float32 or float64 after the inf policy (NaN for missing
        values); computed in float64.
      slots: `plan_slots(config)`.
      lower, upper: Each slot's final bounds (`fit_plan`).
      grids: The histogram grids (`fit_plan`), or None for no histograms.
    """
    x = np.asarray(x)
    rows, columns = x.shape
    owner = np.zeros(columns, np.int64)
    for index, slot in enumerate(slots):
        owner[list(slot.columns)] = index
    log = np.array([slot.scale.log for slot in slots], dtype=bool)[owner]
    lo, hi = lower[owner], upper[owner]
    if grids is not None:
        raw_edges, fine_edges = grids.raw[owner], grids.fine[owner]
    by_column = np.ascontiguousarray(x.T)

    def one_column(j: int) -> tuple:
        values, nan, pos_inf, neg_inf = split_finite(by_column[j])
        # Sorted once (numpy's sort releases the GIL, so columns sort on
        # every core): the clip and `g` are monotone, so the clipped values
        # stay sorted, and every count is a search among them.
        ordered = np.sort(values).astype(np.float64)
        # +-Inf are clipped to the bounds (counted) but enter no moment.
        below = _count_below(ordered, lo[j]) + neg_inf
        above = _count_above(ordered, hi[j]) + pos_inf
        clipped = np.clip(ordered, lo[j], hi[j])
        if log[j]:
            clipped = log_transform(clipped)
        bins = None
        if grids is not None:
            raw, raw_below, raw_above = sorted_bin_counts(ordered, raw_edges[j])
            if log[j]:  # `g` in float64 may not keep every tie in order
                fine = bin_counts(
                    clipped[:, np.newaxis], fine_edges[j : j + 1], top_bucket=True
                )[0][0]
            else:
                fine = sorted_bin_counts(clipped, fine_edges[j], top_bucket=True)[0]
            bins = (raw, raw_below, raw_above, fine)
        mean, m2 = mean_and_m2(clipped)
        return (clipped.size, mean, m2, below, above, nan, pos_inf, neg_inf), bins

    results = map_columns(one_column, range(columns), rows)
    scalars = np.array([result[0] for result in results], dtype=np.float64)
    scalars = scalars.reshape(columns, 8)
    count, mean, m2, below, above = (scalars[:, i].copy() for i in range(5))
    nan, pos_inf, neg_inf = (scalars[:, i].astype(np.int64) for i in range(5, 8))
    per_column = ColumnMoments(count, mean, m2, below, above)
    if grids is None:
        return per_column, None
    bins = [result[1] for result in results]
    return per_column, ColumnHistograms(
        raw=np.array([b[0] for b in bins], np.int64).reshape(columns, -1),
        below=np.array([b[1] for b in bins], np.int64),
        above=np.array([b[2] for b in bins], np.int64),
        fine=np.array([b[3] for b in bins], np.int64).reshape(columns, -1),
        imputed=nan,
        pos_inf=pos_inf,
        neg_inf=neg_inf,
    )


def merge_fit_parts(parts):
    """Merges `fit_part` results (None, an empty part, is skipped)."""
    merged = None
    for part in parts:
        if part is None:
            continue
        if merged is None:
            merged = part
        else:
            merged = (
                merge_moments(merged[0], part[0]),
                merge_histograms(merged[1], part[1]),
            )
    return merged


def finish_fit(
    slots: list[Slot],
    parameters: np.ndarray,
    mads: np.ndarray,
    merged,
    output_bounds: np.ndarray | None,
) -> np.ndarray:
    """The statistics vector: `parameters`, then `FIT_FIELDS` from the merged
    `fit_part`s."""
    moments, histograms = merged
    fitted = fit(slots, parameters, mads, moments, histograms, output_bounds)
    return np.concatenate([parameters, fitted])


class FitPhaseCombineFn(beam.CombineFn):
    """Batches of `x [rows, D]` (float32 or float64, after the inf policy, NaN
    for missing values) -> the statistics vector, given the first phase's `parameters`
    and the `mads` (NaN where the clip is not `mad`; see `MadCombineFn`).

    The batch job runs it as a Beam pass of its own over the files, then
    saves the graph with the vector as a constant; `FitPhase` runs the same
    arithmetic as a TFT analyzer inside TFX.
    """

    def __init__(
        self,
        slots: list[Slot],
        parameters: np.ndarray,
        mads: np.ndarray | None = None,
        output_bounds: np.ndarray | None = None,
    ):
        self._slots = slots
        self._parameters = np.asarray(parameters, np.float64)
        self._mads = np.full(len(slots), np.nan) if mads is None else np.asarray(mads)
        self._output_bounds = output_bounds
        self._plan = fit_plan(slots, self._parameters, self._mads, output_bounds)

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, x):
        return merge_fit_parts([accumulator, fit_part(x, self._slots, *self._plan)])

    def merge_accumulators(self, accumulators):
        return merge_fit_parts(accumulators)

    def extract_output(self, accumulator) -> np.ndarray:
        if accumulator is None:
            raise NoFiniteValuesError("the fit phase saw no rows")
        return finish_fit(
            self._slots,
            self._parameters,
            self._mads,
            accumulator,
            self._output_bounds,
        )


def _merge_with_parameters(parts):
    """Merges `(parameters, fit_part)` pairs; the parameters are the same in
    every batch, so the first is kept."""
    parts = list(parts)
    if not parts:
        return None
    return parts[0][0], merge_fit_parts(part for _, part in parts)


class FitPhase(beam.PTransform):
    """Batches of `(x [rows, D], parameters [1, K0])` -> the statistics vector:
    the parameters, then `FIT_FIELDS` (see `tanhguard.transforms.layout`).

    `output_bounds` (per slot, see `fit`) turns on the histograms; the
    moments and the histograms are counted in the same stage.
    """

    def __init__(
        self,
        slots: list[Slot],
        mads: np.ndarray | None = None,
        output_bounds: np.ndarray | None = None,
    ):
        super().__init__()
        self._slots = slots
        self._mads = mads
        self._output_bounds = output_bounds

    def expand(self, batches: beam.PCollection) -> list[beam.PCollection]:
        slots = self._slots
        output_bounds = self._output_bounds

        def batch_moments(batch, mads: np.ndarray):
            parameters = np.asarray(batch[1])[0]
            plan = fit_plan(slots, parameters, mads, output_bounds)
            return parameters, fit_part(batch[0], slots, *plan)

        def finish(merged, mads: np.ndarray) -> np.ndarray:
            parameters, parts = merged
            return finish_fit(slots, parameters, mads, parts, output_bounds)

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
