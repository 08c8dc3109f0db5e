"""Hostile inputs against the command line's contract, each in a child process.

The contract (README, "Use on your data"): an input tanhguard cannot use is an
error of ONE line, `tanhguard: error: ...`, naming the file, row or record,
feature and field (not the last-resort "unexpected SomeError ... a bug?");
exit status 1; no traceback; and nothing but tanhguard's own output is ever
written, replaced or removed: a failed run leaves no output and no staging
directory (`.<name>.*`) beside it. An interrupted run exits 128 + the signal's
number, with at most 3 lines after the signal, the last a `tanhguard: ...`
notice, and leaves nothing behind either.

Every case is one row of `CASES`: an id that reads as a sentence, how to build
the user's files, the command line, the exit status, and a regex the error line
(for a run that succeeds: stderr's progress lines) must match. Each case runs
the real command line (`python -m tanhguard.pipeline.cli`) in a child process
with `LIMITS` (memory, file size) and a wall-clock timeout, so a regression
fails instead of hanging or eating the machine, and compares every file under
the case's directory (path -> sha256, mtime) before and after. The children
run `PARALLEL` at a time; each test waits for its own.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

# Memory cap: RLIMIT_DATA (heap, anonymous mappings), not RLIMIT_AS. Measured
# on a 2-core machine (TF 2.21, Beam 2.77): a plain `tanhguard analyze` of 200
# rows reserves 4.0 GB of address space (VmPeak 4014-4047 MB: TensorFlow's and
# Beam's thread stacks and malloc arenas) while its data segment peaks at
# 1.76 GB (VmData). With RLIMIT_AS at 3.5 GiB it aborts in pthread_create; at
# 4 GiB it passes with under 100 MB to spare, and would fail on a machine with
# more cores (more threads). RLIMIT_DATA at 4 GiB caps what a runaway input can
# allocate at about twice a normal run's peak (1.5 GiB breaks TF's import, 2 GiB
# runs). RLIMIT_FSIZE keeps a runaway writer (stderr too: it goes to a file)
# from filling the disk.
MEMORY_LIMIT = 4 << 30
FILE_SIZE_LIMIT = 1 << 30
LIMITS = (
    (resource.RLIMIT_DATA, MEMORY_LIMIT),
    (resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT),
)
TIMEOUT = 120  # seconds, every child
QUICKLY = 30  # seconds: "fails quickly" (importing TensorFlow alone takes ~5 s)
ERROR_PREFIX = "tanhguard: error: "
NOTICE_PREFIX = "tanhguard: "  # an interrupted run's last line
# The command line's last resort for an exception it did not foresee (`tanhguard:
# error: unexpected OSError: ... (a bug? ...)`): one line, but no named error.
UNFORESEEN = r"\bunexpected \w*(Error|Exception)\b|\ba bug\?"
# An error line names things; it does not dump them.
MAX_ERROR_LINE = 2000
CLI = (sys.executable, "-m", "tanhguard.pipeline.cli")

# --- the user's files -------------------------------------------------------

ROWS = 200
HEADER = "fare,trips"
CONFIG = "features:\n  fare: {}\n  trips: {dtype: int}\n"
NOTES = b"my notes: not tanhguard's to touch\n"


def csv_rows(rows: int = ROWS, seed: int = 7) -> list[str]:
    """`rows` data lines of `fare` (float) and `trips` (int)."""
    rng = random.Random(seed)
    return [
        f"{rng.lognormvariate(2.5, 1.0):.4f},{rng.randint(1, 6)}" for _ in range(rows)
    ]


def csv_bytes(header: str = HEADER, rows: int = ROWS) -> bytes:
    return ("\n".join([header, *csv_rows(rows)]) + "\n").encode()


def _limits() -> None:
    for kind, limit in LIMITS:
        resource.setrlimit(kind, (limit, limit))


# Children are started from `PARALLEL` worker threads; one fork at a time, so
# no other thread of this process is inside `subprocess` while `preexec_fn`
# runs in a fresh child. This process never imports TensorFlow or pyarrow:
# their threads could hold locks across the fork.
_FORK_LOCK = threading.Lock()


def spawn(argv: Sequence[str], **options) -> subprocess.Popen:
    """Starts a child with `LIMITS`, in its own process group."""
    with _FORK_LOCK:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            preexec_fn=_limits,
            start_new_session=True,
            **options,
        )


def run_to_end(argv: Sequence[str], **options) -> tuple[int, str]:
    """Runs a helper child to its end (`TIMEOUT`): its exit status and stderr."""
    child = spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **options)
    try:
        _, err = child.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        _, err = child.communicate()
    return child.returncode, err.decode(errors="replace")


# Built once per module, in a child process: the binary inputs.
_FIXTURE_SCRIPT = r"""
import random, sys
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
import tensorflow as tf

