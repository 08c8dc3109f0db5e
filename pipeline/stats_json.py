"""stats.json's `num_rows` and `features` from the statistics vector.

The vector (`tanhguard.transforms.layout`) holds every number; this module
names them: counts, moments, quantiles, the derived clip, impute and scale
parameters, the fractions of the finite values clipped, warnings, the raw
and output histograms and the quantile grid. Each strategy adds its own
fields (`stats_fields`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tanhguard.transforms.config import Config, FeatureConfig
from tanhguard.transforms.layout import (
    COUNT_FIELDS,
    FIT_FIELDS,
    FLAG_MESSAGES,
    FLAGS_CONSTANT_OUTPUT,
    GRID_FIELDS,
    GRID_PROBABILITIES,
    OUT_COUNT_FIELDS,
    OUT_EDGE_FIELDS,
    PHASE0_FIELDS,
    QUANTILE_FIELDS,
    RAW_COUNT_FIELDS,
    RAW_EDGE_FIELDS,
    REPORTED_QUANTILES,
    field_slice,
    stats_vector_length,
)
from tanhguard.transforms.slots import plan_slots

# stats.json's layout version; bumped when a field changes meaning or is
# added (3: `clipped_below`/`clipped_above` are fractions of the finite
# values; 4: `histogram`, `output_histogram`, `quantile_grid`, `zeros`).
STATS_FORMAT_VERSION = 4


def _to_json_number(value: float) -> float | None:
    """JSON has no NaN/Inf: they become null."""
    return float(value) if np.isfinite(value) else None


def unpack_stats_vector(config: Config, vector: np.ndarray) -> dict[str, Any]:
    """Turns the statistics vector into stats.json's `num_rows` and `features`.

    Returns:
      `{"num_rows": N, "features": {...}}` where `features[name]` holds the
      counts, moments, quantiles, the derived clip, impute and scale
      parameters, the fractions of the finite values clipped below and
      above, warnings, `zeros`, `histogram`, `output_histogram` and
      `quantile_grid`: plain numbers (one object) for a scalar or shared
      vector feature, lists of length d for an elementwise vector feature. The clip,
      impute and scale parameters are the values the graph applies, written
      exactly: float32 values, but a `log_zscore` feature's center and scale
      are float64 (its path computes in float64).
    """
    vector = np.asarray(vector, dtype=np.float64)
    slots = plan_slots(config)
    count = len(slots)
    expected = stats_vector_length(count)
    if vector.shape != (expected,):
        raise ValueError(
            f"stats vector has shape {vector.shape}; the config needs ({expected},)"
        )
    num_rows = int(vector[0])
    rows_of = {
        field: vector[field_slice(field, count)] for field in PHASE0_FIELDS + FIT_FIELDS
    }
    # What the graph applies: float32 numbers, but the float64 center and
    # scale of the `log_zscore` path (`tanhguard.transforms.mappers`).
    log = np.array([slot.scale.log for slot in slots], dtype=bool)
    for field in ("lower", "upper", "center", "scale", "impute_value"):
        rounded = rows_of[field].astype(np.float32).astype(np.float64)
        if field in ("center", "scale"):
            rounded = np.where(log, rows_of[field], rounded)
        rows_of[field] = rounded
    features: dict[str, Any] = {}
    offset = 0
    for name, feature in config.features.items():
        span = slice(offset, offset + feature.slots)
        offset += feature.slots
        features[name] = _feature_stats(
            feature, {field: rows[span] for field, rows in rows_of.items()}
        )
    return {"num_rows": num_rows, "features": features}


def _count(value: float) -> int:
    """A count from the vector (NaN, where nothing was counted, is 0)."""
    return int(value) if np.isfinite(value) else 0


def _histograms(raw: dict[str, np.ndarray], index: int) -> dict[str, Any]:
    """One slot's `histogram`, `output_histogram` and `quantile_grid`."""
    bins = _count(raw["out_bins"][index])
    has_values = raw["count"][index] > 0
    return {
        "histogram": {
            "edges": [_to_json_number(raw[f][index]) for f in RAW_EDGE_FIELDS],
            "counts": [_count(raw[f][index]) for f in RAW_COUNT_FIELDS],
            "below": _count(raw["raw_below"][index]),
            "above": _count(raw["raw_above"][index]),
        },
        "output_histogram": {
            "edges": [
                _to_json_number(raw[f][index]) for f in OUT_EDGE_FIELDS[: bins + 1]
            ]
            if bins
            else [],
            "counts": [_count(raw[f][index]) for f in OUT_COUNT_FIELDS[:bins]],
        },
        "quantile_grid": {
            "probabilities": list(GRID_PROBABILITIES),
            "values": [
                _to_json_number(raw[f][index]) if has_values else None
                for f in GRID_FIELDS
            ],
        },
    }


