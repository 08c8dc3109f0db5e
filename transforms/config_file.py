"""Reading a YAML config safely: bounded size, depth and expansion.

A config is small. Whatever a file holds, reading it takes bounded time and
memory: at most `MAX_CONFIG_BYTES` are read (so `/dev/zero` or a huge file is
refused at once), the text must be UTF-8, YAML is safe-loaded, a nesting too
deep for the parser is an error, and the loaded value may not expand to more
than `MAX_CONFIG_VALUES` values (YAML aliases can make a 9-line file expand to
billions: the "billion laughs"). Each problem is a `ConfigError` naming the
file.
"""

from __future__ import annotations

import reprlib
from typing import Any, BinaryIO

import yaml

from tanhguard.errors import ConfigError

MAX_CONFIG_BYTES = 4 << 20
MAX_CONFIG_VALUES = 100_000

_SHORT = reprlib.Repr()
_SHORT.maxstring = 80
_SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = 6
_SHORT.maxlevel = 3


def short_repr(value: Any) -> str:
    """`repr` cut to a readable length, for error messages."""
    return _SHORT.repr(value)


def read_config_bytes(handle: BinaryIO, source: str) -> str:
    """At most `MAX_CONFIG_BYTES` of `handle`, decoded as UTF-8."""
    data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{source}: larger than {MAX_CONFIG_BYTES >> 20} MiB; a config is a "
            "small YAML file"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{source}: not UTF-8 text: byte 0x{data[error.start]:02x} on line "
            f"{line}; save the config as UTF-8"
        ) from None


def _check_expansion(data: Any, source: str) -> None:
    """Counts the values `data` expands to, stopping past the limit (shared
    references, which YAML aliases make, count every time)."""
    budget = MAX_CONFIG_VALUES
    stack = [data]
    while stack:
        value = stack.pop()
        budget -= 1
        if budget < 0:
            raise ConfigError(
                f"{source}: expands to more than {MAX_CONFIG_VALUES:,} values "
                "(YAML aliases?); a config is small"
            )
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)


def parse_yaml(text: str, source: str) -> Any:
    """Safe-loads YAML text, bounded in depth and expansion."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a config") from None
    _check_expansion(data, source)
    return data


def load_yaml_file(path: str) -> Any:
    """Reads and safe-loads a YAML config file with the limits above.

    Raises:
      ConfigError: unreadable, too large, not UTF-8, not YAML, too deep, or
        expanding too far; the message starts with the path.
    """
    try:
        with open(path, "rb") as handle:
            text = read_config_bytes(handle, path)
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot read config: {error.strerror or error}"
        ) from None
    return parse_yaml(text, path)
