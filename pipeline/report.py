"""Human-readable summaries of stats.json."""

from __future__ import annotations

from typing import Any


def _first(value: Any) -> Any:
    """A vector feature's first element, for a one-line summary."""
    return value[0] if isinstance(value, list) else value


def _number(value: Any) -> str:
    value = _first(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


def summary_table(stats: dict[str, Any]) -> str:
    """One line per feature: counts of bad values, the bounds, the share of
    values clipped and the scale; then every warning.

    For an elementwise vector feature the line shows element 0; stats.json has
    every element.
    """
    header = (
        f"{'feature':<16}{'finite':>9}{'missing':>9}{'nan':>7}{'+inf':>7}"
        f"{'-inf':>7}{'min':>12}{'max':>12}{'clip lower':>12}{'clip upper':>12}"
        f"{'clipped':>9}{'center':>11}{'scale':>11}"
    )
    lines = [f"{stats['num_rows']:,} rows analyzed", header, "-" * len(header)]
    for name, feature in stats["features"].items():
        label = name if not isinstance(feature["count"], list) else f"{name}[0]"
        lines.append(
            f"{label:<16}{_number(feature['count']):>9}"
            f"{_number(feature['missing']):>9}{_number(feature['nan']):>7}"
            f"{_number(feature['pos_inf']):>7}{_number(feature['neg_inf']):>7}"
            f"{_number(feature['min']):>12}{_number(feature['max']):>12}"
            f"{_number(feature['clip']['lower']):>12}"
            f"{_number(feature['clip']['upper']):>12}"
            f"{_percent(feature):>9}"
            f"{_number(feature['scale']['center']):>11}"
            f"{_number(feature['scale']['scale']):>11}"
        )
    warnings = [
        f"  {name}: {warning}"
        for name, feature in stats["features"].items()
        for warning in feature["warnings"]
    ]
    if warnings:
        lines += ["", "Warnings:", *warnings]
    return "\n".join(lines)


def _percent(feature: dict[str, Any]) -> str:
    """Share of values clipped (below + above), element 0 of a vector."""
    share = _first(feature["clipped_below"]) + _first(feature["clipped_above"])
    return f"{100 * share:.2f}%"
