"""The feature configuration: YAML validated into typed models.

A config has a `defaults` block and a `features` map. Each of `impute`, `clip`
and `scale` is either a strategy name or a mapping with `strategy` and its
parameters; a feature given as `{}` takes every default.

>>> config = parse_config({"features": {"fare": {}}})
>>> config.features["fare"].clip.strategy
'quantile'
"""

from __future__ import annotations

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

_FEATURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
    """One feature, after defaults are applied."""

    dtype: Literal["float", "int"] = "float"
    shape: tuple[int, ...] = ()
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
        """The config with every default filled in, as plain JSON types."""
        return json.loads(self.model_dump_json())

    def csv_columns(self, name: str) -> list[str]:
        """The CSV columns that hold feature `name`.

        A scalar is one column of the same name; a vector of shape `[d]` is the
        columns `name_0` ... `name_{d-1}`.
        """
        feature = self.features[name]
        if not feature.is_vector:
            return [name]
        return [f"{name}_{i}" for i in range(feature.size)]

    def output_names(self, name: str) -> list[str]:
        """The graph outputs of feature `name`: its value, then its indicators
        (`name__missing`, `name__clipped`) in the configured order."""
        return [name, *(f"{name}__{kind}" for kind in self.features[name].indicators)]

    def model_matrix_names(self) -> list[str]:
        """Every graph output, in the column order of the model matrix."""
        return [output for name in self.features for output in self.output_names(name)]


def _merge_feature(name: str, raw: Any, defaults: Defaults) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"feature `{name}`: must be a mapping (use `{{}}` for all defaults). "
            f"Received: {short_repr(raw)}"
        )
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


def _format_validation_error(prefix: str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        # Drop the discriminator tag pydantic adds (e.g. `clip.quantile.lower`).
        if len(location) >= 2 and location[0] in _STRATEGY_FIELDS:
            location = [location[0], *location[2:]]
        field = ".".join(location) or "(root)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown key. Received: {short_repr(item['input'])}"
        elif item["type"] == "union_tag_invalid":
            message = (
                f"unknown strategy {item['input'].get('strategy')!r}; expected one "
                f"of {item['ctx']['expected_tags']}"
            )
        elif item["type"] == "missing":
            message = "is required"
        elif "Received" not in message and "input" in item:
            message = f"{message}. Received: {short_repr(item['input'])}"
        lines.append(f"{prefix}`{field}`: {message}")
    return "\n".join(lines)


def parse_config(data: Any) -> Config:
    """Validates a config given as plain Python data (what YAML loads into).

    Args:
      data: A mapping with `features` and optionally `defaults`.

    Returns:
      The validated `Config`, with defaults applied to every feature.

    Raises:
      ConfigError: The config breaks a rule; the message names the feature and
        the field and shows what was received.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping. Received: {short_repr(data)}")
    unknown = set(data) - {"defaults", "features"}
    if unknown:
        raise ConfigError(
            f"unknown top-level key(s) {sorted(unknown)}; expected `defaults` and "
            "`features`"
        )
    try:
        defaults = Defaults.model_validate(data.get("defaults") or {})
    except ValidationError as error:
        raise ConfigError(_format_validation_error("defaults: ", error)) from None
    features_raw = data.get("features")
    if not isinstance(features_raw, dict) or not features_raw:
        raise ConfigError(
            f"`features` must be a non-empty mapping. Received: "
            f"{short_repr(features_raw)}"
        )
    features = {}
    for name, raw in features_raw.items():
        if not isinstance(name, str) or not _FEATURE_NAME.fullmatch(name):
            # repr: a name may hold a newline or control characters.
            shown = str(name).encode("unicode_escape").decode("ascii")
            raise ConfigError(
                f"feature `{shown}`: a name must be letters, digits and `_`, not "
                f"starting with a digit. Received: {short_repr(name)}"
            )
        merged = _merge_feature(name, raw, defaults)
        try:
            features[name] = FeatureConfig.model_validate(merged)
        except ValidationError as error:
            raise ConfigError(
                _format_validation_error(f"feature `{name}`: ", error)
            ) from None
    config = Config(defaults=defaults, features=features)
    _check_column_collisions(config)
    return config


def _check_column_collisions(config: Config) -> None:
    owners: dict[str, str] = {}
    for name in config.features:
        for column in config.csv_columns(name):
            if column in owners:
                raise ConfigError(
                    f"feature `{name}`: its CSV column `{column}` is also a column "
                    f"of feature `{owners[column]}`. Rename one of them."
                )
            owners[column] = name
    outputs = {name: name for name in config.features}
    for name in config.features:
        for output in config.output_names(name)[1:]:
            if output in outputs:
                raise ConfigError(
                    f"feature `{name}`: its indicator output `{output}` has the name "
                    f"of feature `{outputs[output]}`. Rename the feature."
                )
            outputs[output] = name


def load_config(path: str | Path) -> Config:
    """Reads and validates a YAML config file.

    Raises:
      ConfigError: The file is missing, too large, not UTF-8, not valid YAML
        (see `config_file`), or breaks a rule; the message starts with the
        file's path.
    """
    path = Path(path)
    data = load_yaml_file(str(path))
    try:
        return parse_config(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of a config file, for editors."""
    feature_schema = FeatureConfig.model_json_schema()
    feature_schema["required"] = []  # every field has a default
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tanhguard config",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "defaults": Defaults.model_json_schema(),
            "features": {
                "type": "object",
                "additionalProperties": feature_schema,
                "propertyNames": {"pattern": f"^{_FEATURE_NAME.pattern}$"},
                "minProperties": 1,
            },
        },
        "required": ["features"],
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
