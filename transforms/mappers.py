"""The per-row functions: the formula every output goes through.

    out = clip((g(clip(impute(x), lower, upper)) - center) / scale, -B, B)

`densify_all` turns raw features into dense `[batch, size]` views with NaN
for missing values; `column_parameters` derives, once per element, the
numbers `guard_columns` applies to each `[batch]` column; `guard` does both
for a `[batch, n]` tensor.

How the graph computes it. On the identity path (`g` the identity) the map
`a(v) = (v - center) / scale` is non-decreasing in float32 arithmetic, also
with +-Inf and with TensorFlow's flushing of subnormals to zero (rounding and
flushing are monotone), as `scale > 0`. So clipping `x` to `[lower, upper]`
first and the result to `[-B, B]` after gives what clipping `a(x)` to
`[clip(a(lower), -B, B), clip(a(upper), -B, B)]` gives, the same float32
number; and a missing value's output is one number per element, the formula
applied to the impute value. Per element the graph computes

    out = where(missing(x), out_missing, clip(a(x), low, high))

with `low`, `high` and `out_missing` computed once per element from the
fitted numbers by the TensorFlow ops the formula applies to a value (so with
the same rounding and flushing): five passes over the values and a select,
where the formula as written takes eight. `a` multiplies by the float32
reciprocal of the scale, computed once (see `_affine`: where that reciprocal
would flush to 0, and where the numbers are not known while the graph is
built, it divides). A constant feature (scale 0) gives 0 for every input.
`inf: missing` widens `missing(x)` from NaN to every non-finite value.

Precision: the identity path computes in float32. The `log_zscore` path
(`g` = `sign(v) * log1p(|v|)`) clips `x`, then computes `g`, the centering and
the scaling in float64 with a float64 center and scale, as written: `g`
compresses a value far from 0 (an id or a timestamp near 1.7e10) into a number
near 23.6 whose spread sits in digits float32 does not hold. Either way the
output is float32, clipped to `float32_bound(B)`, so it never exceeds B as
written.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tanhguard.transforms.slots import float32_bound

INDICATORS = ("missing", "clipped")
# The name of `densify_all`'s branch that passes full sparse inputs through
# without reading their indices, and whose other branch compiles (under XLA)
# for inputs with fewer indices than values. A serving wrapper looks for it
# in a saved transform graph before it hands such a graph full inputs with
# no indices (`pipeline/serving.py`): a graph without it scatters every
# input.
FULL_INPUTS_BRANCH = "pass_full_inputs_through"


def _all_full(
    sparse: Sequence[tuple[tf.SparseTensor, int]],
) -> tuple[tf.Tensor, tf.Tensor]:
    """Whether every row of every `SparseTensor` holds its `size` values
    (`rows * size` values in a dense shape of `[rows, size]`, so no row holds
    more), and the `[rows, size]` of each, `[n, 2]`. A handful of ops for all
    of them: each op costs a serving call about a microsecond, whatever its
    size."""
    sizes = np.array([size for _, size in sparse], np.int64)
    rows, widths = tf.unstack(
        tf.stack([values.dense_shape for values, _ in sparse]), num=2, axis=1
    )
    counts = tf.stack(
        [tf.size(values.values, out_type=tf.int64) for values, _ in sparse]
    )
    full = tf.reduce_all(
        tf.logical_and(tf.equal(counts, rows * sizes), tf.equal(widths, sizes))
    )
    return full, tf.stack([rows, sizes], axis=1)


def _scattered(indices: tf.Tensor, floats: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """The dense view of a `SparseTensor` (`indices`, values `floats`) of
    `shape` `[batch, size]`, flattened: float32 `[batch * size]`, NaN where no
    value is given. A row with more than `size` values is an error (an index
    out of bounds), and so are fewer indices than values.

    The values are cut to the indices' length (after the check that they are
    as long): a serving call whose inputs are all full gives no indices, and
    XLA compiles this branch, which never runs for them, with the shapes
    given (where `SparseToDense` would reject the lengths). XLA does not run
    the check: there a hand-built `SparseTensor` with more values than
    indices (whose lengths are not known when the graph is built) loses the
    extra values. TFXIO's and `tf.io.parse_example`'s inputs cannot be
    such."""
    count = tf.shape(indices, out_type=tf.int64)[0]
    same = tf.debugging.Assert(
        tf.equal(count, tf.size(floats, out_type=tf.int64)),
        ["a sparse input has a different number of indices and values"],
    )
    with tf.control_dependencies([same]):
        floats = floats[:count]
    dense = tf.sparse.to_dense(
        tf.SparseTensor(indices, floats, shape), default_value=float("nan")
    )
    return tf.reshape(dense, [-1])


def _missing(values: tf.SparseTensor, size: int) -> tf.Tensor:
    """bool `[batch, size]`: where a `SparseTensor` gives no value."""
    present = tf.sparse.to_dense(
        tf.SparseTensor(
            values.indices,
            tf.ones_like(values.values, dtype=tf.int8),
            tf.stack([values.dense_shape[0], tf.constant(size, tf.int64)]),
        ),
        default_value=0,
    )
    # A static element count: TFT's analyzers need it.
    return tf.reshape(tf.equal(present, 0), [-1, size])


def densify(
    values: tf.Tensor | tf.SparseTensor, size: int, name: str | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Turns a raw feature into a dense float32 `[batch, size]` tensor.

    Args:
      values: The raw feature: a `SparseTensor` (a `VarLenFeature`, where a row
        with no value is missing; indices in canonical row-major order, as
        `tf.io.parse_example` and TFXIO give them), a `RaggedTensor`
        (likewise), or a dense `[batch]` / `[batch, size]` tensor.
        Integer values are cast to float32.
      size: Elements per row: 1 for a scalar feature, d for a vector `[d]`.
      name: Optional name scope.

    Returns:
      `(x, missing)`: `x` is float32 `[batch, size]` with NaN where a value is
      missing; `missing` is a bool `[batch, size]` mask of the missing values
      (the analysis counts them apart from NaN values; the served outputs do
      not use it, so a saved graph does not hold it). A row with fewer than
      `size` values is missing its trailing elements; a row with more than
      `size` values is an error when the graph runs.
    """
    dense = densify_all([(values, size)], name=name)[0]
    return dense.x, dense.missing


