"""The HTML report (`tanhguard report`) of real artifacts, checked in a real
headless browser: Debian's chromium (/usr/bin/chromium, which `python3 dev.py
test` installs) driven by Playwright.

The fixture analyzes a small CSV built so that each warning the report lists
has one feature that triggers it and none that should not. Until the analysis
writes histograms itself (stats.json format 4), the fixture adds them to
stats.json with numpy, in format 4's shape, from the same data and from the
graph's own outputs.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tanhguard.errors import ArtifactsError, OutputExistsError
from tanhguard.pipeline import html_report
from tanhguard.pipeline.artifacts import load_stats, write_stats
from tanhguard.pipeline.html_report import (
    CLIP_WARNING_SHARE,
    GENERATOR,
    NO_HISTOGRAMS,
    VECTOR_PANELS,
    clipped_per_element_chart,
    most_clipped_elements,
    output_chart,
    raw_chart,
    report_html,
    run_report_command,
    write_report,
)
from tanhguard.transforms.config import parse_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOT_COPY = (
    Path(__file__).resolve().parent.parent / "build" / "report-screenshot.png"
)
ROWS = 2_000
RAW_BINS = 30
OUTPUT_BINS = 20

CONFIG = {
    "defaults": {"clip": {"strategy": "quantile", "lower": 0.001, "upper": 0.999}},
    "features": {
        # A tight `mad` clip on log-normal fares: about a third of the values
        # fall outside median +- 1 x 1.4826 MAD (more than 5%).
        "fare": {"clip": {"strategy": "mad", "k": 1.0}},
        # 30% empty cells, NaN and +-Inf, no `missing` indicator.
        "sensor": {},
        # The same cells with a `missing` indicator: no missingness warning.
        "sensor_flagged": {"indicators": ["missing"]},
        # One value: stats.json's own `constant` warning.
        "constant": {},
        # 70% ones: the MAD is 0 and the `mad` clip closes on the median.
        "passengers": {"dtype": "int", "clip": {"strategy": "mad", "k": 3.0}},
        # Elementwise: std 0.5, 1, 2, 3, 4 against a fixed clip at +-3 clips
        # about 0%, 0.3%, 13%, 32% and 45% (elements 2, 3, 4 above 5%).
        "embedding": {
            "shape": [5],
            "clip": {"strategy": "fixed", "lower": -3, "upper": 3},
        },
        # Shared: one set of parameters for its 4 elements.
        "shared": {"shape": [4], "elementwise": False},
    },
}
# (feature, kind) of every warning the report must list: derived from how the
# data above is built, not from the report.
EXPECTED_WARNINGS = {
    ("fare", "clipped"),
    ("sensor", "missing"),
    ("constant", "stats"),
    ("passengers", "mad"),
    ("passengers", "stats"),  # the degenerate bounds stats.json flags
    ("passengers", "clipped"),  # 30% of the values clip to the median
    ("embedding", "clipped"),
}


def _columns(rows: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Raw values per feature (NaN where a cell is empty or `nan`) and the
    masks of the empty cells."""
    rng = np.random.default_rng(1511)
    sensor = rng.normal(20.0, 5.0, rows)
    kind = rng.random(rows)
    sensor[kind < 0.01] = np.inf
    sensor[(kind >= 0.01) & (kind < 0.02)] = -np.inf
    sensor[(kind >= 0.02) & (kind < 0.05)] = np.nan
    empty = (kind >= 0.05) & (kind < 0.35)
    passengers = np.where(rng.random(rows) < 0.7, 1, rng.integers(2, 7, rows))
    values = {
        "fare": rng.lognormal(2.5, 1.0, rows),
        "sensor": np.where(empty, np.nan, sensor),
        "sensor_flagged": np.where(empty, np.nan, sensor),
        "constant": np.full(rows, 7.5),
        "passengers": passengers.astype(np.float64),
        "embedding": rng.normal(0.0, [0.5, 1.0, 2.0, 3.0, 4.0], (rows, 5)),
        "shared": rng.normal(1.0, 2.0, (rows, 4)),
    }
    missing = {name: np.zeros(rows, bool) for name in values}
    missing["sensor"] = missing["sensor_flagged"] = empty
    return values, missing


