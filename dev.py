#!/usr/bin/env python3
"""Set-up and entry points that need nothing but Python and pip.

    python3 dev.py demo    # create/reuse .venv, install pinned, run `tanhguard demo`
    python3 dev.py test    # create/reuse .venv, install pinned, ruff + pytest

The install is skipped when .venv already holds exactly what setup.py and the
constraints file ask for (a hash of both is kept in .venv).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
CONSTRAINTS = ROOT / "constraints" / "py311.txt"
STAMP = VENV / ".tanhguard-install"


def _bin(name: str) -> str:
    return str(VENV / ("Scripts" if os.name == "nt" else "bin") / name)


def _install_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in (ROOT / "setup.py", CONSTRAINTS):
        digest.update(path.read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Creates .venv and installs the pinned dependencies, once."""
    if not Path(_bin("python")).exists():
        print(f"Creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    fingerprint = _install_fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return
    print("Installing tanhguard and its pinned dependencies (a few minutes)...")
    subprocess.run(
        [_bin("python"), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        check=True,
    )
    subprocess.run(
        [
            _bin("python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "-c",
            str(CONSTRAINTS),
            "-e",
            f"{ROOT}[test]",
        ],
        check=True,
    )
    STAMP.write_text(fingerprint)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    ensure_venv()
    os.chdir(ROOT)
    if argv[0] == "demo":
        return subprocess.call([_bin("tanhguard"), "demo", *argv[1:]])
    for check in (["ruff", "check", "."], ["ruff", "format", "--check", "."]):
        if subprocess.call([_bin(check[0]), *check[1:]]) != 0:
            return 1
    return subprocess.call([_bin("python"), "-m", "pytest", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
