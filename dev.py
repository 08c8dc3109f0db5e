#!/usr/bin/env python3
"""Set-up and entry points that need nothing but Python and pip.

    python3 dev.py demo         # .venv: install pinned, run `tanhguard demo`
    python3 dev.py test         # ruff, then pytest in .venv (Python 3.11+) and
                                # in .venv-tfx (Python 3.10, TFX 1.16)
    python3 dev.py test-main    # only the .venv suite
    python3 dev.py test-unit    # only tests/unit (the numeric core, no Beam
                                # pipeline; under a minute)
    python3 dev.py test-tfx     # only the .venv-tfx suite (tests/ + tests_tfx/)
    python3 dev.py tfx-example  # run examples/tfx/pipeline.py in .venv-tfx

Each environment is created once and reinstalled only when setup.py, its
constraints file or its Python change (a hash of them is kept inside it).
The TFX environment needs a Python 3.10: $TANHGUARD_PYTHON310, `python3.10` on
PATH, or a pyenv 3.10. Without one, `test` runs the main suite, says so, and
fails if $TANHGUARD_REQUIRE_TFX is set (CI sets it).

`test`, `test-main` and `test-tfx` also need Debian's `chromium` at
/usr/bin/chromium (the HTML report's browser test drives it): run as root,
they install it with apt-get when it is missing; otherwise they say how and
fail.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Environment:
    folder: Path
    constraints: Path
    extras: str

    def bin(self, name: str) -> str:
        return str(self.folder / ("Scripts" if os.name == "nt" else "bin") / name)


MAIN = Environment(ROOT / ".venv", ROOT / "constraints" / "py311.txt", "test")
TFX = Environment(
    ROOT / ".venv-tfx", ROOT / "constraints" / "py310-tfx.txt", "test,tfx"
)


# The browser tests/test_html_report.py drives (through Playwright, whose own
# browser download is not used): Debian's package, installed like the rest of
# the system.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_INSTALL = (
    ["apt-get", "update"],
    ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
)


def ensure_chromium() -> bool:
    """Makes sure /usr/bin/chromium exists, installing Debian's `chromium`
    with apt-get when it is missing and this runs as root.

    Returns:
      True when the browser is there; False, after saying what to do, when it
      is missing and cannot be installed here (not root, no apt-get, or
      apt-get failed).
    """
    if CHROMIUM.exists():
        return True
    commands = " && ".join(" ".join(command) for command in CHROMIUM_INSTALL)
    is_root = getattr(os, "geteuid", lambda: -1)() == 0
    if not is_root or shutil.which("apt-get") is None:
        print(
            f"{CHROMIUM} is missing: the report's browser test needs Debian's "
            f"chromium. Install it as root: {commands}",
            file=sys.stderr,
        )
        return False
    print("Installing Debian's chromium (the report's browser test)...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in CHROMIUM_INSTALL:
        if subprocess.call(command, env=env) != 0:
            print(
                f"`{' '.join(command)}` failed: {CHROMIUM} is still missing.",
                file=sys.stderr,
            )
            return False
    if not CHROMIUM.exists():
        print(f"apt-get installed chromium but {CHROMIUM} is missing.", file=sys.stderr)
        return False
    return True


def _is_python310(candidate: str) -> bool:
    """Runs the candidate: a pyenv shim on PATH may exist and still not work."""
    try:
        done = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 10))"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.strip() == "True"


def find_python310() -> str | None:
    """A working Python 3.10 interpreter for the TFX environment, or None."""
    pyenv = os.path.expanduser("~/.pyenv/versions/3.10*/bin/python")
    candidates = [os.environ.get("TANHGUARD_PYTHON310")]
    candidates += sorted(glob.glob(pyenv), reverse=True)
    candidates.append(shutil.which("python3.10"))
    for candidate in candidates:
        if candidate and Path(candidate).exists() and _is_python310(candidate):
            return candidate
    return None


def _fingerprint(env: Environment, python: str) -> str:
    digest = hashlib.sha256()
    for path in (ROOT / "setup.py", env.constraints):
        digest.update(path.read_bytes())
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    digest.update(version.encode())
    return digest.hexdigest()


def ensure(env: Environment, python: str) -> None:
    """Creates the environment and installs the pinned dependencies, once."""
    if not Path(env.bin("python")).exists():
        print(f"Creating {env.folder}", flush=True)
        subprocess.run([python, "-m", "venv", str(env.folder)], check=True)
    stamp = env.folder / ".tanhguard-install"
    fingerprint = _fingerprint(env, env.bin("python"))
    if stamp.exists() and stamp.read_text() == fingerprint:
        return
    print(f"Installing into {env.folder.name} (pinned; a few minutes)...", flush=True)
    pip = [env.bin("python"), "-m", "pip", "install", "--quiet"]
    _quiet_unless_failing([*pip, "--upgrade", "pip"])
    _quiet_unless_failing(
        [*pip, "-c", str(env.constraints), "-e", f"{ROOT}[{env.extras}]"]
    )
    stamp.write_text(fingerprint)


def _quiet_unless_failing(command: list[str]) -> None:
    """Runs `command`; its output (pip's and the build backend's warnings)
    is shown only if it fails."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}")


def run_main_tests(args: list[str]) -> int:
    ensure(MAIN, sys.executable)
    if not ensure_chromium():
        return 1
    for check in (["ruff", "check", "."], ["ruff", "format", "--check", "."]):
        if subprocess.call([MAIN.bin(check[0]), *check[1:]]) != 0:
            return 1
    print("== tests, main environment (.venv) ==", flush=True)
    return subprocess.call([MAIN.bin("python"), "-m", "pytest", *args])


def run_tfx_tests(args: list[str], python: str) -> int:
    ensure(TFX, python)
    if not ensure_chromium():
        return 1
    print("== tests, TFX environment (.venv-tfx) ==", flush=True)
    return subprocess.call(
        [TFX.bin("python"), "-m", "pytest", "tests", "tests_tfx", *args]
    )


def main(argv: list[str]) -> int:
    commands = ("demo", "test", "test-main", "test-unit", "test-tfx", "tfx-example")
    if not argv or argv[0] not in commands:
        print(__doc__)
        return 2
    os.chdir(ROOT)
    command, args = argv[0], argv[1:]
    if command == "demo":
        ensure(MAIN, sys.executable)
        return subprocess.call([MAIN.bin("tanhguard"), "demo", *args])
    if command == "test-main":
        return run_main_tests(args)
    if command == "test-unit":
        ensure(MAIN, sys.executable)
        return subprocess.call(
            [MAIN.bin("python"), "-m", "pytest", "tests/unit", *args]
        )
    python = find_python310()
    if command in ("test-tfx", "tfx-example") and python is None:
        print("No Python 3.10 found: set TANHGUARD_PYTHON310", file=sys.stderr)
        return 1
    if command == "test-tfx":
        return run_tfx_tests(args, python)
    if command == "tfx-example":
        ensure(TFX, python)
        script = str(ROOT / "examples" / "tfx" / "pipeline.py")
        return subprocess.call([TFX.bin("python"), script, *args])
    status = run_main_tests(args)
    if python is None:
        print(
            "TFX environment not tested: no Python 3.10 found "
            "(set TANHGUARD_PYTHON310).",
            file=sys.stderr,
        )
        return status or (1 if os.environ.get("TANHGUARD_REQUIRE_TFX") else 0)
    return status or run_tfx_tests(args, python)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