class Densified:
    """A raw feature densified (see `densify`): `x`, float32 `[batch, size]`
    with NaN where a value is missing; `missing`, the bool `[batch, size]`
    mask of the missing values; `flat`, `x` as `[batch * size]` (what the
    graph computes a scalar feature's output from, with no reshape).

    `missing` may be given as a function that makes it: only TFT's analysis
    reads it, and a graph saved with constants then does not trace its ops
    (about 25 ms a trace for ten features). It is made where it is first
    read, so read it in the same trace, outside any control dependency on
    an analyzer's output (`preprocessing._side_by_side` does)."""

    def __init__(
        self,
        x: tf.Tensor,
        missing: tf.Tensor | Callable[[], tf.Tensor],
        flat: tf.Tensor,
    ):
        self.x = x
        self.flat = flat
        self._missing = missing

    @property
    def missing(self) -> tf.Tensor:
        if callable(self._missing):
            self._missing = self._missing()
        return self._missing


def densify_all(
    features: Sequence[tuple[tf.Tensor | tf.SparseTensor, int]],
    name: str | None = None,
) -> list[Densified]:
    """`densify` for several raw features `(values, size)` at once.

    The sparse ones take one branch (`tf.cond`) together: when every one of
    them is full (each row holds `size` values: what a serving signature's
    dense inputs and complete `tf.Example`s give), their values, in
    canonical (row-major) order, are the dense tensors already and pass
    through untouched; otherwise each is scattered into NaN. Scattering
    costs a batch of 100,000 rows more than the formula; one branch for all
    costs a serving call less than one per feature, and the branch that is
    not taken costs it little when it is short. The full branch reads no
    indices: a caller that knows every input is full may give empty ones
    (the branch is named `FULL_INPUTS_BRANCH`, so that a caller can tell a
    saved graph that has it). Dense inputs are only cast.
    """
    with tf.name_scope(name or "densify"):
        features = [
            (
                values.to_sparse() if isinstance(values, tf.RaggedTensor) else values,
                size,
            )
            for values, size in features
        ]
        sparse = [
            (values, size)
            for values, size in features
            if isinstance(values, tf.SparseTensor)
        ]
        dense_sparse = []
        if sparse:
            floats = [tf.cast(values.values, tf.float32) for values, _ in sparse]
            # Flat `[batch * size]` out of both branches: the values as they
            # are, or scattered and flattened.
            full, shapes = _all_full(sparse)

            def scattered() -> list[tf.Tensor]:
                return [
                    _scattered(values.indices, x, shape)
                    for (values, _), x, shape in zip(
                        sparse, floats, tf.unstack(shapes, num=len(sparse)), strict=True
                    )
                ]

            dense_sparse = list(
                tf.cond(full, lambda: floats, scattered, name=FULL_INPUTS_BRANCH)
            )
        results = []
        for values, size in features:
            if isinstance(values, tf.SparseTensor):
                flat = dense_sparse.pop(0)
                missing = functools.partial(_missing, values, size)
            else:
                flat = tf.reshape(tf.cast(values, tf.float32), [-1])
                missing = functools.partial(_no_missing, flat, size)
            # A static element count: TFT's analyzers need it.
            results.append(Densified(tf.reshape(flat, [-1, size]), missing, flat))
        return results


