"""What a user sees on the terminal: only tanhguard's lines, `--version`,
hints for common command-line mistakes."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tanhguard.pipeline.cli import main
from tanhguard.version import __version__


def _tanhguard(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command in a fresh interpreter, as a user runs it: TensorFlow is
    imported for the first time there, which is when it prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    return subprocess.run(
        [sys.executable, "-m", "tanhguard.pipeline.cli", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def small_job(tmp_path):
    (tmp_path / "d.csv").write_text("x\n" + "".join(f"{v}\n" for v in range(50)))
    (tmp_path / "c.yaml").write_text("features:\n  x: {}\n")
    return tmp_path


def test_analyze_prints_only_tanhguards_lines_on_stderr(small_job):
    done = _tanhguard(
        "analyze", "--config", "c.yaml", "--data", "d.csv", "--output", "a",
        cwd=small_job,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines, "progress lines expected"
    assert [line for line in lines if not line.startswith("tanhguard: ")] == []
    assert "Artifacts:" in done.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["config-schema"],
        ["analyze", "--config", "c.yaml", "--data", "d.csv", "--output", "a"],
        ["check", "--artifacts", "a", "--data", "d.csv", "--html", "r.html"],
    ],
    ids=["config-schema", "analyze", "check --html"],
)
def test_a_closed_standard_output_ends_the_command_as_sigpipe_quietly(small_job, argv):
    """`tanhguard ... | head -1`: once the reader has gone, the command ends
    as `cat` does there (128 + SIGPIPE), with nothing on stderr but its
    progress; analyze's artifacts and check's page, written before anything
    is printed, are whole."""
    if argv[0] == "check":
        analyze = ["analyze", "--config", str(small_job / "c.yaml"), "--quiet"]
        analyze += ["--data", str(small_job / "d.csv"), "--output"]
        assert main([*analyze, str(small_job / "a")]) == 0
    read, write = os.pipe()
    os.close(read)  # every write to standard output fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tanhguard.pipeline.cli", *argv],
            cwd=small_job,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=600,
        )
    finally:
        os.close(write)
    assert done.returncode == 128 + 13, done.stderr  # SIGPIPE is 13 on Linux
    assert "error" not in done.stderr and "Traceback" not in done.stderr
    if argv[0] == "analyze":
        for name in ("stats.json", "report.html", "transform_fn/saved_model.pb"):
            assert (small_job / "a" / name).is_file()
    if argv[0] == "check":
        page = (small_job / "r.html").read_text()
        assert page.rstrip().endswith("</html>")


def test_the_summary_lists_every_warning_the_report_lists(tmp_path, capsys):
    """A third of `x` empty, without a `missing` indicator, and a `mad` clip
    on `y` that removes a tenth of its values: report.html warns of both,
    and so does the summary, after stats.json's own warnings."""
    rows = ["x,y"]
    for i in range(300):
        x = "" if i % 3 == 0 else str(i)
        y = str(1e6 * (i % 10 == 0) + i % 7)  # every tenth row far out
        rows.append(f"{x},{y}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "c.yaml").write_text("features:\n  x: {}\n  y: {clip: mad}\n")
    argv = ["analyze", "--config", str(tmp_path / "c.yaml"), "--data"]
    argv += [str(tmp_path / "d.csv"), "--output", str(tmp_path / "a"), "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    from tanhguard.pipeline.artifacts import load_stats
    from tanhguard.pipeline.html_report import report_warnings

    listed = report_warnings(load_stats(tmp_path / "a"))
    assert {kind for _, kind, _ in listed} >= {"missing", "clipped"}
    assert "\nWarnings:\n" in printed, printed
    section = printed.split("\nWarnings:\n", 1)[1].split("\n\n", 1)[0]
    expected = " ".join(f"{name}: {text}" for name, _, text in listed)
    assert section.split() == expected.split()  # the same words, wrapped


def test_version_needs_no_other_argument(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"tanhguard {__version__} (Python ")


def test_an_unquoted_glob_gets_a_hint_to_quote_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i in (1, 2, 3):
        (tmp_path / f"big-{i}.parquet").write_bytes(b"")
    # What the shell passes for `--data big-*.parquet` unquoted.
    argv = ["analyze", "--config", "c.yaml", "--data", "big-1.parquet"]
    with pytest.raises(SystemExit) as stop:
        main([*argv, "big-2.parquet", "big-3.parquet", "--output", "o"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "big-2.parquet, big-3.parquet" in err
    assert "quote the pattern, e.g. --data 'big-*.parquet'" in err
    assert not (tmp_path / "o").exists()


def test_a_stray_argument_that_is_no_file_gets_no_glob_hint(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--artifacts", "a", "--output", "o", "stray"])
    err = capsys.readouterr().err
    assert "unrecognized arguments: stray" in err
    assert "quote" not in err


ANALYZE = ["analyze", "--config", "c.yaml", "--data", "d.csv", "--output", "o"]


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [
        (
            [*ANALYZE, "--output-format", "csv"],
            "usage: tanhguard analyze .*error: unrecognized arguments, neither "
            "tanhguard's nor Apache Beam's: --output-format, csv; --output-format "
            "is a flag of `run` and `transform`, not of `analyze`$",
        ),
        (
            ["report", "--artifacts", "a", "--output", "r.html", "--data", "d.csv"],
            "usage: tanhguard report .*error: unrecognized arguments: --data "
            "d.csv; --data is a flag of `analyze`, .*, not of `report`$",
        ),
        (
            ["anlyze", "--config", "c.yaml"],
            "error: unknown command 'anlyze' \\(did you mean `analyze`\\?\\); "
            "commands: analyze, run, ",
        ),
        (
            [*ANALYZE, "--runer=Direct"],
            "usage: tanhguard analyze .*Beam's: --runer=Direct \\(did you mean "
            "--runner\\?\\)$",
        ),
    ],
    ids=["a flag of other commands", "no Beam flags", "a mistyped command", "typo"],
)
def test_a_usage_error_shows_the_commands_usage_and_what_went_wrong(
    tmp_path, monkeypatch, capsys, argv, wanted
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert re.search(wanted, err), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spelling", ["--output-format", "--output_format"])
def test_output_format_takes_both_spellings(small_job, capsys, spelling):
    out = small_job / "out"
    argv = ["run", "--config", str(small_job / "c.yaml")]
    argv += ["--data", str(small_job / "d.csv"), "--output", str(out)]
    assert main([*argv, spelling, "tfrecord", "--quiet"]) == 0
    shards = sorted(p.name for p in (out / "rows").iterdir())
    assert shards and all(".tfrecord" in name for name in shards), shards
