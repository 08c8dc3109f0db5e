"""Output directories that appear complete or not at all, and that never
replace anything tanhguard did not write. Every command that writes a directory
(analyze, run, transform, export, demo) does it with `publish_dir`:

1. Before any work, an `--output` is refused if it is an object-store URL
   (`gs://`, `s3://`, ...: they cannot rename atomically; write locally, then
   copy), the current or home directory, `/` or another mount point, a path
   under a file, or an input or config file or a directory holding one.
2. Leftovers of killed runs beside it, `.NAME.tanhguard-staging-PID-*` and
   `.NAME.tanhguard-retired-PID-*`, are removed if they hold tanhguard's marker
   and PID is no longer running on this host (a retired directory whose NAME is
   missing is first renamed back). Nothing else is touched.
3. An existing NAME stops the command unless `--overwrite` is given and NAME is
   a directory tanhguard wrote: it holds the `.tanhguard` marker file, or only
   names tanhguard writes (`OUTPUT_NAMES`; older artifacts have no marker).
4. The job writes into `.NAME.tanhguard-staging-PID-RANDOM` beside NAME; its
   `.tanhguard` marker (JSON) records the host and the PID.
5. When the job succeeds, that directory is renamed to NAME by a rename that
   never replaces anything (Linux: `renameat2(RENAME_NOREPLACE)`; elsewhere,
   `mkdir NAME` and a rename onto that empty directory, which fails if it was
   filled meanwhile). If NAME appeared during the job, the command fails and
   leaves it as it is; with `--overwrite` (and step 3 passing again), the old
   NAME is moved aside into `.NAME.tanhguard-retired-PID-RANDOM/`, the new one
   renamed in, the old one removed (or moved back if the rename failed).
6. On an error, Ctrl-C or SIGTERM (`handle_termination`: exit status 143), the
   staging directory is removed and NAME is left as it was; after `kill -9` the
   next run removes it (step 2). Filesystem errors are reported in one line: the
   path and the system's reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import functools
import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from tanhguard.errors import OutputError, OutputExistsError, TanhguardError
from tanhguard.version import __version__

MARKER = ".tanhguard"
# Top-level names (fnmatch patterns) of everything tanhguard writes into an
# output directory: one holding nothing else may be replaced (step 3).
OUTPUT_NAMES = (
    *("stats.json", "transform_fn", "transformed_metadata", "metadata", "rows"),
    *("report.html", "saved_model.pb", "variables", "assets", "fingerprint.pb"),
    *("keras_metadata.pb", "part-*", "data", "artifacts", MARKER),
    "stats.tfdv.pb",
)
_TEMP = re.compile(r"\.(.+)\.tanhguard-(staging|retired)-(\d+)-[0-9a-f]+")


@contextlib.contextmanager
def _reporting(path: object, action: str) -> Iterator[None]:
    """Turns an `OSError` into a one-line `OutputError` naming `path`."""
    try:
        yield
    except TanhguardError:
        raise
    except OSError as error:
        reason = error.strerror or str(error)
        raise OutputError(f"{path}: cannot {action}: {reason}") from error


def check_output(output: str | Path, protect: Iterable[str | Path] = ()) -> Path:
    """Returns `output` made absolute; raises `OutputError` if tanhguard must
    not write there (step 1). `protect`: input paths or globs, the config."""
    text = os.fspath(output) or "."
    if "://" in text:
        raise OutputError(
            f"{text}: `--output` must be a local directory; object stores cannot "
            "rename atomically. Write locally and copy (e.g. `gsutil -m cp -r`)"
        )
    with _reporting(text, "resolve the output path"):  # e.g. the cwd was removed
        real = Path(os.path.realpath(text))
        refused = {os.path.realpath("."): "the current directory"}
    with contextlib.suppress(RuntimeError, KeyError):
        refused[os.path.realpath(Path.home())] = "the home directory"
    reason = refused.get(str(real)) or (os.path.ismount(real) and "a filesystem root")
    if reason:
        raise OutputError(f"{text}: refusing to write to {reason}; name a new one")
    for pattern in (os.fspath(item) for item in protect):
        for match in glob.glob(pattern, recursive=True) or [pattern]:
            if "://" not in match and (
                real == Path(os.path.realpath(match))
                or real in Path(os.path.realpath(match)).parents
            ):
                raise OutputError(f"{text}: refusing to write over the input {match}")
    path = Path(os.path.abspath(text))
    existing = next(parent for parent in path.parents if os.path.lexists(parent))
    if not existing.is_dir():
        raise OutputError(f"{text}: output under a file: {existing}")
    return path


def _foreign(path: Path) -> list[str]:
    """The entries of directory `path` that tanhguard did not write; none if
    it holds tanhguard's marker."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if json.loads((path / MARKER).read_text())["created_by"] == "tanhguard":
            return []
    return sorted(
        name
        for name in os.listdir(path)
        if not any(fnmatch.fnmatchcase(name, known) for known in OUTPUT_NAMES)
    )


