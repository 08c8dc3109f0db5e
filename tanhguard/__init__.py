"""tanhguard: finite, bounded model inputs from a TensorFlow Transform graph.

The public API. Importing it loads no TensorFlow, Beam or pyarrow: each name
below is imported from its module on first use.

>>> import tanhguard
>>> config = tanhguard.parse_config({"features": {"fare": {}}})
>>> config.features["fare"].clip.strategy
'quantile'

  load_config, parse_config   a YAML config file / a mapping -> `Config`
  analyze                     the batch job: statistics, bounds, the TFT graph
  transform                   apply an artifacts directory's graph to a dataset
  export                      the serving SavedModel, optionally with a model
  attach                      a Keras model that takes raw features
  load_keras_model            load a model file of either Keras family (an
                              attached one too)
  Preprocessor                the graph as a callable on raw features
  preprocessing_fn            TFX Transform's module function
  audit, AuditResult          prove each tanh layer's pre-activation range
                              from the artifacts (interval bound propagation)
  stable_tanh                 tanh without overflow, usable by name in Keras
  SaturationMonitor           Keras callback: per-epoch tanh saturation and
                              max |pre-activation|; stops on overflow
  TanhguardError, ...         the exceptions (`tanhguard.errors`)
"""

from __future__ import annotations

from tanhguard.errors import (
    ArtifactsError,
    ConfigError,
    DataError,
    ExportError,
    NoFiniteValuesError,
    OptionsError,
    OutputError,
    OutputExistsError,
    TanhguardError,
)
from tanhguard.lazy import lazy_attributes
from tanhguard.version import __version__

# Public name -> the module that defines it, imported on first use.
_LAZY = {
    "Config": "tanhguard.transforms.config",
    "load_config": "tanhguard.transforms.config",
    "parse_config": "tanhguard.transforms.config",
    "analyze": "tanhguard.pipeline.api",
    "transform": "tanhguard.pipeline.transform_job",
    "export": "tanhguard.pipeline.export",
    "attach": "tanhguard.pipeline.keras_attach",
    "load_keras_model": "tanhguard.pipeline.keras_attach",
    "Preprocessor": "tanhguard.pipeline.serving",
    "preprocessing_fn": "tanhguard.transforms.tfx_module",
    "audit": "tanhguard.pipeline.audit",
    "AuditResult": "tanhguard.pipeline.audit",
    "stable_tanh": "tanhguard.pipeline.activations",
    "SaturationMonitor": "tanhguard.pipeline.monitor",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

__all__ = [
    "ArtifactsError",
    "AuditResult",
    "Config",
    "ConfigError",
    "DataError",
    "ExportError",
    "NoFiniteValuesError",
    "OptionsError",
    "OutputError",
    "OutputExistsError",
    "Preprocessor",
    "SaturationMonitor",
    "TanhguardError",
    "__version__",
    "analyze",
    "attach",
    "audit",
    "export",
    "load_config",
    "load_keras_model",
    "parse_config",
    "preprocessing_fn",
    "stable_tanh",
    "transform",
]
