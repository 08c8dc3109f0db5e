"""README's serving section, run as written: its shell lines (`tanhguard`,
`saved_model_cli`) and its Python blocks, in order, in one namespace."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.cli import EXIT_OK, main
from tanhguard.pipeline.demo import demo_config, generate_demo_rows, write_demo_csv

README = Path(__file__).parent.parent / "README.md"
SECTION = "## Serving"


def _blocks() -> list[tuple[str, str]]:
    """The fenced blocks of the serving section (up to the next `## `)."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.DOTALL)


def test_serving_section_has_shell_and_python_blocks():
    kinds = [kind for kind, _ in _blocks()]
    assert kinds.count("python") >= 3 and "sh" in kinds


def test_serving_section_runs_as_written(tmp_path, monkeypatch):
    demo = tmp_path / "demo-output"
    demo.mkdir()
    write_demo_csv(demo / "demo.csv", generate_demo_rows(2000, seed=9), seed=9)
    run_analyze(demo_config(), str(demo / "demo.csv"), demo / "artifacts")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for kind, code in _blocks():
        if kind == "python":
            exec(compile(code, str(README), "exec"), namespace)
        elif kind == "sh":
            for line in code.strip().splitlines():
                command = shlex.split(line)
                if command[0] == "tanhguard":
                    assert main(command[1:]) == EXIT_OK, line
                elif command[0] == "saved_model_cli":
                    module = ["-m", "tensorflow.python.tools.saved_model_cli"]
                    done = subprocess.run(
                        [sys.executable, *module, *command[1:]],
                        capture_output=True,
                        text=True,
                        timeout=300,
                    )
                    assert done.returncode == 0, done.stderr[-2000:]
                else:
                    pytest.fail(f"README shell line the test cannot run: {line}")
    assert (tmp_path / "served_keras3" / "saved_model.pb").exists()
    assert (tmp_path / "served_tf_keras" / "saved_model.pb").exists()
