"""The output protocol: `tanhguard.pipeline.output_dir.publish_dir`."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tanhguard.errors import OutputError, OutputExistsError
from tanhguard.pipeline import output_dir
from tanhguard.pipeline.output_dir import (
    MARKER,
    check_output,
    clean_stale,
    publish_dir,
)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root`: a file's bytes, or None for a directory."""
    return {
        str(path.relative_to(root)): None if path.is_dir() else path.read_bytes()
        for path in sorted(root.rglob("*"))
    }


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tanhguard-" in p.name)


def write_job(staging: Path) -> None:
    (staging / "stats.json").write_text('{"num_rows": 3}\n')
    (staging / "transform_fn").mkdir()
    (staging / "transform_fn" / "saved_model.pb").write_bytes(b"graph")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's working directory: input data, a config, notes; the cwd."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("x\n1\n2\n")
    (tmp_path / "config.yaml").write_text("features:\n  x: {}\n")
    (tmp_path / "notes.txt").write_text("my notes\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".bashrc").write_text("export A=1\n")
    return tmp_path


INPUTS = ("data/train.csv", "config.yaml")


@pytest.mark.parametrize(
    ("output", "protect", "message"),
    [
        pytest.param(".", INPUTS, "current directory", id="the cwd is refused"),
        pytest.param("data/..", INPUTS, "current directory", id="cwd via .. too"),
        pytest.param("home", (), "home directory", id="the home dir is refused"),
        pytest.param("/", (), "filesystem root", id="slash is refused"),
        pytest.param("data/train.csv", INPUTS, "input", id="an input file is refused"),
        pytest.param("data", INPUTS, "input", id="a dir holding an input too"),
        pytest.param(
            "data", ("data/*.csv",), "input", id="a dir holding a glob's match too"
        ),
        pytest.param(
            "config.yaml/out", (), "under a file", id="a path under a file is refused"
        ),
        pytest.param("gs://bucket/art", (), "object stores", id="gs URLs are refused"),
        pytest.param("s3://b/x", (), "object stores", id="s3 URLs are refused"),
    ],
)
def test_refused_outputs_change_nothing_even_with_overwrite(
    project, output, protect, message
):
    before = snapshot(project)
    with (
        pytest.raises(OutputError, match=message) as raised,
        publish_dir(output, overwrite=True, protect=protect) as staging,
    ):
        write_job(staging)
    assert "\n" not in str(raised.value)
    assert snapshot(project) == before  # byte-identical; no `gs:` folder either
    assert not Path("gs:").exists()


def test_real_home_is_refused(monkeypatch):
    monkeypatch.delenv("HOME", raising=False)
    with pytest.raises(OutputError, match="home directory"):
        check_output(Path.home())


def test_output_inside_a_data_directory_is_fine(project):
    with publish_dir("data/artifacts", protect=INPUTS) as staging:
        write_job(staging)
    assert (project / "data" / "artifacts" / "stats.json").exists()
    assert (project / "data" / "train.csv").read_text() == "x\n1\n2\n"


def test_success_publishes_a_marked_directory_and_leaves_nothing_else(tmp_path):
    output = tmp_path / "deep" / "out"
    with publish_dir(output) as staging:
        assert staging.parent == output.parent
        assert staging.name.startswith(f".out.tanhguard-staging-{os.getpid()}-")
        writer = json.loads((staging / MARKER).read_text())["writer"]
        assert writer["pid"] == os.getpid()
        assert writer["host"]
        assert not output.exists()  # nothing until the job has finished
        write_job(staging)
    marker = json.loads((output / MARKER).read_text())
    assert marker["created_by"] == "tanhguard"
    assert sorted(p.name for p in output.iterdir()) == [
        MARKER,
        "stats.json",
        "transform_fn",
    ]
    assert leftovers(output.parent) == []


def test_the_output_gets_the_usual_permissions_not_0700(tmp_path):
    umask = os.umask(0o022)
    try:
        with publish_dir(tmp_path / "out") as staging:
            write_job(staging)
    finally:
        os.umask(umask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def make_marked(path: Path) -> None:
    with publish_dir(path) as staging:
        (staging / "stats.json").write_text("old\n")


def make_legacy(path: Path) -> None:
    (path / "transform_fn").mkdir(parents=True)
    (path / "stats.json").write_text("old\n")


def make_foreign(path: Path) -> None:
    make_legacy(path)
    (path / "notes.txt").write_text("mine\n")


def make_empty(path: Path) -> None:
    path.mkdir()


def make_file(path: Path) -> None:
    path.write_text("not a directory\n")


def make_link(path: Path) -> None:
    make_marked(path.parent / "elsewhere")
    path.symlink_to(path.parent / "elsewhere")


@pytest.mark.parametrize(
    ("make", "overwrite", "expected"),
    [
        pytest.param(make_marked, True, None, id="overwrite replaces a marked dir"),
        pytest.param(
            make_legacy, True, None, id="overwrite replaces old-style artifacts"
        ),
        pytest.param(make_empty, True, None, id="overwrite replaces an empty dir"),
        pytest.param(
            make_foreign,
            True,
            r"notes\.txt",
            id="overwrite refuses a dir holding notes.txt",
        ),
        pytest.param(make_file, True, "not a directory", id="overwrite refuses a file"),
        pytest.param(
            make_link, True, "not a directory", id="overwrite refuses a symlink"
        ),
        pytest.param(
            make_marked,
            False,
            "pass --overwrite",
            id="without overwrite a marked dir stays",
        ),
        pytest.param(
            make_empty,
            False,
            "pass --overwrite",
            id="without overwrite an empty dir stays",
        ),
        pytest.param(
            make_foreign,
            False,
            "even with --overwrite",
            id="without overwrite a foreign dir stays, and the message says why",
        ),
    ],
)
def test_existing_output(tmp_path, make, overwrite, expected):
    output = tmp_path / "out"
    make(output)
    before = snapshot(tmp_path)
    if expected is None:
        with publish_dir(output, overwrite=overwrite) as staging:
            write_job(staging)
        assert (output / "stats.json").read_text() == '{"num_rows": 3}\n'
    else:
        error = OutputError if overwrite else OutputExistsError
        with (
            pytest.raises(error, match=expected) as raised,
            publish_dir(output, overwrite=overwrite) as staging,
        ):
            write_job(staging)
        assert "\n" not in str(raised.value)
        assert snapshot(tmp_path) == before
    assert leftovers(tmp_path) == []


@pytest.fixture(params=["renameat2", "mkdir-then-rename"])
def rename(request, monkeypatch):
    """Both ways of renaming without replacing."""
    if request.param == "renameat2":
        if output_dir._renameat2() is None:
            pytest.skip("no renameat2 here")
    else:
        monkeypatch.setattr(output_dir, "_renameat2", lambda: None)


def make_intruder(path: Path, content: bool) -> None:
    path.mkdir()
    if content:
        (path / "theirs.txt").write_text("theirs\n")


@pytest.mark.parametrize("content", [True, False], ids=["with files", "empty"])
def test_a_directory_appearing_during_the_job_is_never_replaced(
    tmp_path, rename, content
):
    output = tmp_path / "out"
    with (
        pytest.raises(OutputExistsError, match="appeared while"),
        publish_dir(output) as staging,
    ):
        write_job(staging)
        make_intruder(output, content)
    assert sorted(p.name for p in output.iterdir()) == (
        ["theirs.txt"] if content else []
    )
    assert leftovers(tmp_path) == []


def test_overwrite_still_refuses_a_foreign_dir_appearing_during_the_job(
    tmp_path, rename
):
    output = tmp_path / "out"
    with (
        pytest.raises(OutputError, match=r"theirs\.txt"),
        publish_dir(output, overwrite=True) as staging,
    ):
        write_job(staging)
        make_intruder(output, content=True)
    assert (output / "theirs.txt").read_text() == "theirs\n"
    assert leftovers(tmp_path) == []


def test_of_two_concurrent_runs_the_later_one_fails(tmp_path, rename):
    output = tmp_path / "out"
    with pytest.raises(OutputExistsError), publish_dir(output) as first:
        (first / "stats.json").write_text("first\n")
        with publish_dir(output) as second:
            (second / "stats.json").write_text("second\n")
    assert (output / "stats.json").read_text() == "second\n"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "exception", [RuntimeError, KeyboardInterrupt, SystemExit], ids=lambda e: e.__name__
)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwriting"])
def test_an_interrupted_job_leaves_no_staging_and_the_old_output(
    tmp_path, exception, existing
):
    output = tmp_path / "out"
    if existing:
        make_marked(output)
    before = snapshot(tmp_path)
    with pytest.raises(exception), publish_dir(output, overwrite=True) as staging:
        write_job(staging)
        raise exception
    assert snapshot(tmp_path) == before


def test_a_filesystem_error_while_writing_is_one_line_naming_the_output(tmp_path):
    output = tmp_path / "out"
    with (
        pytest.raises(OutputError, match="No space left") as raised,
        publish_dir(output) as staging,
    ):
        raise OSError(28, "No space left on device", str(staging / "x"))
    assert str(raised.value).startswith(f"{output}: ")
    assert "\n" not in str(raised.value)
    assert leftovers(tmp_path) == []


def test_a_filesystem_error_creating_the_staging_dir_is_one_line(tmp_path):
    output = tmp_path / ("x" * 240)  # the staging name is too long
    with (
        pytest.raises(OutputError, match="File name too long") as raised,
        publish_dir(output),
    ):
        pytest.fail("the block must not run")
    assert str(raised.value).startswith(f"{tmp_path}: cannot create a staging")
    assert "\n" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_swap_puts_the_previous_output_back(tmp_path, monkeypatch):
    output = tmp_path / "out"
    make_legacy(output)
    before = snapshot(tmp_path)
    rename = output_dir._rename_noreplace

    def failing(source, target):
        if ".tanhguard-staging-" in source.name:
            raise OSError(5, "Input/output error", str(source))
        rename(source, target)

    monkeypatch.setattr(output_dir, "_rename_noreplace", failing)
    with (
        pytest.raises(OutputError, match="cannot publish: Input/output error"),
        publish_dir(output, overwrite=True) as staging,
    ):
        write_job(staging)
    assert snapshot(tmp_path) == before


def test_other_errors_of_the_job_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError), publish_dir(tmp_path / "out"):
        open(tmp_path / "missing.csv")  # noqa: SIM115