def _check_existing(output: Path, overwrite: bool) -> None:
    """Raises unless `output` is absent, or `overwrite` and tanhguard wrote it."""
    if not os.path.lexists(output):
        return
    with _reporting(output, "read the existing output"):
        directory = output.is_dir() and not output.is_symlink()
        foreign = _foreign(output) if directory else []
    if not directory or foreign:
        what = "is a file or a link, not a directory"
        if directory:
            what = f"holds {', '.join(foreign[:3])}{', ...' * (len(foreign) > 3)}"
        raise (OutputError if overwrite else OutputExistsError)(
            f"{output}: exists and {what}: tanhguard did not write it and will not "
            "replace it, even with --overwrite; choose another --output"
        )
    if not overwrite:
        raise OutputExistsError(f"{output}: exists; pass --overwrite to replace it")


def _identity() -> dict:
    """This process, and where its PID means something: host, boot, namespace."""
    found = {"host": socket.gethostname(), "pid": os.getpid(), "boot": None}
    with contextlib.suppress(OSError):
        found["boot"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        found["ns"] = os.readlink("/proc/self/ns/pid")
    return found


def _owner_gone(owner: dict) -> bool:
    """True only if the process that wrote `owner` has certainly exited."""
    me = _identity()
    if os.name == "nt" or owner["host"] != me["host"]:
        return False  # it may be running elsewhere
    if owner["boot"] and me["boot"] and owner["boot"] != me["boot"]:
        return True  # rebooted since
    if owner.get("ns") != me.get("ns"):
        return False  # another container's PIDs
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. another user's process
        pass
    return False


def _write_marker(directory: Path) -> None:
    version = __version__
    marker = {"created_by": "tanhguard", "version": version, "writer": _identity()}
    (directory / f"{MARKER}.new").write_text(json.dumps(marker) + "\n")
    os.replace(directory / f"{MARKER}.new", directory / MARKER)


def _new_temp(output: Path, kind: str) -> Path:
    """A new, marked `.NAME.tanhguard-KIND-PID-RANDOM` directory."""
    while True:
        name = f".{output.name}.tanhguard-{kind}-{os.getpid()}-{secrets.token_hex(4)}"
        with contextlib.suppress(FileExistsError):
            (output.parent / name).mkdir()
            break
    try:
        _write_marker(output.parent / name)
    except BaseException:
        shutil.rmtree(output.parent / name, ignore_errors=True)
        raise
    return output.parent / name


def clean_stale(output: str | Path) -> list[Path]:
    """Removes the staging and retired directories that dead runs left beside
    `output` (step 2) and returns them; errors are ignored."""
    output, removed = Path(os.path.abspath(output)), []
    with contextlib.suppress(OSError):
        removed = [Path(e.path) for e in os.scandir(output.parent) if _stale(e, output)]
    for path in removed:
        retired = _TEMP.fullmatch(path.name)[2] == "retired"
        if retired and (path / output.name).is_dir():
            with contextlib.suppress(OSError):  # it died in mid-swap: restore
                _rename_noreplace(path / output.name, output)
        shutil.rmtree(path, ignore_errors=True)
    return removed


def _stale(entry: os.DirEntry, output: Path) -> bool:
    match = _TEMP.fullmatch(entry.name)
    if not match or match[1] != output.name:
        return False
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        marker = json.loads((Path(entry.path) / MARKER).read_text())
        writer = marker["writer"]
        return (
            entry.is_dir(follow_symlinks=False)
            and marker["created_by"] == "tanhguard"
            and writer["pid"] == int(match[3]) > 0
            and _owner_gone(writer)
        )
    return False


@functools.cache
def _renameat2():
    with contextlib.suppress(OSError, AttributeError):
        function = ctypes.CDLL(None, use_errno=True).renameat2
        function.argtypes = [ctypes.c_int, ctypes.c_char_p] * 2 + [ctypes.c_uint]
        return function
    return None


def _rename_noreplace(source: Path, target: Path) -> None:
    """Renames directory `source`; raises `FileExistsError` if `target` exists."""
    function = _renameat2() if os.name != "nt" else None
    if function is not None:  # renameat2(AT_FDCWD, .., AT_FDCWD, .., NOREPLACE)
        if function(-100, os.fsencode(source), -100, os.fsencode(target), 1) == 0:
            return
        code = ctypes.get_errno()
        if code in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(code, os.strerror(code), str(target))
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
            raise OSError(code, os.strerror(code), str(source))
    # Without renameat2: claim `target` with mkdir (fails if anything is there),
    # then rename onto that empty directory (fails if it was filled meanwhile).
    if os.name != "nt":  # where os.rename never replaces anything
        os.mkdir(target)
    try:
        os.rename(source, target)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.rmdir(target)  # only ever removes an empty directory
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(error.errno, error.strerror, str(target)) from None
        raise


def _publish(staging: Path, output: Path, overwrite: bool) -> None:
    with contextlib.suppress(FileExistsError):
        return _rename_noreplace(staging, output)
    if not overwrite:
        raise OutputExistsError(
            f"{output}: appeared while tanhguard was writing it and was left as "
            "it is; pass --overwrite to replace it"
        )
    _check_existing(output, overwrite)
    retired = _new_temp(output, "retired")
    try:
        os.rename(output, retired / output.name)
    except OSError as error:  # not renamed: `retired` holds only the marker
        shutil.rmtree(retired, ignore_errors=True)
        if not isinstance(error, FileNotFoundError):
            raise
        return _publish(staging, output, overwrite=False)  # it vanished
    try:
        _rename_noreplace(staging, output)
    except BaseException as error:
        try:
            _rename_noreplace(retired / output.name, output)
        except OSError:
            raise OutputError(
                f"{output}: cannot publish ({getattr(error, 'strerror', error)}); "
                f"the previous output is kept in {retired / output.name}"
            ) from error
        shutil.rmtree(retired, ignore_errors=True)
        raise
    shutil.rmtree(retired, ignore_errors=True)


_deferral = threading.local()


@contextlib.contextmanager
def _critical() -> Iterator[None]:
    """Holds back `handle_termination`'s signals until the block is done."""
    depth = getattr(_deferral, "depth", 0)
    _deferral.depth = depth + 1
    try:
        yield
    finally:
        _deferral.depth = depth
        pending = getattr(_deferral, "pending", None)
        if depth == 0 and pending is not None:
            _deferral.pending = None
            raise pending


def received_signal() -> int | None:
    """The signal `handle_termination` last turned into an exception, if any:
    a runner may wrap that exception in its own (Beam: a RuntimeError)."""
    return _received[-1] if _received else None


_received: list[int] = []


def _on_signal(signum: int, frame: object) -> None:
    _received.append(signum)
    error = KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)
    if getattr(_deferral, "depth", 0):
        _deferral.pending = error
    else:
        raise error


