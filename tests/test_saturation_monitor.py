"""`SaturationMonitor`: the figures it logs each epoch equal a numpy
computation of each tanh layer's pre-activation, reach History (and
TensorBoard), and `on_overflow="stop"` ends training past 88.72."""

import importlib
import logging

import numpy as np
import pytest
import tensorflow as tf

from tanhguard.errors import ConfigError
from tanhguard.pipeline.activations import REGISTERED_NAME
from tanhguard.pipeline.monitor import SaturationMonitor, saturation_figures

FAMILIES = ["keras", "tf_keras"]


def _family(name):
    family = importlib.import_module(name)
    family.utils.set_random_seed(0)
    return family


def _tanh_model(family):
    """Three tanh-bearing layers (tanh, stable_tanh by name, Activation) and
    three that are not (relu, linear, the output)."""
    layers = family.layers
    inputs = family.Input((4,), name="x")
    h = layers.Dense(5, activation="tanh", name="first")(inputs)
    h = layers.Dense(3, activation=REGISTERED_NAME, name="second")(h)
    h = layers.Dense(3, activation="relu", name="relu")(h)
    h = layers.Dense(3, name="linear")(h)
    h = layers.Activation("tanh", name="act")(h)
    model = family.Model(inputs, layers.Dense(1, name="out")(h))
    model.compile(optimizer="sgd", loss="mse")
    return model


def _numpy_pre_activations(model, x):
    """Each tanh layer's z from the weights, in float64."""
    x = x.astype(np.float64)

    def dense(name, values):
        kernel, bias = model.get_layer(name).get_weights()
        return values @ kernel.astype(np.float64) + bias

    first = dense("first", x)
    second = dense("second", np.tanh(first))
    relu = np.maximum(dense("relu", np.tanh(second)), 0.0)
    return {"first": first, "second": second, "act": dense("linear", relu)}


def _expected(z):
    return np.mean(np.abs(np.tanh(z)) > 0.99), np.max(np.abs(z))


def _data(rows=64):
    rng = np.random.default_rng(0)
    # x * 3 puts about a third of the first layer's units past |tanh| > 0.99.
    x = (3 * rng.normal(size=(rows, 4))).astype(np.float32)
    return x, rng.normal(size=(rows, 1)).astype(np.float32)


@pytest.mark.parametrize("name", FAMILIES)
def test_history_holds_the_figures_of_each_tanh_layer_equal_to_numpy(name):
    family = _family(name)
    model = _tanh_model(family)
    x, y = _data()
    validation = x[:40]
    history = model.fit(
        x,
        y,
        epochs=2,
        batch_size=16,
        verbose=0,
        callbacks=[SaturationMonitor(validation)],
    )
    logged = history.history
    monitored = {k.split("/", 1)[1] for k in logged if k.startswith("tanh_")}
    assert monitored == {"first", "second", "act"}
    # The last epoch's figures come from the weights training ended with.
    for layer, z in _numpy_pre_activations(model, validation).items():
        share, largest = _expected(z)
        assert len(logged[f"tanh_saturation/{layer}"]) == 2
        assert logged[f"tanh_saturation/{layer}"][-1] == share
        # The model computes z in float32: a few float32 ulp from numpy.
        np.testing.assert_allclose(
            logged[f"tanh_max_abs_z/{layer}"][-1], largest, rtol=1e-5
        )
    assert 0.1 < logged["tanh_saturation/first"][-1] < 0.9


@pytest.mark.parametrize("name", FAMILIES)
def test_recurrent_layers_report_their_tanh_parts(name):
    family = _family(name)
    inputs = family.Input((6, 2))
    h = family.layers.SimpleRNN(3, return_sequences=True, name="rnn")(inputs)
    h = family.layers.LSTM(2, name="lstm")(h)
    model = family.Model(inputs, family.layers.Dense(1)(h))
    x = (2 * np.random.default_rng(1).normal(size=(20, 6, 2))).astype(np.float32)

    figures = saturation_figures(model, x)

    # LSTM's sigmoid gates (input, forget, output) are not tanh: not reported.
    assert {k.split("/", 1)[1] for k in figures} == {
        "rnn",
        "lstm[cell_input]",
        "lstm[cell]",
    }
    kernel, recurrent, bias = (
        w.astype(np.float64) for w in model.get_layer("rnn").get_weights()
    )
    state = np.zeros((20, 3))
    steps = []
    for t in range(6):  # z_t = x_t W + h_{t-1} U + b; h_t = tanh(z_t)
        steps.append(x[:, t].astype(np.float64) @ kernel + state @ recurrent + bias)
        state = np.tanh(steps[-1])
    share, largest = _expected(np.stack(steps, axis=1))
    assert figures["tanh_saturation/rnn"] == share
    np.testing.assert_allclose(figures["tanh_max_abs_z/rnn"], largest, rtol=1e-12)


