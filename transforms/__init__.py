"""tanhguard.transforms: everything TensorFlow Transform traces.

The config model, the strategies, the numeric core of both analysis phases
next to the Beam combiners their TFT analyzers run, the graph, and the TFX
entry point: `preprocessing_fn` is TFX Transform's module function
(`preprocessing_fn="tanhguard.transforms.preprocessing_fn"`).

Nothing here imports `tanhguard.pipeline`. Importing this package (or
`tanhguard.transforms.config`) loads no TensorFlow: the names below are
imported on first use.
"""

from __future__ import annotations

from tanhguard.lazy import lazy_attributes

_LAZY = {
    "Config": "tanhguard.transforms.config",
    "ConfigError": "tanhguard.transforms.config",
    "FeatureConfig": "tanhguard.transforms.config",
    "config_json_schema": "tanhguard.transforms.config",
    "load_config": "tanhguard.transforms.config",
    "parse_config": "tanhguard.transforms.config",
    "build_preprocessing_fn": "tanhguard.transforms.preprocessing",
    "preprocessing_fn": "tanhguard.transforms.tfx_module",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

__all__ = sorted(_LAZY)
