"""Artifacts directories that appear complete or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputExistsError(FileExistsError):
    """The output directory exists and overwriting was not asked for."""


@contextlib.contextmanager
def atomic_output_dir(output: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yields a temporary directory next to `output`; renames it on success.

    On an exception the temporary directory is removed and `output` is left as
    it was. With `overwrite`, an existing `output` is replaced only after the
    new one is complete.

    Raises:
      OutputExistsError: `output` exists and `overwrite` is false.
    """
    output = Path(output).absolute()
    if output.exists() and not overwrite:
        raise OutputExistsError(
            f"{output}: already exists; pass --overwrite to replace it"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=output.parent))
    try:
        yield staging
        if output.exists():
            retired = Path(
                tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent)
            )
            os.replace(output, retired / output.name)
            os.replace(staging, output)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
