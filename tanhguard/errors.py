"""Every error tanhguard raises on purpose: one hierarchy under `TanhguardError`.

The command line turns each of them into one line, `tanhguard: error: ...`,
and exit status 1 (`tanhguard.pipeline.cli`); a library caller catches
`TanhguardError` in one place. Each is also a subclass of the built-in
exception it refines (`ValueError`, `FileExistsError`, `OSError`), so code
that caught those keeps working.

    TanhguardError
    ├── ConfigError          a config that cannot be used
    ├── DataError            input data that cannot be read or analyzed
    │   └── NoFiniteValuesError
    ├── ArtifactsError       an artifacts directory or graph that is not usable
    ├── ExportError          a model or raw features that cannot be served
    ├── OptionsError         Apache Beam flags that cannot be used
    └── OutputError          an output that cannot or must not be written
        └── OutputExistsError
"""

from __future__ import annotations


class TanhguardError(Exception):
    """Base class: a problem with the user's input, named in the message."""


class ConfigError(TanhguardError, ValueError):
    """A config that cannot be used; the message names the feature and field."""


class DataError(TanhguardError, ValueError):
    """Input data that cannot be read; the message names the file and row."""


class NoFiniteValuesError(DataError):
    """A feature whose strategies need data has no finite training value."""


class ArtifactsError(TanhguardError, ValueError):
    """An artifacts directory or transform graph that tanhguard cannot use."""


class ExportError(TanhguardError, ValueError):
    """Artifacts, a model or raw features that cannot be exported or served."""


class OptionsError(TanhguardError, ValueError):
    """Apache Beam flags that Beam rejects, or that tanhguard's jobs cannot
    run with; the message names the flag."""


class OutputError(TanhguardError, OSError):
    """An output location that cannot, or must not, be written."""


class OutputExistsError(OutputError, FileExistsError):
    """The output exists and overwriting was not asked for (or not allowed)."""


__all__ = [
    "ArtifactsError",
    "ConfigError",
    "DataError",
    "ExportError",
    "NoFiniteValuesError",
    "OptionsError",
    "OutputError",
    "OutputExistsError",
    "TanhguardError",
]