def _write_csv(path: Path, values: dict, missing: dict) -> None:
    header, cells = [], []
    for name, column in values.items():
        if column.ndim == 1:
            header.append(name)
            text = [
                str(int(v)) if name == "passengers" else repr(float(v)) for v in column
            ]
            cells.append(
                ["" if gone else t for t, gone in zip(text, missing[name], strict=True)]
            )
        else:
            for i in range(column.shape[1]):
                header.append(f"{name}_{i}")
                cells.append([repr(float(v)) for v in column[:, i]])
    lines = [",".join(header)] + [",".join(row) for row in zip(*cells, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def _histogram(finite: np.ndarray) -> dict:
    """Format 4's raw histogram: bins over the central 99.8%."""
    low, high = np.quantile(finite, [0.001, 0.999])
    counts, edges = np.histogram(finite, bins=RAW_BINS, range=(low, high))
    return {
        "edges": edges.tolist(),
        "counts": counts.tolist(),
        "below": int((finite < edges[0]).sum()),
        "above": int((finite > edges[-1]).sum()),
    }


def _add_histograms(stats: dict, values: dict, outputs: dict) -> None:
    """Adds format 4's histogram fields (numpy on the same data) where the
    analysis did not write them."""
    probabilities = np.linspace(0.0, 1.0, 101)
    for name, feature in stats["features"].items():
        if "histogram" in feature:
            continue
        rows = len(values[name])
        raw = values[name].reshape(rows, -1)
        out = np.asarray(outputs[name], np.float64).reshape(rows, -1)
        bound = feature["output_bound"]
        slots = (
            [(raw[:, i], out[:, i]) for i in range(raw.shape[1])]
            if isinstance(feature["count"], list)
            else [(raw.ravel(), out.ravel())]
        )
        entries = []
        for column, transformed in slots:
            finite = column[np.isfinite(column)]
            counts, edges = np.histogram(transformed, OUTPUT_BINS, (-bound, bound))
            entries.append(
                (
                    _histogram(finite),
                    {"edges": edges.tolist(), "counts": counts.tolist()},
                    {
                        "probabilities": probabilities.tolist(),
                        "values": np.quantile(finite, probabilities).tolist(),
                    },
                )
            )
        listed = isinstance(feature["count"], list)
        for position, key in enumerate(
            ("histogram", "output_histogram", "quantile_grid")
        ):
            items = [entry[position] for entry in entries]
            feature[key] = items if listed else items[0]
    stats["format_version"] = max(stats["format_version"], 4)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    from tanhguard.pipeline.analyze import run_analyze
    from tanhguard.pipeline.serving import Preprocessor

    root = tmp_path_factory.mktemp("report")
    values, missing = _columns(ROWS)
    data = root / "data.csv"
    _write_csv(data, values, missing)
    output = root / "artifacts"
    stats = run_analyze(parse_config(CONFIG), str(data), output)
    outputs = Preprocessor(output)(values)
    _add_histograms(stats, values, {name: outputs[name].numpy() for name in values})
    write_stats(output, stats)
    write_report(output)
    return output


@pytest.fixture(scope="module")
def stats(artifacts) -> dict:
    return load_stats(artifacts)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `python3 dev.py test` installs Debian's "
            "chromium (as root: apt-get install --no-install-recommends chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser, artifacts):
    """The report at a laptop's viewport; every request but the file itself
    is recorded and refused."""
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.requests = []
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))

    def refuse(route):
        page.requests.append(route.request.url)
        route.abort()

    page.route(re.compile(r"^(?!file://).*"), refuse)
    page.goto((artifacts / "report.html").as_uri())
    page.wait_for_load_state("load")
    yield page
    page.close()


def _slots(page, feature: str):
    return page.locator(f'section[data-feature="{feature}"] .slot')


