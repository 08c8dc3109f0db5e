"""The statistics vector: which number sits where.

The analysis produces one float64 vector, field-major over the S slots (a
slot is one set of statistics: an element of an elementwise vector, or a
whole feature):

    [num_rows, PHASE0_FIELDS[0] x S, PHASE0_FIELDS[1] x S, ...,
               FIT_FIELDS[0] x S, ...]

The first phase writes the prefix (the *parameters*: row count and
`PHASE0_FIELDS`), the fit phase appends `FIT_FIELDS`. The saved graph keeps
the whole vector as a constant; stats.json is read back from it. Plain Python:
everything that reads or writes the vector imports this.
"""

from __future__ import annotations

# Probabilities reported in stats.json for every feature.
REPORTED_QUANTILES = (0.001, 0.01, 0.25, 0.5, 0.75, 0.99, 0.999)
# stats.json's `quantile_grid`: 0.001, 0.01, 0.02, ..., 0.99, 0.999 (101
# points, all on the first phase's 1,000-point grid, so they cost nothing).
GRID_PROBABILITIES = (0.001, *(round(k / 100, 2) for k in range(1, 100)), 0.999)

# Histograms, counted in the fit phase (no pass of their own): the raw finite
# values in `HISTOGRAM_BINS` equal bins over the central range (see
# `tanhguard.transforms.statistics.histogram_range`), and the graph's output:
# counted as `OUTPUT_FINE_BINS` equal bins of `g(clip(x))`, mapped through the
# fitted scaler once it is known and merged into at most `HISTOGRAM_BINS`
# bins, plus at most two bins for values that sit apart from the finite ones
# (imputed values, +-Inf sent to the clip bounds).
HISTOGRAM_BINS = 50
OUTPUT_FINE_BINS = 1_000
OUTPUT_MAX_BINS = HISTOGRAM_BINS + 2

# Phase-0 statistics, field-major: `parameters = [num_rows, field_0[S], ...]`.
COUNT_FIELDS = ("count", "missing", "nan", "pos_inf", "neg_inf")
MOMENT_FIELDS = ("mean", "std", "min", "max")
QUANTILE_FIELDS = tuple(f"q{p}" for p in REPORTED_QUANTILES)
# Finite values equal to 0 (TFDV's `num_zeros`).
ZERO_FIELDS = ("zeros",)
GRID_FIELDS = tuple(f"grid{p}" for p in GRID_PROBABILITIES)
# `phase0_lower`/`phase0_upper` are every strategy's bounds but `mad`'s; the
# final `lower`/`upper` are FIT_FIELDS. `robust_lower`/`robust_upper` are the
# quantiles a scaler's `range_probabilities` asks for (0 when none).
BOUND_FIELDS = (
    "phase0_lower",
    "phase0_upper",
    "impute_value",
    "robust_lower",
    "robust_upper",
)
PHASE0_FIELDS = (
    COUNT_FIELDS
    + MOMENT_FIELDS
    + QUANTILE_FIELDS
    + BOUND_FIELDS
    + ZERO_FIELDS
    + GRID_FIELDS
)

# What the fit phase adds, field-major over slots. The first four are what
# the graph applies.
GRAPH_FIELDS = ("center", "scale", "lower", "upper")
FIT_FIELDS = (*GRAPH_FIELDS, "mad", "fit_count", "clipped_below", "clipped_above")
FIT_FIELDS += ("flags",)
# The raw histogram: `HISTOGRAM_BINS + 1` edges, the counts, and the finite
# values below the first / above the last edge.
RAW_EDGE_FIELDS = tuple(f"raw_edge{i}" for i in range(HISTOGRAM_BINS + 1))
RAW_COUNT_FIELDS = tuple(f"raw_count{i}" for i in range(HISTOGRAM_BINS))
# The output histogram: `out_bins` bins (at most `OUTPUT_MAX_BINS`), its
# edges and counts; the fields past them are NaN.
OUT_EDGE_FIELDS = tuple(f"out_edge{i}" for i in range(OUTPUT_MAX_BINS + 1))
OUT_COUNT_FIELDS = tuple(f"out_count{i}" for i in range(OUTPUT_MAX_BINS))
HISTOGRAM_FIELDS = (
    RAW_EDGE_FIELDS
    + RAW_COUNT_FIELDS
    + ("raw_below", "raw_above", "out_bins")
    + OUT_EDGE_FIELDS
    + OUT_COUNT_FIELDS
)
FIT_FIELDS += HISTOGRAM_FIELDS
assert len(set(PHASE0_FIELDS + FIT_FIELDS)) == len(PHASE0_FIELDS + FIT_FIELDS), (
    "field names must be unique"
)
_PHASE0_INDEX = {field: index for index, field in enumerate(PHASE0_FIELDS)}
_FIT_INDEX = {field: index for index, field in enumerate(FIT_FIELDS)}

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
# Flags under which the clipped training values are one number.
FLAGS_CONSTANT_OUTPUT = FLAG_CONSTANT | FLAG_DEGENERATE_BOUNDS


def phase0_length(slots: int) -> int:
    """Length of the phase-0 parameters vector: the row count and the fields."""
    return 1 + len(PHASE0_FIELDS) * slots


def stats_vector_length(slots: int) -> int:
    """Length of the statistics vector: parameters, then `FIT_FIELDS`."""
    return phase0_length(slots) + len(FIT_FIELDS) * slots


def field_slice(field: str, slots: int) -> slice:
    """Where a field's `[S]` values sit in the statistics vector (and, for a
    phase-0 field, in the parameters vector, its prefix).

    >>> field_slice("count", 2), field_slice("center", 2)
    (slice(1, 3, None), slice(247, 249, None))
    """
    if field in _PHASE0_INDEX:
        start = 1 + _PHASE0_INDEX[field] * slots
    elif field in _FIT_INDEX:
        start = phase0_length(slots) + _FIT_INDEX[field] * slots
    else:
        raise KeyError(f"no field `{field}` in the statistics vector")
    return slice(start, start + slots)
