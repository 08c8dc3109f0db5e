"""The TFX entry point: `preprocessing_fn(inputs, custom_config)`.

    Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn="tanhguard.transforms.preprocessing_fn",
        custom_config={"config": {...}},        # or {"config_path": "f.yaml"}
    )

`custom_config` keys:
  config        the tanhguard config as a mapping (what the YAML holds), or
  config_path   a YAML config file (any path `tf.io.gfile` opens);
  passthrough   optional list of features copied unchanged (labels, keys): a
                scalar each, densified with 0 (or "") where missing.

Feature names and dtypes come from the TFX schema where the config does not
give them: a config without `features` takes every numeric schema feature but
the passthrough ones; a vector's `shape` is read from a fixed-length feature;
the dtype always follows the schema. A configured feature the schema lacks is
an error naming it.

Source columns: ExampleGen keys each `tf.Example` by the source column
(`mean radius` from a CSV header), and so do the schema and the `inputs`
here. A feature with `column: "mean radius"` reads that input; its outputs
are named after the feature (`mean_radius`). A config without `features`
names a schema feature whose name is not a valid feature name after it with
each other character replaced by `_` (`mean radius` -> `mean_radius`, with
`column: "mean radius"`). The serving signature that parses `tf.Example`s
with `TFTransformOutput.raw_feature_spec()` thus takes the source columns,
as the training data has them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from tanhguard.errors import ConfigError
from tanhguard.transforms.config import FEATURE_NAME, Config, parse_config
from tanhguard.transforms.config_file import parse_yaml, read_config_bytes
from tanhguard.transforms.preprocessing import build_preprocessing_fn

_KEYS = ("config", "config_path", "passthrough")


def _raw_config(custom_config: Any) -> dict[str, Any]:
    """The config mapping from `custom_config`, validated for shape only."""
    if not isinstance(custom_config, Mapping):
        raise ConfigError(
            "tanhguard needs the Transform component's `custom_config` with "
            "`config` (a mapping) or `config_path` (a YAML file). "
            f"Received: {custom_config!r}"
        )
    unknown = sorted(set(custom_config) - set(_KEYS))
    if unknown:
        raise ConfigError(
            f"custom_config: unknown key(s) {unknown}; expected `config` or "
            "`config_path`, and optionally `passthrough`"
        )
    if ("config" in custom_config) == ("config_path" in custom_config):
        raise ConfigError(
            "custom_config: give exactly one of `config` (a mapping) and "
            f"`config_path` (a YAML file). Received keys: {sorted(custom_config)}"
        )
    if "config" in custom_config:
        raw = custom_config["config"]
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"custom_config: `config` must be a mapping. Received: {raw!r}"
            )
        return copy.deepcopy(dict(raw))
    path = custom_config["config_path"]
    try:
        with tf.io.gfile.GFile(path, "rb") as handle:
            text = read_config_bytes(handle, path)
    except (tf.errors.NotFoundError, OSError) as error:
        raise ConfigError(f"custom_config: `config_path` {path}: {error}") from None
    raw = parse_yaml(text, path)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: config must be a mapping. Received: {raw!r}")
    return dict(raw)


def _passthrough(custom_config: Mapping[str, Any]) -> list[str]:
    names = custom_config.get("passthrough", [])
    if not isinstance(names, (list, tuple)) or not all(
        isinstance(name, str) for name in names
    ):
        raise ConfigError(
            f"custom_config: `passthrough` must be a list of feature names. "
            f"Received: {names!r}"
        )
    return list(names)


def _is_numeric(value: Any) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and (dtype.is_floating or dtype.is_integer)


def _fixed_length(value: Any) -> int | None:
    """d for a dense `[batch, d]` input with d > 1, else None."""
    if isinstance(value, tf.Tensor) and value.shape.rank == 2:
        size = value.shape[1]
        return size if size is not None and size > 1 else None
    return None


def _feature_for_column(column: str) -> tuple[str, dict[str, Any]]:
    """`(name, spec)` of a feature read from schema feature `column`: the
    same name if it is a valid feature name, else `column` with every
    character but letters, digits and `_` replaced by `_` (and `_` before a
    leading digit), and `column` in the spec."""
    if FEATURE_NAME.fullmatch(column):
        return column, {}
    name = re.sub(r"[^A-Za-z0-9_]", "_", column)
    if not name[:1].isalpha() and not name.startswith("_"):
        name = "_" + name
    return name, {"column": column}


def _schema_features(
    inputs: Mapping[str, Any], passthrough: list[str]
) -> dict[str, dict[str, Any]]:
    """A feature per numeric schema feature but the passthrough ones."""
    features: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    for column, value in inputs.items():
        if column in passthrough or not _is_numeric(value):
            continue
        name, spec = _feature_for_column(column)
        if name in features:
            raise ConfigError(
                f"schema features `{sources[name]}` and `{column}` would both be "
                f"feature `{name}`; list the features in the config, each with "
                "its `column`"
            )
        features[name], sources[name] = spec, column
    return features


def config_for_inputs(
    custom_config: Any, inputs: Mapping[str, Any]
) -> tuple[Config, list[str]]:
    """The validated config, completed from the schema's inputs.

    Returns:
      `(config, passthrough)`.

    Raises:
      ConfigError: `custom_config` is missing or malformed, the config breaks a
        rule, or a configured or passthrough feature is not in the schema.
    """
    raw = _raw_config(custom_config)
    passthrough = _passthrough(custom_config)
    absent = [name for name in passthrough if name not in inputs]
    if absent:
        raise ConfigError(
            f"custom_config: `passthrough` feature(s) {absent} are not in the "
            f"schema. Schema features: {sorted(inputs)}"
        )
    features = raw.get("features")
    if not features:
        features = _schema_features(inputs, passthrough)
    if not isinstance(features, Mapping):
        return parse_config(raw), passthrough  # the ConfigError names it
    features = {
        name: dict(spec) if isinstance(spec, Mapping) else spec
        for name, spec in features.items()
    }
    for name, spec in features.items():
        if spec is None:
            spec = features[name] = {}
        if not isinstance(spec, dict):
            continue  # parse_config names it
        column = spec.get("column")
        source = column if isinstance(column, str) and column else name
        if source not in inputs:
            given = f"its column `{source}`" if source != name else "configured but"
            raise ConfigError(
                f"feature `{name}`: {given} not in the schema. "
                f"Schema features: {sorted(inputs)}"
            )
        value = inputs[source]
        if not _is_numeric(value):
            raise ConfigError(
                f"feature `{name}`: the schema gives it dtype "
                f"{getattr(value, 'dtype', type(value))}; tanhguard needs numbers"
            )
        spec["dtype"] = "int" if value.dtype.is_integer else "float"
        if "shape" not in spec and _fixed_length(value):
            spec["shape"] = [_fixed_length(value)]
    raw["features"] = features
    return parse_config(raw), passthrough


def _dense_passthrough(value: Any) -> tf.Tensor:
    """A scalar feature as a dense `[batch]` tensor (0 or "" where missing)."""
    if isinstance(value, tf.RaggedTensor):
        value = value.to_sparse()
    if isinstance(value, tf.SparseTensor):
        default = "" if value.dtype == tf.string else 0
        batch = value.dense_shape[0]
        value = tf.sparse.to_dense(
            tf.sparse.reset_shape(value, tf.stack([batch, tf.constant(1, tf.int64)])),
            default_value=tf.cast(default, value.dtype),
        )
    return tf.reshape(value, [-1])


def preprocessing_fn(
    inputs: Mapping[str, Any], custom_config: Any = None
) -> dict[str, tf.Tensor]:
    """TFX Transform's `preprocessing_fn` for tanhguard (see the module doc).

    Returns:
      The transformed features (`name`, and `name__missing` / `name__clipped`
      when configured), float32, plus the passthrough features unchanged.
    """
    config, passthrough = config_for_inputs(custom_config, inputs)
    sources = [config.source_column(name) for name in config.features]
    outputs = build_preprocessing_fn(config)({key: inputs[key] for key in sources})
    for name in passthrough:
        outputs[name] = _dense_passthrough(inputs[name])
    return outputs