def test_each_feature_has_one_raw_histogram_per_slot_shown(page, stats):
    for name, feature in stats["features"].items():
        section = page.locator(f'section[data-feature="{name}"]')
        expected = 1
        if isinstance(feature["count"], list):
            expected = min(VECTOR_PANELS, len(feature["count"]))
        assert _slots(page, name).count() == expected, name
        assert section.locator(".tg-raw-histogram").count() == expected, name
        assert section.locator(".tg-output-histogram").count() == expected, name
        assert section.locator(".tg-raw-histogram").first.is_visible(), name


def test_a_vector_shows_its_most_clipped_elements(page, stats):
    shares = np.add(
        stats["features"]["embedding"]["clipped_below"],
        stats["features"]["embedding"]["clipped_above"],
    )
    most = np.argsort(-shares, kind="stable")[:VECTOR_PANELS]
    shown = _slots(page, "embedding").evaluate_all(
        "slots => slots.map(s => Number(s.dataset.element))"
    )
    assert shown == most.tolist() == [4, 3, 2]  # stds 4, 3, 2 against +-3
    chart = page.locator('section[data-feature="embedding"] .tg-clipped-per-element')
    assert chart.count() == 1


def test_clip_bounds_are_drawn_at_their_values(page, stats):
    """Each clip bound is a line inside its chart, at the bound's place
    between the histogram's first and last edge (linear axes)."""
    for name, feature in stats["features"].items():
        for slot in _slots(page, name).all():
            raw = slot.locator(".raw svg")
            for side in ("lower", "upper"):
                line = raw.locator(f".tg-clip-{side}")
                assert line.count() == 1, (name, side)
                assert raw.locator(f".tg-clipped-{side}").count() == 1
            element = slot.get_attribute("data-element")
            index = None if element is None else int(element)

            def at(value, index=index):
                return value[index] if index is not None else value

            lower, upper = at(feature["clip"]["lower"]), at(feature["clip"]["upper"])
            if lower == upper:
                continue
            x_lower = raw.locator(".tg-clip-lower").bounding_box()
            x_upper = raw.locator(".tg-clip-upper").bounding_box()
            bars = raw.locator(".tg-raw-histogram").bounding_box()
            edges = at(feature["histogram"])["edges"]
            # The bars span edges[0]..edges[-1] on screen: place the bounds.
            scale = bars["width"] / (edges[-1] - edges[0])
            for box, value in ((x_lower, lower), (x_upper, upper)):
                expected = bars["x"] + (value - edges[0]) * scale
                assert abs(box["x"] + box["width"] / 2 - expected) < 3, (name, value)


def test_warnings_are_listed_at_the_top(page, stats):
    items = page.locator("#warnings li")
    listed = {
        (item.get_attribute("data-feature"), item.get_attribute("data-kind"))
        for item in items.all()
    }
    assert listed == EXPECTED_WARNINGS
    assert items.first.is_visible()
    warnings_top = page.locator("#warnings").bounding_box()["y"]
    first_feature = page.locator("section.feature").first.bounding_box()["y"]
    assert warnings_top < first_feature
    fare = items.filter(has_text="fare").first.inner_text()
    share = stats["features"]["fare"]["clipped_below"]
    share += stats["features"]["fare"]["clipped_above"]
    assert share > CLIP_WARNING_SHARE
    assert f"{100 * share:.3g}%" in fare


def test_the_search_box_filters_features_by_name(page, stats):
    names = list(stats["features"])
    search = page.locator("#search")
    try:
        search.fill("SENS")
        visible = [
            n
            for n in names
            if page.locator(f'section[data-feature="{n}"]').is_visible()
        ]
        assert visible == ["sensor", "sensor_flagged"]
        rows = page.locator("#overview tbody tr:visible")
        assert rows.count() == 2
        search.fill("")
        assert all(
            page.locator(f'section[data-feature="{n}"]').is_visible() for n in names
        )
    finally:
        search.fill("")