def fake_temp(parent: Path, name: str, kind: str, pid: int) -> Path:
    """A staging/retired directory as a run with process `pid` leaves it."""
    path = parent / f".{name}.tanhguard-{kind}-{pid}-0123abcd"
    path.mkdir()
    writer = {**output_dir._identity(), "pid": pid, "started": None}
    marker = {"created_by": "tanhguard", "writer": writer}
    (path / MARKER).write_text(json.dumps(marker))
    (path / "stats.json").write_text("partial\n")
    return path


@pytest.fixture
def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    return child.pid


@pytest.fixture
def live_pid():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield child.pid
    child.kill()
    child.wait(timeout=60)


def test_stale_staging_of_dead_runs_is_removed_and_nothing_else(
    tmp_path, dead_pid, live_pid
):
    dead = fake_temp(tmp_path, "out", "staging", dead_pid)
    dead_retired = fake_temp(tmp_path, "out", "retired", dead_pid)
    keep = [
        fake_temp(tmp_path, "out", "staging", live_pid),
        fake_temp(tmp_path, "other", "staging", dead_pid),
        tmp_path / ".out.tmp-abc",
        tmp_path / f".out.tanhguard-staging-{dead_pid}-99",  # no marker
    ]
    keep[2].mkdir()
    keep[3].mkdir()
    with publish_dir(tmp_path / "out") as staging:
        write_job(staging)
    assert not dead.exists()
    assert not dead_retired.exists()
    assert all(path.is_dir() for path in keep)


