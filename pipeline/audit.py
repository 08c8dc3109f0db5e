"""`tanhguard audit`: the proven pre-activation range of every tanh layer.

The preprocessing bounds every model input (`input_boxes`: `[-B, B]`, or
tighter where stats.json proves it; `{0, 1}` for indicators). Interval bound
propagation (`tanhguard.pipeline.interval_bounds`) carries that box through
the model to each tanh-bearing layer, which tells whether a hand-written
tanh, `(e^z - e^-z) / (e^z + e^-z)`, can overflow (|z| > 88.72 in float32,
709.78 in float64), and which units can reach `tf.tanh`'s exact +-1. The same
is done on raw, unguarded inputs for contrast. With data, the rows go through
the preprocessing and the model, and every observed pre-activation is checked
against the proven interval.

>>> result = audit(model, "demo-output/artifacts")  # doctest: +SKIP
>>> print(result.table())                             # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tanhguard.errors import ExportError
from tanhguard.pipeline.interval_bounds import (
    TANH_NAMES,
    Box,
    activation_name,
    make_box,
    propagate,
    walk_model,
)

logger = logging.getLogger(__name__)

# e^z overflows past log(max): a hand-written tanh is inf/inf = NaN there.
OVERFLOW_FLOAT32 = float(np.log(np.float64(np.finfo(np.float32).max)))  # 88.7228
OVERFLOW_FLOAT64 = float(np.log(np.finfo(np.float64).max))  # 709.7827
# A correctly rounded float32 tanh is exactly +-1 from |z| >= 13 ln 2: there
# 1 - tanh(z) < 2^-25, half an ulp below 1.
SATURATION_FLOAT32 = 13 * math.log(2.0)  # 9.0109
# An activation counts as saturated, observed, when |tanh(z)| > 0.99.
OBSERVED_SATURATION = 0.99
FAIL_CONDITIONS = ("overflow", "saturation")
TABLE_WIDTH = 100


# ---------------------------------------------------------------------------
# The input box


def _per_slot(value: Any, size: int) -> np.ndarray:
    """A stats.json value (number, list or null) as `[size]` float64."""
    if isinstance(value, list):
        return np.array([np.nan if v is None else v for v in value], np.float64)
    return np.full(size, np.nan if value is None else value, np.float64)


def _feature_box(feature, entry: dict[str, Any]) -> Box:
    """The box of a feature's value output from its stats.json entry.

    out = clip((g(clip(v, lower, upper)) - center) / scale, -b, b), with b
    the float32 bound; 0 where scale is 0. Without finite clip bounds it is
    `[-b, b]`. Widened by 4 float32 ulp (the graph computes in float32).
    """
    from tanhguard.transforms.mappers import float32_bound
    from tanhguard.transforms.strategies import log_transform

    size = feature.size
    limit = float(float32_bound(feature.output_bound))
    lower = _per_slot(entry["clip"]["lower"], size)
    upper = _per_slot(entry["clip"]["upper"], size)
    center = _per_slot(entry["scale"]["center"], size)
    scale = _per_slot(entry["scale"]["scale"], size)
    if feature.scale.log:
        lower, upper = log_transform(lower), log_transform(upper)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        low = (lower - center) / scale
        high = (upper - center) / scale
    slack = 4 * 2.0**-24
    low = low - np.abs(low) * slack - 1e-30
    high = high + np.abs(high) * slack + 1e-30
    low = np.where(np.isfinite(low), np.maximum(low, -limit), -limit)
    high = np.where(np.isfinite(high), np.minimum(high, limit), limit)
    constant = scale == 0
    low = np.where(constant, 0.0, low)
    high = np.where(constant, 0.0, high)
    return make_box(low, high)


def input_boxes(artifacts: str | Path) -> tuple[dict[str, Box], dict[str, Box]]:
    """The box of every preprocessing output, guarded and raw.

    Returns:
      `(guarded, raw)`: output name -> `[size]` box. Guarded: each value
      output's range (from stats.json), `[0, 1]` for indicators. Raw: the
      same model fed the raw feature instead: unbounded values.

    Raises:
      ArtifactsError: not an artifacts directory, or a broken stats.json.
    """
    from tanhguard.errors import ArtifactsError
    from tanhguard.pipeline.artifacts import load_artifacts_config, load_stats

    config = load_artifacts_config(artifacts)
    stats = load_stats(artifacts)
    guarded: dict[str, Box] = {}
    raw: dict[str, Box] = {}
    for name, feature in config.features.items():
        entry = stats.get("features", {}).get(name)
        try:
            guarded[name] = _feature_box(feature, entry)
        except (TypeError, KeyError, ValueError) as error:
            raise ArtifactsError(
                f"{Path(artifacts) / 'stats.json'}: feature `{name}`: no usable "
                f"clip and scale entry ({error!r}); write it again with "
                "`tanhguard analyze`"
            ) from None
        size = feature.size
        raw[name] = make_box(np.full(size, -np.inf), np.full(size, np.inf))
        for output in config.output_names(name)[1:]:
            guarded[output] = make_box(np.zeros(size), np.ones(size))
            raw[output] = guarded[output]
    return guarded, raw


def _model_input_names(model) -> list[str]:
    from tanhguard.pipeline.serving import _input_names

    return _input_names(model)


def model_input_boxes(model, boxes: dict[str, Box], config) -> list[Box]:
    """One box per `model.inputs`: named outputs, or the model matrix
    (`tanhguard.pipeline.serving.model_matrix`), reshaped to each input.

    Raises:
      ExportError: the model has no inputs, or an input's size is not what
        the preprocessing gives it.
    """
    inputs = list(getattr(model, "inputs", None) or [])
    if not inputs:
        raise ExportError(
            f"model `{model.name}`: has no defined inputs; build it with "
            "`Input(...)` (or call it once) before the audit"
        )
    names = _model_input_names(model)
    known = set(config.model_matrix_names())
    if names and all(name in known for name in names):
        given = [(name, boxes[name]) for name in names]
    else:
        if len(inputs) != 1:
            raise ExportError(
                f"model `{model.name}`: {len(inputs)} inputs named {names}; expected "
                f"one matrix input or inputs named after the outputs "
                f"{config.model_matrix_names()}"
            )
        columns = [boxes[name] for name in config.model_matrix_names()]
        matrix = make_box(
            np.concatenate([b.lower for b in columns]),
            np.concatenate([b.upper for b in columns]),
        )
        given = [("the model matrix", matrix)]
    result = []
    for tensor, (name, box) in zip(inputs, given, strict=True):
        shape = tuple(tensor.shape)[1:]
        if None in shape or int(np.prod(shape)) != box.lower.size:
            raise ExportError(
                f"model `{model.name}`: input `{getattr(tensor, 'name', '?')}` has "
                f"shape {list(shape)}, but {name} has {box.lower.size} value(s) "
                "per row"
            )
        result.append(box.reshape(shape))
    return result


# ---------------------------------------------------------------------------
# The result


@dataclass
class Bounds:
    """A pre-activation interval over a layer's units."""

    lower: float
    upper: float
    max_abs: float
    saturated_units: float  # share of units whose interval reaches 9.01
    unbounded_after: str | None

    @classmethod
    def of(cls, box: Box) -> Bounds:
        magnitude = box.magnitude()
        return cls(
            lower=float(np.min(box.lower)),
            upper=float(np.max(box.upper)),
            max_abs=float(np.max(magnitude)),
            saturated_units=float(np.mean(magnitude >= SATURATION_FLOAT32)),
            unbounded_after=box.unbounded_after,
        )