out = Path(sys.argv[1])
rows = [line.split(",") for line in sys.argv[2].split(";")]
fare = [float(f) for f, _ in rows]
trips = [int(t) for _, t in rows]
pq.write_table(pa.table({"fare": fare, "trips": trips}), str(out / "data.parquet"))

def example(f, t):
    return tf.train.Example(features=tf.train.Features(feature={
        "fare": tf.train.Feature(float_list=tf.train.FloatList(value=[f])),
        "trips": tf.train.Feature(int64_list=tf.train.Int64List(value=[t])),
    })).SerializeToString()

with tf.io.TFRecordWriter(str(out / "examples.tfrecord")) as writer:
    for f, t in zip(fare, trips):
        writer.write(example(f, t))

# Valid framing, payloads that are neither tf.Examples nor UTF-8: the first
# 100 records are good, records 101..200 are not.
rng = random.Random(11)
with tf.io.TFRecordWriter(str(out / "garbage.tfrecord")) as writer:
    for i, (f, t) in enumerate(zip(fare, trips)):
        if i < 100:
            writer.write(example(f, t))
        else:
            # 0x0f: field 1 with wire type 7, which protobuf does not have.
            payload = b"\x0f\xff\xfe" + bytes(rng.randrange(256) for _ in range(40))
            writer.write(payload)
            try:
                tf.train.Example.FromString(payload)
            except Exception:
                continue
            raise SystemExit("a garbage payload parsed as a tf.Example")
