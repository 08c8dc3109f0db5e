"""tanhguard.transforms: the TensorFlow / TFT side (no Beam imports here).

`preprocessing_fn` is the TFX Transform entry point
(`preprocessing_fn="tanhguard.transforms.preprocessing_fn"`).
"""

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
from tanhguard.transforms.tfx_module import preprocessing_fn

__all__ = [
    "Config",
    "ConfigError",
    "FeatureConfig",
    "build_preprocessing_fn",
    "config_json_schema",
    "load_config",
    "parse_config",
    "preprocessing_fn",
    "unpack_stats_vector",
]
