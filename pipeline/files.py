"""File access for the batch jobs' driver: local paths without TensorFlow.

A local path (no `scheme://`) is read and written with the standard library;
a path with a scheme (`gs://`, `s3://`, `hdfs://`, ...) through
`tf.io.gfile`, imported on first use. The analysis driver then runs its
passes over local files without importing TensorFlow (2-3 s), while
`graph_process` imports it in a process of its own to save the graph; this
is the only reason these functions exist instead of calling `tf.io.gfile`
everywhere, as the jobs did before.

Errors: a missing path raises `FileNotFoundError` either way (TensorFlow's
`NotFoundError` is translated), any other failure `OSError`.

Local globs follow Python's `glob` (`*`, `?`, `[...]`; a name beginning with
`.` is matched only by a pattern component beginning with `.`, as in a shell);
other filesystems follow `tf.io.gfile.glob`.
"""

from __future__ import annotations

import contextlib
import glob as _glob
import os
import shutil
from collections.abc import Iterator
from typing import IO, Any


def is_local(path: str) -> bool:
    """Whether `path` is on this machine's filesystem (it has no scheme)."""
    return "://" not in str(path)


def _gfile() -> Any:
    from tanhguard.pipeline.progress import load_tensorflow

    return load_tensorflow().io.gfile


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """TensorFlow's file errors as the built-in ones."""
    from tanhguard.pipeline.progress import load_tensorflow

    errors = load_tensorflow().errors
    try:
        yield
    except errors.NotFoundError as error:
        raise FileNotFoundError(error.message) from None
    except errors.OpError as error:
        raise OSError(error.message) from None


class _RemoteFile:
    """A `tf.io.gfile.GFile` whose errors are the built-in ones on every
    call: it opens the file on its first read or write, so a missing file
    (or one removed meanwhile) fails there, not when it is made."""

    def __init__(self, handle: Any):
        self._handle = handle

    def read(self, size: int = -1) -> bytes:
        with _translated():
            return self._handle.read(size)

    def write(self, data: bytes) -> None:
        with _translated():
            self._handle.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        with _translated():
            return self._handle.seek(offset, whence)

    def tell(self) -> int:
        with _translated():
            return self._handle.tell()

    def flush(self) -> None:
        with _translated():
            self._handle.flush()

    def close(self) -> None:
        with _translated():
            self._handle.close()

    def __enter__(self) -> _RemoteFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_file(path: str, mode: str = "rb") -> IO[bytes]:
    """`path` opened in binary `mode` (`rb` or `wb`)."""
    if mode not in ("rb", "wb"):
        raise ValueError(f"mode must be 'rb' or 'wb'. Received: {mode!r}")
    if is_local(path):
        return open(path, mode)
    with _translated():
        return _RemoteFile(_gfile().GFile(path, mode))  # type: ignore[return-value]


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.exists(path)
    with _translated():
        return _gfile().exists(path)


def isdir(path: str) -> bool:
    if is_local(path):
        return os.path.isdir(path)
    with _translated():
        return _gfile().isdir(path)


def listdir(path: str) -> list[str]:
    """The names in directory `path` (not their paths), unsorted."""
    if is_local(path):
        return os.listdir(path)
    with _translated():
        return [name.rstrip("/") for name in _gfile().listdir(path)]


def glob(pattern: str) -> list[str]:
    """The paths matching `pattern`, sorted."""
    if is_local(pattern):
        return sorted(_glob.glob(pattern))
    with _translated():
        return sorted(_gfile().glob(pattern))


def size(path: str) -> int:
    """The size of file `path` in bytes."""
    if is_local(path):
        return os.stat(path).st_size
    with _translated():
        return _gfile().stat(path).length


def makedirs(path: str) -> None:
    if is_local(path):
        os.makedirs(path, exist_ok=True)
        return
    with _translated():
        _gfile().makedirs(path)


def rmtree(path: str) -> None:
    """Removes directory `path`, which this job created, and its content."""
    if is_local(path):
        shutil.rmtree(path)
        return
    with _translated():
        _gfile().rmtree(path)


def walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """`(directory, subdirectories, files)` for every directory under `top`."""
    if is_local(top):
        yield from os.walk(top)
        return
    with _translated():
        yield from _gfile().walk(top)


def copy(source: str, target: str) -> None:
    """Copies file `source` to `target`, replacing a file there."""
    if is_local(source) and is_local(target):
        shutil.copyfile(source, target)
        return
    with _translated():
        _gfile().copy(source, target, overwrite=True)