"""


class Shared:
    """Inputs several cases start from, each built once, on first use (by
    whichever worker thread needs it first)."""

    def __init__(self, factory: pytest.TempPathFactory):
        self._factory = factory
        self._binary_lock = threading.Lock()
        self._artifacts_lock = threading.Lock()
        self._binary: Path | None = None
        self._artifacts: Path | None = None

    def binary(self, name: str) -> Path:
        """`data.parquet`, `examples.tfrecord` or `garbage.tfrecord`."""
        with self._binary_lock:
            if self._binary is None:
                folder = self._factory.mktemp("binary_inputs")
                rows = ";".join(csv_rows())
                status, err = run_to_end(
                    [sys.executable, "-c", _FIXTURE_SCRIPT, str(folder), rows],
                    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                )
                assert status == 0, f"building the binary inputs: {err[-3000:]}"
                self._binary = folder
        return self._binary / name

    def artifacts(self) -> Path:
        """An artifacts directory from `tanhguard analyze` of the usual CSV."""
        with self._artifacts_lock:
            if self._artifacts is None:
                folder = self._factory.mktemp("artifacts_source")
                (folder / "c.yaml").write_text(CONFIG)
                (folder / "data.csv").write_bytes(csv_bytes())
                argv = ["analyze", "--config", "c.yaml", "--data", "data.csv"]
                status, err = run_to_end(
                    [*CLI, *argv, "--output", "art", "--quiet"], cwd=folder
                )
                assert status == 0, f"building artifacts: {err[-3000:]}"
                self._artifacts = folder / "art"
        return self._artifacts


# A builder writes the user's files into the case's working directory.
Builder = Callable[[Path, Shared], None]


def files(*steps: Builder | dict[str, bytes | str | Callable[[], bytes]]) -> Builder:
    """A builder from steps: a mapping of file name -> content (or a function
    that makes it), or a builder."""

    def build(work: Path, shared: Shared) -> None:
        for step in steps:
            if callable(step):
                step(work, shared)
                continue
            for name, content in step.items():
                path = work / name
                path.parent.mkdir(parents=True, exist_ok=True)
                if callable(content):
                    content = content()
                if isinstance(content, str):
                    content = content.encode()
                path.write_bytes(content)

    return build


# The usual user: a config, 200 rows of CSV and a file of their own.
USER = {"c.yaml": CONFIG, "data.csv": csv_bytes(), "notes.txt": NOTES}


def shared_binary(name: str, as_name: str) -> Builder:
    def build(work: Path, shared: Shared) -> None:
        shutil.copyfile(shared.binary(name), work / as_name)

    return build


def tfrecord_cut_in_header(record: int) -> Builder:
    """200 tf.Examples, cut halfway through record `record`'s 12-byte header
    (8-byte length, 4-byte CRC)."""

    def build(work: Path, shared: Shared) -> None:
        data = shared.binary("examples.tfrecord").read_bytes()
        offset = 0
        for _ in range(record - 1):
            length = int.from_bytes(data[offset : offset + 8], "little")
            offset += 12 + length + 4
        (work / "cut.tfrecord").write_bytes(data[: offset + 6])

    return build


def artifacts(spoil: Callable[[Path], None]) -> Builder:
    """A copy of a real artifacts directory as `art/`, spoiled by `spoil`."""

    def build(work: Path, shared: Shared) -> None:
        shutil.copytree(shared.artifacts(), work / "art")
        spoil(work / "art")

    return build


def truncate_half(relative: str) -> Callable[[Path], None]:
    def spoil(art: Path) -> None:
        path = art / relative
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return spoil


def csv_with_long_line(megabytes: int) -> Builder:
    """10 good rows, then row 11 whose `fare` is `megabytes` MB of digits."""

    def build(work: Path, shared: Shared) -> None:
        with open(work / "long.csv", "wb") as handle:
            handle.write(csv_bytes(rows=10))
            chunk = b"1234567890" * 100_000  # 1 MB
            for _ in range(megabytes):
                handle.write(chunk)
            handle.write(b",3\n")

    return build


def csv_with_duplicate_fare() -> bytes:
    """Columns `fare,trips,fare`: the same name twice."""
    rows = [f"{row},{row.split(',')[0]}" for row in csv_rows()]
    return ("\n".join(["fare,trips,fare", *rows]) + "\n").encode()


def csv_with_bad_byte_in_cell(row: int) -> bytes:
    lines = [HEADER, *csv_rows()]
    lines[row] = "12.5\xff,3"  # "\xff" is a placeholder for the byte 0xff
    return ("\n".join(lines) + "\n").encode("latin-1")


# A YAML "billion laughs": 9 levels of 9 aliases, 9^9 strings if expanded,
# handed to the one place that must be a mapping of features.
ALIAS_BOMB = (
    "features:\n"
    "  fare:\n"
    '    - &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    + "".join(
        f"    - &{name} [{', '.join([f'*{prev}'] * 9)}]\n"
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
)

# --- expected messages -------------------------------------------------------


def all_of(*patterns: str) -> str:
    """A regex that matches a line containing every one of `patterns`."""
    return "^" + "".join(f"(?=.*?(?:{pattern}))" for pattern in patterns)


# What a refusal to write over the user's files may say.
REFUSED = (
    r"(?i:refus|will not|won't|not allowed|must not|cannot|can't|not empty|"
    r"already exists|would (delete|remove|replace|overwrite)|holds|contains)"
)
NOT_UTF8 = r"(?i:utf-?8|encod|decod|byte)"

# --- the cases ---------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    build: Builder
    argv: Sequence[str]
    exit_code: int
    # A regex. Exit 0: searched in stderr (the progress lines). A signal:
    # matched by stderr's last line, the notice. Otherwise: matched by the one
    # `tanhguard: error: ` line, which must be stderr's last.
    message: str
    # Where tanhguard's output goes (relative to the working directory): the
    # only path allowed to appear, and only when the run succeeds.
    output: str | None = "out"
    within: float = TIMEOUT  # seconds, wall clock
    signal: int | None = None  # sent once the first pass has started
    forbidden: str | None = None  # a regex stderr must not match


ANALYZE = ("analyze", "--config", "c.yaml", "--data", "data.csv")


def analyze(data: str, *extra: str, config: str = "c.yaml") -> tuple[str, ...]:
    return ("analyze", "--config", config, "--data", data, *extra)


CASES = [
    # --- data loss: never write over the user's files -----------------------
    Case(
        "analyze --output . --overwrite in the folder holding the data and notes "
        "is refused and every file stays",
        files(USER),
        (*ANALYZE, "--output", ".", "--overwrite"),
        1,
        all_of(REFUSED),
        output=None,
    ),
    Case(
        "analyze --output naming the data file itself, with --overwrite, is refused",
        files(USER),
        (*ANALYZE, "--output", "data.csv", "--overwrite"),
        1,
        all_of(r"data\.csv", REFUSED),
        output=None,
    ),
    Case(
        "analyze --output naming the folder that holds the data, with --overwrite, "
        "is refused",
        files(USER, {"inputs/data.csv": csv_bytes()}),
        (*analyze("inputs/data.csv"), "--output", "inputs", "--overwrite"),
        1,
        all_of("inputs", REFUSED),
        output=None,
    ),
    Case(
        "analyze --output naming the folder that holds the config, with --overwrite, "
        "is refused",
        files(USER, {"settings/c.yaml": CONFIG}),
        (
            *analyze("data.csv", config="settings/c.yaml"),
            *("--output", "settings", "--overwrite"),
        ),
        1,
        all_of("settings", REFUSED),
        output=None,
    ),
    Case(
        "analyze --output gs://bucket/art is refused as not a local directory and "
        "makes no gs: folder",
        files(USER),
        (*ANALYZE, "--output", "gs://bucket/art"),
        1,
        all_of("gs://bucket/art", r"(?i:local directory)"),
        output=None,
    ),
    Case(
        "demo --output naming a folder of the user's files is refused and the files "
        "stay",
        files(USER, {"mine/notes.txt": NOTES, "mine/data.csv": csv_bytes()}),
        ("demo", "--output", "mine", "--rows", "200"),
        1,
        all_of("mine", REFUSED),
        output=None,
    ),
    # --- values no float32 graph can hold ---------------------------------
    Case(
        "an output_bound of 1e39, beyond float32, is a config error naming "
        "output_bound",
        files(
            USER,
            {"c.yaml": "defaults: {output_bound: 1.0e+39}\n" + CONFIG},
        ),
        (*ANALYZE, "--output", "out"),
        1,
        all_of(r"c\.yaml", "output_bound", "(?i:float32)"),
    ),
    # --- inputs that crashed: now named errors -----------------------------
    Case(
        "a TFRecord whose records 101-200 are framed garbage, not tf.Examples nor "
        "UTF-8, names the file and record 101",
        files(USER, shared_binary("garbage.tfrecord", "garbage.tfrecord")),
        (*analyze("garbage.tfrecord"), "--output", "out"),
        1,
        all_of(r"garbage\.tfrecord", r"record 101\b"),
    ),
    Case(
        "a TFRecord of 200 examples cut inside record 150's header names the file",
        files(USER, tfrecord_cut_in_header(150)),
        (*analyze("cut.tfrecord"), "--output", "out"),
        1,
        all_of(r"cut\.tfrecord", r"(?i:truncat|corrupt|cut|incomplete|record)"),
    ),
    Case(
        "a CSV header with a byte that is not UTF-8 names the file",
        files(USER, {"header.csv": b"fare\xff,trips\n" + csv_bytes()[11:]}),
        (*analyze("header.csv"), "--output", "out"),
        1,
        all_of(r"header\.csv", NOT_UTF8),
    ),
    Case(
        "a CSV cell with a byte that is not UTF-8 names the file and row 57",
        files(USER, {"cell.csv": csv_with_bad_byte_in_cell(57)}),
        (*analyze("cell.csv"), "--output", "out"),
        1,
        all_of(r"cell\.csv", r"\brow 57\b"),
    ),
    Case(
        "a CSV header with spaces around the names works: they are stripped",
        files(USER, {"spaced.csv": csv_bytes(header=" fare , trips ")}),
        (*analyze("spaced.csv"), "--output", "out"),
        0,
        r"read \S*spaced\.csv: 200 rows",
    ),
    Case(
        "a CSV starting with a UTF-8 byte order mark works: the mark is ignored",
        files(USER, {"bom.csv": b"\xef\xbb\xbf" + csv_bytes()}),
        (*analyze("bom.csv"), "--output", "out"),
        0,
        r"read \S*bom\.csv: 200 rows",
    ),
    Case(
        "a CSV header naming fare twice names the duplicate column",
        files(USER, {"dup.csv": csv_with_duplicate_fare}),
        (*analyze("dup.csv"), "--output", "out"),
        1,
        all_of(r"dup\.csv", r"\bfare\b", r"(?i:duplicat|twice|more than once|repeat)"),
    ),
    Case(
        "a Parquet file named .csv is read as Parquet, by its content",
        files(USER, shared_binary("data.parquet", "table.csv")),
        (*analyze("table.csv"), "--output", "out"),
        0,
        r"read \S*table\.csv: 200 rows",
    ),
    Case(
        "--format csv on a Parquet file is one error line naming the file",
        files(USER, shared_binary("data.parquet", "data.parquet")),
        (*analyze("data.parquet", "--format", "csv"), "--output", "out"),
        1,
        all_of(r"data\.parquet", r"(?i:csv|parquet|utf-?8|header)"),
    ),
    Case(
        "a gzip CSV named .csv.gz is read",
        files(USER, {"data.csv.gz": gzip.compress(csv_bytes(), mtime=0)}),
        (*analyze("data.csv.gz"), "--output", "out"),
        0,
        r"read \S*data\.csv\.gz: 200 rows",
    ),
    Case(
        "an --output under a regular file is one error line naming it",
        files(USER),
        (*ANALYZE, "--output", "notes.txt/out"),
        1,
        all_of(r"notes\.txt"),
        output=None,
    ),
    Case(
        "transform with a truncated stats.json names stats.json",
        files(USER, artifacts(truncate_half("stats.json"))),
        ("transform", "--artifacts", "art", "--data", "data.csv", "--output", "out"),
        1,
        all_of(r"stats\.json"),
    ),
    Case(
        "export with a truncated stats.json names stats.json",
        files(USER, artifacts(truncate_half("stats.json"))),
        ("export", "--artifacts", "art", "--output", "out"),
        1,
        all_of(r"stats\.json"),
    ),
    Case(
        "transform with a corrupt transform_fn/saved_model.pb names the graph",
        files(USER, artifacts(truncate_half("transform_fn/saved_model.pb"))),
        ("transform", "--artifacts", "art", "--data", "data.csv", "--output", "out"),
        1,
        all_of(r"(saved_model\.pb|transform_fn)"),
    ),
    Case(
        "export with a corrupt transform_fn/saved_model.pb names the graph",
        files(USER, artifacts(truncate_half("transform_fn/saved_model.pb"))),
        ("export", "--artifacts", "art", "--output", "out"),
        1,
        all_of(r"(saved_model\.pb|transform_fn)"),
    ),
    Case(
        "a config file that is not UTF-8 names the config",
        files(USER, {"latin1.yaml": CONFIG.encode() + b"# caf\xe9\n"}),
        (*analyze("data.csv", config="latin1.yaml"), "--output", "out"),
        1,
        all_of(r"latin1\.yaml", NOT_UTF8),
    ),
    Case(
        "a config nested 20,000 levels deep fails quickly naming the config",
        files(
            USER,
            {"deep.yaml": "features: {fare: " + "[" * 20_000 + "]" * 20_000 + "}\n"},
        ),
        (*analyze("data.csv", config="deep.yaml"), "--output", "out"),
        1,
        all_of(r"deep\.yaml"),
        within=QUICKLY,
    ),
    Case(
        'a feature named "fare\\n" is a config error at load',
        files(USER, {"newline.yaml": 'features:\n  "fare\\n": {}\n'}),
        (*analyze("data.csv", config="newline.yaml"), "--output", "out"),
        1,
        all_of(r"newline\.yaml", r"fare"),
    ),
    Case(
        "two features with no finite value at all are both named, before pass 2",
        files(
            USER,
            {
                "c.yaml": "features:\n  fare: {}\n  wind: {}\n  rain: {}\n",
                "empty.csv": "fare,wind,rain,trips\n"
                + "".join(row.replace(",", ",,,") + "\n" for row in csv_rows()),
            },
        ),
        (*analyze("empty.csv"), "--output", "out"),
        1,
        all_of(r"\bwind\b", r"\brain\b"),
        forbidden=r"tanhguard: pass 2 ",
    ),
    # --- signals: a quiet stop, nothing left behind ------------------------
    Case(
        "SIGINT during the analysis of 200k rows exits 130 quietly, leaving nothing",
        files(USER, {"big.csv": lambda: csv_bytes(rows=200_000)}),
        (*analyze("big.csv"), "--output", "out"),
        130,
        all_of(r"(?i:interrupt|SIGINT|signal)"),
        signal=signal.SIGINT,
    ),
    Case(
        "SIGTERM during the analysis of 200k rows exits 143 quietly, leaving nothing",
        files(USER, {"big.csv": lambda: csv_bytes(rows=200_000)}),
        (*analyze("big.csv"), "--output", "out"),
        143,
        all_of(r"(?i:terminat|SIGTERM|signal)"),
        signal=signal.SIGTERM,
    ),
    # --- memory: bounded whatever the input -------------------------------
    Case(
        "a YAML alias bomb (9 levels of 9 aliases) as config fails within seconds "
        "under the memory cap",
        files(USER, {"bomb.yaml": ALIAS_BOMB}),
        (*analyze("data.csv", config="bomb.yaml"), "--output", "out"),
        1,
        all_of(r"bomb\.yaml"),
        within=QUICKLY,
    ),
    Case(
        "--config /dev/zero fails within seconds naming it",
        files(USER),
        (*analyze("data.csv", config="/dev/zero"), "--output", "out"),
        1,
        all_of("/dev/zero"),
        within=QUICKLY,
    ),
    Case(
        "--data /dev/zero --format csv fails within seconds: not a regular file",
        files(USER),
        (*analyze("/dev/zero", "--format", "csv"), "--output", "out"),
        1,
        all_of("/dev/zero", r"(?i:not a regular file)"),
        within=QUICKLY,
    ),
    Case(
        "a CSV row 70 MB long fails naming the file",
        files(USER, csv_with_long_line(70)),
        (*analyze("long.csv"), "--output", "out"),
        1,
        all_of(r"long\.csv"),
    ),
]


# --- running and checking ----------------------------------------------------

# Children at a time. Most of a case is importing TensorFlow (~5 s of a core);
# the module takes ~3.5 CPU-minutes, so two at a time on 2 cores.
PARALLEL = 2


def snapshot(root: Path) -> dict[str, tuple[str, int] | None]:
    """Every path under `root`: a file's (sha256, mtime_ns), a directory's None."""
    found: dict[str, tuple[str, int] | None] = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = None
        for name in names:
            path = os.path.join(folder, name)
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
            found[os.path.relpath(path, root)] = (
                digest.hexdigest(),
                os.stat(path).st_mtime_ns,
            )
    return found


def diff(before: dict, after: dict, allowed: str | None) -> list[str]:
    """What changed, but for new paths at or under `allowed`."""

    def is_allowed(path: str) -> bool:
        return allowed is not None and (
            path == allowed or path.startswith(allowed + os.sep)
        )

    removed = sorted(set(before) - set(after))
    added = sorted(p for p in set(after) - set(before) if not is_allowed(p))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    lines = []
    for label, paths in (("removed", removed), ("added", added), ("changed", changed)):
        lines += [f"    {label}: {path}" for path in paths[:20]]
        if len(paths) > 20:
            lines.append(f"    {label}: ... and {len(paths) - 20} more")
    return lines


def _text(path: Path, limit: int = 200_000, start: int = 0) -> str:
    """A file's text from `start`; its first and last `limit / 2` bytes when
    longer than `limit`."""
    size = path.stat().st_size - start
    with open(path, "rb") as handle:
        handle.seek(start)
        if size <= limit:
            return handle.read().decode(errors="replace")
        head = handle.read(limit // 2).decode(errors="replace")
        handle.seek(start + size - limit // 2)
        tail = handle.read().decode(errors="replace")
    return f"{head}\n[... {size - limit:,} bytes left out ...]\n{tail}"


@dataclass
class Outcome:
    """What one case's run did."""

    root: Path  # snapshotted; holds `work`, the user's working directory
    work: Path
    exit_code: int | None  # None: killed after TIMEOUT
    seconds: float
    stdout: str
    stderr: str
    after_signal: str  # what stderr got after the signal was sent
    note: str  # when the signal was sent, or why it was not
    changes: list[str]  # files touched outside the allowed output
    staging: list[str]  # `.<output>.*` entries left beside the output


