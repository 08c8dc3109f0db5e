"""`tanhguard report`: stats.json as one self-contained HTML page.

Per feature: the raw distribution with the clip bounds and the share clipped
on each side, the output distribution, the counts of missing / NaN / +-Inf
values, the impute value, the center and scale, and warnings; the warnings of
every feature are listed at the top. The charts are matplotlib SVG inlined in
the page (text as SVG text, no fonts or scripts to fetch), drawn on one figure
per chart size that each chart clears for the next; a few lines of
inline JavaScript filter the features by name and sort the overview table.
Nothing in the page refers to a network address: it opens offline.

An elementwise vector feature gets one panel per element only for its most
clipped elements (`VECTOR_PANELS`), and a chart of the share clipped per
element for all of them.
"""

from __future__ import annotations

import contextlib
import html
import io
import logging
import math
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tanhguard.errors import ArtifactsError, OutputError, OutputExistsError
from tanhguard.pipeline.artifacts import STATS_FILE, load_stats
from tanhguard.pipeline.report import element_at

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
# A clip that removes more than this share of a feature's finite values is
# listed at the top of the report.
CLIP_WARNING_SHARE = 0.05
# Imputed values (missing, NaN, +-Inf under `inf: missing`) above this share,
# without a `missing` indicator, are listed too.
MISSING_WARNING_SHARE = 0.20
# Element panels shown for an elementwise vector feature: its most clipped.
VECTOR_PANELS = 3
# Elements named one by one in a warning before they are summarized.
LISTED_ELEMENTS = 3
# The first bytes of every report: an existing file without them is not
# replaced (tanhguard replaces only what it wrote).
GENERATOR = '<meta name="generator" content="tanhguard report">'
CHECK_GENERATOR = '<meta name="generator" content="tanhguard check">'
NO_HISTOGRAMS = "no histograms (artifacts from an older tanhguard)"

# Colours: the clip bounds and the clipped regions in red, data in blue.
DATA_COLOR = "#4C78A8"
OUTPUT_COLOR = "#54A24B"
CLIP_COLOR = "#D62728"


# ---------------------------------------------------------------------------
# Reading stats.json


def _elements(feature: dict[str, Any]) -> int | None:
    """d for an elementwise vector feature (values are lists), else None."""
    count = feature["count"]
    return len(count) if isinstance(count, list) else None


def _total(feature: dict[str, Any], index: int | None) -> int:
    """Values of one slot: finite + missing + NaN + +-Inf."""
    keys = ("count", "missing", "nan", "pos_inf", "neg_inf")
    return sum(int(element_at(feature[key], index)) for key in keys)


def _imputed(feature: dict[str, Any], index: int | None) -> int:
    """Values the impute value replaces: missing and NaN, and +-Inf under
    `inf: missing`."""
    imputed = int(element_at(feature["missing"], index))
    imputed += int(element_at(feature["nan"], index))
    if feature.get("inf") == "missing":
        imputed += int(element_at(feature["pos_inf"], index))
        imputed += int(element_at(feature["neg_inf"], index))
    return imputed


def _clipped(feature: dict[str, Any], index: int | None) -> float:
    return float(element_at(feature["clipped_below"], index)) + float(
        element_at(feature["clipped_above"], index)
    )


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def most_clipped_elements(feature: dict[str, Any], limit: int) -> list[int]:
    """The `limit` elements of a vector feature with the largest share
    clipped, most clipped first (the lower index first on a tie)."""
    size = _elements(feature) or 0
    order = sorted(range(size), key=lambda i: (-_clipped(feature, i), i))
    return order[:limit]


def _histogram(feature: dict[str, Any], key: str, index: int | None) -> dict | None:
    """The histogram `key` of one slot, or None when stats.json has none
    (an older format) or it is undefined (no finite values)."""
    entry = feature.get(key)
    if entry is None:
        return None
    entry = element_at(entry, index)
    if not isinstance(entry, dict):
        return None
    edges, counts = entry.get("edges"), entry.get("counts")
    if not edges or not counts or any(e is None for e in edges):
        return None
    return entry


def has_histograms(stats: dict[str, Any]) -> bool:
    """Whether stats.json carries histograms (format_version 4 and later)."""
    return any("histogram" in feature for feature in stats["features"].values())


# ---------------------------------------------------------------------------
# Warnings


def report_warnings(
    stats: dict[str, Any],
    clip_share: float = CLIP_WARNING_SHARE,
    missing_share: float = MISSING_WARNING_SHARE,
) -> list[tuple[str, str, str]]:
    """What the top of the report lists, per feature.

    stats.json's own warnings (constant features, degenerate bounds, no
    finite values, a zero `robust` range), and three more: a `mad` clip whose
    MAD is 0, a clip that removes more than `clip_share` of the finite values,
    and more than `missing_share` of the values imputed without a `missing`
    indicator. A vector feature's elements with the same warning are named
    up to `LISTED_ELEMENTS`, then summarized in one line.

    Returns:
      `(feature, kind, text)` tuples in feature order; kind is `stats`,
      `mad`, `clipped` or `missing`.
    """
    found: list[tuple[str, str, str]] = []
    for name, feature in stats["features"].items():
        size = _elements(feature)
        indices: Sequence[int | None] = range(size) if size else [None]
        grouped: dict[str, list[int | None]] = {}
        for warning in feature.get("warnings", []):
            match = re.match(r"element (\d+): (.*)", warning, re.DOTALL)
            if match:
                grouped.setdefault(match.group(2), []).append(int(match.group(1)))
            else:
                grouped.setdefault(warning, []).append(None)
        for text, where in grouped.items():
            found.append((name, "stats", _elementwise(text, where, size)))
        clip = feature["clip"]
        if clip.get("strategy") == "mad" and clip.get("mad") is not None:
            zero = [i for i in indices if element_at(clip["mad"], i) == 0]
            if zero:
                text = (
                    "`mad` clip with a MAD of 0 (at least half the finite values "
                    "equal the median): the bounds close on the median and the "
                    "other values are clipped to it (use a `quantile` clip)"
                )
                found.append((name, "mad", _elementwise(text, zero, size)))
        heavy = [i for i in indices if _clipped(feature, i) > clip_share]
        if heavy:
            worst = max(heavy, key=lambda i: _clipped(feature, i))
            text = (
                f"the clip removes {_percent(_clipped(feature, worst))} of the "
                f"finite values (more than {_percent(clip_share)}): below "
                f"{_percent(element_at(feature['clipped_below'], worst))}, above "
                f"{_percent(element_at(feature['clipped_above'], worst))}"
            )
            found.append((name, "clipped", _elementwise(text, heavy, size, worst)))
        if "missing" not in feature.get("indicators", []):
            shares = {
                i: _share(_imputed(feature, i), _total(feature, i)) for i in indices
            }
            heavy = [i for i in indices if shares[i] > missing_share]
            if heavy:
                worst = max(heavy, key=shares.__getitem__)
                text = (
                    f"{_percent(shares[worst])} of the values are missing or not "
                    "finite and take the impute value, without a `missing` "
                    "indicator: the model cannot tell them from real values "
                    "(add `indicators: [missing]`)"
                )
                found.append((name, "missing", _elementwise(text, heavy, size, worst)))
    return found


