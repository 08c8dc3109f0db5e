"""The arithmetic of the last analysis phase, in numpy.

The first phase (`tanhguard.transforms.first_phase`, run on Beam by
`tanhguard.pipeline.statistics`) measures the raw values: counts, moments,
min/max and quantiles. This phase derives what the
graph applies from them and from one more look at the data:

- the `mad` clip's bounds (the median of `|x - median|` needs the median first);
- `center` and `scale` of the clipped data, over its finite values;
- the fraction of values clipped below and above, and per-slot flags.

A *slot* is one set of statistics: one per element of an elementwise vector,
one for a scalar or a shared (`elementwise: false`) vector. The Beam side that
feeds this is `tanhguard.pipeline.scale_fitter`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tanhguard.transforms.config import (
    REPORTED_QUANTILES,
    Config,
    ConstantImpute,
    FixedClip,
    ZeroImpute,
)

FLOAT32_MAX = float(np.finfo(np.float32).max)
# Normal consistency constant: 1.4826 * MAD estimates the std of normal data.
MAD_TO_STD = 1.4826

# A scale this small relative to the center is float rounding, not spread: a
# column of one repeated float32 value has a float64 std of about 1e-16 * |c|,
# while two float32 values one ulp apart differ by about 6e-8 * |c|.
RELATIVE_ZERO_SCALE = 1e-12
ABSOLUTE_ZERO_SCALE = 1e-30

# Phase-0 statistics, field-major: `parameters = [num_rows, field_0[S], ...]`.
COUNT_FIELDS = ("count", "missing", "nan", "pos_inf", "neg_inf")
MOMENT_FIELDS = ("mean", "std", "min", "max")
QUANTILE_FIELDS = tuple(f"q{p}" for p in REPORTED_QUANTILES)
# `phase0_lower`/`phase0_upper` are every strategy's bounds but `mad`'s; the
# final `lower`/`upper` are FIT_FIELDS.
BOUND_FIELDS = (
    "phase0_lower",
    "phase0_upper",
    "impute_value",
    "robust_lower",
    "robust_upper",
)
PHASE0_FIELDS = COUNT_FIELDS + MOMENT_FIELDS + QUANTILE_FIELDS + BOUND_FIELDS

# What this phase adds, field-major over slots. The first four are what the
# graph applies.
GRAPH_FIELDS = ("center", "scale", "lower", "upper")
FIT_FIELDS = (*GRAPH_FIELDS, "mad", "fit_count", "clipped_below", "clipped_above")
FIT_FIELDS += ("flags",)
assert not set(PHASE0_FIELDS) & set(FIT_FIELDS), "field names must be unique"

# Bits of the `flags` field; `FLAG_MESSAGES` is their text in stats.json.
FLAG_CONSTANT = 1
FLAG_NO_FINITE_VALUES = 2
FLAG_DEGENERATE_BOUNDS = 4
FLAG_ZERO_ROBUST_RANGE = 8
FLAG_MESSAGES = {
    FLAG_CONSTANT: (
        "constant: every finite training value is the same after clipping; "
        "the output is 0 (`scale: none` keeps the clipped value)"
    ),
    FLAG_NO_FINITE_VALUES: (
        "no finite training values: the scale maps the fixed clip bounds onto "
        "[-1, 1] and missing values take the constant impute value"
    ),
    FLAG_DEGENERATE_BOUNDS: (
        "degenerate clip bounds: lower == upper although the training values "
        "vary, so every value clips to one number and the output is 0 (widen the "
        "clip, e.g. a `quantile` range or `k`)"
    ),
    FLAG_ZERO_ROBUST_RANGE: (
        "zero quantile range for `robust` on data that is not constant: scale 1 "
        "is used (scikit-learn's rule), so values are only centered"
    ),
}


class NoFiniteValuesError(ValueError):
    """A feature whose strategies need data has no finite training value."""


@dataclass(frozen=True)
class Slot:
    """One set of statistics and the strategies that use it."""

    feature: str
    columns: tuple[int, ...]  # element columns of the side-by-side input
    clip: str
    k: float
    scale: str
    needs_data: bool  # false only for a fixed clip with a zero/constant impute


def total_slots(config: Config) -> int:
    """S: the number of sets of statistics, summed over features."""
    return sum(feature.slots for feature in config.features.values())


def needs_mad(slots: list[Slot]) -> bool:
    """Whether a slot clips by `mad` (its bounds need a pass of their own)."""
    return any(slot.clip == "mad" for slot in slots)


def plan_slots(config: Config) -> list[Slot]:
    """The slots of a config, in feature order, with their element columns."""
    slots, column = [], 0
    for name, feature in config.features.items():
        columns = list(range(column, column + feature.size))
        column += feature.size
        groups = [(c,) for c in columns] if feature.elementwise else [tuple(columns)]
        needs_data = not (
            isinstance(feature.clip, FixedClip)
            and isinstance(feature.impute, (ZeroImpute, ConstantImpute))
        )
        for group in groups:
            slots.append(
                Slot(
                    feature=name,
                    columns=group,
                    clip=feature.clip.strategy,
                    k=float(getattr(feature.clip, "k", 0.0)),
                    scale=feature.scale.strategy,
                    needs_data=needs_data,
                )
            )
    return slots


def phase0_length(slots: int) -> int:
    """Length of the phase-0 parameters vector: the row count and the fields."""
    return 1 + len(PHASE0_FIELDS) * slots


def stats_vector_length(slots: int) -> int:
    """Length of the statistics vector: parameters, then `FIT_FIELDS`."""
    return phase0_length(slots) + len(FIT_FIELDS) * slots


def field_slice(field: str, slots: int) -> slice:
    """Where a field's `[S]` values sit in the statistics vector (and, for a
    phase-0 field, in the parameters vector, its prefix). Field names are
    unique across `PHASE0_FIELDS` and `FIT_FIELDS`."""
    if field in PHASE0_FIELDS:
        start = 1 + PHASE0_FIELDS.index(field) * slots
    else:
        start = phase0_length(slots) + FIT_FIELDS.index(field) * slots
    return slice(start, start + slots)


def phase0_field(parameters: np.ndarray, field: str, slots: int) -> np.ndarray:
    """The `[S]` values of one phase-0 field."""
    return np.asarray(parameters[field_slice(field, slots)], dtype=np.float64)


def log_transform(values: np.ndarray) -> np.ndarray:
    """`sign(x) * log1p(|x|)`, the `log_zscore` scaler's `g`."""
    return np.sign(values) * np.log1p(np.abs(values))


