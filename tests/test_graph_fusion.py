"""The graph `build_preprocessing_fn` builds, given a statistics vector written
here (the `fit_phase` hook returning it as a constant, as a caller with its
own fit phase does, or as a tensor whose value is not known while the graph
is built), against the formula in numpy float64 from README's statement:

    out = clip((g(clip(impute(x), lower, upper)) - center) / scale, -B, B)

on NaN, +-Inf, float32 extremes and missing values, through dense inputs, full
sparse inputs (their values pass through) and sparse inputs with missing rows
(scattered). It also checks that the graph holds the numbers as constants
(no op reads the statistics vector's values), keeps the vector and the
config, and computes indicators only where configured.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from tanhguard.transforms.config import parse_config
from tanhguard.transforms.layout import (
    field_slice,
    phase0_length,
    stats_vector_length,
)
from tanhguard.transforms.preprocessing import (
    CONFIG_NAME,
    STATS_VECTOR_NAME,
    build_preprocessing_fn,
)
from tanhguard.transforms.slots import total_slots

F32_MAX = float(np.finfo(np.float32).max)

CONFIG = parse_config(
    {
        "features": {
            "z": {},
            "n": {"dtype": "int"},
            "v": {"shape": [3]},
            "w": {"shape": [2], "elementwise": False},
            "lg": {"scale": "log_zscore"},
            "m": {"inf": "missing", "indicators": ["missing", "clipped"]},
            "c": {"indicators": ["clipped"]},
            # A scale above 2**126: its float32 reciprocal flushes to 0.
            "h": {"clip": "none"},
            "t": {"output_bound": 0.1},
        }
    }
)

# Per slot (config order; `v` has three, `w` one shared):
# impute, lower, upper, center, scale. All float32 numbers, so the float64
# oracle applies the same ones.
SLOTS = [
    ("z", (1.5, -2.0, 10.0, 2.25, 3.0)),
    ("n", (3.0, 0.0, 100.0, 20.0, 7.5)),
    ("v", (0.0, -1.0, 1.0, 0.125, 0.5)),
    ("v", (4.0, -8.0, 8.0, -1.0, 2.0)),
    ("v", (-0.5, -0.5, 0.5, 0.0, 0.25)),
    ("w", (1.0, -3.0, 3.0, 0.5, 1.25)),
    # log space: g(lower) = -1.0986..., g(upper) = 6.9088; center, scale of g.
    ("lg", (2.0, -2.0, 1000.0, 1.5, 2.5)),
    ("m", (0.0, -4.0, 4.0, -0.5, 1.5)),
    ("c", (7.0, 7.0, 7.0, 7.0, 0.0)),
    ("h", (0.0, -F32_MAX, F32_MAX, 0.0, 3e38)),
    ("t", (0.0, -1e6, 1e6, 0.0, 1e-3)),
]

PROBE = [
    np.nan,
    np.inf,
    -np.inf,
    F32_MAX,
    -F32_MAX,
    1e38,
    -3e38,
    0.0,
    1.0,
    -1.0,
    2.5,
    -9.75,
    123.0,
    1e-3,
    -4e-5,
]


def _vector() -> np.ndarray:
    slots = total_slots(CONFIG)
    assert slots == len(SLOTS)
    vector = np.zeros(stats_vector_length(slots))
    for field, column in zip(
        ("impute_value", "lower", "upper", "center", "scale"),
        np.array([numbers for _, numbers in SLOTS]).T,
        strict=True,
    ):
        vector[field_slice(field, slots)] = column
    return vector


def _element_numbers() -> dict[str, list[tuple]]:
    """Per feature, the numbers of each element."""
    by_feature: dict[str, list[tuple]] = {}
    for name, numbers in SLOTS:
        by_feature.setdefault(name, []).append(numbers)
    for name, feature in CONFIG.features.items():
        if len(by_feature[name]) != feature.size:
            by_feature[name] = by_feature[name] * feature.size
    return by_feature


def _largest_float32_not_above(bound: float) -> float:
    rounded = np.float32(bound)
    if float(rounded) > bound:
        rounded = np.nextafter(rounded, np.float32(0))
    return float(rounded)


def _oracle(name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """README's formula in float64 and the indicators, per element column."""
    feature = CONFIG.features[name]
    x = np.asarray(x, np.float32).astype(np.float64).reshape(len(x), -1)
    if feature.inf == "missing":
        x = np.where(np.isinf(x), np.nan, x)
    out, missing, clipped = (np.zeros_like(x) for _ in range(3))
    bound = _largest_float32_not_above(feature.output_bound)
    for j, (impute, lower, upper, center, scale) in enumerate(_element_numbers()[name]):
        column = x[:, j]
        v = np.clip(np.where(np.isnan(column), impute, column), lower, upper)
        if feature.scale.log:
            v = np.sign(v) * np.log1p(np.abs(v))
        out[:, j] = 0.0 if scale == 0 else np.clip((v - center) / scale, -bound, bound)
        missing[:, j] = np.isnan(column)
        with np.errstate(invalid="ignore"):
            clipped[:, j] = (column < lower) | (column > upper)
    return {"": out, "missing": missing, "clipped": clipped}


