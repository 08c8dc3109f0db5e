"""tanhguard: finite, bounded model inputs from a TensorFlow Transform graph."""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"',
    (HERE / "tanhguard" / "version.py").read_text(encoding="utf-8"),
    re.MULTILINE,
).group(1)

setup(
    name="tanhguard",
    version=VERSION,
    description=(
        "A TensorFlow Transform preprocessing component that clips, imputes and "
        "scales every feature so that model inputs are always finite and bounded."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    keywords=[
        "tensorflow",
        "tensorflow-transform",
        "tfx",
        "apache-beam",
        "preprocessing",
        "clipping",
        "normalization",
        "keras",
    ],
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Developers",
        "Intended Audience :: Science/Research",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Typing :: Typed",
    ],
    python_requires=">=3.10",
    # One distribution, import package `tanhguard` (tanhguard/: the public API
    # and the exceptions); the top-level folders of the repository are its
    # sub-packages.
    # `configs/` ships as package data so that `tanhguard demo` finds its config.
    packages=[
        "tanhguard",
        "tanhguard.transforms",
        "tanhguard.pipeline",
        "tanhguard.configs",
    ],
    package_dir={
        "tanhguard": "tanhguard",
        "tanhguard.transforms": "transforms",
        "tanhguard.pipeline": "pipeline",
        "tanhguard.configs": "configs",
    },
    # py.typed (PEP 561): the package and its sub-packages are typed.
    package_data={"tanhguard": ["py.typed"], "tanhguard.configs": ["*.yaml"]},
    install_requires=[
        "tensorflow-transform>=1.16,<1.22",
        "tensorflow>=2.16,<2.22",
        "apache-beam>=2.60,<3",
        "numpy>=1.26",
        # Draws the histograms of the HTML report (`tanhguard report`).
        "matplotlib>=3.8",
        "pyarrow>=10",
        "pydantic>=2.5,<3",
        "pyyaml>=6",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "hypothesis>=6.100",
            "jsonschema>=4.18",
            # Drives Debian's chromium in tests/test_html_report.py.
            "playwright>=1.40",
            "ruff==0.17.6",
            "scikit-learn>=1.4",
            # SaturationMonitor's figures through Keras's TensorBoard callback.
            "tensorboard>=2.16",
        ],
        # The TFX environment (Python 3.10): constraints/py310-tfx.txt pins it.
        "tfx": ["tfx>=1.16,<1.17", "apache-beam[gcp]>=2.60,<2.61", "dill"],
    },
    entry_points={"console_scripts": ["tanhguard = tanhguard.pipeline.cli:entry"]},
)