def test_clicking_a_column_title_sorts_the_overview(page, stats):
    header = page.locator("#overview th", has_text="clipped")
    header.click()  # descending first

    def share(name):
        feature = stats["features"][name]
        below, above = feature["clipped_below"], feature["clipped_above"]
        return max(np.add(below, above)) if isinstance(below, list) else below + above

    order = page.locator("#overview tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.feature)"
    )
    assert order == sorted(stats["features"], key=share, reverse=True)
    header.click()
    first = page.locator("#overview tbody tr").first.get_attribute("data-feature")
    assert share(first) == min(map(share, stats["features"]))


def test_the_page_makes_no_request_and_no_script_error(page, tmp_path):
    assert page.requests == []
    assert page.errors == []
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    SCREENSHOT_COPY.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)


def test_the_numbers_shown_match_stats_json(page, stats):
    cells = page.locator(".slot td[data-field]").evaluate_all(
        """cells => cells.map(c => ({
            feature: c.closest("section").dataset.feature,
            element: c.closest(".slot").dataset.element ?? null,
            field: c.dataset.field,
            text: c.textContent}))"""
    )
    checked = 0
    for cell in cells:
        feature = stats["features"][cell["feature"]]
        index = None if cell["element"] is None else int(cell["element"])
        value = feature
        if cell["field"] == "imputed_share":
            keys = ("missing", "nan", "count", "pos_inf", "neg_inf")
            numbers = {
                k: feature[k] if index is None else feature[k][index] for k in keys
            }
            value = (numbers["missing"] + numbers["nan"]) / sum(numbers.values())
        else:
            for key in cell["field"].split("."):
                value = value[key]
        text = cell["text"]
        if cell["field"] in ("indicators", "inf"):
            assert text in (", ".join(value) or "-", value), cell
            continue
        if index is not None and isinstance(value, list):
            value = value[index]
        if cell["field"] in ("count", "missing", "nan", "pos_inf", "neg_inf"):
            assert int(text.replace(",", "")) == value, cell
        elif text.endswith("%"):
            shown = float(text[:-1]) / 100
            assert abs(shown - value) <= max(5e-6, 5e-3 * value), cell
        elif value is None:
            assert text == "-", cell
        else:
            assert math.isclose(float(text), value, rel_tol=1e-5, abs_tol=1e-300), cell
        checked += 1
    # 7 features; embedding shows 3 elements: 9 slots of 19+ numbers.
    assert checked >= 9 * 18


def test_chart_labels_are_text_the_browser_shows(page, stats):
    """The charts' words and numbers are SVG text (not glyph outlines): the
    browser shows them in a font, and they can be found and copied."""
    for name, feature in stats["features"].items():
        for slot in _slots(page, name).all():
            clipped = slot.locator(".raw svg text", has_text="clipped")
            assert clipped.count() == 2, name  # one per side
            assert clipped.first.is_visible(), name
            bound = f"{feature['output_bound']:g}"
            title = slot.locator(".out svg text", has_text=f"output, in [-{bound}")
            assert title.count() == 1, name


def _older(stats: dict) -> dict:
    """stats.json as format 3 wrote it: no histograms."""
    older = json.loads(json.dumps(stats))
    older["format_version"] = 3
    for feature in older["features"].values():
        for key in ("histogram", "output_histogram", "quantile_grid"):
            feature.pop(key)
    return older


def _charts(stats: dict):
    """(draw, description) of every chart a report of `stats` draws, in the
    page's order; draw(canvases) returns the chart's SVG."""
    for name, feature in stats["features"].items():
        size = len(feature["count"]) if isinstance(feature["count"], list) else None
        if size is not None:
            yield (
                lambda c, f=feature: clipped_per_element_chart(f, "t", c),
                f"{name} per element",
            )
        shown = most_clipped_elements(feature, VECTOR_PANELS) if size else [None]
        for index in shown:
            for chart in (raw_chart, output_chart):
                yield (
                    lambda c, f=feature, i=index, chart=chart: chart(f, i, "t", c),
                    f"{name}[{index}] {chart.__name__}",
                )


