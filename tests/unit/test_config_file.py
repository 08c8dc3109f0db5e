"""Reading a config file takes bounded time and memory, whatever it holds."""

import subprocess
import sys
import textwrap

import pytest

from tanhguard.errors import ConfigError
from tanhguard.transforms.config import load_config
from tanhguard.transforms.config_file import MAX_CONFIG_BYTES

BILLION_LAUGHS = textwrap.dedent(
    """\
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    features: {x: {clip: *h}}
    """
)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (
            b"features:\n  x: {}\n  caf\xe9: {}\n",
            r"not UTF-8 text: byte 0xe9 on line 3",
        ),
        (BILLION_LAUGHS.encode(), r"expands to more than 100,000 values"),
        (
            b"features: {x: " + b"[" * 20_000 + b"]" * 20_000 + b"}\n",
            r"nested too deeply",
        ),
        (b"features: {x: {}\n", r"not valid YAML"),
        (b"#" * (MAX_CONFIG_BYTES + 1), r"larger than 4 MiB"),
        (b'features:\n  "x\\n": {}\n', r"a name must be letters"),
    ],
    ids=[
        "a non-UTF-8 byte is named with its line",
        "a billion-laughs alias bomb is refused before it expands",
        "a config nested 20,000 deep is refused",
        "broken YAML is named",
        "a file over the size limit is refused",
        "a feature name with a trailing newline is refused",
    ],
)
def test_a_hostile_config_file_is_one_config_error_naming_the_file(
    tmp_path, content, match
):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match) as raised:
        load_config(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert len(str(raised.value)) < 2000


def test_dev_zero_as_a_config_is_refused_in_bounded_memory():
    code = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({2 << 30}, {2 << 30}))\n"
        "from tanhguard.transforms.config import load_config\n"
        "from tanhguard.errors import ConfigError\n"
        "try:\n"
        "    load_config('/dev/zero')\n"
        "except ConfigError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("/dev/zero: larger than 4 MiB")


def test_the_expansion_limit_leaves_room_for_real_configs(tmp_path):
    # 2,000 features of 5 keys each: well inside the limit.
    lines = ["features:"] + [
        f"  f{i}: {{clip: iqr, scale: robust, impute: mean}}" for i in range(2000)
    ]
    path = tmp_path / "big.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert len(load_config(path).features) == 2000
