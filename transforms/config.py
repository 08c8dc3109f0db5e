"""The feature configuration: YAML validated into typed models.

A config has a `defaults` block and a `features` map. Each of `impute`, `clip`
and `scale` is either a strategy name or a mapping with `strategy` and its
parameters; a feature given as `{}` takes every default.

>>> config = parse_config({"features": {"fare": {}}})
>>> config.features["fare"].clip.strategy
'quantile'
"""

from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import models_json_schema

from tanhguard.errors import ConfigError
from tanhguard.transforms.config_file import load_yaml_file, short_repr
from tanhguard.transforms.layout import REPORTED_QUANTILES
from tanhguard.transforms.strategies import (
    CLIP_STRATEGIES,
    FLOAT32_MAX,
    IMPUTE_STRATEGIES,
    SCALE_STRATEGIES,
    ClipStrategy,
    ConstantImpute,
    FixedClip,
    ImputeStrategy,
    IqrClip,
    LogZScoreScale,
    MadClip,
    MeanImpute,
    MedianImpute,
    MinMaxClip,
    MinMaxScale,
    NoClip,
    NoScale,
    QuantileClip,
    RobustScale,
    ScaleStrategy,
    SigmaClip,
    ZeroImpute,
    ZScoreScale,
)

FEATURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""What a feature name is: letters, digits and `_`, not starting with a digit."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A strategy field takes any registered strategy, told apart by `strategy`.
ImputeSpec = Annotated[Union[IMPUTE_STRATEGIES], Field(discriminator="strategy")]
ClipSpec = Annotated[Union[CLIP_STRATEGIES], Field(discriminator="strategy")]
ScaleSpec = Annotated[Union[SCALE_STRATEGIES], Field(discriminator="strategy")]

InfPolicy = Literal["clip", "missing"]
Indicator = Literal["missing", "clipped"]

_STRATEGY_FIELDS = ("impute", "clip", "scale")


def _expand_strategy_shorthand(data: Any) -> Any:
    """Turns `clip: quantile` into `clip: {strategy: quantile}`."""
    if isinstance(data, dict):
        data = dict(data)
        for key in _STRATEGY_FIELDS:
            if isinstance(data.get(key), str):
                data[key] = {"strategy": data[key]}
    return data


def _check_output_bound(value: float) -> float:
    # The graph computes in float32: a bound past its range would be +-Inf.
    if not (math.isfinite(value) and 0 < value <= FLOAT32_MAX):
        raise ValueError(
            f"must be a finite number > 0 and at most {FLOAT32_MAX:.7g} (the "
            f"float32 range the graph computes in). Received: {value}"
        )
    return value


class Defaults(_Strict):
    """Settings every feature takes unless it gives its own."""

    impute: ImputeSpec = MedianImpute()
    clip: ClipSpec = QuantileClip()
    scale: ScaleSpec = ZScoreScale()
    inf: InfPolicy = "clip"
    indicators: tuple[Indicator, ...] = ()
    elementwise: StrictBool = True
    output_bound: float = 5.0

    _expand = model_validator(mode="before")(_expand_strategy_shorthand)

    _bound = field_validator("output_bound")(_check_output_bound)


