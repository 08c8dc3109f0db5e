"""A Transform `module_file` that re-exports tanhguard's entry point.

Transform(..., module_file="examples/tfx/tanhguard_module.py",
          custom_config={"config_path": "configs/demo.yaml"})
"""

from tanhguard.transforms import preprocessing_fn

__all__ = ["preprocessing_fn"]
