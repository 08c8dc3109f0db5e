"""The analyze job: statistics and bounds over a whole dataset, on any Beam runner.

Writes, into the output directory:
  transform_fn/, transformed_metadata/   the TFT graph (`tft.TFTransformOutput`)
  metadata/                              the raw schema (one VarLenFeature each)
  stats.json                             the statistics and bounds it applies
  stats.tfdv.pb                          the same statistics for TFDV / Facets
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import posixpath
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from tanhguard.errors import ConfigError, DataError
from tanhguard.pipeline import files as fs
from tanhguard.pipeline import graph_process, spill
from tanhguard.pipeline.artifacts import ROWS_DIR, load_stats, write_stats
from tanhguard.pipeline.batch_layout import (
    dense_batch,
    fit_values,
    tensor_adapter_config,
)
from tanhguard.pipeline.beam_runner import new_pipeline
from tanhguard.pipeline.graph_process import GraphProcess, write_graph
from tanhguard.pipeline.html_report import preload_charts, write_report
from tanhguard.pipeline.job_errors import data_errors_unwrapped
from tanhguard.pipeline.malloc import malloc_enabled
from tanhguard.pipeline.output_dir import publish_dir
from tanhguard.pipeline.progress import load_tensorflow
from tanhguard.pipeline.readers import (
    ReadRecordBatches,
    kept_schema,
    resolve_inputs,
)
from tanhguard.pipeline.stats_json import STATS_FORMAT_VERSION, unpack_stats_vector
from tanhguard.pipeline.tfdv_stats import write_tfdv_stats
from tanhguard.pipeline.workdir import SCRATCH, SaveGlobally, load_saved, work_dir
from tanhguard.transforms.config import Config
from tanhguard.transforms.first_phase import FirstPhaseCombineFn
from tanhguard.transforms.fit_phase import (
    FitPhaseCombineFn,
    MadCombineFn,
    check_finite_data,
)
from tanhguard.transforms.parallel import thread_count
from tanhguard.transforms.slots import Slot, needs_mad, plan_slots, slot_output_bounds

__all__ = ["AnalyzeFeatures", "load_stats", "run_analyze"]

logger = logging.getLogger(__name__)


class AnalyzeFeatures(beam.PTransform):
    """Record batches -> a TFT transform_fn, writing the statistics vector.

    Input: a PCollection of Arrow record batches in the layout of
    `batch_layout.arrow_schema(config)`.
    Output: the `(transform_fn, metadata)` pair of `tft_beam.AnalyzeDataset`.

    With `parameters` (the first phase's vector, see `first_phase`), the
    analysis has one phase; without, TFT computes both phases here, reading
    the input twice. With `mads` too (see `mad_phase`), that phase reads its
    input once even for `mad` clips.
    """

    def __init__(
        self,
        config: Config,
        parameters: np.ndarray | None = None,
        mads: np.ndarray | None = None,
    ):
        super().__init__()
        self._config = config
        self._parameters = parameters
        self._mads = mads

    def expand(self, record_batches: beam.PCollection):
        import tensorflow_transform.beam as tft_beam

        from tanhguard.transforms.preprocessing import build_preprocessing_fn

        preprocessing_fn = build_preprocessing_fn(
            self._config, parameters=self._parameters, mads=self._mads
        )
        return (
            record_batches,
            tensor_adapter_config(self._config),
        ) | "AnalyzeDataset" >> tft_beam.AnalyzeDataset(preprocessing_fn)


@dataclasses.dataclass(frozen=True)
class _Passes:
    """What every streaming pass over the input files shares."""

    config: Config
    files: Sequence[str]
    fmt: str
    options: PipelineOptions
    temp: str  # a directory the workers can write (see `workdir`)
    # Where the first pass keeps its parsed batches (`spill`), or None; after
    # it, where the later passes read them, or None to read the files.
    spill: str | None = None
    spilled: bool = False

    def reader(self) -> ReadRecordBatches:
        return ReadRecordBatches(self.files, self.config, self.fmt)

    def after_first(self, parameters: np.ndarray) -> _Passes:
        """The later passes: over the kept batches, if all are there."""
        if spill.usable(self.spill, rows=round(float(parameters[0]))):
            return dataclasses.replace(self, spilled=True)
        spill.remove(self.spill)
        return dataclasses.replace(self, spill=None)

    def dense(self, element) -> np.ndarray:
        """An element of `source()` -> its float32 `[rows, D]` values."""
        return element if self.spilled else dense_batch(element, self.config)[0]

    def source(self) -> beam.PTransform:
        """The later passes' input: the kept batches, or the files."""
        return spill.ReadSpilled(self.spill) if self.spilled else self.reader()

    def combine(
        self, name: str, combine: beam.CombineFn, inputs, source=None
    ) -> np.ndarray:
        """One Beam job: `combine` over `inputs(element, config)` for every
        element of `source` (by default, the files' record batches); returns
        its output (a numpy vector)."""
        target = posixpath.join(self.temp, f"{name}.npy")
        fs.makedirs(self.temp)
        with new_pipeline(self.options) as pipeline:
            _ = (
                pipeline
                | "Read" >> (source or self.reader())
                | "Inputs" >> beam.Map(inputs, config=self.config)
                | "CombineAndSave" >> SaveGlobally(combine, target)
            )
        return load_saved(target, combine)


def first_phase(passes: _Passes) -> np.ndarray:
    """The first analysis phase as a Beam job of its own: the parameters.

    TFT feeds every analysis phase from its one input PCollection, so a
    two-phase analysis makes the runner keep the whole dataset between the
    phases (Beam's in-process runner holds it in memory). The batch job
    instead runs the first phase's combiner (the one TFT runs as an analyzer
    inside TFX) over the files, then the rest with its result as constants:
    the files are read once per pass and every pass streams.
    """
    inputs = dense_batch
    if passes.spill is not None:
        directory = passes.spill

        def inputs(element, config):  # a function: Beam's type check names it
            return spill.spilled(element, config, directory)

    return passes.combine("parameters", FirstPhaseCombineFn(passes.config), inputs)


def mad_phase(passes: _Passes, parameters: np.ndarray, slots: list[Slot]) -> np.ndarray:
    """The MAD of each `mad` slot, as a Beam job of its own (it needs the
    first phase's medians, and the moments need it)."""

    def inputs(element, config):
        return [passes.dense(element), parameters[np.newaxis]]

    return passes.combine("mads", MadCombineFn(slots), inputs, passes.source())


def fit_phase(
    passes: _Passes,
    parameters: np.ndarray,
    mads: np.ndarray | None,
    slots: list[Slot],
) -> np.ndarray:
    """The fit phase as a Beam job of its own: the statistics vector (the
    parameters, then the bounds, center, scale and histograms of every slot).

    Inside TFX the same arithmetic runs as the TFT analyzer
    `fit_phase_analyzer`; here every analysis phase is a plain Beam pass, so
    the graph needs no TFT analysis job: `write_graph` saves it with the
    vector as a constant.
    """
    combine = FitPhaseCombineFn(
        slots, parameters, mads, slot_output_bounds(passes.config)
    )

    def inputs(element, config):
        return fit_values(passes.dense(element), config)

    return passes.combine("statistics", combine, inputs, passes.source())


def _versions() -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    return {
        "tanhguard_version": version("tanhguard"),
        "tensorflow_transform_version": version("tensorflow-transform"),
    }


def _require_rows(files: Sequence[str], has_rows: bool) -> None:
    if not has_rows:
        raise DataError(
            f"no data rows: {len(files)} file(s) hold no rows "
            f"({', '.join(files[:3])}{', ...' if len(files) > 3 else ''})"
        )


def run_analyze(
    config: Config,
    data: str,
    output: str | Path,
    beam_args: Sequence[str] = (),
    overwrite: bool = False,
    fmt: str | None = None,
    rows_format: str | None = None,
    protect: Sequence[str | Path] = (),
    keep: Sequence[str] = (),
) -> dict[str, Any]:
    """Analyzes the files matching `data` and writes the artifacts.

    With `rows_format` (`parquet`, `tfrecord` or `csv`), the same pipeline also
    transforms every row and writes the shards into `output/rows/`
    (`tanhguard run`).

    Args:
      config: The validated config.
      data: A path or glob of CSV, TFRecord or Parquet files (see
        `tanhguard.pipeline.readers`).
      output: The artifacts directory; it appears only when complete.
      beam_args: Beam pipeline flags, e.g. `--runner=...`; with none, Beam's
        in-process `FnApiRunner` (see `beam_runner`).
      overwrite: Replace an existing `output`.
      fmt: `csv`, `tfrecord` or `parquet`; by default, from each file's content.
      rows_format: see above.
      protect: More paths `output` must not be or contain (the config file);
        the input files always are (see `output_dir.publish_dir`).
      keep: With `rows_format`, columns copied into the rows unchanged
        (CSV and Parquet input; see `kept_columns`).

    Returns:
      The content of stats.json.

    Raises:
      DataError: A file is missing, has no header, lacks a configured column,
        holds a non-numeric cell, or the dataset has no rows.
      OutputExistsError: `output` exists and `overwrite` is false.
      OptionsError: `beam_args` that Beam rejects (`beam_runner.new_pipeline`).
    """
    started = time.monotonic()
    graph = graph_process.take(data, fmt)  # imports TensorFlow during the passes
    try:
        thread_count()  # a bad TANHGUARD_THREADS fails here, not in a worker
        spill.spill_enabled()  # and a bad TANHGUARD_SPILL
        malloc_enabled()  # and TANHGUARD_MALLOC (the command line read it)
        files, fmt, has_rows = resolve_inputs(data, config, fmt, exclude=protect)
        if keep and rows_format is None:
            raise ConfigError("kept columns are for the transformed rows (`run`)")
        kept = kept_schema(files, fmt, keep, config)
        if graph is not None and "tensorflow" in sys.modules:
            # The input needed TensorFlow here (TFRecord, a `gs://` path):
            # the graph is saved in this process, without a second import.
            graph.stop()
            graph = None
        if graph is None:
            logger.debug("TensorFlow is loaded: the graph is saved in this process")
        _require_rows(files, has_rows)
        logger.info("analyzing %d %s file(s) matching %s", len(files), fmt, data)
        preload_charts()  # for report.html, while the passes run
        protect = [*files, *protect]
        with publish_dir(output, overwrite=overwrite, protect=protect) as staging:
            try:
                stats = _analyze_into(
                    config,
                    data,
                    (files, fmt),
                    beam_args,
                    staging,
                    (rows_format, kept),
                    graph,
                    started,
                )
            finally:
                if graph is not None:  # before the staging directory goes
                    graph.stop()
    finally:
        if graph is not None:
            graph.stop()
    return stats


def _analyze_into(
    config: Config,
    data: str,
    inputs: tuple[Sequence[str], str],
    beam_args: Sequence[str],
    staging: Path,
    rows: tuple[str | None, pa.Schema | None],
    graph: GraphProcess | None,
    started: float,
) -> dict[str, Any]:
    """Every artifact into `staging` (`inputs`: the files and their format;
    `rows`: the rows' output format, or None, and the kept columns' schema;
    `started`: the run's `time.monotonic()`); returns stats.json's content."""
    files, fmt = inputs
    options = PipelineOptions(list(beam_args))
    with data_errors_unwrapped(), work_dir(options, staging) as work:
        local = work == str(staging)  # no --temp_location
        if graph is not None and not fs.is_local(work):
            # This process imported TensorFlow to reach the work directory,
            # and a filesystem of its own (`ram://`) is not the child's: the
            # graph is saved here.
            graph.stop()
            graph = None
        vector = _analyze(
            config, files, fmt, options, work, staging, rows, graph, local
        )
        stats = {
            "format_version": STATS_FORMAT_VERSION,
            **_versions(),
            **unpack_stats_vector(config, vector),
            "data": {"pattern": data, "format": fmt, "files": files},
            "config": config.to_json_dict(),
            "elapsed_seconds": round(time.monotonic() - started, 3),
        }
        write_stats(staging, stats)
        write_tfdv_stats(staging, stats)
        write_report(staging)
        if graph is not None:
            graph.wait()  # it saved the graph meanwhile
            stats["elapsed_seconds"] = round(time.monotonic() - started, 3)
            write_stats(staging, stats)
    return stats


def _analyze(
    config: Config,
    files: Sequence[str],
    fmt: str,
    options: PipelineOptions,
    work: str,
    staging: Path,
    rows: tuple[str | None, pa.Schema | None],
    graph: GraphProcess | None,
    local: bool,
) -> np.ndarray:
    """The analysis passes; the graph (and with `rows`' format, the rows,
    with its kept columns) go into `work`, the raw schema into `staging`.
    Returns the statistics vector the graph holds; `graph`, if given, may
    still be saving it. `local`: `work` is `staging` (the parsed batches may
    be kept there)."""
    rows_format, kept_columns = rows
    scratch = posixpath.join(work, SCRATCH)
    kept = spill.spill_dir(scratch, fmt) if local else None
    passes = _Passes(config, files, fmt, options, scratch, kept)
    slots = plan_slots(config)
    count = 3 if needs_mad(slots) else 2
    logger.info("pass 1 of %d: counts, moments and quantiles", count)
    parameters = first_phase(passes)
    check_finite_data(slots, parameters)  # before any other pass
    if graph is not None:
        graph.check()  # a graph process that failed is reported now
    passes = passes.after_first(parameters)
    source = " (the parsed values kept on disk)" if passes.spilled else ""
    mads = None
    if needs_mad(slots):
        logger.info("pass 2 of %d: median absolute deviations%s", count, source)
        mads = mad_phase(passes, parameters, slots)
    logger.info("pass %d of %d: bounds, center and scale%s", count, count, source)
    vector = fit_phase(passes, parameters, mads, slots)
    spill.remove(passes.spill)
    logger.info("saving the transform graph")
    if graph is None:
        write_graph(config, parameters, vector, work, staging)
    else:
        graph.send(config, parameters, vector, work, staging)
    if rows_format is not None:
        if graph is not None:
            graph.wait()
        load_tensorflow()  # quietly, before the transform job imports it
        from tanhguard.pipeline.transform_job import (
            TRANSFORM_BATCH_VALUES,
            TransformAndWrite,
        )

        logger.info("transforming the rows")
        fs.makedirs(posixpath.join(work, ROWS_DIR))
        rows_prefix = posixpath.join(work, ROWS_DIR, "part")
        with new_pipeline(options) as pipeline:
            batches = pipeline | "Read" >> ReadRecordBatches(
                files, config, fmt, TRANSFORM_BATCH_VALUES, kept_columns
            )
            _ = batches | "TransformAndWrite" >> TransformAndWrite(
                config, work, rows_prefix, rows_format, keep=kept_columns
            )
    return vector