def _raw_values() -> dict[str, np.ndarray]:
    """Every probe value in every element (ints: a few, rounded)."""
    rows = len(PROBE)
    raw = {}
    for name, feature in CONFIG.features.items():
        if feature.dtype == "int":
            values = np.array([0, 3, 150, -(2**40), 2**40 + 1, 20, 7] * 3)[:rows]
        else:
            values = np.asarray(PROBE, np.float32)
        columns = [np.roll(values, shift) for shift in range(feature.size)]
        raw[name] = np.stack(columns, axis=1) if feature.is_vector else columns[0]
    return raw


def _build(static: bool):
    vector = _vector()
    parameters = vector[: phase0_length(total_slots(CONFIG))]

    def fit_phase(x, *args, **kwargs):
        constant = tf.constant(vector, tf.float64)
        if static:
            return constant
        # A value not known while the graph is built: the graph derives the
        # numbers from the vector itself.
        return constant * tf.cast(tf.shape(x)[0] >= 0, tf.float64)

    return build_preprocessing_fn(CONFIG, fit_phase=fit_phase, parameters=parameters)


def _as_sparse(values: np.ndarray, drop_rows: tuple[int, ...] = ()) -> tf.SparseTensor:
    """Every value present, except in `drop_rows` (missing rows)."""
    values = values.reshape(len(values), -1)
    indices = [
        [r, c]
        for r in range(values.shape[0])
        if r not in drop_rows
        for c in range(values.shape[1])
    ]
    kept = np.array([values[r, c] for r, c in indices], values.dtype)
    return tf.SparseTensor(
        tf.constant(indices, tf.int64), tf.constant(kept), values.shape
    )


def _input_specs(kind: str) -> dict:
    specs = {}
    for name, feature in CONFIG.features.items():
        dtype = tf.int64 if feature.dtype == "int" else tf.float32
        if kind == "dense":
            shape = [None, feature.size] if feature.is_vector else [None]
            specs[name] = tf.TensorSpec(shape, dtype)
        else:
            specs[name] = tf.SparseTensorSpec([None, None], dtype)
    return specs