@dataclass
class Observed:
    """What `--data` saw at one layer."""

    values: int = 0
    lower: float = math.inf
    upper: float = -math.inf
    max_abs: float = 0.0
    saturated: float = 0.0  # share of values with |tanh(z)| > 0.99
    outside: int = 0  # values outside the proven interval
    nonfinite: int = 0


@dataclass
class LayerAudit:
    """One tanh-bearing activation: its proven, raw and observed ranges."""

    layer: str
    layer_class: str
    part: str
    activation: str
    units: int
    proven: Bounds
    raw: Bounds
    observed: Observed | None = None

    @property
    def label(self) -> str:
        """The layer's path, and the recurrent part in brackets (`lstm[cell]`)."""
        return self.layer + (f"[{self.part}]" if self.part else "")

    @property
    def checked(self) -> bool:
        """Overflow and saturation apply: a tanh, or an unknown activation
        (a hand-written tanh is one)."""
        return self.activation in TANH_NAMES or self.activation == "unknown"

    @property
    def can_overflow(self) -> bool:
        return self.checked and not self.proven.max_abs <= OVERFLOW_FLOAT32

    @property
    def can_saturate(self) -> bool:
        return self.checked and self.proven.saturated_units > 0

    def advice(self, output_bound: float) -> str | None:
        """What would bring a finite max |z| below the float32 overflow."""
        if not self.can_overflow:
            return None
        if not math.isfinite(self.proven.max_abs):
            where = self.proven.unbounded_after
            return f"unbounded after layer `{where}`: not analysed" if where else None
        factor = OVERFLOW_FLOAT32 / self.proven.max_abs
        # Only the weights scale z exactly: a smaller output_bound shrinks
        # only the inputs whose range reaches it, so no number is given for it.
        return (
            f"max |z| {self.proven.max_abs:.4g} > {OVERFLOW_FLOAT32:.2f}: scale the "
            f"weights into it down by {factor:.3g} (e.g. a kernel constraint or "
            f"L1 penalty), or lower output_bound (now {output_bound:g}) and audit "
            "again; or use tf.tanh / stable_tanh"
        )