class FeatureConfig(_Strict):
    """One feature, after defaults are applied.

    `column` is the feature's name in the source data, when that name is not
    a valid feature name (`mean radius`, as scikit-learn's bundled datasets
    and many CSV exports spell columns); by default it is the feature's
    name. Every raw (untransformed) side of the feature speaks the source
    name; everything transformed speaks the feature name:

    - readers: the CSV header's column, the Parquet column, the `tf.Example`
      key of a TFRecord (and of TFX's ExampleGen, which keys each example by
      the source column);
    - the graph's raw inputs: the key of the feature in the preprocessing_fn's
      `inputs`, in the raw metadata (`TFTransformOutput.raw_feature_spec()`),
      in `transform_features_layer()`'s input, and the `tf.Example` key that
      the `serving_default` signature parses;
    - the feature name: the graph's outputs (`name`, `name__missing`, ...),
      stats.json, the model's inputs, and the tensors given to
      `transform_features` (SavedModel signature arguments must be plain
      names), `Preprocessor` and an attached Keras model.

    For a vector `[d]`, `column` replaces the feature name as the stem of its
    source columns: the CSV (or split Parquet) columns `<column>_0` ...
    `<column>_{d-1}`, the Parquet list column or `tf.Example` key `<column>`.
    """

    dtype: Literal["float", "int"] = "float"
    shape: tuple[int, ...] = ()
    column: str | None = None
    impute: ImputeSpec
    clip: ClipSpec
    scale: ScaleSpec
    inf: InfPolicy
    indicators: tuple[Indicator, ...]
    elementwise: StrictBool
    output_bound: float

    _bound = field_validator("output_bound")(_check_output_bound)

    @field_validator("indicators", mode="after")
    @classmethod
    def _check_indicators(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"lists an indicator twice. Received: {list(value)}")
        return value

    @field_validator("column", mode="before")
    @classmethod
    def _check_column(cls, value: Any) -> Any:
        if value is None:
            return value
        if not isinstance(value, str) or not value:
            raise ValueError(
                f"must be the non-empty name of the source column. Received: "
                f"{short_repr(value)}"
            )
        if value != value.strip():
            raise ValueError(
                "must not start or end with a space (a CSV header's names are "
                f"read without them). Received: {short_repr(value)}"
            )
        if not value.isprintable():
            raise ValueError(
                f"must not hold control characters. Received: {short_repr(value)}"
            )
        return value

    @field_validator("shape", mode="before")
    @classmethod
    def _check_shape(cls, value: Any) -> Any:
        if value in ("scalar", None):
            return ()
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or len(value) > 1:
            raise ValueError(
                f"must be `scalar` or a one-element list `[d]`. Received: {value!r}"
            )
        if value and (
            isinstance(value[0], bool) or not isinstance(value[0], int) or value[0] < 1
        ):
            raise ValueError(f"`d` must be an integer >= 1. Received: {value!r}")
        return tuple(value)

    @property
    def size(self) -> int:
        """Number of elements per row: 1 for a scalar, d for shape `[d]`."""
        return self.shape[0] if self.shape else 1

    @property
    def is_vector(self) -> bool:
        return bool(self.shape)

    @property
    def slots(self) -> int:
        """Sets of statistics: d for an elementwise vector, else 1."""
        return self.size if self.elementwise else 1


class Config(_Strict):
    """A validated tanhguard config."""

    defaults: Defaults = Defaults()
    features: dict[str, FeatureConfig]

    def to_json_dict(self) -> dict[str, Any]:
        """The config with every default filled in, as plain JSON types (a
        feature without `column` has none: it reads its own name)."""
        data = json.loads(self.model_dump_json())
        for feature in data["features"].values():
            if feature.get("column") is None:
                feature.pop("column", None)
        return data

    def source_column(self, name: str) -> str:
        """The raw key of feature `name`: its `column`, else its name.

        The `tf.Example` key, the Parquet (list) column, the preprocessing_fn
        input and the raw metadata's feature; a vector's CSV columns start
        with it (see `FeatureConfig`).
        """
        return self.features[name].column or name

    def csv_columns(self, name: str) -> list[str]:
        """The CSV columns that hold feature `name`.

        A scalar is one column, its `source_column`; a vector of shape `[d]`
        is the columns `<source>_0` ... `<source>_{d-1}`.

        >>> config = parse_config(
        ...     {"features": {"mean_radius": {"column": "mean radius"}}}
        ... )
        >>> config.csv_columns("mean_radius")
        ['mean radius']
        """
        feature = self.features[name]
        source = self.source_column(name)
        if not feature.is_vector:
            return [source]
        return [f"{source}_{i}" for i in range(feature.size)]

    def output_names(self, name: str) -> list[str]:
        """The graph outputs of feature `name`: its value, then its indicators
        (`name__missing`, `name__clipped`) in the configured order."""
        return [name, *(f"{name}__{kind}" for kind in self.features[name].indicators)]

    def model_matrix_names(self) -> list[str]:
        """Every graph output, in the column order of the model matrix."""
        return [output for name in self.features for output in self.output_names(name)]