def _inputs(kind: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The graph's inputs and the values the oracle sees (NaN: missing)."""
    raw = _raw_values()
    if kind == "dense":
        return {name: tf.constant(v) for name, v in raw.items()}, raw
    drop = () if kind == "full" else (1, 4)
    seen = {}
    for name, values in raw.items():
        shown = values.astype(np.float32)
        if drop:
            shown[list(drop)] = np.nan
        seen[name] = shown
    return {name: _as_sparse(v, drop) for name, v in raw.items()}, seen


@pytest.mark.parametrize("static", [True, False], ids=["constant", "tensor"])
@pytest.mark.parametrize("kind", ["dense", "full", "missing_rows"])
def test_graph_follows_the_formula(kind, static):
    preprocessing_fn = tf.function(_build(static), input_signature=[_input_specs(kind)])
    inputs, seen = _inputs(kind)
    outputs = {k: v.numpy() for k, v in preprocessing_fn(inputs).items()}
    assert list(outputs) == CONFIG.model_matrix_names()
    for name, feature in CONFIG.features.items():
        want = _oracle(name, seen[name])
        bound = np.float32(feature.output_bound)
        for output in CONFIG.output_names(name):
            which = output[len(name) :].removeprefix("__")
            got = outputs[output].reshape(len(seen[name]), -1)
            assert got.dtype == np.float32
            assert np.isfinite(got).all(), output
            if which == "":
                assert (np.abs(got) <= bound).all(), output
                assert float(np.abs(got).max()) <= feature.output_bound, output
            np.testing.assert_allclose(
                got,
                want[which],
                rtol=2e-6,
                atol=1e-6 * feature.output_bound,
                err_msg=f"{output} ({kind}, static={static})",
            )


def test_a_scale_past_2_to_126_still_divides():
    # Its float32 reciprocal flushes to 0: multiplying by it would give 0.
    preprocessing_fn = tf.function(_build(True))
    x = np.array([1e38, -3e38, F32_MAX, 0.0], np.float32)
    inputs = {name: tf.constant(v[:4]) for name, v in _raw_values().items()}
    inputs["h"] = tf.constant(x)
    got = preprocessing_fn(inputs)["h"].numpy()
    np.testing.assert_allclose(got, x.astype(np.float64) / 3e38, rtol=1e-6, atol=0)
    assert got[0] > 0.33


def _upstream(op: tf.Operation) -> set[tf.Operation]:
    """Every op `op` waits for, through data and control inputs."""
    seen, stack = set(), [op]
    while stack:
        current = stack.pop()
        for parent in [t.op for t in current.inputs] + list(current.control_inputs):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def test_graph_holds_the_numbers_as_constants_and_keeps_vector_and_config():
    function = tf.function(_build(True)).get_concrete_function(_input_specs("full"))
    vector = function.graph.get_operation_by_name(STATS_VECTOR_NAME)
    # No op computes with the vector's values: the numbers are constants.
    assert not vector.outputs[0].consumers()
    readers = [
        op.name
        for op in function.graph.get_operations()
        if any(tensor.name == vector.inputs[0].name for tensor in op.inputs)
    ]
    assert readers == [STATS_VECTOR_NAME]
    # Every output waits for it (a control input), and it for the config.
    for output in function.outputs:
        assert vector in _upstream(output.op), output.name
    config = function.graph.get_operation_by_name(CONFIG_NAME)
    assert config in _upstream(vector)
    text = tf.make_ndarray(config.get_attr("value")).item().decode()
    assert json.loads(text) == CONFIG.to_json_dict()


def test_indicators_only_where_configured():
    outputs = _build(True)(_inputs("dense")[0])
    assert sorted(outputs) == sorted(
        [
            *("z", "n", "v", "w", "lg", "m", "m__missing", "m__clipped"),
            *("c", "c__clipped", "h", "t"),
        ]
    )


def test_large_batches_give_the_same_outputs():
    # From 16,384 rows a vector's columns are put together another way
    # (stacked as rows, then transposed): the same numbers.
    preprocessing_fn = tf.function(_build(True))
    raw = _raw_values()
    small = {
        k: v.numpy()
        for k, v in preprocessing_fn(
            {name: tf.constant(v) for name, v in raw.items()}
        ).items()
    }
    repeat = 20_000 // len(PROBE) + 1
    large = preprocessing_fn(
        {name: tf.constant(np.concatenate([v] * repeat)) for name, v in raw.items()}
    )
    for output, value in large.items():
        value = value.numpy()
        assert len(value) >= 20_000
        np.testing.assert_array_equal(value[: len(PROBE)], small[output], output)
        np.testing.assert_array_equal(value[-len(PROBE) :], small[output], output)
