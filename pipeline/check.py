"""`tanhguard check`: new data against the training data's statistics.

One streaming pass over the new files, on any Beam runner, counts per
feature element what the training graph would do to them: values missing,
NaN, +Inf, -Inf, and finite values clipped below `lower` and above `upper`
(the bounds in stats.json, which are the graph's), plus a histogram of the
finite values over the training histogram's bins (stats.json format 4;
older artifacts have none, and get no drift). Then it compares them with the
training data:

- clipped share: finite values outside `[lower, upper]` over finite values
  (as stats.json's `clipped_below + clipped_above`);
- non-finite share: values missing, NaN or +-Inf over all values;
- drift: the L-infinity distance between the training and the new
  histograms, each normalized to shares of the finite values (the largest
  difference of one bin's share; TFDV's drift measure for histograms).

A feature fails when its clipped share or its non-finite share grew by more
than the thresholds (absolute shares, default 0.05 each), or, with
`max_drift`, when its drift exceeds it. A vector feature is judged by each
element; the table shows its worst one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import posixpath
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from tanhguard.errors import ArtifactsError, DataError
from tanhguard.pipeline.artifacts import load_artifacts_config, load_stats
from tanhguard.pipeline.batch_layout import dense_batch, row_width
from tanhguard.pipeline.beam_runner import new_pipeline
from tanhguard.pipeline.job_errors import data_errors_unwrapped
from tanhguard.pipeline.readers import ReadRecordBatches, resolve_inputs
from tanhguard.pipeline.report import element_at
from tanhguard.pipeline.workdir import SaveGlobally, load_saved
from tanhguard.transforms.config import Config

logger = logging.getLogger(__name__)

WIDTH = 100
# Counters per element column, in this order.
COUNTERS = ("missing", "nan", "pos_inf", "neg_inf", "below", "above", "finite")


@dataclasses.dataclass(frozen=True)
class _Element:
    """One element column: the feature, the index (None for a scalar or a
    shared vector's set), its bounds and its bin edges."""

    feature: str
    index: int | None
    columns: tuple[int, ...]
    lower: float
    upper: float
    edges: np.ndarray  # histogram edges; values outside count in the end bins
    train_shares: np.ndarray  # [len(edges) + 1]: below, bins..., above


def _training_histogram(feature: dict, index: int | None) -> tuple[np.ndarray, ...]:
    """`(edges, shares)` of the training's finite values: the shares of
    below, each bin, above. Artifacts without histograms (stats.json before
    format 4) or a feature without finite values give no edges: no drift."""
    histogram = feature.get("histogram")
    histogram = None if histogram is None else element_at(histogram, index)
    if not histogram or not histogram.get("edges"):
        return np.zeros(0), np.ones(1)
    edges = np.asarray(histogram["edges"], np.float64)
    counts = np.asarray(
        [histogram["below"], *histogram["counts"], histogram["above"]], np.float64
    )
    return edges, counts / max(counts.sum(), 1.0)


def plan_elements(config: Config, stats: dict[str, Any]) -> list[_Element]:
    """The element columns to check, in config order."""
    elements, offset = [], 0
    for name, feature_config in config.features.items():
        feature = stats["features"][name]
        size = feature_config.size
        columns = list(range(offset, offset + size))
        offset += size
        groups = (
            [(i, (c,)) for i, c in enumerate(columns)]
            if feature_config.is_vector and feature_config.elementwise
            else [(None, tuple(columns))]
        )
        for index, cols in groups:
            lower = element_at(feature["clip"]["lower"], index)
            upper = element_at(feature["clip"]["upper"], index)
            edges, shares = _training_histogram(feature, index)
            elements.append(_Element(name, index, cols, lower, upper, edges, shares))
    return elements


class CheckCombineFn(beam.CombineFn):
    """Sums the counters and histograms of every batch: one flat int64
    vector, `[counters x D, then each element's len(edges) + 1 bins]`."""

    def __init__(self, elements: Sequence[_Element], columns: int):
        self._elements = list(elements)
        self._columns = columns
        self._size = len(COUNTERS) * columns + sum(
            len(e.edges) + 1 for e in self._elements
        )

    def create_accumulator(self) -> np.ndarray:
        return np.zeros(self._size, np.int64)

    def add_input(self, accumulator: np.ndarray, inputs) -> np.ndarray:
        x, missing = inputs
        nan = np.isnan(x) & ~missing
        finite = np.isfinite(x)
        counters = np.zeros((len(COUNTERS), self._columns), np.int64)
        counters[0] = missing.sum(axis=0)
        counters[1] = nan.sum(axis=0)
        counters[2] = (x == np.inf).sum(axis=0)
        counters[3] = (x == -np.inf).sum(axis=0)
        counters[6] = finite.sum(axis=0)
        bins = []
        for element in self._elements:
            cols = list(element.columns)
            values = x[:, cols]
            ok = finite[:, cols]
            counters[4, cols] = (ok & (values < element.lower)).sum(axis=0)
            counters[5, cols] = (ok & (values > element.upper)).sum(axis=0)
            finite_values = values[ok]
            # Bin i+1 holds edges[i] <= v < edges[i+1]; 0 and the last hold
            # the values below and above the edges.
            positions = np.searchsorted(element.edges, finite_values, side="right")
            if element.edges.size:
                top = finite_values == element.edges[-1]
                positions[top] = element.edges.size - 1  # numpy's closed last bin
            bins.append(np.bincount(positions, minlength=len(element.edges) + 1))
        accumulator += np.concatenate([counters.ravel(), *bins])
        return accumulator

    def merge_accumulators(self, accumulators) -> np.ndarray:
        accumulators = iter(accumulators)
        total = next(accumulators).copy()
        for accumulator in accumulators:
            total += accumulator
        return total

    def extract_output(self, accumulator: np.ndarray) -> np.ndarray:
        return accumulator


@dataclasses.dataclass
class ElementCheck:
    """The new data against the training data, for one element."""

    feature: str
    index: int | None
    rows: int
    train_nonfinite: float
    new_nonfinite: float
    new_missing: float
    new_nan: float
    new_inf: float
    train_clipped: float
    new_clipped_below: float
    new_clipped_above: float
    drift: float | None  # None: no training histogram, or no finite values
    # The training histogram's edges and, over [below, bins..., above], the
    # shares of finite values in each (empty without a training histogram).
    edges: list[float] = dataclasses.field(default_factory=list)
    train_shares: list[float] = dataclasses.field(default_factory=list)
    new_shares: list[float] = dataclasses.field(default_factory=list)

    @property
    def new_clipped(self) -> float:
        return self.new_clipped_below + self.new_clipped_above

    @property
    def label(self) -> str:
        return self.feature if self.index is None else f"{self.feature}[{self.index}]"


@dataclasses.dataclass
class CheckResult:
    """`tanhguard check`'s findings; `failed` names what exceeded a threshold."""

    artifacts: str
    data: str
    rows: int
    elements: list[ElementCheck]
    max_clipped_increase: float
    max_missing_increase: float
    max_drift: float | None

    def reasons(self, element: ElementCheck) -> list[str]:
        reasons = []
        clipped = element.new_clipped - element.train_clipped
        if clipped > self.max_clipped_increase:
            reasons.append(f"clipped {_pct(clipped, sign=True)}")
        nonfinite = element.new_nonfinite - element.train_nonfinite
        if nonfinite > self.max_missing_increase:
            reasons.append(f"missing/NaN/Inf {_pct(nonfinite, sign=True)}")
        drift = element.drift
        if self.max_drift is not None and drift is not None and drift > self.max_drift:
            reasons.append(f"drift {element.drift:.3f}")
        return reasons

    @property
    def failed(self) -> dict[str, list[str]]:
        """Feature -> its reasons (each element's, labelled for a vector)."""
        failed: dict[str, list[str]] = {}
        for element in self.elements:
            reasons = self.reasons(element)
            if reasons:
                prefix = "" if element.index is None else f"[{element.index}] "
                failed.setdefault(element.feature, []).extend(
                    prefix + reason for reason in reasons
                )
        return failed

    def worst_elements(self) -> list[ElementCheck]:
        """Per feature, the element that grew most (a scalar: itself)."""
        worst: dict[str, ElementCheck] = {}
        for element in self.elements:
            best = worst.get(element.feature)
            if best is None or _severity(element) > _severity(best):
                worst[element.feature] = element
        return list(worst.values())

    def table(self) -> str:
        """One line per feature (a vector: its element with the largest
        clipped increase), at most 100 columns; then the verdict."""
        header = (
            f"{'feature':<18}{'non-finite':>11}{'(train)':>9}{'clipped':>9}"
            f"{'(train)':>9}{'below':>8}{'above':>8}{'drift':>8}  result"
        )
        lines = [
            f"Checked {self.rows:,} rows of {self.data}",
            f"against the training statistics in {self.artifacts}",
            header,
            "-" * min(WIDTH, len(header) + 6),
        ]
        for element in self.worst_elements():
            reasons = self.reasons(element)
            label = element.label
            if len(label) > 17:
                label = label[:16] + "~"
            lines.append(
                f"{label:<18}{_pct(element.new_nonfinite):>11}"
                f"{_pct(element.train_nonfinite):>9}{_pct(element.new_clipped):>9}"
                f"{_pct(element.train_clipped):>9}"
                f"{_pct(element.new_clipped_below):>8}"
                f"{_pct(element.new_clipped_above):>8}{_drift(element.drift):>8}  "
                + ("FAIL" if reasons else "ok")
            )
        lines.append("")
        lines.append(
            "non-finite: share of values missing, NaN or +-Inf; clipped: share of "
            "finite values"
        )
        lines.append(
            "outside the training clip bounds (below + above); drift: L-infinity "
            "distance of the"
        )
        lines.append("finite values' histograms (training vs new).")
        if self.failed:
            named = "; ".join(
                f"{name} ({', '.join(reasons)})"
                for name, reasons in self.failed.items()
            )
            lines.append(f"FAILED: {named}")
        else:
            lines.append("OK: no threshold exceeded.")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "artifacts": self.artifacts,
            "data": self.data,
            "rows": self.rows,
            "thresholds": {
                "max_clipped_increase": self.max_clipped_increase,
                "max_missing_increase": self.max_missing_increase,
                "max_drift": self.max_drift,
            },
            "failed": self.failed,
            "elements": [
                {**dataclasses.asdict(e), "new_clipped": e.new_clipped}
                for e in self.elements
            ],
        }