def execute(case: Case, root: Path, shared: Shared, live: set) -> Outcome:
    """Builds the case's files in `root/work`, runs the command line there
    (killed after `TIMEOUT`), and compares `root` before and after. With
    `case.signal`, sends it once stderr shows pass 1 (or 8 s after the start,
    whichever comes first)."""
    work = root / "work"
    work.mkdir()
    case.build(work, shared)
    logs = root.with_name(root.name + "-logs")
    logs.mkdir()
    out_path, err_path = logs / "stdout", logs / "stderr"
    before = snapshot(root)

    note, sent_at = "", None
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        child = spawn([*CLI, *case.argv], cwd=work, stdout=out, stderr=err)
        live.add(child)
        try:
            if case.signal is not None:
                while child.poll() is None and time.monotonic() - started < 8:
                    if b"tanhguard: pass 1 " in err_path.read_bytes():
                        break
                    time.sleep(0.05)
                if child.poll() is None:
                    sent_at = err_path.stat().st_size
                    child.send_signal(case.signal)
                    name = signal.Signals(case.signal).name
                    note = f"({name} sent after {time.monotonic() - started:.1f} s)"
                else:
                    note = "(the run ended before the signal was sent)"
            left = TIMEOUT - (time.monotonic() - started)
            exit_code = child.wait(timeout=max(left, 1.0))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            exit_code = None
        finally:
            live.discard(child)
        seconds = time.monotonic() - started

    succeeded = exit_code == 0
    allowed = None
    if succeeded and case.output is not None:
        allowed = os.path.relpath(os.path.normpath(work / case.output), root)
    staging = []
    if case.output is not None and "://" not in case.output:
        target = Path(os.path.normpath(work / case.output))
        if target.parent.is_dir():
            prefix = f".{target.name}."
            staging = [
                p.name for p in target.parent.iterdir() if p.name.startswith(prefix)
            ]
    return Outcome(
        root=root,
        work=work,
        exit_code=exit_code,
        seconds=seconds,
        stdout=_text(out_path, 20_000),
        stderr=_text(err_path),
        after_signal="" if sent_at is None else _text(err_path, start=sent_at),
        note=note,
        changes=diff(before, snapshot(root), allowed),
        staging=staging,
    )