def test_a_chart_drawn_after_others_equals_the_chart_drawn_alone(stats):
    """A report draws its charts on one figure per chart size, cleared
    between charts: nothing of a chart (limits, ticks, titles, labels,
    hidden spines, ids) may show in the next. Each chart, drawn after
    others (quantiles from an older stats.json and histograms, in turn), is
    the chart drawn on a new figure."""
    shared: dict = {}
    pairs = zip(_charts(_older(stats)), _charts(stats), strict=True)
    for draw, description in (chart for pair in pairs for chart in pair):
        assert draw(shared) == draw(None), description


def test_the_charts_are_laid_out_as_matplotlibs_constrained_layout(stats):
    """The Axes of each chart is where matplotlib's constrained layout puts
    it (the report measures the same margins without its extra draw)."""
    import matplotlib

    checked = 0
    for variant in (stats, _older(stats)):
        for draw, description in _charts(variant):
            canvases: dict = {}
            draw(canvases)
            (canvas,) = canvases.values()
            figure = canvas.figure
            (axes,) = figure.axes
            placed = axes.get_position().extents
            axes.set_position(axes.get_subplotspec().get_position(figure))
            axes.set_in_layout(True)
            figure.set_layout_engine("constrained")
            with matplotlib.rc_context(html_report._SVG_RC):
                figure.savefig(io.StringIO(), format="svg")
            expected = axes.get_position().extents
            # 1e-6 of the figure: under a thousandth of a pixel.
            assert np.allclose(placed, expected, rtol=0, atol=1e-6), description
            checked += 1
    assert checked == 2 * (2 * 9 + 1)  # 9 slots shown and one vector chart


def test_the_html_refers_to_no_external_address(artifacts):
    text = (artifacts / "report.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert GENERATOR in text
    assert not re.search(r"(?i)\b(?:https?|ftp|wss?):", text)
    assert not re.search(r"(?i)(?:src|href)\s*=\s*(?![\"']?#)", text)
    assert not re.search(r"(?i)<link\b|@import|url\((?!#)", text)


def test_artifacts_from_an_older_tanhguard_still_report(stats):
    text = report_html(_older(stats))
    assert NO_HISTOGRAMS in text.lower()
    assert "tg-raw-histogram" not in text
    assert text.count('class="tg-raw-quantiles"') == 9  # one per slot shown
    assert text.count('class="tg-clip-lower"') == 9
    assert 'data-field="clip.lower"' in text


def test_report_command_writes_into_the_artifacts_directory(
    artifacts, tmp_path, capsys
):
    copy = tmp_path / "artifacts"
    copy.mkdir()
    shutil.copy(artifacts / "stats.json", copy / "stats.json")

    class Args:
        artifacts = str(copy)
        output = None

    assert run_report_command(Args) == 0
    assert f"Report: {copy / 'report.html'}" in capsys.readouterr().out
    assert (copy / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert write_report(copy) == copy / "report.html"  # its own report: replaced


def test_a_file_that_is_not_a_report_is_not_replaced(artifacts, tmp_path):
    target = tmp_path / "notes.html"
    target.write_text("<p>mine</p>")
    with pytest.raises(OutputExistsError, match=r"notes\.html: exists and is not a"):
        write_report(artifacts, target)
    assert target.read_text() == "<p>mine</p>"


def test_missing_or_broken_stats_json_is_an_artifacts_error(tmp_path):
    with pytest.raises(ArtifactsError, match=r"no stats\.json"):
        write_report(tmp_path)
    (tmp_path / "stats.json").write_text("{not json")
    with pytest.raises(ArtifactsError, match=r"stats\.json: cannot read stats\.json"):
        write_report(tmp_path)
    (tmp_path / "stats.json").write_text('{"num_rows": 3}')
    with pytest.raises(ArtifactsError, match=r"stats\.json: cannot report on"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()