def _finite_fraction(
    clipped: np.ndarray, infinities: np.ndarray, finite: np.ndarray, inf: str
) -> np.ndarray:
    """The fraction of the finite values clipped on one side (0 without any).

    The vector counts every value the graph clips on that side, as the
    `__clipped` indicator flags them: under `inf: clip` that includes the
    +Inf (above) or -Inf (below) values, which the first phase counted
    (`pos_inf`, `neg_inf`); under `inf: missing` they were imputed instead.
    """
    if inf == "clip":
        clipped = clipped - infinities
    return np.where(finite > 0, clipped / np.maximum(finite, 1.0), 0.0)


def _feature_stats(
    feature: FeatureConfig, raw: dict[str, np.ndarray]
) -> dict[str, Any]:
    """stats.json's entry for one feature from its `[slots]` fields."""
    listed = feature.is_vector and feature.elementwise

    def shaped(values: np.ndarray, kind: type = float) -> Any:
        if kind is int:
            items = [int(v) for v in values]
        elif kind is bool:
            items = [bool(v) for v in values]
        else:
            items = [_to_json_number(v) for v in values]
        return items if listed else items[0]

    def undefined(values: np.ndarray) -> np.ndarray:
        """NaN (null in JSON) where a slot has no finite value."""
        return np.where(raw["count"] == 0, np.nan, values)

    clip_entry: dict[str, Any] = {
        "strategy": feature.clip.strategy,
        "lower": shaped(raw["lower"]),
        "upper": shaped(raw["upper"]),
        **feature.clip.stats_fields(raw, shaped),
    }
    scale_entry: dict[str, Any] = {
        "strategy": feature.scale.strategy,
        "center": shaped(raw["center"]),
        "scale": shaped(raw["scale"]),
        **feature.scale.stats_fields(),
    }
    per_slot = [_histograms(raw, index) for index in range(feature.slots)]
    histograms = {
        key: [entry[key] for entry in per_slot] if listed else per_slot[0][key]
        for key in ("histogram", "output_histogram", "quantile_grid")
    }
    warnings = []
    for index, flags in enumerate(raw["flags"].astype(int)):
        where = f"element {index}: " if listed else ""
        warnings += [
            where + message for bit, message in FLAG_MESSAGES.items() if flags & bit
        ]
    return {
        **{key: shaped(raw[key], int) for key in COUNT_FIELDS},
        **{key: shaped(undefined(raw[key])) for key in ("mean", "std", "min", "max")},
        "quantiles": {
            str(p): shaped(undefined(raw[field]))
            for p, field in zip(REPORTED_QUANTILES, QUANTILE_FIELDS, strict=True)
        },
        "impute": {
            "strategy": feature.impute.strategy,
            "value": shaped(raw["impute_value"]),
        },
        "inf": feature.inf,
        "clip": clip_entry,
        "clipped_below": shaped(
            _finite_fraction(
                raw["clipped_below"], raw["neg_inf"], raw["count"], feature.inf
            )
        ),
        "clipped_above": shaped(
            _finite_fraction(
                raw["clipped_above"], raw["pos_inf"], raw["count"], feature.inf
            )
        ),
        "scale": scale_entry,
        "elementwise": feature.elementwise,
        "indicators": list(feature.indicators),
        "output_bound": feature.output_bound,
        "constant": shaped(raw["flags"].astype(int) & FLAGS_CONSTANT_OUTPUT != 0, bool),
        "warnings": warnings,
        "zeros": shaped(raw["zeros"], int),
        **histograms,
    }