def _no_missing(flat: tf.Tensor, size: int) -> tf.Tensor:
    """bool `[batch, size]`, False: a dense input gives every value."""
    return tf.reshape(tf.zeros_like(flat, dtype=tf.bool), [-1, size])


def log_transform(values: tf.Tensor) -> tf.Tensor:
    """`sign(x) * log1p(|x|)`: the `log_zscore` scaler's `g`; finite for finite
    `x` (at most about 88.7 in magnitude for float32 inputs)."""
    return tf.math.sign(values) * tf.math.log1p(tf.math.abs(values))


def apply_inf_policy(x: tf.Tensor, policy: str) -> tf.Tensor:
    """`clip` keeps +-Inf (the clip sends them to the bounds); `missing` turns
    them into NaN, so they are imputed like missing values."""
    if policy == "missing":
        return tf.where(tf.math.is_inf(x), tf.constant(float("nan"), x.dtype), x)
    if policy == "clip":
        return x
    raise ValueError(f"`inf` must be `clip` or `missing`. Received: {policy!r}")


@dataclasses.dataclass(frozen=True)
class ColumnParameters:
    """The numbers `guard_columns` applies to one element's column.

    Each is a numpy scalar when the fitted parameters are known while the
    graph is built (in a saved graph they are: it holds them as constants),
    else a scalar tensor.

    Attributes:
      lower, upper: The clip of the input, float32; the `clipped` indicator
        compares with them.
      center, scale: The fitted scaler, float32 (float64 on the `log_zscore`
        path); `scale` 0 marks a constant feature.
      multiplier: The float32 reciprocal of `scale`, by which the identity
        path multiplies; None where it divides by `scale` instead (numbers
        not known while the graph is built, a reciprocal below float32's
        smallest normal number, and the `log_zscore` path).
      low, high: float32; the identity path clips `a(x)` to them.
      out_missing: float32, the output of a missing value.
      constant: Whether `scale` is 0 (the output is 0); None when not known
        while the graph is built (the numbers above give 0 then too).
      log: The `log_zscore` path.
      bound: `float32_bound(B)`.
    """

    lower: Any
    upper: Any
    center: Any
    scale: Any
    multiplier: Any
    low: Any
    high: Any
    out_missing: Any
    constant: bool | None
    log: bool
    bound: np.float32


def _affine(value: tf.Tensor, center: Any, scale: Any, multiplier: Any) -> tf.Tensor:
    """The identity path's `a(v) = (v - center) / scale`, float32: times
    `multiplier`, the reciprocal of `scale`, when given, else divided
    exactly by `scale`, 0 where it is 0 (`divide_no_nan`).

    A division by a constant is what TensorFlow's graph optimizer turns into
    a multiplication by its reciprocal anyway, and that multiplication is
    several times faster than a division. So the graph multiplies, by a
    reciprocal computed once, wherever that reciprocal is a normal float32:
    not for a scale above 2**126, whose reciprocal would flush to 0, which is
    why the graph never divides by a constant. `a` is non-decreasing either
    way, and within about one float32 rounding of the quotient.
    """
    if multiplier is None:
        return tf.math.divide_no_nan(value - center, scale)
    return (value - center) * multiplier


def _log_scaled(
    clipped: tf.Tensor, center: Any, scale: Any, bound: np.float32
) -> tf.Tensor:
    """The `log_zscore` path: `(g(clipped) - center) / scale`, computed in
    float64 (0 where `scale` is 0) and clipped to the float32 bound before
    the cast to float32 (rounding is monotone, so the float32 result stays
    inside it too)."""
    wide = float(bound)
    scaled = tf.math.divide_no_nan(
        log_transform(tf.cast(clipped, tf.float64)) - center, scale
    )
    return tf.cast(tf.clip_by_value(scaled, -wide, wide), tf.float32)


