"""`tanhguard check`: new data against the training statistics."""

import csv
import json

import numpy as np
import pytest

from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.check import COUNTERS, CheckCombineFn, _Element, check
from tanhguard.pipeline.cli import EXIT_ERROR, EXIT_OK, main
from tanhguard.pipeline.demo import demo_config, generate_demo_rows, write_demo_csv

# The demo's fares hold a few absurd values; from 20,000 rows on, the 0.999
# quantile clip lies below them (on 3,000 rows it is one of them).
ROWS = 20_000


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("check")
    write_demo_csv(root / "train.csv", generate_demo_rows(ROWS, seed=5), seed=5)
    run_analyze(demo_config(), str(root / "train.csv"), root / "artifacts")
    return root


def _shifted_copy(source, target, seed=3):
    """`fare` in the wrong unit (x1000) and 20% of `sensor` cells NaN."""
    rng = np.random.default_rng(seed)
    with open(source) as handle:
        rows = list(csv.reader(handle))
    fare, sensor = rows[0].index("fare"), rows[0].index("sensor")
    for row in rows[1:]:
        if row[fare]:
            row[fare] = repr(float(row[fare]) * 1000)
        if rng.random() < 0.2:
            row[sensor] = "nan"
    with open(target, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return rows


def test_the_training_data_itself_passes_with_no_drift(trained):
    result = check(trained / "artifacts", str(trained / "train.csv"))
    stats = json.loads((trained / "artifacts" / "stats.json").read_text())
    assert result.failed == {}
    assert result.rows == ROWS
    for element in result.elements:
        feature = stats["features"][element.feature]
        below, above = feature["clipped_below"], feature["clipped_above"]
        if element.index is not None:
            below, above = below[element.index], above[element.index]
        want = below + above
        assert element.new_clipped == pytest.approx(want, abs=1e-12)
        assert element.new_nonfinite == pytest.approx(element.train_nonfinite)
        # The same values in the same bins as the training histogram.
        assert element.drift is not None and element.drift < 1e-12


def test_a_shifted_unit_and_new_nans_fail_naming_exactly_those(trained, capsys):
    rows = _shifted_copy(trained / "train.csv", trained / "new.csv")
    argv = ["check", "--artifacts", str(trained / "artifacts")]
    status = main([*argv, "--data", str(trained / "new.csv"), "--json"])
    assert status == EXIT_ERROR
    document = json.loads(capsys.readouterr().out)
    assert set(document["failed"]) == {"fare", "sensor"}
    stats = json.loads((trained / "artifacts" / "stats.json").read_text())
    # Oracle: the clipped share of fare, from the file and stats.json's bounds.
    column = rows[0].index("fare")
    fares = np.array([float(r[column]) for r in rows[1:] if r[column]])
    finite = fares[np.isfinite(fares)]
    clip = stats["features"]["fare"]["clip"]
    outside = np.mean((finite < clip["lower"]) | (finite > clip["upper"]))
    (fare,) = [e for e in document["elements"] if e["feature"] == "fare"]
    assert fare["new_clipped"] == pytest.approx(outside)
    assert fare["drift"] > 0.9  # nearly every value left its training bin


def test_thresholds_decide_and_the_table_fits_100_columns(trained, capsys):
    _shifted_copy(trained / "train.csv", trained / "new2.csv")
    argv = ["check", "--artifacts", str(trained / "artifacts")]
    argv += ["--data", str(trained / "new2.csv")]
    # Loose enough for the NaNs, not for the unit change.
    assert main([*argv, "--max-missing-increase", "0.5"]) == EXIT_ERROR
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if str(trained) not in line]
    assert max(len(line) for line in lines) <= 100
    assert out.splitlines()[-1].startswith("FAILED: fare (clipped +")
    assert "sensor" not in out.splitlines()[-1]
    loose = ["--max_missing_increase", "1", "--max-clipped-increase", "1"]
    assert main([*argv, *loose]) == EXIT_OK
    assert capsys.readouterr().out.splitlines()[-1] == "OK: no threshold exceeded."


