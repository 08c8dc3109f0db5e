"""The package's structure, read from the source: dependencies point one way.

Every import statement of every module (at module level or inside a
function) is an edge. `tanhguard.transforms` never imports
`tanhguard.pipeline`; nothing imports the public facade `tanhguard` itself
(it only re-exports); and the graph has no cycle.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Import name -> the folder the distribution maps it to (setup.py).
PACKAGES = {
    "tanhguard": ROOT / "tanhguard",
    "tanhguard.transforms": ROOT / "transforms",
    "tanhguard.pipeline": ROOT / "pipeline",
}


def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module an imported name refers to (a module, or the module
    defining an imported attribute), if it is one of ours."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """Our modules that `module` imports, anywhere in its source."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_the_graph_sees_every_package_and_their_imports():
    # Guards the test itself: an empty graph would pass everything below.
    assert {"tanhguard.transforms.config", "tanhguard.pipeline.cli"} <= set(GRAPH)
    assert "tanhguard.transforms.config" in GRAPH["tanhguard.pipeline.analyze"]


def test_transforms_never_imports_pipeline():
    offending = {
        module: sorted(t for t in targets if t.startswith("tanhguard.pipeline"))
        for module, targets in GRAPH.items()
        if module.startswith("tanhguard.transforms")
    }
    assert {m: t for m, t in offending.items() if t} == {}


def test_no_module_imports_the_public_facade():
    importers = sorted(m for m, targets in GRAPH.items() if "tanhguard" in targets)
    assert importers == []


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    assert _find_cycle(GRAPH) is None


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    "module",
    ["tanhguard", "tanhguard.transforms", "tanhguard.transforms.config"],
)
def test_importing_the_config_loads_no_tensorflow_beam_or_pyarrow(module):
    heavy = ("tensorflow", "apache_beam", "pyarrow", "tensorflow_transform")
    code = (
        f"import sys, {module}\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_public_api_resolves_every_name_it_exports():
    code = (
        "import tanhguard as g, tanhguard.transforms as t\n"
        "missing = [n for n in g.__all__ if getattr(g, n, None) is None]\n"
        "missing += [n for n in t.__all__ if getattr(t, n, None) is None]\n"
        "print(g.__version__, missing, callable(t.preprocessing_fn))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    version, missing, callable_ = done.stdout.split()
    assert version.count(".") == 2
    assert (missing, callable_) == ("[]", "True")
