"""README, run as written: every shell and Python block, in order, in one
directory and one Python namespace; YAML blocks are parsed as configs. A block
preceded by `<!-- not run: REASON -->` is skipped, and must give its reason."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tanhguard.pipeline.cli import EXIT_OK, main
from tanhguard.transforms.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(
    r"(?:<!-- not run: (?P<reason>[^\n]*?) -->\n)?```(?P<kind>\w*)\n(?P<code>.*?)```",
    re.DOTALL,
)
# Lines of run blocks that the test does not run, and why.
NOT_RUN_LINES = {
    # The suite itself; CI runs it on a clean clone (.ci/run).
    "python3 dev.py test",
}
RUN_KINDS = ("sh", "python", "yaml")
LISTING_KINDS = ("", "text")  # formats and layouts, not commands


def _blocks() -> list[dict]:
    return [match.groupdict() for match in BLOCK.finditer(README.read_text())]


def _shell_lines(code: str) -> list[list[str]]:
    """Each command of a shell block, `\\` continuations joined, comments
    dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    lines = [shlex.split(line, comments=True) for line in joined.splitlines()]
    return [line for line in lines if line]


def test_every_block_is_run_listed_or_skipped_with_a_reason():
    blocks = _blocks()
    for block in blocks:
        if block["reason"] is not None:
            assert len(block["reason"].strip()) > 10, block["code"][:80]
        else:
            assert block["kind"] in RUN_KINDS + LISTING_KINDS, block["kind"]
    run = [b["kind"] for b in blocks if b["reason"] is None]
    assert run.count("python") >= 5 and run.count("sh") >= 3, run
    assert run.count("yaml") >= 1


def _run_shell(command: list[str], where: Path) -> None:
    line = shlex.join(command)
    if line in NOT_RUN_LINES:
        return
    if command[:3] == ["python3", "dev.py", "demo"]:
        # dev.py runs `tanhguard demo` in .venv (dev.py's `demo` command);
        # here the environment under test runs it.
        command = ["tanhguard", "demo", *command[3:]]
    if command[0] == "tanhguard":
        assert main(command[1:]) == EXIT_OK, line
    elif command[0] == "saved_model_cli":
        module = ["-m", "tensorflow.python.tools.saved_model_cli"]
        done = subprocess.run(
            [sys.executable, *module, *command[1:]],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    else:
        pytest.fail(f"a README shell line this test cannot run: {line}")


def test_readme_runs_as_written(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in _blocks():
        if block["reason"] is not None:
            continue
        kind, code = block["kind"], block["code"]
        if kind == "python":
            exec(compile(code, str(README), "exec"), namespace)
        elif kind == "sh":
            for command in _shell_lines(code):
                _run_shell(command, tmp_path)
        elif kind == "yaml":
            parse_config(yaml.safe_load(code))
    assert (tmp_path / "demo-output" / "artifacts" / "stats.json").exists()
    assert (tmp_path / "trips-artifacts" / "stats.json").exists()
    assert (tmp_path / "served_keras3" / "saved_model.pb").exists()
    assert (tmp_path / "served_tf_keras" / "saved_model.pb").exists()