def test_the_html_page_shows_the_verdict_and_one_chart_per_feature(trained):
    _shifted_copy(trained / "train.csv", trained / "new3.csv")
    page = trained / "check.html"
    argv = ["check", "--artifacts", str(trained / "artifacts")]
    argv += ["--data", str(trained / "new3.csv"), "--html", str(page)]
    assert main(argv) == EXIT_ERROR
    html = page.read_text()
    features = demo_config().features
    assert html.count('<section class="feature"') == len(features)
    assert html.count('class="tg-new"') == len(features)  # every one has bins
    verdict = html[html.index('id="verdict"') :].split("</p>")[0]
    assert "fare (clipped +" in verdict and "sensor (missing/NaN/Inf +" in verdict
    assert "http://" not in html and "https://" not in html
    # A page tanhguard wrote is replaced; another file never is.
    assert main(argv) == EXIT_ERROR
    other = trained / "mine.html"
    other.write_text("<html>mine</html>")
    argv[-1] = str(other)
    assert main(argv) == EXIT_ERROR
    assert other.read_text() == "<html>mine</html>"


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("data.csv/x.html", "a path under a file"),
        ("newdir/", "a directory; give the HTML file's name"),
        ("nodir/x.html", "does not exist"),
        ("", "an empty file name"),
        ("gs://b/x.html", "written to a local file"),
    ],
)
def test_a_bad_html_path_is_refused_before_any_data_is_read(
    trained, tmp_path, monkeypatch, capsys, where, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text("x\n1\n")
    argv = ["check", "--artifacts", str(trained / "artifacts")]
    # --data matches nothing: the page's path is refused first.
    assert main([*argv, "--data", "absent.csv", "--html", where]) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


def test_a_report_and_a_check_page_never_replace_each_other(trained, capsys):
    page = trained / "artifacts" / "report.html"
    before = page.read_text()
    argv = ["check", "--artifacts", str(trained / "artifacts")]
    argv += ["--data", str(trained / "train.csv"), "--html", str(page)]
    assert main(argv) == EXIT_ERROR
    assert (
        "exists and is a report, not a check page: one kind of page never "
        "replaces the other" in capsys.readouterr().err
    )
    assert page.read_text() == before
    # And the other way: `tanhguard report` onto a check page.
    check_page = trained / "check.html"
    argv[-1] = str(check_page)
    main(argv)  # exit 1 or 0 by the drift; the page is written either way
    written = check_page.read_text()
    report = ["report", "--artifacts", str(trained / "artifacts")]
    assert main([*report, "--output", str(check_page)]) == EXIT_ERROR
    assert (
        "exists and is a `tanhguard check` page, not a report"
        in capsys.readouterr().err
    )
    assert check_page.read_text() == written


def test_max_drift_needs_histograms(trained, tmp_path, capsys):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(trained / "artifacts", old)
    stats = json.loads((old / "stats.json").read_text())
    stats["format_version"] = 3
    for feature in stats["features"].values():
        feature.pop("histogram")
    (old / "stats.json").write_text(json.dumps(stats))
    argv = ["check", "--artifacts", str(old), "--data", str(trained / "train.csv")]
    assert main(argv) == EXIT_OK  # no drift judged, said in the table
    assert main([*argv, "--max-drift", "0.1"]) == EXIT_ERROR
    assert "no histograms" in capsys.readouterr().err


def test_the_combiner_counts_like_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_cauchy((500, 3)).astype(np.float32)
    x[rng.random((500, 3)) < 0.05] = np.nan
    x[::97, 1] = np.inf
    x[::89, 2] = -np.inf
    missing = np.zeros_like(x, dtype=bool)
    missing[::50] = True
    x[missing] = np.nan
    edges = np.linspace(-3, 3, 13)
    elements = [
        _Element("a", None, (0,), -2.0, 2.0, edges, np.ones(14) / 14),
        _Element("v", None, (1, 2), -1.0, 5.0, edges, np.ones(14) / 14),
    ]
    combine = CheckCombineFn(elements, 3)
    halves = [
        combine.add_input(combine.create_accumulator(), (x[s], missing[s]))
        for s in (slice(0, 250), slice(250, 500))
    ]
    total = combine.merge_accumulators(halves)
    counters = total[: len(COUNTERS) * 3].reshape(len(COUNTERS), 3)
    np.testing.assert_array_equal(counters[COUNTERS.index("missing")], missing.sum(0))
    finite = np.isfinite(x)
    np.testing.assert_array_equal(counters[COUNTERS.index("finite")], finite.sum(0))
    np.testing.assert_array_equal(
        counters[COUNTERS.index("pos_inf")], (x == np.inf).sum(0)
    )
    bins = total[len(COUNTERS) * 3 :]
    for element, chunk in zip(elements, np.split(bins, 2), strict=True):
        values = x[:, list(element.columns)][finite[:, list(element.columns)]]
        inside, _ = np.histogram(values, edges)
        below, above = np.sum(values < edges[0]), np.sum(values > edges[-1])
        np.testing.assert_array_equal(chunk, [below, *inside, above])
        lower, upper = element.lower, element.upper
        got = counters[COUNTERS.index("below"), list(element.columns)].sum()
        assert got == np.sum(values < lower)
        got = counters[COUNTERS.index("above"), list(element.columns)].sum()
        assert got == np.sum(values > upper)