def _case_id(case: Case) -> str:
    return re.sub(r"[^A-Za-z0-9.,:=+-]+", "_", case.id).strip("_")


class Runner:
    """Runs the selected cases `PARALLEL` at a time, in the order pytest will
    ask for them; each test waits for its own."""

    def __init__(self, factory: pytest.TempPathFactory, cases: Sequence[Case]):
        self._factory = factory
        self._shared = Shared(factory)
        self._pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="hostile")
        self._live: set[subprocess.Popen] = set()
        self._futures: dict[str, Future] = {}
        for case in cases:
            self._submit(case)

    def _submit(self, case: Case) -> None:
        root = self._factory.mktemp(_case_id(case)[:40])
        self._futures[case.id] = self._pool.submit(
            execute, case, root, self._shared, self._live
        )

    def outcome(self, case: Case) -> Outcome:
        if case.id not in self._futures:
            self._submit(case)
        return self._futures[case.id].result()

    def artifacts(self) -> Path:
        return self._shared.artifacts()

    def close(self) -> None:
        """Drops the cases not started; kills the children still running (the
        session stopped early, e.g. `-x`)."""
        for future in self._futures.values():
            future.cancel()
        for child in list(self._live):
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
        self._pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def runner(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runner]:
    selected = [
        item.callspec.params["case"]
        for item in request.session.items
        if item.module is request.module
        and getattr(item, "originalname", None) == "test_hostile_input"
    ]
    started = Runner(tmp_path_factory, selected)
    yield started
    started.close()