def _merge_feature(raw: dict[str, Any], defaults: Defaults) -> dict[str, Any]:
    raw = _expand_strategy_shorthand(raw)
    merged: dict[str, Any] = {
        "impute": defaults.impute.model_dump(),
        "clip": defaults.clip.model_dump(),
        "scale": defaults.scale.model_dump(),
        "inf": defaults.inf,
        "indicators": defaults.indicators,
        "elementwise": defaults.elementwise,
        "output_bound": defaults.output_bound,
    }
    merged.update(raw)
    return merged


_TOP_LEVEL_KEYS = ("defaults", "features")
_STRATEGY_CLASSES = {
    "impute": IMPUTE_STRATEGIES,
    "clip": CLIP_STRATEGIES,
    "scale": SCALE_STRATEGIES,
}


def _tag(strategy: type[BaseModel]) -> str:
    """A strategy class's `strategy` name (`quantile` for `QuantileClip`)."""
    return strategy.model_fields["strategy"].default


def _did_you_mean(key: Any, candidates: Any) -> str:
    """` (did you mean `clip`?)` for the candidate closest to `key`, or ""."""
    close = difflib.get_close_matches(str(key), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _known_keys(model: type[BaseModel], location: list[str]) -> list[str]:
    """The keys allowed beside the unknown key at `location`."""
    if len(location) == 3 and location[0] in _STRATEGY_CLASSES:
        for strategy in _STRATEGY_CLASSES[location[0]]:
            if _tag(strategy) == location[1]:
                return list(strategy.model_fields)
        return []
    if len(location) == 1:
        return list(model.model_fields)
    return []


def _validation_problems(
    prefix: str, error: ValidationError, model: type[BaseModel]
) -> list[str]:
    """One line per error pydantic found, naming the field (`prefix` names
    the feature or `defaults`)."""
    lines = []
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        known = _known_keys(model, location)
        # Drop the discriminator tag pydantic adds (e.g. `clip.quantile.lower`).
        if len(location) >= 2 and location[0] in _STRATEGY_FIELDS:
            location = [location[0], *location[2:]]
        field = ".".join(location) or "(root)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = (
                f"unknown key{_did_you_mean(location[-1], known)}. "
                f"Received: {short_repr(item['input'])}"
            )
        elif item["type"] == "union_tag_invalid":
            tags = [_tag(s) for s in _STRATEGY_CLASSES.get(location[0], ())]
            given = item["input"].get("strategy")
            message = (
                f"unknown strategy {given!r}{_did_you_mean(given, tags)}; expected "
                f"one of {item['ctx']['expected_tags']}"
            )
        elif item["type"] == "union_tag_not_found":
            tags = [_tag(s) for s in _STRATEGY_CLASSES.get(location[0], ())]
            message = (
                f"a mapping needs `strategy`, one of {tags}. Received: "
                f"{short_repr(item['input'])}"
            )
        elif item["type"] == "missing":
            message = "is required"
        elif "Received" not in message and "input" in item:
            message = f"{message}. Received: {short_repr(item['input'])}"
        lines.append(f"{prefix}`{field}`: {message}")
    return lines


def _feature_name_problem(name: Any) -> str | None:
    if isinstance(name, str) and FEATURE_NAME.fullmatch(name):
        return None
    # Escaped: a name may hold a newline or control characters.
    shown = str(name).encode("unicode_escape").decode("ascii")
    return (
        f"feature `{shown}`: a name must be letters, digits and `_`, not "
        f"starting with a digit (give the source's name as `column`). "
        f"Received: {short_repr(name)}"
    )


