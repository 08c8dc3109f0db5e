"""Human-readable summaries of stats.json."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

# The summary fits a 100-column terminal: the feature name gets what the
# numbers leave, and a longer name is cut with "~" (stats.json has it whole).
WIDTH = 100
COLUMNS = (  # (title, width)
    ("missing", 8),
    ("nan/inf", 8),
    ("min", 10),
    ("max", 10),
    ("clip lo", 10),
    ("clip hi", 10),
    ("clipped", 8),
    ("center", 10),
    ("scale", 10),
)
NAME_WIDTH = WIDTH - sum(width for _, width in COLUMNS)


def _count(value: int | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000_000:
        return f"{value / 1e6:.0f}M"
    if value >= 1_000_000:
        return f"{value / 1e6:.1f}M"
    return f"{value:,}"


def _number(value: float | None) -> str:
    # 3 significant digits: at most 9 characters ("-3.18e+04").
    return "-" if value is None else f"{value:.3g}"


def element_at(value: Any, index: int | None) -> Any:
    """Element `index` of a stats.json value given per element (a list, for
    an elementwise vector); a scalar's or a shared vector's value as it is."""
    return value[index] if index is not None and isinstance(value, list) else value


def _clipped_share(feature: dict[str, Any], index: int | None) -> float:
    below = element_at(feature["clipped_below"], index)
    return below + element_at(feature["clipped_above"], index)


def worst_element(feature: dict[str, Any]) -> int:
    """The element of a vector feature with the largest share clipped (the
    first on a tie)."""
    shares = [_clipped_share(feature, i) for i in range(len(feature["count"]))]
    return max(range(len(shares)), key=shares.__getitem__)


def _wrap(text: str) -> str:
    return textwrap.fill(
        text,
        WIDTH,
        initial_indent="  ",
        subsequent_indent="    ",
        break_long_words=True,
    )


def _label(name: str, suffix: str = "") -> str:
    room = NAME_WIDTH - 1 - len(suffix)
    if len(name) > room:
        name = name[: room - 1] + "~"
    return name + suffix


def summary_table(
    stats: dict[str, Any], warnings: Sequence[tuple[str, str]] | None = None
) -> str:
    """One line per feature, at most 100 characters wide: counts of missing
    and non-finite values, the raw range, the clip bounds, the share of finite
    values clipped, and the scaler; then notes on vectors and the warnings:
    `warnings`, `(feature, text)` pairs (the command line gives the ones
    report.html lists, `html_report.report_warnings`), else stats.json's own.

    An elementwise vector feature shows its most clipped element,
    `name[i]`, and a note says how many elements it has; stats.json has every
    element.
    """
    header = f"{'feature':<{NAME_WIDTH}}" + "".join(
        f"{title:>{width}}" for title, width in COLUMNS
    )
    lines = [f"{stats['num_rows']:,} rows analyzed", header, "-" * len(header)]
    notes = []
    for name, feature in stats["features"].items():
        index = None
        label = _label(name)
        if isinstance(feature["count"], list):
            index = worst_element(feature)
            size = len(feature["count"])
            label = _label(name, f"[{index}]")
            notes.append(
                f"{name}: {size} elements; the line shows element {index}, "
                "the most clipped (stats.json has each)"
            )

        def at(value: Any, index: int | None = index) -> Any:
            return element_at(value, index)

        values = {
            "missing": _count(at(feature["missing"])),
            "nan/inf": _count(
                at(feature["nan"]) + at(feature["pos_inf"]) + at(feature["neg_inf"])
            ),
            "min": _number(at(feature["min"])),
            "max": _number(at(feature["max"])),
            "clip lo": _number(at(feature["clip"]["lower"])),
            "clip hi": _number(at(feature["clip"]["upper"])),
            "clipped": f"{100 * _clipped_share(feature, index):.2f}%",
            "center": _number(at(feature["scale"]["center"])),
            "scale": _number(at(feature["scale"]["scale"])),
        }
        lines.append(
            f"{label:<{NAME_WIDTH}}"
            + "".join(f"{values[title]:>{width}}" for title, width in COLUMNS)
        )
    if notes:
        lines += ["", "Vectors:", *map(_wrap, notes)]
    if warnings is None:
        warnings = [
            (name, warning)
            for name, feature in stats["features"].items()
            for warning in feature["warnings"]
        ]
    if warnings:
        lines += ["", "Warnings:", *(_wrap(f"{n}: {text}") for n, text in warnings)]
    return "\n".join(lines)
