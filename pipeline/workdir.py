"""Where a job's workers write, so that runners off this machine can.

The output directory is local: it is written under a temporary name and
renamed into place (`output_dir.publish_dir`). On the in-process and
local runners the workers write straight into it. A runner whose workers run
elsewhere (Dataflow, a Flink or Spark cluster) cannot reach a local path, so
with Beam's `--temp_location` (for example `gs://bucket/tmp`) every file the
workers write goes to a fresh directory under it, read there through
`files` (`tf.io.gfile` for such a path), and is copied into the local
output when the job is done. The directory under `--temp_location` is
removed afterwards, on failure too.

A job's small results (an analysis pass's vector, the row count) reach the
driver the same way: `SaveGlobally` writes them into the work directory and
`load_saved` reads them back.
"""

from __future__ import annotations

import contextlib
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from tanhguard.pipeline import files as fs

# Scratch space inside a work directory: the analysis passes' results, TFT's
# temporary files, the row count. Never copied into the output.
SCRATCH = ".tft_tmp"


@contextlib.contextmanager
def work_dir(options: PipelineOptions, staging: Path) -> Iterator[str]:
    """Yields the directory the workers write into.

    Without `--temp_location` it is `staging` itself, and its `SCRATCH` is
    removed on success. With it, it is a new directory under the temp
    location; on success its content (but not `SCRATCH`) is copied into
    `staging`, and it is removed in any case.
    """
    temp_location = options.view_as(GoogleCloudOptions).temp_location
    if not temp_location:
        yield str(staging)
        shutil.rmtree(staging / SCRATCH, ignore_errors=True)
        return
    work = posixpath.join(temp_location, f"tanhguard-{uuid.uuid4().hex}")
    fs.makedirs(work)
    try:
        yield work
        copy_tree(work, staging, skip=(SCRATCH,))
    finally:
        if fs.exists(work):
            fs.rmtree(work)


def copy_tree(source: str, target: str | Path, skip: tuple[str, ...] = ()) -> None:
    """Copies the files under `source` into `target` (either side local or
    any filesystem `files` knows), leaving out the top-level `skip`."""
    source = source.rstrip("/")
    for directory, _, names in fs.walk(source):
        relative = directory[len(source) :].strip("/")
        if relative.split("/")[0] in skip:
            continue
        destination = posixpath.join(str(target), relative)
        fs.makedirs(destination)
        for name in names:
            fs.copy(posixpath.join(directory, name), posixpath.join(destination, name))


class SaveGlobally(beam.PTransform):
    """Combines a PCollection into one value with `combine` and saves it with
    `np.save` at `path` (in a work directory), for `load_saved`.

    Nothing is saved when no element arrives: Beam's default value for an
    empty `CombineGlobally` costs a side input and two more stages, about
    0.05 s a pass; `load_saved` computes that value instead.
    """

    def __init__(self, combine, path: str):
        super().__init__()
        self._combine = combine
        self._path = path

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        path = self._path

        def save(value) -> None:
            with fs.open_file(path, "wb") as handle:
                np.save(handle, np.asarray(value))

        return (
            pcoll
            | "Combine" >> beam.CombineGlobally(self._combine).without_defaults()
            | "Save" >> beam.Map(save)
        )


def load_saved(path: str, combine) -> np.ndarray:
    """What `SaveGlobally(combine, path)` saved, once its pipeline has run;
    `combine`'s output for no input if no element reached it."""
    if not fs.exists(path):
        fn = beam.CombineFn.maybe_from_callable(combine)
        return np.asarray(fn.extract_output(fn.create_accumulator()))
    with fs.open_file(path) as handle:
        return np.load(handle)
