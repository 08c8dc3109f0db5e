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

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tanhguard.transforms' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = sorted(_LAZY)