def _elementwise(
    text: str, where: list[int | None], size: int | None, worst: int | None = None
) -> str:
    """`text` prefixed with the elements it applies to (none: the feature)."""
    if size is None or where == [None]:
        return text
    if len(where) <= LISTED_ELEMENTS:
        label = "element" if len(where) == 1 else "elements"
        return f"{label} {', '.join(map(str, where))}: {text}"
    about = f" (the numbers: element {worst})" if worst is not None else ""
    return f"{len(where)} of {size} elements{about}: {text}"


# ---------------------------------------------------------------------------
# Number formatting


def _number(value: Any) -> str:
    """6 significant digits; `-` for undefined (null)."""
    if value is None:
        return "-"
    value = float(value)
    if not math.isfinite(value):
        return "-"
    return f"{value:.6g}"


def _count(value: Any) -> str:
    return f"{int(value):,}"


def _percent(share: Any) -> str:
    """A share as a percentage, 3 significant digits (`0.0960%`)."""
    percent = 100 * float(share)
    if percent == 0:
        return "0%"
    return f"{percent:.3g}%" if percent >= 1 else f"{percent:.3f}%"


# ---------------------------------------------------------------------------
# Charts (matplotlib SVG)

_SVG_RC = {
    "svg.fonttype": "none",  # text stays text: small, and no glyphs to embed
    "svg.hashsalt": "tanhguard",  # stable ids: the same stats, the same page
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
# The SVG backend draws at 72 dpi: a figure made at 72 dpi is measured for
# its layout in the units it is drawn in.
_SVG_DPI = 72


def preload_charts() -> threading.Thread:
    """Imports matplotlib's figure and SVG backend on a daemon thread (about
    0.3 s of CPU), so that a job that writes the report later finds them
    loaded; the job's own work meanwhile runs on the other thread (Beam's
    passes release the GIL in numpy and Arrow). An import that fails here
    fails again, with its error, where the report needs it."""

    def load() -> None:
        with contextlib.suppress(Exception):
            import matplotlib.backends.backend_svg
            import matplotlib.figure  # noqa: F401

    thread = threading.Thread(target=load, name="tanhguard-preload", daemon=True)
    thread.start()
    return thread


class _Canvas:
    """A matplotlib Figure with one Axes, drawn again for each chart of its
    size.

    A new Figure costs its Axes and their ticks (about as much as drawing
    them), and matplotlib's constrained layout draws a figure twice when it
    is saved, measuring the decorations twice on the way. Here the Axes is
    cleared of the last chart instead (`axes()`) and placed where the
    constrained layout places a figure's only Axes, measured without drawing
    and mostly once (`svg()`): the same SVG, the report of 10 features in
    about 0.4 of the time.
    """

    def __init__(self, width: float, height: float) -> None:
        import matplotlib
        from matplotlib.backends.backend_svg import RendererSVG
        from matplotlib.figure import Figure

        with matplotlib.rc_context(_SVG_RC):
            self.figure = Figure(figsize=(width, height), dpi=_SVG_DPI)
            self._axes = self.figure.add_subplot()
        # Measures text as the SVG backend does, for the layout.
        self._renderer = RendererSVG(width * _SVG_DPI, height * _SVG_DPI, io.StringIO())
        self._drawn_on = False
        self._saved_tickers: list[tuple[Any, tuple]] = []

    def axes(self) -> Any:
        """The Axes as a new Figure's: no artists, titles, axis labels or
        legend; automatic limits, margins and ticks; the spines the rc
        shows; the subplot position. Its tick objects are kept (they are
        updated when drawn)."""
        axes = self._axes
        if not self._drawn_on:
            self._drawn_on = True
            return axes
        import matplotlib

        with matplotlib.rc_context(_SVG_RC):
            for group in (
                axes.lines,
                axes.patches,
                axes.collections,
                axes.texts,
                axes.images,
                axes.artists,
                axes.tables,
            ):
                for artist in list(group):
                    artist.remove()
            if axes.get_legend() is not None:
                axes.get_legend().remove()
            for loc in ("center", "left", "right"):
                axes.set_title("", loc=loc)
            axes.set_xlabel("")
            axes.set_ylabel("")
            # The default locators and formatters (set_yticks and
            # set_params change them).
            axes.set_xscale("linear")
            axes.set_yscale("linear")
            for side, spine in axes.spines.items():
                spine.set_visible(matplotlib.rcParams[f"axes.spines.{side}"])
            axes.set_gid(None)
            axes.set_prop_cycle(None)
            axes.relim()
            axes.margins(
                x=matplotlib.rcParams["axes.xmargin"],
                y=matplotlib.rcParams["axes.ymargin"],
            )
            axes.set_xlim(0, 1, auto=True)
            axes.set_ylim(0, 1, auto=True)
            axes.set_position(axes.get_subplotspec().get_position(self.figure))
        return axes

    def svg(self, prefix: str) -> str:
        """The chart as an inline `<svg>` element (`_inline_svg`)."""
        import matplotlib

        buffer = io.StringIO()
        with matplotlib.rc_context(_SVG_RC):
            try:
                self._place_axes()
                self.figure.savefig(buffer, format="svg", metadata={"Date": None})
            finally:
                self._free_ticks()
        return _inline_svg(buffer.getvalue(), prefix)

    def _place_axes(self) -> None:
        """Places the Axes as matplotlib's constrained layout places a
        figure's only Axes, and leaves its ticks fixed there (`_fix_ticks`).

        The decorations (tick labels, axis labels, title) end
        `figure.constrained_layout.w_pad` / `h_pad` inside the figure's
        edges. Like that layout, it measures them at the subplot position,
        moves the Axes, and measures again: a decoration placed along an
        axis (a tick label, a text in the Axes) moves relative to the Axes'
        edges when the Axes changes size, and the ticks may change. The
        second measurement is skipped when it cannot differ: the same ticks,
        and every such decoration strictly inside the decorations' bounds
        before and after the move (the bounds are then set by decorations
        fixed to an edge, which move with it).
        """
        import matplotlib
        from matplotlib.transforms import Bbox

        figure, axes = self.figure, self._axes
        width, height = figure.get_size_inches()
        w_pad = matplotlib.rcParams["figure.constrained_layout.w_pad"] / width
        h_pad = matplotlib.rcParams["figure.constrained_layout.h_pad"] / height
        # Where the decorations end once the Axes is placed, in pixels.
        target = Bbox.from_extents(w_pad, h_pad, 1 - w_pad, 1 - h_pad)
        target = target.transformed(figure.transFigure)
        for measurement in range(2):
            position = axes.get_position(original=True)
            ticks = self._fix_ticks()
            box = axes.get_tightbbox(self._renderer, for_layout_only=True)
            inside = measurement == 0 and self._moving_inside(box)
            self._free_ticks()
            fraction = box.transformed(figure.transFigure.inverted())
            placed = Bbox.from_extents(
                w_pad + position.x0 - fraction.x0,
                h_pad + position.y0 - fraction.y0,
                1 - w_pad - (fraction.x1 - position.x1),
                1 - h_pad - (fraction.y1 - position.y1),
            )
            if placed.width <= 0 or placed.height <= 0:
                break  # no room for the decorations: left where it is
            axes.set_position(placed)
            if inside:
                if self._fix_ticks() == ticks and self._moving_inside(target):
                    return
                self._free_ticks()
        self._fix_ticks()

    def _moving_inside(self, box: Any) -> bool:
        """Whether every decoration that may move relative to the Axes'
        edges when the Axes changes size lies inside the Axes or strictly
        inside `box` (pixels): the tick labels shown (along their axis) and
        the Axes' artists in its layout (both ways; texts, the legend, and
        what is clipped to the Axes). The spines and the background are
        fixed to the edges."""
        axes = self._axes
        along: list[tuple[Any, str]] = []
        for axis, direction in ((axes.xaxis, "x"), (axes.yaxis, "y")):
            low, high = sorted(axis.get_view_interval())
            locations = axis.get_majorticklocs()
            ticks = axis.get_major_ticks(len(locations))
            for tick, location in zip(ticks, locations, strict=True):
                if low <= location <= high:
                    along += [(tick.label1, direction), (tick.label2, direction)]
        fixed = [*axes.spines.values(), axes.patch]
        along += [
            (artist, "xy")
            for artist in axes.get_default_bbox_extra_artists()
            if not any(artist is edge for edge in fixed)
        ]
        inner = axes.bbox.padded(1e-6)  # clipped to it, up to rounding
        for artist, direction in along:
            if not artist.get_visible():
                continue
            extent = artist.get_tightbbox(self._renderer)  # clipped, if it is
            if extent is None or (extent.width == 0 and extent.height == 0):
                continue  # not in the bounds (an empty text)
            if inner.x0 <= extent.x0 <= extent.x1 <= inner.x1 and (
                inner.y0 <= extent.y0 <= extent.y1 <= inner.y1
            ):
                continue  # inside the Axes, whose edges are in the bounds
            if "x" in direction and not box.x0 < extent.x0 <= extent.x1 < box.x1:
                return False
            if "y" in direction and not box.y0 < extent.y0 <= extent.y1 < box.y1:
                return False
        return True

    def _fix_ticks(self) -> list[list[float]]:
        """Fixes each axis' ticks and their labels where its locators and
        formatter put them now (until `_free_ticks`); returns the major
        tick locations.

        matplotlib asks the locators and the formatter again each time it
        needs the ticks, dozens of times per draw; their answers depend only
        on the limits and the Axes' size, which do not change meanwhile."""
        from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

        locations = []
        for axis in (self._axes.xaxis, self._axes.yaxis):
            saved = (
                axis.get_major_locator(),
                axis.get_minor_locator(),
                axis.get_major_formatter(),
                axis.remove_overlapping_locs,
            )
            self._saved_tickers.append((axis, saved))
            major = axis.get_majorticklocs()
            formatter = axis.get_major_formatter()
            fixed = FixedFormatter(formatter.format_ticks(major))
            fixed.set_offset_string(formatter.get_offset())
            if not isinstance(axis.get_minor_locator(), NullLocator):
                # Without those on major ticks, as matplotlib draws them.
                axis.set_minor_locator(FixedLocator(axis.get_minorticklocs()))
            axis.set_major_locator(FixedLocator(major))
            axis.set_major_formatter(fixed)
            axis.remove_overlapping_locs = False  # done: no need to ask again
            locations.append(list(major))
        return locations

    def _free_ticks(self) -> None:
        """The locators and formatter `_fix_ticks` replaced, back."""
        while self._saved_tickers:
            axis, (major, minor, formatter, overlap) = self._saved_tickers.pop()
            axis.set_major_locator(major)
            axis.set_minor_locator(minor)
            axis.set_major_formatter(formatter)
            axis.remove_overlapping_locs = overlap


def _canvas(canvases: dict | None, width: float, height: float) -> _Canvas:
    """The canvas of a chart's size from `canvases` (one per size, made on
    first use); a new one without `canvases`."""
    if canvases is None:
        return _Canvas(width, height)
    if (width, height) not in canvases:
        canvases[(width, height)] = _Canvas(width, height)
    return canvases[(width, height)]


def _inline_svg(text: str, prefix: str) -> str:
    """matplotlib's SVG file as an inline `<svg>` element.

    The XML prolog, DOCTYPE, metadata and namespace declarations (addresses
    an HTML page does not need) are dropped; ids are made unique in the page
    with `prefix`, and a `tg-` gid becomes a class the page and its tests
    select by (`.tg-clip-lower`).
    """
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.DOTALL)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    text = re.sub(
        r'(<svg[^>]*?)\s+width="[^"]*"\s+height="[^"]*"', r"\1", text, count=1
    )
    text = re.sub(r'id="(tg-[\w-]+)"', r'class="\1"', text)
    text = re.sub(r'id="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    return re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _bars(axes: Any, entry: dict[str, Any], color: str, gid: str) -> None:
    """A histogram from its edges and counts (degenerate bins: one bar)."""
    edges = [float(e) for e in entry["edges"]]
    counts = [int(c) for c in entry["counts"]]
    if edges[-1] > edges[0]:
        axes.stairs(counts, edges, fill=True, color=color, alpha=0.8, gid=gid)
    else:  # every value in one point (a constant feature)
        axes.vlines([edges[0]], 0, [sum(counts)], color=color, lw=6, gid=gid)
        axes.set_xlim(edges[0] - max(abs(edges[0]) * 0.1, 1.0), None)
        axes.set_xlim(None, edges[0] + max(abs(edges[0]) * 0.1, 1.0))
    axes.set_ylabel("rows")
    axes.margins(y=0.15)


def _mark_bound(
    axes: Any, value: float | None, side: str, share: float, text_y: float
) -> None:
    """The clip bound `side` as a red line (an arrow at the edge when it lies
    far outside the plotted range), the clipped region shaded, and the share
    clipped on that side."""
    left, right = axes.get_xlim()
    span = right - left
    lower = side == "lower"
    label = f"{'◀ ' if lower else ''}{_percent(share)} clipped{'' if lower else ' ▶'}"
    if value is not None:
        # A bound near the plotted range widens it; one far outside (no clip,
        # float32 extremes) is an arrow at the edge with its value.
        near = left - span <= value <= right + span
        if near:
            left, right = min(left, value), max(right, value)
            pad = 0.02 * (right - left)
            axes.set_xlim(min(left, value - pad), max(right, value + pad))
            axes.axvline(value, color=CLIP_COLOR, lw=1.5, gid=f"tg-clip-{side}")
            edge = axes.get_xlim()[0 if lower else 1]
            start, stop = (edge, value) if lower else (value, edge)
            axes.axvspan(start, stop, color=CLIP_COLOR, alpha=0.08, lw=0)
        else:
            x = 0.0 if lower else 1.0
            axes.annotate(
                f"{side} {value:.3g}",
                xy=(x, 0.5),
                xycoords="axes fraction",
                ha="left" if lower else "right",
                color=CLIP_COLOR,
                gid=f"tg-clip-{side}",
            )
    axes.text(
        0.01 if lower else 0.99,
        text_y,
        label,
        transform=axes.transAxes,
        ha="left" if lower else "right",
        va="top",
        color=CLIP_COLOR,
        gid=f"tg-clipped-{side}",
    )


def raw_chart(
    feature: dict[str, Any],
    index: int | None,
    prefix: str,
    canvases: dict | None = None,
) -> str:
    """The raw distribution: the histogram (or, without one, the quantiles)
    with the clip bounds and the share clipped on each side. `canvases`: a
    report's figures, one per chart size, drawn on again (`_canvas`)."""
    clip = feature["clip"]
    lower, upper = (
        _finite(element_at(clip["lower"], index)),
        _finite(element_at(clip["upper"], index)),
    )
    entry = _histogram(feature, "histogram", index)
    canvas = _canvas(canvases, 5.2, 2.3)
    axes = canvas.axes()
    if entry is not None:
        _bars(axes, entry, DATA_COLOR, "tg-raw-histogram")
        outside = [int(entry.get("below", 0)), int(entry.get("above", 0))]
        if any(outside):
            axes.set_title(
                f"raw; finite values outside the bins: {outside[0]:,} below, "
                f"{outside[1]:,} above",
                loc="left",
                fontsize=8,
            )
    else:
        _quantile_strip(axes, feature, index)
    below = float(element_at(feature["clipped_below"], index))
    above = float(element_at(feature["clipped_above"], index))
    _mark_bound(axes, lower, "lower", below, 0.98)
    _mark_bound(axes, upper, "upper", above, 0.98)
    return canvas.svg(prefix)


def _quantile_strip(axes: Any, feature: dict[str, Any], index: int | None) -> None:
    """Without a histogram: min, the stored quantiles and max on one line,
    the box from the 0.25 to the 0.75 quantile."""
    points = [_finite(element_at(feature["min"], index))]
    points += [_finite(element_at(q, index)) for q in feature["quantiles"].values()]
    points.append(_finite(element_at(feature["max"], index)))
    known = [p for p in points if p is not None]
    axes.set_yticks([])
    axes.spines["left"].set_visible(False)
    if not known:
        axes.text(0.5, 0.5, "no finite values", transform=axes.transAxes, ha="center")
        return
    axes.plot(known, [0.5] * len(known), "|", ms=14, color=DATA_COLOR)
    axes.hlines(0.5, min(known), max(known), color=DATA_COLOR, lw=1)
    q25 = _finite(element_at(feature["quantiles"].get("0.25"), index))
    q75 = _finite(element_at(feature["quantiles"].get("0.75"), index))
    if q25 is not None and q75 is not None:
        axes.fill_between([q25, q75], 0.4, 0.6, color=DATA_COLOR, alpha=0.5)
    axes.set_ylim(0, 1)
    axes.set_title(
        "raw: min, quantiles, max (" + NO_HISTOGRAMS + ")", loc="left", fontsize=8
    )
    if min(known) == max(known):
        axes.set_xlim(known[0] - 1, known[0] + 1)
    axes.set_gid("tg-raw-quantiles")


def output_chart(
    feature: dict[str, Any],
    index: int | None,
    prefix: str,
    canvases: dict | None = None,
) -> str:
    """The transformed output's distribution on `[-B, B]` (`canvases`: as
    for `raw_chart`)."""
    bound = float(feature["output_bound"])
    entry = _histogram(feature, "output_histogram", index)
    canvas = _canvas(canvases, 3.6, 2.3)
    axes = canvas.axes()
    if entry is not None:
        _bars(axes, entry, OUTPUT_COLOR, "tg-output-histogram")
    else:
        axes.set_yticks([])
        axes.text(
            0.5, 0.5, NO_HISTOGRAMS, transform=axes.transAxes, ha="center", fontsize=7
        )
    for side in (-bound, bound):
        axes.axvline(side, color="#555555", lw=1, ls="--")
    axes.set_xlim(-bound * 1.05, bound * 1.05)
    axes.set_title(f"output, in [-{bound:g}, {bound:g}]", loc="left", fontsize=8)
    return canvas.svg(prefix)


def clipped_per_element_chart(
    feature: dict[str, Any], prefix: str, canvases: dict | None = None
) -> str:
    """The share clipped below and above, per element of a vector feature
    (`canvases`: as for `raw_chart`)."""
    size = _elements(feature) or 0
    below = [100 * float(v) for v in feature["clipped_below"]]
    above = [100 * float(v) for v in feature["clipped_above"]]
    canvas = _canvas(canvases, 8.8, 1.9)
    axes = canvas.axes()
    edges = [i - 0.5 for i in range(size + 1)]
    axes.stairs(below, edges, fill=True, color=CLIP_COLOR, alpha=0.5, label="below")
    axes.stairs(
        [b + a for b, a in zip(below, above, strict=True)],
        edges,
        baseline=below,
        fill=True,
        color=DATA_COLOR,
        alpha=0.6,
        label="above",
    )
    axes.axhline(100 * CLIP_WARNING_SHARE, color="#555555", lw=1, ls="--")
    axes.set_xlim(-0.5, size - 0.5)
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.set_xlabel("element")
    axes.set_ylabel("% clipped")
    axes.legend(loc="upper right", fontsize=7, frameon=False)
    axes.set_gid("tg-clipped-per-element")
    return canvas.svg(prefix)


# ---------------------------------------------------------------------------
# HTML

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
 margin:0 auto;padding:0 1.5rem 3rem;max-width:1280px;color:#222}
h1{font-size:1.4rem;margin:1rem 0 .2rem}h2{font-size:1.15rem;margin:0 0 .4rem}
.meta{color:#555;margin:0 0 .8rem}
.warnings{background:#fff4e5;border:1px solid #f0a030;border-radius:6px;
 padding:.5rem 1rem;margin:.8rem 0}
.warnings h2{color:#8a4b00}.warnings li{margin:.15rem 0}
.notice{background:#eef3fb;border:1px solid #8fb0e0;border-radius:6px;
 padding:.5rem 1rem}
.tools{position:sticky;top:0;background:#fff;padding:.5rem 0;z-index:1;
 border-bottom:1px solid #ddd}
#search{font-size:1rem;padding:.3rem .5rem;width:22rem;max-width:100%}
table{border-collapse:collapse}td,th{padding:.15rem .5rem;text-align:right}
th:first-child,td:first-child{text-align:left}
#overview th{cursor:pointer;user-select:none;border-bottom:1px solid #999}
#overview th:hover{background:#f2f2f2}#overview tr:nth-child(even){background:#fafafa}
.feature{border-top:2px solid #ddd;padding:.8rem 0}
.charts{display:flex;flex-wrap:wrap;gap:.5rem;align-items:flex-start}
.charts svg{height:auto}.raw svg{width:430px;max-width:100%}
.out svg{width:300px;max-width:100%}.tables{display:flex;gap:.8rem}
.numbers-block{max-width:460px}
.wide svg{width:100%;max-width:880px}
.numbers{font-size:13px}.numbers td,.numbers th{padding:.05rem .4rem}
.numbers td{border-bottom:1px solid #eee}.numbers th{text-align:left;
 font-weight:normal;color:#555}
.feature .warn{color:#8a4b00}.element{margin-left:1rem}
.bad{color:#b00020;font-weight:600}
"""

# Filter the features by name; sort the overview by a column.
_SCRIPT = """
const search = document.getElementById("search");
search.addEventListener("input", () => {
  const q = search.value.trim().toLowerCase();
  for (const el of document.querySelectorAll("[data-feature]")) {
    el.hidden = q !== "" && !el.dataset.feature.toLowerCase().includes(q);
  }
});
for (const th of document.querySelectorAll("#overview th")) {
  th.addEventListener("click", () => {
    const body = th.closest("table").tBodies[0], col = th.cellIndex;
    const down = th.dataset.order !== "desc";
    th.dataset.order = down ? "desc" : "asc";
    const key = (r) => r.cells[col].dataset.sort ?? r.cells[col].textContent;
    const rows = [...body.rows].sort((a, b) => {
      const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      const c = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
      return down ? -c : c;
    });
    body.append(...rows);
  });
}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _anchor(name: str) -> str:
    return "feature-" + re.sub(r"[^\w-]", "_", name)


def _cell(text: str, field: str, sort: Any = None) -> str:
    sort_attr = f' data-sort="{_e(sort)}"' if sort is not None else ""
    return f'<td data-field="{field}"{sort_attr}>{_e(text)}</td>'


def _numbers_table(feature: dict[str, Any], index: int | None) -> str:
    """The numbers of one slot, each cell tagged with its stats.json field."""

    def at(value: Any) -> Any:
        return element_at(value, index)

    total = _total(feature, index)
    clip, scale, impute = feature["clip"], feature["scale"], feature["impute"]
    rows = [
        ("finite values", "count", _count(at(feature["count"]))),
        ("missing", "missing", _count(at(feature["missing"]))),
        ("NaN", "nan", _count(at(feature["nan"]))),
        ("+Inf", "pos_inf", _count(at(feature["pos_inf"]))),
        ("-Inf", "neg_inf", _count(at(feature["neg_inf"]))),
        (
            "imputed share",
            "imputed_share",
            _percent(_share(_imputed(feature, index), total)),
        ),
        (
            f"impute ({impute['strategy']})",
            "impute.value",
            _number(at(impute["value"])),
        ),
        ("+-Inf", "inf", f"{feature.get('inf', '-')}"),
        ("indicators", "indicators", ", ".join(feature.get("indicators", [])) or "-"),
        ("min", "min", _number(at(feature["min"]))),
        ("max", "max", _number(at(feature["max"]))),
        ("mean", "mean", _number(at(feature["mean"]))),
        ("std", "std", _number(at(feature["std"]))),
        (f"clip lower ({clip['strategy']})", "clip.lower", _number(at(clip["lower"]))),
        ("clip upper", "clip.upper", _number(at(clip["upper"]))),
        ("clipped below", "clipped_below", _percent(at(feature["clipped_below"]))),
        ("clipped above", "clipped_above", _percent(at(feature["clipped_above"]))),
        (f"center ({scale['strategy']})", "scale.center", _number(at(scale["center"]))),
        ("scale", "scale.scale", _number(at(scale["scale"]))),
        ("output bound", "output_bound", _number(feature["output_bound"])),
    ]
    if clip.get("strategy") == "mad" and "mad" in clip:
        where = next(i for i, row in enumerate(rows) if row[1] == "clip.lower")
        rows.insert(where, ("MAD", "clip.mad", _number(at(clip["mad"]))))
    split = next(i for i, row in enumerate(rows) if row[1] == "mean")
    tables = "".join(
        '<table class="numbers">'
        + "".join(
            f"<tr><th>{_e(title)}</th>{_cell(text, field)}</tr>"
            for title, field, text in part
        )
        + "</table>"
        for part in (rows[:split], rows[split:])
    )
    quantiles = " · ".join(
        f"{_e(p)}: {_e(_number(at(value)))}"
        for p, value in feature["quantiles"].items()
    )
    return (
        f'<div class="tables">{tables}</div>'
        f'<p class="quantiles"><small>quantiles {quantiles}</small></p>'
    )


def _slot_panel(
    name: str,
    feature: dict[str, Any],
    index: int | None,
    prefix: str,
    canvases: dict,
) -> str:
    element = "" if index is None else f' data-element="{index}"'
    raw = raw_chart(feature, index, prefix + "r", canvases)
    output = output_chart(feature, index, prefix + "o", canvases)
    return (
        f'<div class="slot"{element}><div class="charts">'
        f'<div class="raw">{raw}</div><div class="out">{output}</div>'
        f'<div class="numbers-block">{_numbers_table(feature, index)}</div>'
        "</div></div>"
    )


def _feature_section(
    name: str,
    feature: dict[str, Any],
    warnings: list[str],
    number: int,
    shape: Sequence[int],
    canvases: dict,
) -> str:
    size = _elements(feature)
    prefix = f"f{number}"
    heading = _e(name)
    if size is not None:
        heading += f" <small>(vector of {size}, parameters per element)</small>"
    elif shape:
        heading += (
            f" <small>(vector of {_e(' x '.join(map(str, shape)))}, one set of "
            "parameters for every element)</small>"
        )
    parts = [
        f'<section class="feature" id="{_anchor(name)}" data-feature="{_e(name)}">',
        f"<h2>{heading}</h2>",
    ]
    if warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
        parts.append(f'<ul class="warn">{items}</ul>')
    if size is None:
        parts.append(_slot_panel(name, feature, None, prefix, canvases))
    else:
        shown = most_clipped_elements(feature, VECTOR_PANELS)
        shares = [_clipped(feature, i) for i in range(size)]
        over = sum(share > CLIP_WARNING_SHARE for share in shares)
        imputed = [
            _share(_imputed(feature, i), _total(feature, i)) for i in range(size)
        ]
        parts.append(
            f'<p class="vector-summary">{size} elements; share of finite values '
            f"clipped: max {_percent(max(shares))}, mean "
            f"{_percent(sum(shares) / size)}, {over} above "
            f"{_percent(CLIP_WARNING_SHARE)}; imputed share max "
            f"{_percent(max(imputed))}. Shown below: "
            f"{'every element' if len(shown) == size else 'the most clipped'} "
            f"({', '.join(map(str, shown))}); stats.json has each.</p>"
        )
        chart = clipped_per_element_chart(feature, prefix, canvases)
        parts.append(f'<div class="wide">{chart}</div>')
        for index in shown:
            parts.append(
                f'<h3 class="element">{_e(name)}[{index}]</h3>'
                + _slot_panel(name, feature, index, f"{prefix}e{index}", canvases)
            )
    parts.append("</section>")
    return "\n".join(parts)


def _overview(stats: dict[str, Any], counts: dict[str, int]) -> str:
    head = (
        "<thead><tr><th>feature</th><th>imputed</th><th>NaN/Inf</th>"
        "<th>clip lower</th><th>clip upper</th><th>clipped</th>"
        "<th>center</th><th>scale</th><th>warnings</th></tr></thead>"
    )
    rows = []
    for name, feature in stats["features"].items():
        index = None
        label = name
        if _elements(feature) is not None:
            index = most_clipped_elements(feature, 1)[0]
            label = f"{name}[{index}]"
        total = _total(feature, index)
        imputed = _share(_imputed(feature, index), total)
        nonfinite = sum(
            int(element_at(feature[k], index)) for k in ("nan", "pos_inf", "neg_inf")
        )
        clipped = _clipped(feature, index)
        values = [
            f'<td data-sort="{_e(name)}">'
            f'<a href="#{_anchor(name)}">{_e(label)}</a></td>',
            _cell(_percent(imputed), "imputed_share", imputed),
            _cell(_count(nonfinite), "nonfinite", nonfinite),
            _cell(
                _number(element_at(feature["clip"]["lower"], index)),
                "clip.lower",
                element_at(feature["clip"]["lower"], index),
            ),
            _cell(
                _number(element_at(feature["clip"]["upper"], index)),
                "clip.upper",
                element_at(feature["clip"]["upper"], index),
            ),
            _cell(_percent(clipped), "clipped", clipped),
            _cell(
                _number(element_at(feature["scale"]["center"], index)),
                "scale.center",
                element_at(feature["scale"]["center"], index),
            ),
            _cell(
                _number(element_at(feature["scale"]["scale"], index)),
                "scale.scale",
                element_at(feature["scale"]["scale"], index),
            ),
            _cell(str(counts.get(name, 0)), "warnings", counts.get(name, 0)),
        ]
        bad = ' class="bad"' if counts.get(name) else ""
        rows.append(f'<tr data-feature="{_e(name)}"{bad}>{"".join(values)}</tr>')
    return f'<table id="overview">{head}<tbody>{"".join(rows)}</tbody></table>'


def report_html(stats: dict[str, Any]) -> str:
    """The report of one stats.json content as a self-contained HTML page.

    Works on every stats.json format: without histograms (format 3 and
    older) the raw chart shows min, the stored quantiles and max, and the
    page says "no histograms (artifacts from an older tanhguard)".

    Returns:
      The HTML text; it references no network address (no scripts, fonts,
      styles or images to fetch).
    """
    features = stats["features"]
    warnings = report_warnings(stats)
    per_feature: dict[str, list[str]] = {}
    for name, _, text in warnings:
        per_feature.setdefault(name, []).append(text)
    counts = {name: len(texts) for name, texts in per_feature.items()}
    data = stats.get("data", {})
    meta = (
        f"{_count(stats['num_rows'])} rows · {len(features)} features · data "
        f"<code>{_e(data.get('pattern', '-'))}</code> · stats.json format "
        f"{_e(stats.get('format_version', '-'))} · tanhguard "
        f"{_e(stats.get('tanhguard_version', '-'))} · TFT "
        f"{_e(stats.get('tensorflow_transform_version', '-'))}"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        GENERATOR,
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>tanhguard report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>tanhguard report</h1>",
        f'<p class="meta">{meta}</p>',
    ]
    if not has_histograms(stats):
        parts.append(
            f'<p class="notice" id="no-histograms">{_e(NO_HISTOGRAMS.capitalize())}: '
            "the raw charts show min, the stored quantiles and max; run "
            "<code>tanhguard analyze</code> again for histograms.</p>"
        )
    if warnings:
        items = "".join(
            f'<li data-feature="{_e(name)}" data-kind="{kind}">'
            f'<a href="#{_anchor(name)}">{_e(name)}</a>: {_e(text)}</li>'
            for name, kind, text in warnings
        )
        parts.append(
            f'<div class="warnings" id="warnings"><h2>Warnings ({len(warnings)})</h2>'
            f"<ul>{items}</ul></div>"
        )
    else:
        parts.append('<p class="notice" id="warnings">No warnings.</p>')
    parts.append(
        '<div class="tools"><input id="search" type="search" '
        'placeholder="Filter features by name" aria-label="Filter features by name">'
        " <small>Click a column title to sort.</small></div>"
    )
    parts.append(_overview(stats, counts))
    configured = stats.get("config", {}).get("features", {})
    canvases: dict = {}  # one per chart size, drawn on by every feature
    for number, (name, feature) in enumerate(features.items()):
        shape = configured.get(name, {}).get("shape", [])
        texts = per_feature.get(name, [])
        parts.append(_feature_section(name, feature, texts, number, shape, canvases))
    parts.append(f"<script>{_SCRIPT}</script></body></html>\n")
    return "\n".join(parts)


def write_report(artifacts_dir: str | Path, output: str | Path | None = None) -> Path:
    """Writes the HTML report of an artifacts directory.

    Args:
      artifacts_dir: What `tanhguard analyze` wrote (its stats.json is read).
      output: The HTML file; default `<artifacts_dir>/report.html`. An
        existing file is replaced only if it is a tanhguard report.

    Returns:
      The path written.

    Raises:
      ArtifactsError: stats.json is missing, not JSON, or lacks a field.
      OutputExistsError: `output` exists and is not a tanhguard report.
      OutputError: `output` cannot be written.
    """
    stats = load_stats(artifacts_dir)
    path = Path(artifacts_dir) / STATS_FILE
    try:
        text = report_html(stats)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise ArtifactsError(
            f"{path}: cannot report on stats.json: {type(error).__name__} "
            f"{error} (written by another tanhguard version?)"
        ) from None
    target = output if output is not None else Path(artifacts_dir) / REPORT_FILE
    target = _write_page(text, target)
    logger.debug("report: %s", target)
    return target


def check_page_path(output: str | Path, generator: str = GENERATOR) -> Path:
    """The file a page will be written to, checked before any work: a local
    file name (not a URL, a directory or a path ending in `/`) in an existing
    directory, new or a page of the same kind tanhguard wrote (a report never
    replaces a check page, nor the reverse).

    Raises:
      OutputError: not a usable file path.
      OutputExistsError: it exists and is not such a page.
    """
    text = os.fspath(output)
    if not text.strip():
        raise OutputError("an empty file name was given for the HTML page")
    if "://" in text:
        raise OutputError(
            f"{text}: the page is written to a local file; write it locally and copy it"
        )
    if text.endswith(("/", os.sep)):
        raise OutputError(f"{text}: a directory; give the HTML file's name")
    target = Path(text)
    parent = target.parent
    if not parent.exists():
        raise OutputError(f"{text}: the directory {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"{text}: a path under a file ({parent})")
    _check_replaceable(target, generator)
    return target


def _write_page(text: str, output: str | Path, generator: str = GENERATOR) -> Path:
    """Writes a page atomically; an existing file only if it is a page of
    the same kind tanhguard wrote. Returns its path."""
    target = check_page_path(output, generator)
    temporary = target.with_name(f".{target.name}.tanhguard-{os.getpid()}")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)
    except OSError as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise OutputError(
            f"{target}: cannot write the report: {error.strerror or error}"
        ) from None
    return target


def drift_chart(element: Any, prefix: str, canvases: dict | None = None) -> str:
    """Training vs new shares of the finite values over the training
    histogram's bins, with the shares below and above it in the title
    (`canvases`: as for `raw_chart`)."""
    canvas = _canvas(canvases, 5.2, 2.0)
    axes = canvas.axes()
    edges = [float(e) for e in element.edges]
    train, new = element.train_shares, element.new_shares
    axes.stairs(
        train[1:-1], edges, color="#888888", lw=1.5, gid="tg-train", label="training"
    )
    axes.stairs(
        new[1:-1],
        edges,
        fill=True,
        color=DATA_COLOR,
        alpha=0.6,
        gid="tg-new",
        label="new",
    )
    axes.set_ylabel("share of finite values")
    axes.legend(loc="upper right", frameon=False)
    axes.set_title(
        f"below the bins: {_percent(train[0])} -> {_percent(new[0])};  "
        f"above: {_percent(train[-1])} -> {_percent(new[-1])}",
        fontsize=8,
    )
    return canvas.svg(prefix)


def check_html(result: Any) -> str:
    """`tanhguard check`'s findings as a self-contained HTML page: the
    verdict, the table, and per feature (a vector: its element that grew
    most) the training and new histograms on the training's bins."""
    failed = result.failed
    verdict = (
        "FAILED: " + "; ".join(f"{n} ({', '.join(r)})" for n, r in failed.items())
        if failed
        else "OK: no threshold exceeded."
    )
    rows, panels = [], []
    canvases: dict = {}
    for number, element in enumerate(result.worst_elements()):
        reasons = result.reasons(element)
        drift = "-" if element.drift is None else f"{element.drift:.3f}"
        status = "FAIL" if reasons else "ok"
        rows.append(
            f'<tr class="{status.lower()}"><td><a href="#{_anchor(element.label)}">'
            f"{_e(element.label)}</a></td>"
            f"<td>{_percent(element.new_nonfinite)}</td>"
            f"<td>{_percent(element.train_nonfinite)}</td>"
            f"<td>{_percent(element.new_clipped)}</td>"
            f"<td>{_percent(element.train_clipped)}</td>"
            f"<td>{drift}</td><td>{status}</td></tr>"
        )
        chart = (
            drift_chart(element, f"d{number}", canvases)
            if element.edges
            else "<p>No training histogram (artifacts from an older tanhguard): "
            "no drift.</p>"
        )
        panels.append(
            f'<section class="feature" id="{_anchor(element.label)}" '
            f'data-name="{_e(element.label)}"><h2>{_e(element.label)} '
            f"<small>{status}{': ' if reasons else ''}{_e(', '.join(reasons))}"
            f"</small></h2>{chart}</section>"
        )
    thresholds = (
        f"clipped share +{_percent(result.max_clipped_increase)}, non-finite share "
        f"+{_percent(result.max_missing_increase)}"
        + (
            f", drift {result.max_drift}"
            if result.max_drift is not None
            else ", drift not judged"
        )
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            CHECK_GENERATOR,
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>tanhguard check</title>",
            f"<style>{_CSS} section.feature svg {{max-width: 680px}}</style>",
            "</head><body>",
            "<h1>tanhguard check</h1>",
            f'<p class="meta">{_count(result.rows)} rows of <code>{_e(result.data)}'
            f"</code> against <code>{_e(result.artifacts)}</code> · thresholds: "
            f"{_e(thresholds)}</p>",
            f'<p class="{"warnings" if failed else "notice"}" id="verdict">'
            f"{_e(verdict)}</p>",
            '<table id="check"><thead><tr><th>feature</th><th>non-finite</th>'
            "<th>(training)</th><th>clipped</th><th>(training)</th><th>drift</th>"
            "<th>result</th></tr></thead><tbody>",
            *rows,
            "</tbody></table>",
            "<p><small>non-finite: share of values missing, NaN or +-Inf; clipped: "
            "share of finite values outside the training clip bounds; drift: "
            "L-infinity distance between the training and new histograms of "
            "finite values.</small></p>",
            *panels,
            "</body></html>\n",
        ]
    )


def write_check_report(result: Any, output: str | Path) -> Path:
    """Writes `check_html(result)` to `output` (replacing only a page
    tanhguard wrote)."""
    return _write_page(check_html(result), output, CHECK_GENERATOR)


def _check_replaceable(target: Path, generator: str = GENERATOR) -> None:
    if not os.path.lexists(target):
        return
    if target.is_dir() or target.is_symlink():
        raise OutputExistsError(
            f"{target}: exists and is not a file tanhguard wrote; choose another "
            "--output"
        )
    try:
        with open(target, encoding="utf-8", errors="replace") as handle:
            head = handle.read(4096)
    except OSError as error:
        raise OutputError(f"{target}: cannot read the existing file: {error}") from None
    if generator not in head:
        kind = "report" if generator == GENERATOR else "check page"
        other = CHECK_GENERATOR if generator == GENERATOR else GENERATOR
        if other in head:
            what = "a `tanhguard check` page" if kind == "report" else "a report"
            raise OutputExistsError(
                f"{target}: exists and is {what}, not a {kind}: one kind of page "
                "never replaces the other; choose another file"
            )
        raise OutputExistsError(
            f"{target}: exists and is not a tanhguard {kind}: tanhguard will not "
            "replace it; choose another file"
        )


def run_report_command(args: Any) -> int:
    """`tanhguard report --artifacts A [--output FILE]`: writes the report
    and prints its path. Errors propagate as tanhguard's exceptions."""
    path = write_report(args.artifacts, getattr(args, "output", None))
    print(f"Report: {path.absolute()}")
    return 0