def _shown(text: str, lines: int = 40) -> str:
    kept = text.rstrip("\n").splitlines()[-lines:]
    return "\n".join("    | " + line[:500] for line in kept) or "    | (empty)"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_hostile_input(case: Case, runner: Runner, record_property) -> None:
    run = runner.outcome(case)
    lines = run.stderr.splitlines()
    error_lines = [line for line in lines if line.startswith(ERROR_PREFIX)]
    last = next((line for line in reversed(lines) if line.strip()), "")
    shown_line = error_lines[0] if error_lines else last
    record_property("exit_code", run.exit_code)
    record_property("seconds", round(run.seconds, 1))
    record_property("stderr_line", shown_line[:300])

    problems = []
    if run.exit_code is None:
        problems.append(f"killed after the {TIMEOUT} s timeout")
    elif run.exit_code != case.exit_code:
        problems.append(f"exit status {run.exit_code}, expected {case.exit_code}")
    if run.seconds > case.within:
        problems.append(f"took {run.seconds:.1f} s, expected under {case.within} s")
    if "Traceback" in run.stderr:
        problems.append("stderr holds a Traceback")
    if case.exit_code == 0:
        if not re.search(case.message, run.stderr, re.MULTILINE):
            problems.append(f"stderr does not match {case.message!r}")
        if error_lines:
            problems.append(f"an error line on success: {error_lines[0][:300]!r}")
        stats = run.work / str(case.output) / "stats.json"
        if run.exit_code == 0 and not stats.is_file():
            problems.append(f"no {stats.relative_to(run.work)} after success")
    elif case.signal is not None:
        # Not an error: a notice, `tanhguard: interrupted ...`, as the last line.
        if not last.startswith(NOTICE_PREFIX) or not re.search(case.message, last):
            problems.append(
                f"stderr's last line is not a {NOTICE_PREFIX!r} notice matching "
                f"{case.message!r}"
            )
    else:
        if len(error_lines) != 1:
            problems.append(
                f"{len(error_lines)} lines start with {ERROR_PREFIX!r}; expected one"
            )
        elif last != error_lines[0]:
            after = lines[lines.index(error_lines[0]) + 1 :]
            problems.append(
                f"the error goes on over {len(after)} more line(s): {after[:3]!r}"
            )
        if error_lines:
            line = error_lines[0]
            if len(line) > MAX_ERROR_LINE:
                problems.append(f"the error line is {len(line):,} characters long")
            if not re.search(case.message, line):
                problems.append(f"the error line does not match {case.message!r}")
            if re.search(UNFORESEEN, line):
                problems.append(
                    "the error is the last resort for an exception nobody foresaw, "
                    "not a named error"
                )
    if case.forbidden and re.search(case.forbidden, run.stderr, re.MULTILINE):
        problems.append(f"stderr matches {case.forbidden!r}, which it must not")
    if case.signal is not None:
        if "sent" not in run.note:
            problems.append(f"{run.note}: the test needs a longer run")
        written = [line for line in run.after_signal.splitlines() if line.strip()]
        if len(written) > 3:
            problems.append(
                f"{len(written)} lines on stderr after the signal; expected at most 3"
            )
    if run.changes:
        problems.append(
            "files outside tanhguard's output changed"
            + ("" if run.exit_code == 0 else " (a failed run must change nothing)")
            + ":\n"
            + "\n".join(run.changes)
        )
    if run.staging:
        problems.append(f"staging left beside the output: {run.staging}")

    if problems:
        pytest.fail(
            textwrap.dedent(
                f"""\
                {case.id}
                  tanhguard {" ".join(case.argv)}
                  in {run.work}
                  exit status {run.exit_code} after {run.seconds:.1f} s {run.note}
                """
            )
            + "\n".join(f"- {problem}" for problem in problems)
            + f"\n  error line: {shown_line[:1000]!r}"
            + f"\n  stderr (end):\n{_shown(run.stderr)}"
            + f"\n  stdout (end):\n{_shown(run.stdout, 10)}",
            pytrace=False,
        )


def test_every_case_id_is_unique() -> None:
    ids = [_case_id(case) for case in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]


def test_the_spoiled_artifacts_start_from_real_ones(runner: Runner) -> None:
    """The stats.json and saved_model.pb cases spoil a loadable artifacts dir."""
    art = runner.artifacts()
    assert json.loads((art / "stats.json").read_text())["num_rows"] == ROWS
    assert (art / "transform_fn" / "saved_model.pb").is_file()
