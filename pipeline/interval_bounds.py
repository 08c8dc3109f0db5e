"""Interval bound propagation through Keras layers (tf_keras and Keras 3).

A `Box` holds, per element of one example (no batch axis), a lower and an
upper bound in float64. `propagate(model, boxes)` walks a Sequential or
Functional model (nested models included) layer by layer and returns the box
of every output; on the way it records the pre-activation box of every
tanh-bearing layer (`Record`): a Dense or convolution with a tanh (or an
unknown) activation, an `Activation("tanh")` layer, and each gate of the
recurrent layers (SimpleRNN, LSTM, GRU).

The bounds are sound for the float32 computation Keras does, not only for
exact arithmetic: linear layers widen by the rounding error of a dot product
of n terms (`gamma_n * (|W| |x| + |b|)`, Higham's bound, u = 2^-24 for
float32) and elementwise functions by a few units in the last place.

A layer this module does not know (Lambda, a custom class, a subclass of a
built-in layer) is not guessed: its output is unbounded (`-inf`, `inf`) and
the box remembers where the bounds stopped (`Box.unbounded_after`).
Infinite bounds follow IEEE rules, except that 0 * inf is 0: an infinite
bound stands for an unbounded real value, never for an actual infinity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Units in the last place of each compute dtype (unit roundoff, 2^-p).
_ROUNDOFF = {
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
    "float32": 2.0**-24,
    "float64": 2.0**-53,
}
# Elementwise functions (tanh, exp, ...) are within a few ulp in TensorFlow.
_ELEMENTWISE_ULPS = 8
_TINY = 1e-30  # absolute slack for results next to 0 (subnormals)


@dataclass(frozen=True)
class Box:
    """Per-element bounds of one example: `lower <= x <= upper`.

    `unbounded_after` names the first layer whose output was not bounded
    (unknown to this module), or is None.
    """

    lower: np.ndarray
    upper: np.ndarray
    unbounded_after: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.lower.shape)

    def magnitude(self) -> np.ndarray:
        """max(|lower|, |upper|) per element."""
        return np.maximum(np.abs(self.lower), np.abs(self.upper))

    def reshape(self, shape: Sequence[int]) -> Box:
        return Box(
            self.lower.reshape(shape), self.upper.reshape(shape), self.unbounded_after
        )


def make_box(lower: Any, upper: Any, unbounded_after: str | None = None) -> Box:
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    lower, upper = np.broadcast_arrays(lower, upper)
    return Box(lower.copy(), upper.copy(), unbounded_after)


def unbounded(shape: Sequence[int], after: str | None) -> Box:
    return make_box(np.full(shape, -np.inf), np.full(shape, np.inf), after)


def _first_reason(boxes: Sequence[Box]) -> str | None:
    return next((b.unbounded_after for b in boxes if b.unbounded_after), None)


def hull(*boxes: Box) -> Box:
    """The smallest box holding every given box (same shapes)."""
    lower = np.minimum.reduce([b.lower for b in boxes])
    upper = np.maximum.reduce([b.upper for b in boxes])
    return Box(lower, upper, _first_reason(boxes))


def widen(box: Box, relative: float, absolute: float = _TINY) -> Box:
    """Moves each bound outward by `relative * |bound| + absolute`."""
    with np.errstate(invalid="ignore", over="ignore"):
        lower = box.lower - (relative * np.abs(box.lower) + absolute)
        upper = box.upper + (relative * np.abs(box.upper) + absolute)
    return Box(lower, upper, box.unbounded_after)


def roundoff(dtype: Any) -> float:
    """The unit roundoff of a Keras compute dtype (float32's if unknown)."""
    name = getattr(dtype, "name", dtype)
    return _ROUNDOFF.get(str(name), _ROUNDOFF["float32"])


def _gamma(terms: int, unit: float) -> float:
    """Higham's gamma_n = n u / (1 - n u), doubled for safety."""
    product = (terms + 1) * unit
    return 2.0 * product / (1.0 - product) if product < 0.5 else math.inf


def _finite(values: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(values), values, 0.0)


def linear_interval(
    box: Box,
    apply: Callable[[np.ndarray, np.ndarray], np.ndarray],
    kernel: np.ndarray,
    bias: np.ndarray | float,
    terms: int,
    unit: float,
) -> Box:
    """The box of `apply(x, kernel) + bias` for x in `box`, where `apply` is
    linear in x and in the kernel (a matmul, a convolution).

    The positive and negative parts of the kernel meet the lower and upper
    bounds; infinite bounds are counted apart, so 0 * inf never occurs.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    positive, negative = np.maximum(kernel, 0.0), np.minimum(kernel, 0.0)
    lower_f, upper_f = _finite(box.lower), _finite(box.upper)
    bias = np.asarray(bias, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        lower = apply(lower_f, positive) + apply(upper_f, negative) + bias
        upper = apply(upper_f, positive) + apply(lower_f, negative) + bias
        error = _gamma(terms, unit) * (
            apply(np.maximum(np.abs(lower_f), np.abs(upper_f)), np.abs(kernel))
            + np.abs(bias)
        )
    lower = lower - error
    upper = upper + error
    low_inf = box.lower == -np.inf
    high_inf = box.upper == np.inf
    if low_inf.any() or high_inf.any():
        pos = (kernel > 0).astype(np.float64)
        neg = (kernel < 0).astype(np.float64)
        minus = apply(low_inf.astype(np.float64), pos) + apply(
            high_inf.astype(np.float64), neg
        )
        plus = apply(high_inf.astype(np.float64), pos) + apply(
            low_inf.astype(np.float64), neg
        )
        lower = np.where(minus > 0, -np.inf, lower)
        upper = np.where(plus > 0, np.inf, upper)
    return Box(lower, upper, box.unbounded_after)


def matmul_interval(
    box: Box, kernel: np.ndarray, bias: Any = 0.0, unit: float = _ROUNDOFF["float32"]
) -> Box:
    """`x @ kernel + bias` over the last axis of `box`."""
    return linear_interval(
        box, lambda x, w: x @ w, kernel, bias, int(np.shape(kernel)[0]), unit
    )


def product_interval(a: Box, b: Box, unit: float) -> Box:
    """Elementwise `a * b` (broadcast)."""
    with np.errstate(invalid="ignore"):
        corners = np.stack(
            np.broadcast_arrays(
                a.lower * b.lower,
                a.lower * b.upper,
                a.upper * b.lower,
                a.upper * b.upper,
            )
        )
    corners = np.where(np.isnan(corners), 0.0, corners)  # 0 * inf: see module doc
    box = Box(corners.min(axis=0), corners.max(axis=0), _first_reason([a, b]))
    return widen(box, 2 * unit)


# ---------------------------------------------------------------------------
# Activations

# Monotone nondecreasing activations, by the name of the Keras function.
_MONOTONE = {
    "linear",
    "relu",
    "relu6",
    "elu",
    "selu",
    "sigmoid",
    "hard_sigmoid",
    "tanh",
    "stable_tanh",
    "softplus",
    "softsign",
    "exponential",
    "hard_tanh",
    "log_sigmoid",
    "leaky_relu",
    "tanh_shrink",
    "squareplus",
    "sparse_plus",
    "soft_shrink",
}
# Activations that decrease down to one minimum, then increase: the bounds are
# at the endpoints and at the minimum (its location to ~1e-7; lower bounds
# are widened by _CRITICAL_SLACK to cover that).
_CRITICAL_POINTS = {
    "silu": (-1.2784645427610738,),
    "swish": (-1.2784645427610738,),
    "gelu": (-0.7517915247, -0.7522498),  # exact (erf) and tanh approximation
    "mish": (-1.1923473,),
    "hard_silu": (-1.5,),
    "hard_swish": (-1.5,),
}
_CRITICAL_SLACK = 1e-6
# Activations bounded by a fixed range whatever their input.
_RANGES = {"softmax": (0.0, 1.0), "log_softmax": (-np.inf, 0.0)}
TANH_NAMES = ("tanh", "stable_tanh")


def activation_name(function: Any) -> str | None:
    """The name of a built-in Keras activation (or tanhguard's stable_tanh);
    None for anything else (a lambda, a custom function)."""
    if function is None:
        return "linear"
    name = getattr(function, "__name__", None)
    module = getattr(function, "__module__", "") or ""
    if name is None:
        return None
    if name == "stable_tanh" and module.startswith(("tanhguard", "pipeline")):
        return "stable_tanh"
    if module.startswith(("keras", "tf_keras", "tensorflow")):
        return name
    return None


def _evaluate(function: Callable, values: np.ndarray) -> np.ndarray:
    """`function` applied to float64 values, as numpy."""
    import tensorflow as tf

    return np.asarray(function(tf.constant(values, dtype=tf.float64)), np.float64)


def _candidates_bounds(
    function: Callable,
    box: Box,
    critical: Sequence[float] = (),
    extra_values: Sequence[tuple[float, float]] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of `function` over each interval, from its values at the
    endpoints and at the critical points inside; `extra_values` adds
    `(point, value)` pairs: `value` counts where `point` is in the interval
    (a one-sided limit at a jump)."""
    points = [box.lower, box.upper]
    inside = []
    for c in critical:
        holds = (box.lower <= c) & (c <= box.upper)
        points.append(np.where(holds, c, box.lower))
        inside.append(holds)
    values = _evaluate(function, np.stack(points))
    lower, upper = values.min(axis=0), values.max(axis=0)
    for point, value in extra_values:
        holds = (box.lower <= point) & (point <= box.upper)
        lower = np.where(holds, np.minimum(lower, value), lower)
        upper = np.where(holds, np.maximum(upper, value), upper)
    return lower, upper


def activation_interval(
    name: str | None, function: Callable | None, box: Box, unit: float, where: str
) -> Box:
    """The box of a Keras activation (by name) over `box`; unbounded after
    `where` for an unknown activation."""
    if name == "linear":
        return box
    if name in _RANGES:
        low, high = _RANGES[name]
        return make_box(
            np.full(box.shape, low), np.full(box.shape, high), box.unbounded_after
        )
    if name in TANH_NAMES:
        function = np.tanh
        lower, upper = np.tanh(box.lower), np.tanh(box.upper)
    elif name in _MONOTONE:
        lower, upper = _candidates_bounds(function, box)
    elif name in _CRITICAL_POINTS:
        lower, upper = _candidates_bounds(function, box, _CRITICAL_POINTS[name])
        lower = lower - _CRITICAL_SLACK
    else:
        return unbounded(box.shape, box.unbounded_after or where)
    out = Box(lower, upper, box.unbounded_after)
    out = widen(out, _ELEMENTWISE_ULPS * unit)
    if name not in TANH_NAMES:
        # Functions computed as x * g(x) (gelu, silu) err relative to x, not
        # to their value: widen by a few ulp of the input too.
        slack = 4 * _ELEMENTWISE_ULPS * unit * _finite(box.magnitude())
        out = Box(out.lower - slack, out.upper + slack, out.unbounded_after)
    if name in TANH_NAMES:  # |tanh| <= 1 however it rounds
        out = Box(
            np.maximum(out.lower, -1.0), np.minimum(out.upper, 1.0), out.unbounded_after
        )
    return out


# ---------------------------------------------------------------------------
# Records: the pre-activation of every tanh-bearing layer


@dataclass
class Record:
    """The pre-activation box of one tanh (or unknown) activation.

    `path` is the layer's path in the model (`outer/inner/dense`), `part` the
    gate of a recurrent layer ("" otherwise), `activation` its name (None
    for an unknown activation).
    """

    path: str
    layer_class: str
    part: str
    activation: str | None
    box: Box


@dataclass
class Context:
    """What a propagation collects: the records, the unknown layers."""

    records: list[Record] = field(default_factory=list)
    unknown_layers: list[str] = field(default_factory=list)

    def record(self, path, layer, part, activation, box) -> None:
        self.records.append(Record(path, type(layer).__name__, part, activation, box))


def is_reported(name: str | None) -> bool:
    """A tanh, or an activation this module cannot bound (reported unknown)."""
    return name is None or name in TANH_NAMES


# ---------------------------------------------------------------------------
# Layer rules


def _family_module(layer: Any) -> bool:
    module = type(layer).__module__ or ""
    return module.startswith(("keras.", "tf_keras."))


def _weights(variable: Any) -> np.ndarray | None:
    return None if variable is None else np.asarray(variable, dtype=np.float64)


def _per_example_axis(axis: int, rank: int) -> int:
    """A Keras axis (counting the batch axis) on a per-example array."""
    return axis - 1 if axis > 0 else rank + axis


def _unit(layer: Any) -> float:
    return roundoff(getattr(layer, "compute_dtype", "float32"))


def _float64_clone(layer: Any, input_shape: Sequence[int], **overrides: Any) -> Any:
    """A copy of `layer` computing in float64, built for one example shape."""
    config = dict(layer.get_config())
    config.update(overrides, dtype="float64")
    config.pop("batch_input_shape", None)
    config.pop("batch_shape", None)
    config.pop("input_shape", None)
    clone = type(layer).from_config(config)
    clone(np.zeros((1, *input_shape), dtype=np.float64))
    return clone


_KERNEL_LAYERS = {
    "Dense",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
}


def _kernel_attribute(layer: Any) -> str:
    return "depthwise_kernel" if hasattr(layer, "depthwise_kernel") else "kernel"


def _kernel_linear(layer: Any, box: Box, unit: float) -> Box:
    """The pre-activation box of a kernel layer (Dense, Conv, ...)."""
    attribute = _kernel_attribute(layer)
    kernel = _weights(getattr(layer, attribute))
    bias_variable = getattr(layer, "bias", None) if layer.use_bias else None
    if type(layer).__name__ == "Dense":
        bias = 0.0 if bias_variable is None else _weights(bias_variable)
        return linear_interval(
            box, lambda x, w: x @ w, kernel, bias, kernel.shape[0], unit
        )
    clone = _float64_clone(layer, box.shape, activation="linear", use_bias=False)
    clone_kernel = getattr(clone, attribute)

    def apply(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        clone_kernel.assign(w)
        return np.asarray(clone(x[None]), dtype=np.float64)[0]

    if bias_variable is None:
        bias = 0.0
    else:  # broadcast along the channel axis of the output
        out_shape = apply(np.zeros(box.shape), kernel).shape
        bias = _weights(bias_variable)
        fmt = getattr(layer, "data_format", "channels_last")
        if fmt == "channels_first" and len(out_shape) > 1:
            bias = bias.reshape((-1,) + (1,) * (len(out_shape) - 1))
    terms = int(kernel.size // max(kernel.shape[-1], 1))
    return linear_interval(box, apply, kernel, bias, terms, unit)


def _affine(box: Box, scale: np.ndarray, shift: np.ndarray, unit: float) -> Box:
    """`x * scale + shift` (broadcast), widened by a few roundings."""
    with np.errstate(invalid="ignore"):
        a = box.lower * scale
        b = box.upper * scale
    a = np.where(np.isnan(a), 0.0, a)
    b = np.where(np.isnan(b), 0.0, b)
    out = Box(np.minimum(a, b) + shift, np.maximum(a, b) + shift, box.unbounded_after)
    slack = 8 * unit * (np.maximum(np.abs(a), np.abs(b)) + np.abs(shift))
    return Box(out.lower - slack, out.upper + slack, out.unbounded_after)


def _channel_shape(axes: Sequence[int], rank: int, box_shape) -> tuple[int, ...]:
    return tuple(box_shape[i] if i in axes else 1 for i in range(rank))


def _axes(layer_axis: Any, rank: int) -> list[int]:
    axes = layer_axis if isinstance(layer_axis, (list, tuple)) else [layer_axis]
    return sorted(_per_example_axis(int(a), rank) for a in axes)


def _batch_norm(layer: Any, box: Box, unit: float) -> Box:
    rank = len(box.shape)
    shape = _channel_shape(_axes(layer.axis, rank), rank, box.shape)
    variance = _weights(layer.moving_variance).reshape(shape)
    mean = _weights(layer.moving_mean).reshape(shape)
    gamma = _weights(layer.gamma) if getattr(layer, "scale", True) else None
    beta = _weights(layer.beta) if getattr(layer, "center", True) else None
    gamma = np.ones(shape) if gamma is None else gamma.reshape(shape)
    beta = np.zeros(shape) if beta is None else beta.reshape(shape)
    scale = gamma / np.sqrt(variance + layer.epsilon)
    shifted = Box(box.lower - mean, box.upper - mean, box.unbounded_after)
    return _affine(widen(shifted, 2 * unit), scale, beta, unit)


def _layer_norm(layer: Any, box: Box, unit: float) -> Box:
    """|x_i - mean| / sqrt(var + eps) <= sqrt(n - 1) over n elements, and
    <= span / sqrt(eps); with rms scaling |x_i| / rms <= sqrt(n).

    In floating point the centring cancels: Keras computes `x * inv - mean *
    inv` (or `(x - mean) * inv`) with `inv <= 1 / sqrt(eps)`, so each
    normalized value may be off by a few ulps of `|x| / sqrt(eps)` whatever
    the spread (one element: exactly 0 in reals, not in float32). The bounds
    are widened by that; an input box that is not finite (or eps 0) leaves
    the output unbounded in floating point (+-Inf inputs give NaN).
    """
    rank = len(box.shape)
    axes = _axes(layer.axis, rank)
    n = int(np.prod([box.shape[a] for a in axes]))
    eps = float(layer.epsilon)
    magnitude = float(box.magnitude().max()) if box.lower.size else 0.0
    if not math.isfinite(magnitude) or eps <= 0:
        return unbounded(box.shape, box.unbounded_after)
    cancellation = 8 * unit * magnitude / math.sqrt(eps) if eps > 0 else 0.0
    if getattr(layer, "rms_scaling", False):
        limit = math.sqrt(n)
        if eps > 0:
            limit = np.minimum(limit, box.magnitude().max() / math.sqrt(eps))
    else:
        limit = math.sqrt(max(n - 1, 0))
        if eps > 0:
            span = float(np.max(box.upper) - np.min(box.lower))
            limit = min(limit, span / math.sqrt(eps)) if np.isfinite(span) else limit
    shape = _channel_shape(axes, rank, box.shape)
    gamma = getattr(layer, "gamma", None)
    beta = getattr(layer, "beta", None)
    gamma = np.ones(shape) if gamma is None else _weights(gamma).reshape(shape)
    beta = np.zeros(shape) if beta is None else _weights(beta).reshape(shape)
    if getattr(layer, "rms_scaling", False):
        cancellation = 0.0  # no centring: relative rounding only
    normalized = make_box(np.full(box.shape, -limit), np.full(box.shape, limit))
    normalized = widen(normalized, 16 * unit, cancellation + 16 * unit)
    # Bounded for every finite input box, whatever came before it.
    return _affine(normalized, gamma, beta, unit)


_IDENTITIES = {
    "InputLayer",
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
}
# Layers monotone nondecreasing in every input element: applied to the lower
# and to the upper bounds (in float64) they give the output bounds.
_MONOTONE_LAYERS = {
    "Flatten",
    "Reshape",
    "Permute",
    "RepeatVector",
    "Cropping1D",
    "Cropping2D",
    "Cropping3D",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
    "UpSampling1D",
    "UpSampling2D",
    "UpSampling3D",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
}
_AVERAGING = ("Average", "UpSampling")


def _monotone_layer(layer: Any, box: Box, unit: float) -> Box:
    clone = _float64_clone(layer, box.shape)
    lower = np.asarray(clone(box.lower[None]), np.float64)[0]
    upper = np.asarray(clone(box.upper[None]), np.float64)[0]
    out = Box(lower, upper, box.unbounded_after)
    name = type(layer).__name__
    if any(key in name for key in _AVERAGING):
        window = int(np.prod(getattr(layer, "pool_size", None) or (1,)))
        if "Global" in name:
            window = int(np.prod(box.shape[:-1]))
        out = widen(out, (window + 2) * unit)
    return out


_ELEMENTWISE_LAYERS = {
    "ReLU",
    "LeakyReLU",
    "ELU",
    "PReLU",
    "ThresholdedReLU",
    "Softmax",
}


def _elementwise_layer(layer: Any, box: Box, unit: float, path: str) -> Box:
    name = type(layer).__name__
    if name == "Softmax":
        return make_box(np.zeros(box.shape), np.ones(box.shape), box.unbounded_after)
    clone = _float64_clone(layer, box.shape)
    clone.set_weights([np.asarray(w, np.float64) for w in layer.get_weights()])
    threshold = float(getattr(layer, "threshold", 0.0) or 0.0)
    theta = getattr(layer, "theta", None)
    critical = [0.0, threshold] + ([float(theta)] if theta is not None else [])
    # At a threshold the function may jump; its limit from below counts.
    extra = [(c, 0.0) for c in critical] + [(c, c) for c in critical]
    lower, upper = _candidates_bounds(clone, box, critical, extra)
    return widen(Box(lower, upper, box.unbounded_after), _ELEMENTWISE_ULPS * unit)


_MERGES = {
    "Concatenate",
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
}


def _merge(layer: Any, boxes: list[Box], unit: float) -> Box:
    name = type(layer).__name__
    reason = _first_reason(boxes)
    if name == "Concatenate":
        rank = len(boxes[0].shape)
        axis = _per_example_axis(int(layer.axis), rank)
        return Box(
            np.concatenate([b.lower for b in boxes], axis=axis),
            np.concatenate([b.upper for b in boxes], axis=axis),
            reason,
        )
    lowers = np.broadcast_arrays(*[b.lower for b in boxes])
    uppers = np.broadcast_arrays(*[b.upper for b in boxes])
    n = len(boxes)
    if name in ("Add", "Average"):
        lower, upper = np.sum(lowers, axis=0), np.sum(uppers, axis=0)
        if name == "Average":
            lower, upper = lower / n, upper / n
        return widen(Box(lower, upper, reason), (n + 1) * unit)
    if name == "Subtract":
        return widen(Box(lowers[0] - uppers[1], uppers[0] - lowers[1], reason), unit)
    if name == "Maximum":
        return Box(np.max(lowers, axis=0), np.max(uppers, axis=0), reason)
    if name == "Minimum":
        return Box(np.min(lowers, axis=0), np.min(uppers, axis=0), reason)
    out = boxes[0]
    for other in boxes[1:]:
        out = product_interval(out, other, unit)
    return Box(out.lower, out.upper, reason)


def _timewise(box: Box) -> Box:
    """The hull over the time axis of a `[time, features]` box."""
    return Box(box.lower.min(axis=0), box.upper.max(axis=0), box.unbounded_after)


def _gate(x: Box, h: Box, kernel, recurrent, bias, unit: float) -> Box:
    """`x @ kernel + h @ recurrent + bias`."""
    a = matmul_interval(x, kernel, 0.0, unit)
    b = matmul_interval(h, recurrent, 0.0, unit)
    lower = a.lower + b.lower + bias
    upper = a.upper + b.upper + bias
    return widen(Box(lower, upper, _first_reason([x, h])), 3 * unit)


def _activation_of(function: Any) -> tuple[str | None, Any]:
    return activation_name(function), function


def _state_start(name: str | None, units: int) -> Box:
    """What |h| is known to be before any iteration: the activation's range."""
    if name in TANH_NAMES:
        return make_box(-np.ones(units), np.ones(units))
    if name in ("sigmoid", "hard_sigmoid"):
        return make_box(np.zeros(units), np.ones(units))
    return make_box(np.full(units, -np.inf), np.full(units, np.inf))


def _with_zero(box: Box) -> Box:
    return Box(
        np.minimum(box.lower, 0.0), np.maximum(box.upper, 0.0), box.unbounded_after
    )


def _intersect(a: Box, b: Box) -> Box:
    return Box(
        np.maximum(a.lower, b.lower), np.minimum(a.upper, b.upper), a.unbounded_after
    )


_ITERATIONS = 40


def _rnn_weights(cell: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    kernel = _weights(cell.kernel)
    recurrent = _weights(cell.recurrent_kernel)
    bias = _weights(cell.bias) if getattr(cell, "use_bias", True) else None
    return kernel, recurrent, bias


def recurrent_bounds(
    layer: Any, box: Box, unit: float
) -> tuple[dict[str, Box], Box, Box | None]:
    """Bounds of a SimpleRNN, LSTM or GRU over every time step.

    The hidden state's box is the fixed point of one step's interval map,
    reached from the activation's range (every iterate is sound: each step
    maps a box holding every h_t into one holding every h_{t+1}, and h_0 = 0
    is kept in). Returns `(gate pre-activations by part, h box, c box)`.
    """
    name = type(layer).__name__
    cell = layer.cell
    x = _timewise(box)
    steps = box.shape[0]
    units = int(cell.units)
    kernel, recurrent, bias = _rnn_weights(cell)
    act_name, act = _activation_of(cell.activation)
    rec_name, rec = _activation_of(getattr(cell, "recurrent_activation", None))
    reason = box.unbounded_after
    h = _state_start(act_name, units)
    if name == "LSTM" and act_name not in TANH_NAMES:
        h = make_box(np.full(units, -np.inf), np.full(units, np.inf))
    c_box = None
    gates: dict[str, Box] = {}

    def act_box(z: Box, which: str) -> Box:
        n, f = (act_name, act) if which == "act" else (rec_name, rec)
        return activation_interval(n, f, z, unit, layer.name)

    for _ in range(_ITERATIONS):
        if name == "SimpleRNN":
            b = 0.0 if bias is None else bias
            z = _gate(x, h, kernel, recurrent, b, unit)
            gates = {"": z}
            new_h = _with_zero(act_box(z, "act"))
        elif name == "LSTM":
            parts = {}
            for i, part in enumerate(("input", "forget", "cell_input", "output")):
                cols = slice(i * units, (i + 1) * units)
                b = 0.0 if bias is None else bias[cols]
                parts[part] = _gate(x, h, kernel[:, cols], recurrent[:, cols], b, unit)
            i_box = act_box(parts["input"], "rec")
            f_box = act_box(parts["forget"], "rec")
            g_box = act_box(parts["cell_input"], "act")
            o_box = act_box(parts["output"], "rec")
            ig = product_interval(i_box, g_box, unit).magnitude()
            f_high = np.float32(np.minimum(f_box.upper, 1.0))
            f_high = np.nextafter(f_high, np.float32(2.0)).astype(np.float64)
            with np.errstate(divide="ignore"):
                geometric = np.where(
                    f_high < 1.0, ig / (1.0 - np.minimum(f_high, 1.0)), np.inf
                )
            limit = np.minimum(geometric, steps * ig) * (1 + 4 * steps * unit)
            c_box = Box(-limit, limit, reason)
            parts["cell"] = c_box
            gates = parts
            new_h = _with_zero(product_interval(o_box, act_box(c_box, "act"), unit))
        else:  # GRU
            reset_after = bool(getattr(cell, "reset_after", False))
            if bias is None:
                b_in = np.zeros(3 * units)
                b_rec = np.zeros(3 * units)
            elif bias.ndim == 2:
                b_in, b_rec = bias[0], bias[1]
            else:
                b_in, b_rec = bias, np.zeros(3 * units)
            z_cols, r_cols, h_cols = (
                slice(i * units, (i + 1) * units) for i in range(3)
            )
            parts = {}
            for part, cols in (("update", z_cols), ("reset", r_cols)):
                parts[part] = _gate(
                    x,
                    h,
                    kernel[:, cols],
                    recurrent[:, cols],
                    b_in[cols] + b_rec[cols],
                    unit,
                )
            r_box = act_box(parts["reset"], "rec")
            x_h = matmul_interval(x, kernel[:, h_cols], b_in[h_cols], unit)
            if reset_after:
                inner = matmul_interval(h, recurrent[:, h_cols], b_rec[h_cols], unit)
                gated = product_interval(r_box, inner, unit)
            else:
                gated = matmul_interval(
                    product_interval(r_box, h, unit), recurrent[:, h_cols], 0.0, unit
                )
            candidate = widen(
                Box(x_h.lower + gated.lower, x_h.upper + gated.upper, reason), 2 * unit
            )
            parts["candidate"] = candidate
            gates = parts
            hh = act_box(candidate, "act")
            # h_t = z h_{t-1} + (1 - z) hh_t: a convex combination, so every
            # h_t lies in the hull of h_0 = 0 and the candidates.
            new_h = widen(_with_zero(hh), 4 * unit)
        new_h = _intersect(new_h, h)
        done = np.allclose(new_h.lower, h.lower, rtol=0, atol=1e-12) and np.allclose(
            new_h.upper, h.upper, rtol=0, atol=1e-12
        )
        h = new_h
        if done:
            break
    return gates, Box(h.lower, h.upper, reason), c_box


_RECURRENT = {"SimpleRNN", "LSTM", "GRU"}


def _recurrent(layer: Any, box: Box, unit: float, path: str, ctx: Context) -> Any:
    gates, h, c = recurrent_bounds(layer, box, unit)
    act_name = activation_name(layer.cell.activation)
    rec_name = activation_name(getattr(layer.cell, "recurrent_activation", None))
    for part, z in gates.items():
        activation = (
            rec_name
            if part in ("input", "forget", "output", "update", "reset")
            else act_name
        )
        ctx.record(path, layer, part, activation, z)
    steps = box.shape[0]
    if layer.return_sequences:
        sequence = Box(
            np.broadcast_to(h.lower, (steps, h.shape[0])).copy(),
            np.broadcast_to(h.upper, (steps, h.shape[0])).copy(),
            h.unbounded_after,
        )
    else:
        sequence = h
    if getattr(layer, "return_state", False):
        states = [h] + ([c] if c is not None else [])
        return [sequence, *states]
    return sequence


def layer_interval(
    layer: Any, inputs: list[Box], path: str, ctx: Context, output_shapes: list
) -> Any:
    """The output box (a list for several outputs) of one layer.

    An unknown layer gives an unbounded box of its output shape, and is
    noted in `ctx.unknown_layers`.
    """
    name = type(layer).__name__
    unit = _unit(layer)
    known = _family_module(layer)
    if known and name in _MERGES:
        return _merge(layer, inputs, unit)
    if known and len(inputs) == 1:
        box = inputs[0]
        if name in _IDENTITIES:
            return box
        if name == "Masking":
            return _with_zero(box)
        if name == "Activation":
            act = activation_name(layer.activation)
            if is_reported(act):
                ctx.record(path, layer, "", act, box)
            return activation_interval(act, layer.activation, box, unit, path)
        if name in _KERNEL_LAYERS:
            z = _kernel_linear(layer, box, unit)
            act = activation_name(getattr(layer, "activation", None))
            if is_reported(act):
                ctx.record(path, layer, "", act, z)
            return activation_interval(act, layer.activation, z, unit, path)
        if name == "BatchNormalization":
            return _batch_norm(layer, box, unit)
        if name == "LayerNormalization":
            return _layer_norm(layer, box, unit)
        if name == "UnitNormalization":
            return make_box(
                -np.ones(box.shape), np.ones(box.shape), box.unbounded_after
            )
        if name == "Rescaling":
            return _affine(box, float(layer.scale), float(layer.offset), unit)
        if name in _MONOTONE_LAYERS:
            return _monotone_layer(layer, box, unit)
        if name in _ELEMENTWISE_LAYERS:
            return _elementwise_layer(layer, box, unit, path)
        if name in _RECURRENT and len(box.shape) == 2:
            return _recurrent(layer, box, unit, path, ctx)
        if name == "TimeDistributed":
            steps = [
                layer_interval(
                    layer.layer,
                    [Box(box.lower[t], box.upper[t], box.unbounded_after)],
                    f"{path}/{layer.layer.name}",
                    ctx,
                    [s[1:] for s in output_shapes],
                )
                for t in range(box.shape[0])
            ]
            if all(isinstance(s, Box) for s in steps):
                return Box(
                    np.stack([s.lower for s in steps]),
                    np.stack([s.upper for s in steps]),
                    _first_reason(steps),
                )
    ctx.unknown_layers.append(path)
    boxes = [unbounded(shape, path) for shape in output_shapes]
    return boxes if len(boxes) > 1 else boxes[0]


def _shape_of(tensor: Any) -> tuple[int, ...]:
    """A Keras tensor's per-example shape (an unknown size counts as 1)."""
    return tuple(1 if d is None else int(d) for d in tuple(tensor.shape)[1:])


def is_model(layer: Any) -> bool:
    """A nested Sequential or Functional model."""
    return (
        hasattr(layer, "layers")
        and hasattr(layer, "inputs")
        and bool(getattr(layer, "inputs", None))
    )


def _node_tensors(node: Any) -> tuple[list[Any], list[Any]]:
    """(input tensors, output tensors) of a graph node, either family."""
    if hasattr(node, "keras_inputs"):  # tf_keras
        import tensorflow as tf

        outputs = tf.nest.flatten(node.outputs)
        return list(node.keras_inputs), outputs
    return list(node.input_tensors), list(node.output_tensors)


LayerFn = Callable[[Any, list, str, list], Any]


def walk_model(
    model: Any, inputs: list, apply_layer: LayerFn, prefix: str = ""
) -> list:
    """Runs `model`'s graph on `inputs` (one value per `model.inputs`),
    calling `apply_layer(layer, input_values, path, output_shapes)` for each
    layer that is not a model; nested models are walked in turn.

    Returns:
      One value per `model.outputs`.
    """

    def call(layer: Any, values: list, shapes: list) -> Any:
        path = f"{prefix}{layer.name}"
        if is_model(layer):
            outs = walk_model(layer, values, apply_layer, path + "/")
            return outs if len(outs) > 1 else outs[0]
        return apply_layer(layer, values, path, shapes)

    if type(model).__name__ == "Sequential":
        value = inputs[0]
        for layer in model.layers:
            shapes = (
                [_shape_of(t) for t in _as_list(layer.output)]
                if not is_model(layer)
                else []
            )
            value = call(layer, [value], shapes)
        return [value]
    memo: dict[int, Any] = {
        id(tensor): value for tensor, value in zip(model.inputs, inputs, strict=True)
    }
    done: dict[tuple[int, int], list] = {}

    def value_of(tensor: Any) -> Any:
        if id(tensor) in memo:
            return memo[id(tensor)]
        layer, node_index, tensor_index = tensor._keras_history
        key = (id(layer), node_index)
        if key not in done:
            node = layer._inbound_nodes[node_index]
            ins, outs = _node_tensors(node)
            values = [value_of(t) for t in ins]
            result = call(layer, values, [_shape_of(t) for t in outs])
            results = result if isinstance(result, list) else [result]
            done[key] = results
            for t, v in zip(outs, results, strict=False):
                memo[id(t)] = v
        return done[key][tensor_index]

    return [value_of(t) for t in model.outputs]


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def propagate(model: Any, boxes: list[Box]) -> tuple[list[Box], Context]:
    """The output boxes of `model` for input boxes (one per `model.inputs`),
    with the pre-activation records of its tanh-bearing layers."""
    ctx = Context()

    def apply(layer, values, path, shapes):
        return layer_interval(layer, values, path, ctx, shapes)

    return walk_model(model, boxes, apply), ctx


def linear_activation(layer: Any) -> Callable:
    """The identity activation of `layer`'s Keras family."""
    if (type(layer).__module__ or "").startswith("tf_keras"):
        import tf_keras

        return tf_keras.activations.linear
    import keras

    return keras.activations.linear


def _apply_activation(function: Any, values: np.ndarray) -> np.ndarray:
    if activation_name(function) in TANH_NAMES:
        return np.tanh(values)
    return _evaluate(function, values)


def recurrent_pre_activations(layer: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """The gate pre-activations of a SimpleRNN, LSTM or GRU on a batch
    `[batch, time, features]`, in float64, from zero states (masks are not
    applied). Parts as in `recurrent_bounds`; LSTM's `cell` is the state c.

    Returns:
      part -> `[batch, time, units]`, plus "h": the hidden states.
    """
    name = type(layer).__name__
    cell = layer.cell
    units = int(cell.units)
    kernel, recurrent, bias = _rnn_weights(cell)
    x = np.asarray(x, np.float64)
    if getattr(layer, "go_backwards", False):
        x = x[:, ::-1]
    act = cell.activation
    rec = getattr(cell, "recurrent_activation", None)
    batch, steps = x.shape[0], x.shape[1]
    h = np.zeros((batch, units))
    c = np.zeros((batch, units))
    parts: dict[str, list[np.ndarray]] = {}

    def keep(part: str, value: np.ndarray) -> None:
        parts.setdefault(part, []).append(value)

    for t in range(steps):
        xt = x[:, t]
        if name == "SimpleRNN":
            z = xt @ kernel + h @ recurrent + (0.0 if bias is None else bias)
            keep("", z)
            h = _apply_activation(act, z)
        elif name == "LSTM":
            z = xt @ kernel + h @ recurrent + (0.0 if bias is None else bias)
            zi, zf, zc, zo = (z[:, i * units : (i + 1) * units] for i in range(4))
            for part, value in zip(
                ("input", "forget", "cell_input", "output"),
                (zi, zf, zc, zo),
                strict=True,
            ):
                keep(part, value)
            c = _evaluate(rec, zf) * c + _evaluate(rec, zi) * _apply_activation(act, zc)
            keep("cell", c)
            h = _evaluate(rec, zo) * _apply_activation(act, c)
        else:
            reset_after = bool(getattr(cell, "reset_after", False))
            if bias is None:
                b_in, b_rec = np.zeros(3 * units), np.zeros(3 * units)
            elif bias.ndim == 2:
                b_in, b_rec = bias[0], bias[1]
            else:
                b_in, b_rec = bias, np.zeros(3 * units)
            xz = xt @ kernel + b_in
            cols = [slice(i * units, (i + 1) * units) for i in range(3)]
            if reset_after:
                inner = h @ recurrent + b_rec
                zu = xz[:, cols[0]] + inner[:, cols[0]]
                zr = xz[:, cols[1]] + inner[:, cols[1]]
                r = _evaluate(rec, zr)
                zh = xz[:, cols[2]] + r * inner[:, cols[2]]
            else:
                zu = xz[:, cols[0]] + h @ recurrent[:, cols[0]]
                zr = xz[:, cols[1]] + h @ recurrent[:, cols[1]]
                r = _evaluate(rec, zr)
                zh = xz[:, cols[2]] + (r * h) @ recurrent[:, cols[2]]
            keep("update", zu)
            keep("reset", zr)
            keep("candidate", zh)
            u = _evaluate(rec, zu)
            h = u * h + (1 - u) * _apply_activation(act, zh)
        keep("h", h)
    return {part: np.stack(values, axis=1) for part, values in parts.items()}