def _severity(element: ElementCheck) -> tuple[float, float]:
    return (
        max(
            element.new_clipped - element.train_clipped,
            element.new_nonfinite - element.train_nonfinite,
        ),
        element.drift or 0.0,
    )


def _drift(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pct(share: float, sign: bool = False) -> str:
    return f"{100 * share:+.2f}%" if sign else f"{100 * share:.2f}%"


@contextlib.contextmanager
def _scratch(options: PipelineOptions) -> Iterator[str]:
    """A directory the workers can write: under `--temp_location` when
    given, else a local temporary directory; removed afterwards."""
    temp_location = options.view_as(GoogleCloudOptions).temp_location
    if not temp_location:
        with tempfile.TemporaryDirectory(prefix="tanhguard-check-") as local:
            yield local
        return
    work = posixpath.join(temp_location, f"tanhguard-check-{uuid.uuid4().hex}")
    tf.io.gfile.makedirs(work)
    try:
        yield work
    finally:
        if tf.io.gfile.exists(work):
            tf.io.gfile.rmtree(work)


def _compare(
    elements: Sequence[_Element], stats: dict, totals: np.ndarray, columns: int
) -> list[ElementCheck]:
    counters = totals[: len(COUNTERS) * columns].reshape(len(COUNTERS), columns)
    bins = totals[len(COUNTERS) * columns :]
    checks = []
    for element in elements:
        cols = list(element.columns)
        size = len(element.edges) + 1
        histogram, bins = bins[:size].astype(np.float64), bins[size:]
        c = {name: int(counters[i, cols].sum()) for i, name in enumerate(COUNTERS)}
        values = c["missing"] + c["nan"] + c["pos_inf"] + c["neg_inf"] + c["finite"]
        feature = stats["features"][element.feature]

        def train(field: str, feature=feature, element=element) -> float:
            return float(element_at(feature[field], element.index))

        train_values = sum(
            train(f) for f in ("count", "missing", "nan", "pos_inf", "neg_inf")
        )
        new_shares = histogram / max(histogram.sum(), 1.0)
        has_bins = bool(element.edges.size)
        drift = (
            float(np.max(np.abs(new_shares - element.train_shares)))
            if c["finite"] and element.edges.size
            else None
        )
        checks.append(
            ElementCheck(
                feature=element.feature,
                index=element.index,
                rows=values // len(cols),
                train_nonfinite=(train_values - train("count")) / max(train_values, 1),
                new_nonfinite=(values - c["finite"]) / max(values, 1),
                new_missing=c["missing"] / max(values, 1),
                new_nan=c["nan"] / max(values, 1),
                new_inf=(c["pos_inf"] + c["neg_inf"]) / max(values, 1),
                train_clipped=train("clipped_below") + train("clipped_above"),
                new_clipped_below=c["below"] / max(c["finite"], 1),
                new_clipped_above=c["above"] / max(c["finite"], 1),
                drift=drift,
                edges=element.edges.tolist(),
                train_shares=element.train_shares.tolist() if has_bins else [],
                new_shares=new_shares.tolist() if has_bins else [],
            )
        )
    return checks


def check(
    artifacts: str | Path,
    data: str,
    beam_args: Sequence[str] = (),
    fmt: str | None = None,
    max_clipped_increase: float = 0.05,
    max_missing_increase: float = 0.05,
    max_drift: float | None = None,
) -> CheckResult:
    """Checks the files matching `data` against the training statistics in
    `artifacts`; one streaming Beam pass (any runner, `beam_args`).

    Raises:
      ArtifactsError: `artifacts` is not an artifacts directory.
      DataError: a file is missing or unreadable, or holds no rows.
      OptionsError: `beam_args` that Beam rejects (`beam_runner.new_pipeline`).
    """
    for name, value in (
        ("max_clipped_increase", max_clipped_increase),
        ("max_missing_increase", max_missing_increase),
        ("max_drift", max_drift),
    ):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a share in [0, 1]; got {value}")
    config = load_artifacts_config(artifacts)
    stats = load_stats(artifacts)
    if "features" not in stats:
        raise ArtifactsError(f"{artifacts}: stats.json has no `features`")
    files, fmt, has_rows = resolve_inputs(data, config, fmt)
    if not has_rows:
        raise DataError(f"no data rows in {len(files)} file(s) matching {data}")
    try:
        elements = plan_elements(config, stats)
    except (KeyError, TypeError, IndexError) as error:
        raise ArtifactsError(
            f"{artifacts}: stats.json lacks a field check needs ({type(error).__name__}"
            f": {error}); written by another tanhguard version?"
        ) from None
    if max_drift is not None and not any(e.edges.size for e in elements):
        raise ArtifactsError(
            f"{artifacts}: stats.json has no histograms (format "
            f"{stats.get('format_version')}, before 4): drift cannot be judged; "
            "run `tanhguard analyze` again, or leave out --max-drift"
        )
    columns = row_width(config)
    logger.info("checking %d %s file(s) matching %s", len(files), fmt, data)
    options = PipelineOptions(list(beam_args))
    with data_errors_unwrapped(), _scratch(options) as work:
        target = posixpath.join(work, "check.npy")
        combine = CheckCombineFn(elements, columns)
        with new_pipeline(options) as pipeline:
            _ = (
                pipeline
                | "Read" >> ReadRecordBatches(files, config, fmt)
                | "Inputs" >> beam.Map(dense_batch, config=config)
                | "CountAndSave" >> SaveGlobally(combine, target)
            )
        totals = load_saved(target, combine)
    checks = _compare(elements, stats, totals, columns)
    return CheckResult(
        artifacts=str(artifacts),
        data=data,
        rows=checks[0].rows if checks else 0,
        elements=checks,
        max_clipped_increase=max_clipped_increase,
        max_missing_increase=max_missing_increase,
        max_drift=max_drift,
    )