def _huge_model(family):
    inputs = family.Input((3,))
    # Every unit's z is 3 * 100 = 300 > 88.72 on a row of ones.
    hidden = family.layers.Dense(
        4,
        activation="tanh",
        kernel_initializer=family.initializers.Constant(100.0),
        name="huge",
    )(inputs)
    model = family.Model(inputs, family.layers.Dense(1)(hidden))
    model.compile(optimizer=family.optimizers.SGD(learning_rate=0.0), loss="mse")
    return model


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize(
    "on_overflow, epochs",
    [("stop", 1), ("warn", 3), (None, 3)],
    ids=["stop ends at epoch 1", "warn trains on", "by default trains on"],
)
def test_on_overflow(name, on_overflow, epochs, caplog):
    family = _family(name)
    model = _huge_model(family)
    x = np.ones((8, 3), np.float32)
    monitor = SaturationMonitor(x, on_overflow=on_overflow)
    with caplog.at_level(logging.WARNING, logger="tanhguard.pipeline.monitor"):
        history = model.fit(
            x, np.zeros((8, 1)), epochs=3, verbose=0, callbacks=[monitor]
        )
    assert len(history.history["loss"]) == epochs
    np.testing.assert_allclose(history.history["tanh_max_abs_z/huge"], 300.0, rtol=1e-6)
    assert monitor.overflowed == ["huge"]
    warned = [r.getMessage() for r in caplog.records if "overflow" in r.getMessage()]
    if on_overflow is None:
        assert not warned
    else:
        assert len(warned) == epochs
        assert "`huge`" in warned[0] and "88.72" in warned[0]
        assert ("stopping training" in warned[0]) == (on_overflow == "stop")


@pytest.mark.parametrize("name", FAMILIES)
def test_a_callback_listed_after_it_sees_the_figures(name):
    """TensorBoard and History read the same `logs` dict after it."""
    family = _family(name)
    model = _tanh_model(family)
    x, y = _data(16)
    seen = []
    recorder = family.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(dict(logs))
    )
    model.fit(x, y, epochs=1, verbose=0, callbacks=[SaturationMonitor(x), recorder])
    assert "tanh_saturation/first" in seen[0] and "tanh_max_abs_z/act" in seen[0]


@pytest.mark.parametrize("name", FAMILIES)
def test_tensorboard_writes_the_figures(name, tmp_path):
    family = _family(name)
    model = _tanh_model(family)
    x, y = _data(16)
    board = family.callbacks.TensorBoard(str(tmp_path))
    model.fit(x, y, epochs=1, verbose=0, callbacks=[SaturationMonitor(x), board])
    tags = {
        value.tag
        for path in (tmp_path / "train").iterdir()
        for event in tf.compat.v1.train.summary_iterator(str(path))
        for value in event.summary.value
    }
    for layer in ("first", "second", "act"):
        assert f"epoch_tanh_saturation/{layer}" in tags
        assert f"epoch_tanh_max_abs_z/{layer}" in tags


@pytest.mark.parametrize("name", FAMILIES)
def test_a_dict_or_a_dataset_gives_the_same_figures_as_an_array(name):
    family = _family(name)
    model = _tanh_model(family)
    x, y = _data(32)
    expected = saturation_figures(model, x)
    assert saturation_figures(model, {"x": x}) == expected
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    assert saturation_figures(model, dataset) == expected
    with pytest.raises(ConfigError, match=r"no value for the model input\(s\) \['x'\]"):
        saturation_figures(model, {"fare": x})


def test_on_overflow_must_be_a_known_action():
    with pytest.raises(ConfigError, match="`on_overflow` must be one of"):
        SaturationMonitor(np.zeros((1, 3)), on_overflow="halt")
    with pytest.raises(ConfigError, match="`overflow_threshold` must be"):
        SaturationMonitor(np.zeros((1, 3)), overflow_threshold=float("nan"))