def parse_config(data: Any) -> Config:
    """Validates a config given as plain Python data (what YAML loads into).

    Every problem is found before the error is raised: the message has one
    line per problem, each naming the feature (or `defaults`) and the field,
    with the closest known key for an unknown one.

    Args:
      data: A mapping with `features` and optionally `defaults`.

    Returns:
      The validated `Config`, with defaults applied to every feature.

    Raises:
      ConfigError: The config breaks a rule; the message names the feature and
        the field and shows what was received, one line per problem.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping. Received: {short_repr(data)}")
    problems: list[str] = []
    unknown = [key for key in data if key not in _TOP_LEVEL_KEYS]
    for key in unknown:
        problems.append(
            f"unknown top-level key {short_repr(key)}"
            f"{_did_you_mean(key, _TOP_LEVEL_KEYS)}; expected `defaults` and "
            "`features`"
        )
    defaults = Defaults()
    try:
        defaults = Defaults.model_validate(data.get("defaults") or {})
    except ValidationError as error:
        # The features are still checked, against the built-in defaults.
        problems += _validation_problems("defaults: ", error, Defaults)
    features_raw = data.get("features")
    if not isinstance(features_raw, dict) or not features_raw:
        # A misspelt `features` is already named above.
        if not (features_raw is None and unknown):
            problems.append(
                f"`features` must be a non-empty mapping. Received: "
                f"{short_repr(features_raw)}"
            )
        features_raw = {}
    features: dict[str, FeatureConfig] = {}
    for name, raw in features_raw.items():
        problem = _feature_name_problem(name)
        if problem is not None:
            problems.append(problem)
            continue
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            problems.append(
                f"feature `{name}`: must be a mapping (use `{{}}` for all "
                f"defaults). Received: {short_repr(raw)}"
            )
            continue
        try:
            features[name] = FeatureConfig.model_validate(_merge_feature(raw, defaults))
        except ValidationError as error:
            problems += _validation_problems(
                f"feature `{name}`: ", error, FeatureConfig
            )
    if features:
        problems += _collision_problems(Config(defaults=defaults, features=features))
    if problems:
        raise ConfigError("\n".join(problems))
    return Config(defaults=defaults, features=features)


def _collision_problems(config: Config) -> list[str]:
    """Two features reading the same source column, or an indicator output
    with the name of a feature."""
    problems = []
    owners: dict[str, str] = {}
    for name in config.features:
        # The raw key (Parquet list column, tf.Example key) and CSV columns.
        columns = dict.fromkeys([config.source_column(name), *config.csv_columns(name)])
        taken = next((column for column in columns if column in owners), None)
        if taken is not None:
            problems.append(
                f"feature `{name}`: its source column `{taken}` is also a column "
                f"of feature `{owners[taken]}`. Rename one of them (or set "
                "`column`)."
            )
        for column in columns:
            owners.setdefault(column, name)
    outputs = {name: name for name in config.features}
    for name in config.features:
        for output in config.output_names(name)[1:]:
            if output in outputs:
                problems.append(
                    f"feature `{name}`: its indicator output `{output}` has the name "
                    f"of feature `{outputs[output]}`. Rename the feature."
                )
            outputs[output] = name
    return problems


def load_config(path: str | Path) -> Config:
    """Reads and validates a YAML config file.

    Raises:
      ConfigError: The file is missing, too large, not UTF-8, not valid YAML
        (see `config_file`), or breaks a rule; every line of the message
        starts with the file's path.
    """
    path = Path(path)
    data = load_yaml_file(str(path))
    try:
        return parse_config(data)
    except ConfigError as error:
        lines = str(error).split("\n")
        raise ConfigError("\n".join(f"{path}: {line}" for line in lines)) from None


def _shorthand_tags(strategies: tuple[type[BaseModel], ...]) -> list[str]:
    """The strategies a bare name may give: those with no required field."""
    return [
        _tag(strategy)
        for strategy in strategies
        if not any(field.is_required() for key, field in strategy.model_fields.items())
    ]


def _strategy_property(schema: dict[str, Any], field: str) -> dict[str, Any]:
    """A strategy field: a bare strategy name, or a mapping with `strategy`."""
    mapping = {key: schema[key] for key in ("oneOf", "discriminator") if key in schema}
    return {
        "title": schema.get("title", field.title()),
        "anyOf": [
            {"type": "string", "enum": _shorthand_tags(_STRATEGY_CLASSES[field])},
            mapping,
        ],
    }


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a config file, for editors and
    validators such as `jsonschema`.

    It accepts what `parse_config` accepts, but for rules across fields
    (`lower` below `upper`, a quantile grid, colliding columns), which only
    `tanhguard` checks.
    """
    _, schema = models_json_schema(
        [(Defaults, "validation"), (FeatureConfig, "validation")],
        ref_template="#/$defs/{model}",
    )
    definitions = schema["$defs"]
    for model in (*IMPUTE_STRATEGIES, *CLIP_STRATEGIES, *SCALE_STRATEGIES):
        # A mapping names its strategy (pydantic tells them apart by it).
        entry = definitions[model.__name__]
        entry["required"] = ["strategy", *entry.get("required", [])]
    for model in ("Defaults", "FeatureConfig"):
        properties = definitions[model]["properties"]
        for field in _STRATEGY_FIELDS:
            properties[field] = _strategy_property(properties[field], field)
        properties["indicators"]["uniqueItems"] = True
        properties["output_bound"].update(exclusiveMinimum=0, maximum=FLOAT32_MAX)
    feature = definitions["FeatureConfig"]
    feature["required"] = []  # every field has a default
    feature["properties"]["shape"] = {
        "title": "Shape",
        "description": "`scalar` (the default) or `[d]` for a vector of d values",
        "anyOf": [
            {"const": "scalar"},
            {"type": "null"},
            {"type": "integer", "minimum": 1},
            {
                "type": "array",
                "items": {"type": "integer", "minimum": 1},
                "maxItems": 1,
            },
        ],
    }
    feature["properties"]["column"] = {
        "title": "Column",
        "description": (
            "The feature's name in the source data (CSV column, Parquet column, "
            "tf.Example key); a vector's columns are `<column>_<i>`. Default: "
            "the feature's name."
        ),
        "anyOf": [{"type": "string", "pattern": r"^\S(.*\S)?$"}, {"type": "null"}],
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tanhguard config",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "defaults": {"anyOf": [{"$ref": "#/$defs/Defaults"}, {"type": "null"}]},
            "features": {
                "type": "object",
                "additionalProperties": {
                    "anyOf": [{"$ref": "#/$defs/FeatureConfig"}, {"type": "null"}]
                },
                "propertyNames": {"pattern": f"^{FEATURE_NAME.pattern}$"},
                "minProperties": 1,
            },
        },
        "required": ["features"],
        "$defs": definitions,
    }


__all__ = [
    "REPORTED_QUANTILES",
    "ClipStrategy",
    "Config",
    "ConfigError",
    "ConstantImpute",
    "FeatureConfig",
    "FixedClip",
    "ImputeStrategy",
    "IqrClip",
    "LogZScoreScale",
    "MadClip",
    "MeanImpute",
    "MedianImpute",
    "MinMaxClip",
    "MinMaxScale",
    "NoClip",
    "NoScale",
    "QuantileClip",
    "RobustScale",
    "ScaleStrategy",
    "SigmaClip",
    "ZScoreScale",
    "ZeroImpute",
    "config_json_schema",
    "load_config",
    "parse_config",
]