def _derive(
    impute_value: Any,
    lower: Any,
    upper: Any,
    center: Any,
    scale: Any,
    bound: np.float32,
    log: bool,
    multiply: bool,
) -> dict[str, tf.Tensor]:
    """`ColumnParameters`' numbers from the fitted ones (any matching
    shapes), by the ops the formula applies to a value; `multiply`: multiply
    by the reciprocal of the scale where it is a normal float32."""
    fitted = tf.float64 if log else tf.float32
    impute_value, lower, upper = (
        tf.cast(value, tf.float32) for value in (impute_value, lower, upper)
    )
    center, scale = tf.cast(center, fitted), tf.cast(scale, fitted)
    reciprocal = tf.math.divide(tf.ones_like(scale), scale)
    usable = tf.logical_and(
        tf.constant(multiply and not log),
        tf.logical_and(
            reciprocal >= np.finfo(np.float32).tiny, tf.math.is_finite(reciprocal)
        ),
    )

    def output(value: tf.Tensor) -> tf.Tensor:
        if log:
            return _log_scaled(value, center, scale, bound)
        scaled = tf.where(
            usable,
            _affine(value, center, scale, reciprocal),
            _affine(value, center, scale, None),
        )
        return tf.clip_by_value(scaled, -bound, bound)

    return {
        "lower": lower,
        "upper": upper,
        "center": center,
        "scale": scale,
        "multiplier": reciprocal,
        "usable": usable,
        "low": output(lower),
        "high": output(upper),
        "out_missing": output(tf.clip_by_value(impute_value, lower, upper)),
        "constant": tf.equal(scale, 0.0),
    }


def column_parameters(
    *,
    impute_value: Any,
    lower: Any,
    upper: Any,
    center: Any,
    scale: Any,
    bound: float,
    log: bool = False,
) -> list[ColumnParameters]:
    """The `ColumnParameters` of each of n elements.

    Args:
      impute_value, lower, upper, center, scale: `[n]` numbers (numpy arrays
        or tensors); float32 values, except `center` and `scale`, which the
        `log` path applies in float64. Finite, `lower <= upper`, `scale >= 0`
        (0 marks a constant feature).
      bound: B > 0.
      log: The `log_zscore` path.

    Numbers known now (numpy arrays, or tensors with a static value) are
    derived now, eagerly, by the kernels the graph runs (so with the same
    rounding and flushing of subnormals), and the graph holds the results as
    constants; otherwise the graph derives them, and divides.
    """
    limit = float32_bound(bound)
    given = (impute_value, lower, upper, center, scale)
    known = [
        value if isinstance(value, np.ndarray) else tf.get_static_value(value)
        for value in given
    ]
    numbers = None
    if all(value is not None for value in known):
        with tf.init_scope():
            if tf.executing_eagerly():
                derived = _derive(*known, limit, log, multiply=True)
                numbers = {key: value.numpy() for key, value in derived.items()}
    if numbers is None:
        derived = _derive(*given, limit, log, multiply=False)
        numbers = {key: tf.unstack(value) for key, value in derived.items()}
        numbers["constant"] = [None] * len(numbers["constant"])
        numbers["usable"] = [False] * len(numbers["usable"])
    usable = numbers.pop("usable")
    numbers["multiplier"] = [
        multiplier if use else None
        for multiplier, use in zip(numbers["multiplier"], usable, strict=True)
    ]
    return [
        ColumnParameters(
            **{key: value[i] for key, value in numbers.items()},
            log=log,
            bound=limit,
        )
        for i in range(len(numbers["lower"]))
    ]


def _absent(x: tf.Tensor, inf: str) -> tf.Tensor:
    """Where `x` is a missing value under the inf policy."""
    if inf == "missing":
        return tf.logical_not(tf.math.is_finite(x))
    if inf == "clip":
        return tf.math.is_nan(x)
    raise ValueError(f"`inf` must be `clip` or `missing`. Received: {inf!r}")


def _output(x: tf.Tensor, absent: tf.Tensor, p: ColumnParameters) -> tf.Tensor:
    """The formula on a `[batch]` column."""
    if p.constant:
        return tf.zeros_like(x)
    if p.log:
        # Already inside [-B, B] (a constant feature: 0).
        clipped = tf.clip_by_value(x, p.lower, p.upper)
        return tf.where(
            absent, p.out_missing, _log_scaled(clipped, p.center, p.scale, p.bound)
        )
    scaled = _affine(x, p.center, p.scale, p.multiplier)
    return tf.where(absent, p.out_missing, tf.clip_by_value(scaled, p.low, p.high))


