"""Interval bound propagation (`tanhguard.pipeline.interval_bounds`): sound
for random models and inputs inside the box, tight for one Dense layer."""

import itertools

import keras
import numpy as np
import pytest
import tf_keras
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tanhguard.pipeline.audit import observe_pre_activations
from tanhguard.pipeline.interval_bounds import (
    make_box,
    propagate,
    recurrent_pre_activations,
)

FAMILIES = {"keras3": keras, "tf_keras": tf_keras}
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _points(rng, lower, upper, count=48):
    """Corners of the box, then uniform points inside it."""
    corners = rng.integers(0, 2, size=(count // 3, lower.size)).astype(bool)
    corner_points = np.where(corners, upper, lower)
    inside = lower + rng.random((count - count // 3, lower.size)) * (upper - lower)
    return np.concatenate([corner_points, inside]).astype(np.float32)


def _assert_sound(model, lower, upper, seed):
    """Every pre-activation seen on points of the box lies in the proven one."""
    _, context = propagate(model, [make_box(lower, upper)])
    x = _points(np.random.default_rng(seed), lower, upper)
    # The points are float32: the box holds them only once rounded outward.
    seen = observe_pre_activations(model, [x])
    proven = {(r.path, r.part): r.box for r in context.records}
    assert set(seen) == set(proven)
    for key, z in seen.items():
        box = proven[key]
        assert np.all(z >= box.lower), key
        assert np.all(z <= box.upper), key
    return context


def _random_weights(model, rng, scale):
    for layer in model.layers:
        weights = layer.get_weights()
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, variance = weights
            weights = [
                rng.normal(0, scale, gamma.shape),
                rng.normal(0, scale, beta.shape),
                rng.normal(0, scale, mean.shape),
                rng.random(variance.shape) * scale + 1e-3,
            ]
        else:
            weights = [rng.normal(0, scale, w.shape) for w in weights]
        layer.set_weights([w.astype(np.float32) for w in weights])


FEEDFORWARD = [
    "dense_tanh",
    "dense_relu",
    "dense_linear",
    "dense_gelu",
    "batch_norm",
    "layer_norm",
    "dropout",
    "activation_tanh",
    "activation_sigmoid",
    "activation_silu",
    "leaky_relu",
    "add",
    "subtract",
    "multiply",
    "concatenate",
    "maximum",
    "average",
]


def _feedforward(family, width, steps, units):
    layers = family.layers
    inputs = family.Input((width,))
    x = inputs
    for step, size in zip(steps, units, strict=True):
        if step.startswith("dense_"):
            x = layers.Dense(size, activation=step.removeprefix("dense_"))(x)
        elif step == "batch_norm":
            x = layers.BatchNormalization()(x)
        elif step == "layer_norm":
            x = layers.LayerNormalization()(x)
        elif step == "dropout":
            x = layers.Dropout(0.5)(x)
        elif step.startswith("activation_"):
            x = layers.Activation(step.removeprefix("activation_"))(x)
        elif step == "leaky_relu":
            x = layers.LeakyReLU()(x)
        else:  # a merge of x with a Dense branch of the same width
            branch = layers.Dense(x.shape[-1], activation="tanh")(x)
            merge = {
                "add": layers.Add,
                "subtract": layers.Subtract,
                "multiply": layers.Multiply,
                "concatenate": layers.Concatenate,
                "maximum": layers.Maximum,
                "average": layers.Average,
            }[step]
            x = merge()([x, branch])
    x = layers.Dense(2, activation="tanh")(x)
    return family.Model(inputs, x)


@st.composite
def boxes(draw, width):
    lower = np.array(draw(st.lists(st.floats(-20, 20), min_size=width, max_size=width)))
    spans = np.array(draw(st.lists(st.floats(0, 30), min_size=width, max_size=width)))
    return lower.astype(np.float32).astype(np.float64), (lower + spans).astype(
        np.float32
    ).astype(np.float64)


@pytest.mark.parametrize("family", list(FAMILIES), ids=lambda f: f"in {f}")
@SETTINGS
@given(data=st.data())
def test_feedforward_pre_activations_lie_inside_the_proven_interval(family, data):
    width = data.draw(st.integers(1, 6), label="width")
    depth = data.draw(st.integers(1, 4), label="depth")
    steps = data.draw(
        st.lists(st.sampled_from(FEEDFORWARD), min_size=depth, max_size=depth)
    )
    units = data.draw(st.lists(st.integers(1, 6), min_size=depth, max_size=depth))
    scale = 10 ** data.draw(st.floats(-2, 1.5), label="log10 weight scale")
    seed = data.draw(st.integers(0, 2**16))
    lower, upper = data.draw(boxes(width))
    model = _feedforward(FAMILIES[family], width, steps, units)
    _random_weights(model, np.random.default_rng(seed), scale)
    context = _assert_sound(model, lower, upper, seed)
    assert context.unknown_layers == []


SEQUENCE = ["simple_rnn", "lstm", "gru", "gru_reset_before", "conv1d", "pooling"]


def _sequence_model(family, steps, features, kind, units, return_sequences):
    layers = family.layers
    inputs = family.Input((steps * features,))
    x = layers.Reshape((steps, features))(inputs)
    if kind == "simple_rnn":
        x = layers.SimpleRNN(units, return_sequences=return_sequences)(x)
    elif kind == "lstm":
        x = layers.LSTM(units, return_sequences=return_sequences)(x)
    elif kind.startswith("gru"):
        x = layers.GRU(
            units,
            return_sequences=return_sequences,
            reset_after=kind == "gru",
        )(x)
    elif kind == "conv1d":
        x = layers.Conv1D(units, 2, padding="same", activation="tanh")(x)
    else:
        x = layers.MaxPooling1D(2, padding="same")(x)
        x = layers.AveragePooling1D(1)(x)
    x = layers.Flatten()(x) if len(x.shape) == 3 else x
    return family.Model(inputs, layers.Dense(2, activation="tanh")(x))


@pytest.mark.parametrize("family", list(FAMILIES), ids=lambda f: f"in {f}")
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_recurrent_and_conv_pre_activations_lie_inside_the_proven_interval(
    family, data
):
    steps = data.draw(st.integers(1, 6), label="sequence length")
    features = data.draw(st.integers(1, 3), label="features")
    kind = data.draw(st.sampled_from(SEQUENCE))
    units = data.draw(st.integers(1, 4))
    return_sequences = data.draw(st.booleans())
    scale = 10 ** data.draw(st.floats(-2, 1), label="log10 weight scale")
    seed = data.draw(st.integers(0, 2**16))
    lower, upper = data.draw(boxes(steps * features))
    model = _sequence_model(
        FAMILIES[family], steps, features, kind, units, return_sequences
    )
    _random_weights(model, np.random.default_rng(seed), scale)
    _assert_sound(model, lower, upper, seed)


@pytest.mark.parametrize("family", list(FAMILIES), ids=lambda f: f"in {f}")
@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
def test_the_numpy_recurrence_reproduces_the_keras_layer(family, kind):
    """The observed gate values come from a float64 recurrence: it must give
    the layer's own hidden states."""
    module = FAMILIES[family]
    layer = getattr(module.layers, kind)(3, return_sequences=True)
    x = np.random.default_rng(0).normal(size=(4, 5, 2)).astype(np.float32)
    expected = np.asarray(layer(x))
    got = recurrent_pre_activations(layer, x)["h"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES), ids=lambda f: f"in {f}")
def test_one_dense_layer_is_tight_the_extreme_is_reached_at_a_vertex(family):
    module = FAMILIES[family]
    rng = np.random.default_rng(7)
    inputs = module.Input((4,))
    model = module.Model(inputs, module.layers.Dense(3, activation="tanh")(inputs))
    kernel = rng.normal(0, 3, (4, 3))
    bias = rng.normal(0, 1, 3)
    model.layers[-1].set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    kernel = kernel.astype(np.float32).astype(np.float64)
    bias = bias.astype(np.float32).astype(np.float64)
    lower, upper = np.array([-5, -1, 0, 2.0]), np.array([5, 3, 0, 4.0])
    _, context = propagate(model, [make_box(lower, upper)])
    vertices = np.array(list(itertools.product(*zip(lower, upper, strict=True))))
    exact = vertices @ kernel + bias  # numpy oracle: every vertex
    box = context.records[0].box
    # Equal up to the float32 rounding margin (2 (n + 1) 2^-24 relative).
    np.testing.assert_allclose(box.lower, exact.min(axis=0), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(box.upper, exact.max(axis=0), rtol=1e-6, atol=1e-5)
    assert np.all(box.lower <= exact.min(axis=0))
    assert np.all(box.upper >= exact.max(axis=0))


@pytest.mark.parametrize("family", list(FAMILIES), ids=lambda f: f"in {f}")
def test_a_lambda_layer_is_not_guessed_bounds_stop_there(family):
    module = FAMILIES[family]
    inputs = module.Input((3,))
    x = module.layers.Lambda(lambda t: t * 2.0, name="doubling")(inputs)
    x = module.layers.Dense(2, activation="tanh", name="after")(x)
    model = module.Model(inputs, x)
    _, context = propagate(model, [make_box(-np.ones(3), np.ones(3))])
    assert context.unknown_layers == ["doubling"]
    (record,) = context.records
    assert record.path == "after"
    assert record.box.unbounded_after == "doubling"
    assert np.all(np.isinf(record.box.upper))


@pytest.mark.parametrize("family", list(FAMILIES), ids=lambda f: f"in {f}")
def test_a_custom_activation_is_reported_unknown_and_nested_models_are_walked(family):
    module = FAMILIES[family]
    inner_in = module.Input((3,))
    inner = module.Model(
        inner_in,
        module.layers.Dense(2, activation=lambda t: t * 1.0, name="custom")(inner_in),
        name="inner",
    )
    inputs = module.Input((3,))
    model = module.Model(inputs, module.layers.Activation("tanh")(inner(inputs)))
    _, context = propagate(model, [make_box(-np.ones(3), np.ones(3))])
    paths = [(r.path, r.activation) for r in context.records]
    assert paths[0] == ("inner/custom", None)
    assert np.all(np.isfinite(context.records[0].box.upper))
    assert np.all(np.isinf(context.records[1].box.upper))  # after the unknown


@pytest.mark.parametrize("family", list(FAMILIES), ids=lambda f: f"in {f}")
def test_layer_norm_bounds_cover_the_rounding_of_its_centring(family):
    """One element: x - mean is 0 in reals, not in float32 (found by the
    property above: Dense(tanh) -> Dense -> LayerNormalization -> Dense(tanh),
    weights of scale 10, seed 0, box [0, 1])."""
    steps = ["dense_tanh", "dense_linear", "layer_norm"]
    model = _feedforward(FAMILIES[family], 1, steps, [1, 1, 1])
    _random_weights(model, np.random.default_rng(0), 10.0)
    _assert_sound(model, np.array([0.0]), np.array([1.0]), 0)


@pytest.mark.parametrize("family", list(FAMILIES), ids=lambda f: f"in {f}")
def test_layer_norm_of_an_unbounded_input_is_unbounded(family):
    """+-Inf inputs make LayerNormalization NaN: no finite bound holds."""
    layers = FAMILIES[family].layers
    inputs = FAMILIES[family].Input((3,))
    outputs = layers.Dense(2, activation="tanh")(layers.LayerNormalization()(inputs))
    model = FAMILIES[family].Model(inputs, outputs)
    _, context = propagate(model, [make_box([-np.inf] * 3, [np.inf] * 3)])
    (record,) = context.records
    assert np.all(np.isinf(record.box.upper))
    x = np.array([[np.inf, 1.0, 2.0]], np.float32)
    assert np.isnan(np.asarray(model(x))).any()  # what the bound allows for
