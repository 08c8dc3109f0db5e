"""The wheel people depend on: metadata, license, type marker, data files,
and a command that runs from it alone."""

import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tanhguard.version import __version__

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    subprocess.run(
        [*pip_wheel, "--wheel-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = out.glob("tanhguard-*.whl")
    return built


def _read(wheel: Path, suffix: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(suffix)]
        return archive.read(name).decode()


def test_metadata_names_version_license_python_and_classifiers(wheel):
    metadata = _read(wheel, ".dist-info/METADATA")
    fields = re.findall(r"^([\w-]+): (.*)$", metadata.split("\n\n")[0], re.M)
    values = {}
    for key, value in fields:
        values.setdefault(key, []).append(value)
    assert values["Name"] == ["tanhguard"]
    assert values["Version"] == [__version__]
    license_field = values.get("License-Expression", values.get("License"))
    assert license_field == ["Apache-2.0"]
    assert values["License-File"] == ["LICENSE"]
    assert values["Requires-Python"] == [">=3.10"]
    assert "Typing :: Typed" in values["Classifier"]
    assert "Programming Language :: Python :: 3.10" in values["Classifier"]
    assert any(d.startswith("tensorflow-transform") for d in values["Requires-Dist"])
    # The README is the long description.
    assert "# tanhguard" in metadata


def test_wheel_holds_the_license_type_marker_configs_and_entry_point(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    license_text = _read(wheel, "/LICENSE")
    assert license_text == (ROOT / "LICENSE").read_text()
    assert "tanhguard/py.typed" in names
    shipped = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert shipped and {f"tanhguard/configs/{n}" for n in shipped} <= names
    assert {"tanhguard/pipeline/cli.py", "tanhguard/transforms/config.py"} <= names
    assert not any(n.startswith(("tests/", "pipeline/", "transforms/")) for n in names)
    entry_points = _read(wheel, ".dist-info/entry_points.txt")
    assert "tanhguard = tanhguard.pipeline.cli:entry" in entry_points


def test_the_installed_wheel_runs_its_command(wheel, tmp_path):
    # `--version` needs nothing but the standard library, so the wheel is
    # installed without its (3 GB of) dependencies into a fresh environment.
    env = tmp_path / "env"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", wheel],
        check=True,
        capture_output=True,
        timeout=600,
    )
    done = subprocess.run(
        [env / "bin" / "tanhguard", "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"tanhguard {__version__} ")