@dataclass
class AuditResult:
    """The audit of one model against one artifacts directory."""

    model: str
    artifacts: str
    layers: list[LayerAudit]
    unknown_layers: list[str]
    output_bound: float
    seconds: float
    rows: int | None = None
    notes: list[str] = field(default_factory=list)

    def fails(self, condition: str | None) -> bool:
        """True when `condition` ("overflow" or "saturation") is met."""
        if condition is None:
            return False
        if condition == "overflow":
            return any(layer.can_overflow for layer in self.layers)
        if condition == "saturation":
            return any(layer.can_saturate for layer in self.layers)
        raise ValueError(
            f"`fail_on` must be one of {FAIL_CONDITIONS}. Received: {condition!r}"
        )

    @property
    def data_inside(self) -> bool | None:
        """Every observed value inside its proven interval (None: no data)."""
        if self.rows is None:
            return None
        return all(
            layer.observed is None or layer.observed.outside == 0
            for layer in self.layers
        )

    def to_json(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        layers = []
        for layer in self.layers:
            entry = asdict(layer)
            entry["can_overflow_float32"] = layer.can_overflow
            entry["can_overflow_float64"] = layer.checked and not (
                layer.proven.max_abs <= OVERFLOW_FLOAT64
            )
            entry["can_saturate"] = layer.can_saturate
            entry["advice"] = layer.advice(self.output_bound)
            layers.append(entry)
        return clean(
            {
                "model": self.model,
                "artifacts": self.artifacts,
                "thresholds": {
                    "overflow_float32": OVERFLOW_FLOAT32,
                    "overflow_float64": OVERFLOW_FLOAT64,
                    "saturation_float32": SATURATION_FLOAT32,
                    "observed_saturation": OBSERVED_SATURATION,
                },
                "layers": layers,
                "unknown_layers": self.unknown_layers,
                "rows": self.rows,
                "data_inside_proven": self.data_inside,
                "seconds": self.seconds,
                "notes": self.notes,
            }
        )

    def table(self) -> str:
        """A readable table (at most 100 columns) and notes."""
        header = (
            f"{'layer':<22} {'act':<8} {'proven z':>19} {'max|z|':>8} {'ovf':>3} "
            f"{'sat':>5} {'raw max|z|':>10} {'ovf':>3}"
        )
        if self.rows is not None:
            header += f" {'seen':>7} {'sat':>5}"
        lines = [
            f"Audit of `{self.model}` against {self.artifacts} "
            f"(output bound {self.output_bound:g})",
            header,
            "-" * len(header),
        ]
        for layer in self.layers:
            name = layer.label
            if len(name) > 22:
                name = "..." + name[-19:]
            proven = layer.proven
            span = f"[{_num(proven.lower)}, {_num(proven.upper)}]"
            raw_overflow = layer.checked and not layer.raw.max_abs <= OVERFLOW_FLOAT32
            line = (
                f"{name:<22} {layer.activation[:8]:<8} {span:>19} "
                f"{_num(proven.max_abs):>8} {_flag(layer, layer.can_overflow):>3} "
                f"{_share(proven.saturated_units, layer.checked):>5} "
                f"{_num(layer.raw.max_abs):>10} "
                f"{_flag(layer, raw_overflow):>3}"
            )
            if self.rows is not None and layer.observed is not None:
                seen = layer.observed
                line += f" {_num(seen.max_abs):>7} {_share(seen.saturated, True):>5}"
            lines.append(line)
        lines.append("")
        lines.append(
            f"z: pre-activation. ovf: a hand-written tanh (e^z - e^-z)/(e^z + e^-z) "
            f"can overflow to NaN (|z| > {OVERFLOW_FLOAT32:.2f} in float32; "
            f"{OVERFLOW_FLOAT64:.2f} in float64)."
        )
        lines.append(
            f"sat: share of units whose interval reaches |z| >= "
            f"{SATURATION_FLOAT32:.2f}, where float32 tanh is exactly +-1."
        )
        if self.rows is not None:
            lines.append(
                f"seen: observed max |z| on {self.rows:,} rows; sat: share of "
                f"activations with |tanh| > {OBSERVED_SATURATION}."
            )
            verdict = (
                "every observed value lies inside its proven interval"
                if self.data_inside
                else "SOME OBSERVED VALUES LIE OUTSIDE THE PROVEN INTERVAL (a bug)"
            )
            lines.append(f"Check: {verdict}.")
        for layer in self.layers:
            advice = layer.advice(self.output_bound)
            if advice and math.isfinite(layer.proven.max_abs):
                lines.append(f"{layer.layer}: {advice}")
        for unknown in self.unknown_layers:
            lines.append(
                f"unbounded after layer `{unknown}`: not a layer the audit knows "
                "(Lambda or custom); bounds stop there"
                + ("; the observed figures still cover it" if self.rows else "")
            )
        lines.extend(self.notes)
        lines.append(f"Audited in {self.seconds:.2f} s.")
        wrapped = []
        for line in lines:
            wrapped += textwrap.wrap(line, TABLE_WIDTH, subsequent_indent="  ") or [""]
        return "\n".join(wrapped)


def _num(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.2e}"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def _share(value: float, applies: bool) -> str:
    return f"{value:.0%}" if applies else "-"


def _flag(layer: LayerAudit, value: bool) -> str:
    if not layer.checked:
        return "-"
    return "YES" if value else "no"


# ---------------------------------------------------------------------------
# The audit


def _load_model(model):
    from tanhguard.pipeline.keras_attach import load_keras_model, refuse_guarded

    if isinstance(model, (str, Path)):
        model = load_keras_model(model)
    refuse_guarded(model, "audit")
    return model


def audit(model, artifacts: str | Path, data: str | None = None) -> AuditResult:
    """Proves each tanh layer's pre-activation range from the artifacts' box.

    Args:
      model: A tf_keras or Keras 3 model taking the transformed features (as
        `export --model` does: named outputs or the model matrix), or a path
        to one (`load_keras_model`).
      artifacts: An artifacts directory from `tanhguard analyze`.
      data: Optional file, glob or directory of raw rows (any format
        `analyze` reads): run through the preprocessing and the model, their
        pre-activations are measured and checked against the proven ranges.

    Returns:
      An `AuditResult`: per tanh-bearing activation (Dense/Conv with a tanh
      or unknown activation, `Activation` layers, each gate of SimpleRNN,
      LSTM and GRU), the proven interval, the same on raw inputs, and the
      observed figures with `data`. A layer the audit does not know makes
      every later bound infinite ("unbounded after layer X").

    Raises:
      ArtifactsError: not an artifacts directory.
      ExportError: the model cannot be loaded, or its inputs do not match the
        preprocessing outputs.
      DataError: `data` cannot be read.
    """
    import time

    from tanhguard.pipeline.artifacts import load_artifacts_config

    start = time.perf_counter()
    model = _load_model(model)
    config = load_artifacts_config(artifacts)
    guarded_boxes, raw_boxes = input_boxes(artifacts)
    _, guarded = propagate(model, model_input_boxes(model, guarded_boxes, config))
    _, raw = propagate(model, model_input_boxes(model, raw_boxes, config))
    layers = [
        LayerAudit(
            layer=record.path,
            layer_class=record.layer_class,
            part=record.part,
            activation=record.activation or "unknown",
            units=int(record.box.lower.size),
            proven=Bounds.of(record.box),
            raw=Bounds.of(raw_record.box),
        )
        for record, raw_record in zip(guarded.records, raw.records, strict=True)
    ]
    bounds = {feature.output_bound for feature in config.features.values()}
    result = AuditResult(
        model=model.name,
        artifacts=str(artifacts),
        layers=layers,
        unknown_layers=list(guarded.unknown_layers),
        output_bound=max(bounds),
        seconds=0.0,
    )
    if not layers:
        result.notes.append("The model has no tanh-bearing layer.")
    if data is not None:
        boxes = {(r.path, r.part): r.box for r in guarded.records}
        _observe(model, artifacts, config, data, result, boxes)
    result.seconds = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------
# --data


def _observe(model, artifacts, config, data: str, result: AuditResult, boxes) -> None:
    """Runs the rows of `data` through the preprocessing and the model."""
    import tensorflow_transform as tft
    from tfx_bsl.tfxio import tensor_adapter

    from tanhguard.pipeline.batch_layout import tensor_adapter_config
    from tanhguard.pipeline.readers import read_batches, resolve_inputs
    from tanhguard.pipeline.serving import model_inputs

    files, fmt, _ = resolve_inputs(data, config)
    adapter = tensor_adapter.TensorAdapter(tensor_adapter_config(config))
    output = tft.TFTransformOutput(str(artifacts))
    observed = {(layer.layer, layer.part): Observed() for layer in result.layers}
    rows = 0
    for path in files:
        for batch in read_batches(path, config, fmt):
            transformed = output.transform_raw_features(adapter.ToBatchTensors(batch))
            fed = model_inputs(model, transformed, config)
            values = list(fed.values()) if isinstance(fed, dict) else [fed]
            if isinstance(fed, dict):
                names = _model_input_names(model)
                values = [fed[name] for name in names]
            rows += batch.num_rows
            for key, z in observe_pre_activations(model, values).items():
                if key in observed:
                    _accumulate(observed[key], z, boxes[key])
    result.rows = rows
    for layer in result.layers:
        layer.observed = observed[(layer.layer, layer.part)]


def _accumulate(seen: Observed, z: np.ndarray, box: Box) -> None:
    z = np.asarray(z, np.float64)
    finite = np.isfinite(z)
    seen.nonfinite += int((~finite).sum())
    total = seen.values + z.size
    if z.size:
        values = z[finite]
        if values.size:
            seen.lower = min(seen.lower, float(values.min()))
            seen.upper = max(seen.upper, float(values.max()))
            seen.max_abs = max(seen.max_abs, float(np.abs(values).max()))
        saturated = float(np.sum(np.abs(np.tanh(z)) > OBSERVED_SATURATION))
        seen.saturated = (seen.saturated * seen.values + saturated) / total
        outside = ~((z >= box.lower) & (z <= box.upper))
        seen.outside += int(outside.sum())
    seen.values = total


def observe_pre_activations(model, inputs: list) -> dict[tuple[str, str], np.ndarray]:
    """The pre-activations of every tanh-bearing activation on a batch.

    Args:
      model: The model.
      inputs: One batch per `model.inputs` (arrays or tensors).

    Returns:
      `(layer path, part) -> array`: `[batch, ...]` for a Dense, convolution
      or Activation layer, `[batch, time, units]` for each recurrent gate.
    """
    from tanhguard.pipeline.interval_bounds import (
        _KERNEL_LAYERS,
        _RECURRENT,
        _family_module,
        is_reported,
        recurrent_pre_activations,
    )

    found: dict[tuple[str, str], np.ndarray] = {}

    def apply(layer, values, path, shapes):
        name = type(layer).__name__
        x = values[0] if len(values) == 1 else values
        known = _family_module(layer)
        if (
            known
            and name == "Activation"
            and is_reported(activation_name(layer.activation))
        ):
            found[(path, "")] = np.asarray(x)
        elif known and name in _KERNEL_LAYERS:
            act = getattr(layer, "activation", None)
            if is_reported(activation_name(act)):
                found[(path, "")] = _linear_part(layer, x)
        elif known and name in _RECURRENT and len(values) == 1:
            for part, z in recurrent_pre_activations(layer, np.asarray(x)).items():
                if part != "h":  # the hidden states, not a pre-activation
                    found[(path, part)] = z
        return layer(x)

    walk_model(model, list(inputs), apply)
    return found


def _linear_part(layer, x) -> np.ndarray:
    """`layer(x)` without its activation."""
    from tanhguard.pipeline.interval_bounds import linear_activation

    saved = layer.activation
    layer.activation = linear_activation(layer)
    try:
        return np.asarray(layer(x))
    finally:
        layer.activation = saved


# ---------------------------------------------------------------------------
# Command line


def run_audit_command(args: argparse.Namespace) -> int:
    """Runs `tanhguard audit`; returns the exit status (1 when `--fail-on`
    holds). tanhguard's errors propagate to the CLI's handler."""
    result = audit(args.model, args.artifacts, data=args.data)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.table())
    if result.fails(args.fail_on):
        holds = "can_overflow" if args.fail_on == "overflow" else "can_saturate"
        names = [layer.label for layer in result.layers if getattr(layer, holds)]
        logger.warning(
            "audit failed (--fail-on %s): %s", args.fail_on, ", ".join(names)
        )
        return 1
    if result.data_inside is False:
        logger.warning("audit failed: an observed value lies outside its interval")
        return 1
    return 0