def _to_float32_range(values: np.ndarray) -> np.ndarray:
    """Clamps to the finite float32 range and rounds to float32 (NaN stays)."""
    clamped = np.clip(values, -FLOAT32_MAX, FLOAT32_MAX)
    return clamped.astype(np.float32).astype(np.float64)


def check_finite_data(slots: list[Slot], parameters: np.ndarray) -> None:
    """Raises `NoFiniteValuesError` for the first data-driven slot with no data."""
    counts = phase0_field(parameters, "count", len(slots))
    for slot, count in zip(slots, counts, strict=True):
        if count == 0 and slot.needs_data:
            raise NoFiniteValuesError(
                f"feature `{slot.feature}`: no finite training values (every value "
                "is missing, NaN or +-Inf), so its clip bounds and impute value "
                "cannot be derived. Fix the data, or give it a `fixed` clip and a "
                "`zero` or `constant` impute."
            )


def final_bounds(
    slots: list[Slot], parameters: np.ndarray, mads: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`(lower, upper)` per slot, float32-rounded, as the graph applies them.

    Phase 0 derived every strategy's bounds but `mad`'s, which come from the
    median and `mads` here. Bounds are clamped to the finite float32 range.
    """
    count = len(slots)
    lower = phase0_field(parameters, "phase0_lower", count).copy()
    upper = phase0_field(parameters, "phase0_upper", count).copy()
    median = phase0_field(parameters, "q0.5", count)
    for index, slot in enumerate(slots):
        if slot.clip == "mad":
            half_width = slot.k * MAD_TO_STD * mads[index]
            lower[index] = median[index] - half_width
            upper[index] = median[index] + half_width
    return _to_float32_range(lower), _to_float32_range(upper)


def slot_bounds_per_column(
    slots: list[Slot], lower: np.ndarray, upper: np.ndarray, columns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spreads per-slot bounds and the log flag over element columns."""
    lower_col = np.zeros(columns)
    upper_col = np.zeros(columns)
    log_col = np.zeros(columns, dtype=bool)
    for index, slot in enumerate(slots):
        for column in slot.columns:
            lower_col[column] = lower[index]
            upper_col[column] = upper[index]
            log_col[column] = slot.scale == "log_zscore"
    return lower_col, upper_col, log_col


@dataclass(frozen=True)
class ColumnMoments:
    """Per column: finite count, mean and M2 of `g(clip(x))`; clip counts."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    below: np.ndarray
    above: np.ndarray


def column_moments(
    x: np.ndarray, lower: np.ndarray, upper: np.ndarray, log: np.ndarray
) -> ColumnMoments:
    """Moments of one batch `x` (`[rows, D]`, NaN for missing values).

    Only finite values enter the moments; `below`/`above` count every value
    the graph clips, +-Inf included.
    """
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x)
    outside = ~finite
    clipped = np.clip(np.where(finite, x, 0.0), lower, upper)
    if np.any(log):
        clipped = np.where(log, log_transform(clipped), clipped)
    clipped[outside] = 0.0
    count = finite.sum(axis=0).astype(np.float64)
    mean = clipped.sum(axis=0) / np.maximum(count, 1.0)
    clipped -= mean
    clipped[outside] = 0.0
    m2 = np.einsum("ij,ij->j", clipped, clipped)
    with np.errstate(invalid="ignore"):
        below = (x < lower).sum(axis=0).astype(np.float64)
        above = (x > upper).sum(axis=0).astype(np.float64)
    return ColumnMoments(count, mean, m2, below, above)


def merge_moments(left: ColumnMoments, right: ColumnMoments) -> ColumnMoments:
    """Chan et al.'s parallel merge, column by column (empty columns allowed)."""
    count = left.count + right.count
    safe = np.maximum(count, 1.0)
    delta = right.mean - left.mean
    mean = left.mean + delta * (right.count / safe)
    m2 = left.m2 + right.m2 + delta**2 * (left.count * right.count / safe)
    return ColumnMoments(
        count, mean, m2, left.below + right.below, left.above + right.above
    )


def _slot_moments(slot: Slot, moments: ColumnMoments) -> ColumnMoments:
    """Merges the columns of a slot (a shared vector pools its elements)."""
    merged = None
    for column in slot.columns:
        part = ColumnMoments(
            moments.count[[column]],
            moments.mean[[column]],
            moments.m2[[column]],
            moments.below[[column]],
            moments.above[[column]],
        )
        merged = part if merged is None else merge_moments(merged, part)
    return merged


def fit(
    slots: list[Slot],
    parameters: np.ndarray,
    mads: np.ndarray,
    moments: ColumnMoments,
) -> np.ndarray:
    """The `FIT_FIELDS` vector (field-major over slots) for the graph and stats.

    Constant slots (the std of the clipped finite values is 0 up to float
    rounding) get scale 0, which the graph turns into an output of 0; the
    `none` scaler keeps scale 1. A slot with no finite values (allowed only for
    a fixed clip with a zero/constant impute) maps its bounds onto [-1, 1].

    Raises:
      NoFiniteValuesError: see `check_finite_data`.
      ValueError: a derived number is not finite (a bug, never silently used).
    """
    check_finite_data(slots, parameters)
    count = len(slots)
    lower, upper = final_bounds(slots, parameters, mads)
    field = {name: phase0_field(parameters, name, count) for name in PHASE0_FIELDS}
    out = {name: np.zeros(count) for name in FIT_FIELDS}
    out["lower"], out["upper"] = lower, upper
    out["mad"] = np.where([s.clip == "mad" for s in slots], mads, np.nan)
    for index, slot in enumerate(slots):
        merged = _slot_moments(slot, moments)
        n = float(merged.count[0])
        mean = float(merged.mean[0])
        std = float(np.sqrt(max(merged.m2[0] / n, 0.0))) if n else 0.0
        lo, hi = lower[index], upper[index]
        flags = 0
        if n == 0:
            flags |= FLAG_NO_FINITE_VALUES
        elif lo == hi and field["min"][index] < field["max"][index]:
            # The data varies but the bounds collapse it to one number.
            flags |= FLAG_DEGENERATE_BOUNDS
        elif std <= max(RELATIVE_ZERO_SCALE * abs(mean), ABSOLUTE_ZERO_SCALE):
            flags |= FLAG_CONSTANT
        center, scale = _center_and_scale(slot, index, field, lo, hi, mean, std)
        if slot.scale != "none" and flags & (FLAG_CONSTANT | FLAG_DEGENERATE_BOUNDS):
            scale = 0.0
        elif slot.scale == "robust" and scale == 0.0 and not flags & FLAG_CONSTANT:
            flags |= FLAG_ZERO_ROBUST_RANGE
            scale = 1.0
        out["center"][index] = center
        out["scale"][index] = scale
        out["fit_count"][index] = n
        out["clipped_below"][index] = merged.below[0]
        out["clipped_above"][index] = merged.above[0]
        out["flags"][index] = flags
    out["center"] = _to_float32_range(out["center"])
    out["scale"] = _to_float32_range(out["scale"])
    for name in GRAPH_FIELDS:
        bad = ~np.isfinite(out[name])
        if bad.any():
            slot = slots[int(np.argmax(bad))]
            raise ValueError(
                f"feature `{slot.feature}`: derived `{name}` is not finite. "
                f"Received: {out[name][bad][0]}"
            )
    return np.concatenate([out[name] for name in FIT_FIELDS])


def _center_and_scale(
    slot: Slot,
    index: int,
    field: dict[str, np.ndarray],
    lower: float,
    upper: float,
    mean: float,
    std: float,
) -> tuple[float, float]:
    """`(center, scale)` of one slot for its scaler, before the constant rule."""
    no_data = field["count"][index] == 0
    if slot.scale == "none":
        return 0.0, 1.0
    if no_data or slot.scale == "minmax":
        if slot.clip == "none" and not no_data:
            # No clip bounds: map the training range instead.
            lower, upper = field["min"][index], field["max"][index]
        if slot.scale == "log_zscore":
            lower, upper = (float(v) for v in log_transform(np.array([lower, upper])))
        # Halves first: `upper - lower` can exceed the float32 range.
        return lower / 2 + upper / 2, upper / 2 - lower / 2
    if slot.scale == "robust":
        # Clipping is monotone: a quantile of the clipped data is the clipped
        # quantile of the data.
        def clipped(name: str) -> float:
            return float(np.clip(field[name][index], lower, upper))

        return clipped("q0.5"), clipped("robust_upper") - clipped("robust_lower")
    # zscore, log_zscore: the moments are of g(clip(x)) already.
    return mean, std