def _indicators(
    x: tf.Tensor,
    absent: tf.Tensor,
    p: ColumnParameters,
    inf: str,
    indicators: Sequence[str],
) -> dict[str, tf.Tensor]:
    """The configured indicators of one column, float32 `[batch]`."""
    unknown = set(indicators) - set(INDICATORS)
    if unknown:
        raise ValueError(f"unknown indicators {sorted(unknown)}")
    outputs = {}
    if "missing" in indicators:
        outputs["missing"] = tf.cast(absent, tf.float32)
    if "clipped" in indicators:
        outside = tf.logical_or(x < p.lower, x > p.upper)
        if inf == "missing":
            outside = tf.logical_and(outside, tf.logical_not(absent))
        outputs["clipped"] = tf.cast(outside, tf.float32)
    return outputs


def guard_columns(
    columns: Sequence[tf.Tensor],
    parameters: Sequence[ColumnParameters],
    *,
    infs: Sequence[str],
    indicators: Sequence[Sequence[str]],
) -> list[dict[str, tf.Tensor]]:
    """The formula on float32 `[batch]` columns (NaN: missing), one element
    each, with their `ColumnParameters`, inf policies and indicators.

    Column by column, with scalar numbers: TensorFlow's CPU kernels apply a
    scalar to `[batch]` several times faster than a `[n, 1]` column of
    numbers to `[n, batch]` (or a `[n]` row to `[batch, n]`), and stacking
    the columns into one tensor saved a serving call of the demo config
    nothing at batch 1 (the columns' ops run on both cores side by side).

    Args:
      columns: float32 `[batch]` each, as densified (before the inf policy).
      parameters: Each column's `ColumnParameters`.
      infs: Each column's inf policy: `clip` (+-Inf clip to the bounds) or
        `missing` (+-Inf are missing values).
      indicators: Each column's indicators to compute (`missing`, `clipped`).

    Returns:
      Per column, `{"": out}` plus one entry per indicator, float32
      `[batch]`: `out` is finite and inside `[-B, B]` for every value;
      `missing` is 1.0 where the value is missing (NaN, or non-finite under
      `inf: missing`) and 0.0 elsewhere; `clipped` is 1.0 where the value
      lies outside `[lower, upper]` (+-Inf included, under `inf: clip`) and
      0.0 elsewhere.
    """
    results = []
    for x, p, inf, wanted in zip(columns, parameters, infs, indicators, strict=True):
        absent = _absent(x, inf)
        results.append(
            {"": _output(x, absent, p), **_indicators(x, absent, p, inf, wanted)}
        )
    return results


def guard(
    x: tf.Tensor,
    *,
    impute_value: Any,
    lower: Any,
    upper: Any,
    center: Any,
    scale: Any,
    bound: float,
    log: bool = False,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Applies the formula to float32 `x` (NaN for missing values).

    Args:
      x: float32 `[batch, n]`, after the inf policy.
      impute_value, lower, upper: `[n]`, applied as float32.
      center, scale: `[n]`; float32 values, except on the `log` path, which
        applies them in float64. Finite, `lower <= upper`, `scale >= 0` (0
        marks a constant feature).
      bound: B > 0.
      log: Apply `g(v) = sign(v) * log1p(|v|)` after clipping (`log_zscore`),
        computing from there on in float64.

    Returns:
      `(out, missing, clipped)`, float32 `[batch, n]`: `out` is finite and
      inside `[-B, B]` for every value of `x`; `missing` is 1.0 where `x` is
      NaN and 0.0 elsewhere; `clipped` is 1.0 where `x` lies outside
      `[lower, upper]` (+-Inf included) and 0.0 elsewhere.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    columns = column_parameters(
        impute_value=impute_value,
        lower=lower,
        upper=upper,
        center=center,
        scale=scale,
        bound=bound,
        log=log,
    )
    results = guard_columns(
        tf.unstack(x, num=len(columns), axis=1),
        columns,
        infs=["clip"] * len(columns),
        indicators=[INDICATORS] * len(columns),
    )
    return tuple(
        tf.transpose(tf.stack([result[key] for result in results]))
        for key in ("", "missing", "clipped")
    )