def test_a_run_killed_mid_swap_gets_its_previous_output_back(tmp_path, dead_pid):
    retired = fake_temp(tmp_path, "out", "retired", dead_pid)
    make_legacy(retired / "out")
    assert clean_stale(tmp_path / "out") == [retired]
    assert (tmp_path / "out" / "stats.json").read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_sigterm_during_a_rename_waits_until_it_is_done():
    with (
        output_dir.handle_termination(),
        pytest.raises(SystemExit) as raised,
        output_dir._critical(),
    ):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler has run by now
            pass
        finished = True
    assert finished
    assert raised.value.code == 143
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


CHILD = """
import sys, time
from tanhguard.pipeline.output_dir import handle_termination, publish_dir
with handle_termination(), publish_dir(sys.argv[1]) as staging:
    (staging / "stats.json").write_text("partial")
    print(staging, flush=True)
    time.sleep(60)
"""


def start_child(output: Path) -> tuple[subprocess.Popen, Path]:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(output)],
        stdout=subprocess.PIPE,
        text=True,
    )
    staging = Path(child.stdout.readline().strip())
    assert staging.is_dir(), child.communicate(timeout=60)
    return child, staging


@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGTERM, 143), (signal.SIGINT, -signal.SIGINT)],
    ids=["SIGTERM exits 143", "SIGINT exits as interrupted"],
)
def test_a_signalled_run_removes_its_staging(tmp_path, signum, status):
    child, staging = start_child(tmp_path / "out")
    child.send_signal(signum)
    assert child.wait(timeout=60) == status
    child.stdout.close()
    assert not staging.exists()
    assert list(tmp_path.iterdir()) == []


def test_after_kill_9_the_next_run_removes_the_staging(tmp_path):
    child, staging = start_child(tmp_path / "out")
    child.kill()
    child.wait(timeout=60)
    child.stdout.close()
    assert staging.is_dir()
    with publish_dir(tmp_path / "out") as new:
        write_job(new)
    assert not staging.exists()
    assert leftovers(tmp_path) == []
