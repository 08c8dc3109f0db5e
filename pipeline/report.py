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
    """One line per feature: counts of bad values, the bounds and the scale.

    For a vector feature the line shows element 0; stats.json has every element.
    """
    header = (
        f"{'feature':<16}{'finite':>9}{'missing':>9}{'nan':>7}{'+inf':>7}"
        f"{'-inf':>7}{'min':>12}{'max':>12}{'clip lower':>12}{'clip upper':>12}"
        f"{'center':>11}{'scale':>11}"
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
            f"{_number(feature['scale']['center']):>11}"
            f"{_number(feature['scale']['scale']):>11}"
            + ("  constant: outputs 0" if any(_as_list(feature["constant"])) else "")
        )
    return "\n".join(lines)


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]
