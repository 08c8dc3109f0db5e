"""tanhguard.transforms: the TensorFlow / TFT side (no Beam imports here)."""

from tanhguard.transforms.config import (
    Config,
    ConfigError,
    FeatureConfig,
    config_json_schema,
    load_config,
    parse_config,
)
from tanhguard.transforms.preprocessing import (
    build_preprocessing_fn,
    unpack_stats_vector,
)

__all__ = [
    "Config",
    "ConfigError",
    "FeatureConfig",
    "build_preprocessing_fn",
    "config_json_schema",
    "load_config",
    "parse_config",
    "unpack_stats_vector",
]