@contextlib.contextmanager
def handle_termination() -> Iterator[None]:
    """While active (in the main thread), SIGTERM and SIGHUP raise
    `SystemExit(128 + signal number)` (143, 129) and SIGINT `KeyboardInterrupt`,
    so that `publish_dir` removes its staging directory; during its renames and
    clean-up they are held back until it is done. Ignored signals stay ignored."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP", "SIGINT"):
            number = getattr(signal, name, None)
            handler = number and signal.getsignal(number)
            if handler in (signal.SIG_DFL, signal.default_int_handler):
                previous[number] = signal.signal(number, _on_signal)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def publish_dir(
    output: str | Path,
    *,
    overwrite: bool = False,
    protect: Iterable[str | Path] = (),
) -> Iterator[Path]:
    """Yields a new staging directory beside `output` (holding only the
    marker) and publishes it as `output` when the block succeeds (see the
    module docstring). `protect`: the input files or globs, the config file.

    Raises:
      OutputExistsError: `output` exists or appeared, and not `overwrite`.
      OutputError: `output` is refused, or not tanhguard's to replace; or a
        filesystem error, also one the block met in the staging directory.
    """
    output = check_output(output, protect)
    clean_stale(output)
    _check_existing(output, overwrite)
    with _reporting(output.parent, "create the directory"):
        output.parent.mkdir(parents=True, exist_ok=True)
    staging = None
    try:
        with _critical(), _reporting(output.parent, "create a staging directory"):
            staging = _new_temp(output, "staging")
        try:
            yield staging
        except OSError as error:  # e.g. no space left: name the output
            name = error.filename
            if isinstance(error, TanhguardError) or not isinstance(name, str):
                raise
            if staging not in Path(os.path.abspath(name)).parents:
                raise
            raise OutputError(f"{output}: cannot write: {error.strerror}") from error
        with _critical(), _reporting(output, "publish"):
            _write_marker(staging)
            _publish(staging, output, overwrite)
    except BaseException:
        if staging is not None:
            with _critical():
                shutil.rmtree(staging, ignore_errors=True)
        raise
