"""What a command loads at start-up: the Keras-free commands do not import
Keras 3 (and scikit-learn, which it pulls in) when TensorFlow is imported,
unless the user chose otherwise with `TF_USE_LEGACY_KERAS`; `analyze` over
local CSV or Parquet files does not import TensorFlow at all (its graph is
saved by a process of its own, `pipeline/graph_process.py`)."""

import os
import subprocess
import sys

import pytest

# Runs the command line's `main` in a fresh interpreter, then prints which
# heavy modules ended up loaded and the environment variable's value.
_PROBE = """
import os, sys
from tanhguard.pipeline.cli import main
status = main(sys.argv[1:])
loaded = [m for m in ("keras", "sklearn", "tensorflow") if m in sys.modules]
print("STATUS", status, "LOADED", ",".join(loaded),
      "LEGACY", os.environ.get("TF_USE_LEGACY_KERAS"))
"""


def _probe(*argv: str, cwd, legacy: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    if legacy is not None:
        env["TF_USE_LEGACY_KERAS"] = legacy
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def small_job(tmp_path):
    (tmp_path / "d.csv").write_text("x\n" + "".join(f"{v}\n" for v in range(50)))
    (tmp_path / "c.yaml").write_text("features:\n  x: {}\n")
    return tmp_path


ANALYZE = ("analyze", "--config", "c.yaml", "--data", "d.csv", "--output", "a")
RUN = ("run", "--config", "c.yaml", "--data", "d.csv", "--output", "r")


def _loaded(line: str) -> list[str]:
    return line.split("LOADED ")[1].split(" LEGACY")[0].split(",")


def test_run_does_not_import_keras_3(small_job):
    line = _probe(*RUN, "--quiet", cwd=small_job)
    assert line.startswith("STATUS 0 "), line
    loaded = _loaded(line)
    assert "tensorflow" in loaded  # the probe does see what was imported
    assert "keras" not in loaded and "sklearn" not in loaded, line
    assert line.endswith("LEGACY 1")


def test_analyze_leaves_tensorflow_to_the_graph_process(small_job):
    line = _probe(*ANALYZE, "--quiet", cwd=small_job)
    assert line.startswith("STATUS 0 "), line
    assert "tensorflow" not in _loaded(line), line
    assert (small_job / "a" / "transform_fn" / "saved_model.pb").is_file()


def test_a_users_choice_of_keras_is_kept(small_job):
    line = _probe(*RUN, "--quiet", cwd=small_job, legacy="0")
    assert line.startswith("STATUS 0 "), line
    assert line.endswith("LEGACY 0")
    # With Keras 3 chosen, TensorFlow loads it as it always does.
    assert "keras" in line.split("LOADED ")[1].split(" LEGACY")[0].split(",")


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            found += [int(child) for child in handle.read().split()]
    return found


def _maps_tensorflow(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as handle:
            return "libtensorflow_framework" in handle.read()
    except OSError:  # it has ended
        return False


def _graph_processes_in(cwd) -> list[int]:
    """Live graph processes (`python -m tanhguard.pipeline.graph_process`)
    started in `cwd`, whoever their parent is now."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read()
            here = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        mine = b"tanhguard.pipeline.graph_process" in cmdline and here == str(cwd)
        if mine and _alive(int(pid)):
            found.append(int(pid))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize(
    "signum, status, line",
    [
        ("SIGINT", 130, "tanhguard: interrupted; nothing was written"),
        ("SIGTERM", 143, "tanhguard: terminated; nothing was written"),
    ],
)
@pytest.mark.parametrize("command, target", [("run", "driver"), ("analyze", "group")])
def test_a_signal_while_tensorflow_loads_stops_quietly(
    small_job, signum, status, line, command, target
):
    """Importing TensorFlow takes seconds: a signal then is handled like one
    during the analysis: one line (not the start-up lines TensorFlow printed
    into the captured stderr), the exit status, nothing written. `run`
    imports it in the command's process; `analyze` in the graph process,
    and the signal reaches both, as Ctrl-C at a terminal does."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    argv = RUN if command == "run" else ANALYZE
    output = small_job / argv[-1]
    driver = subprocess.Popen(
        [sys.executable, "-m", "tanhguard.pipeline.cli", *argv],
        cwd=small_job,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    importing = None
    # TensorFlow's framework library is mapped early in `import tensorflow`.
    while time.monotonic() < deadline and driver.poll() is None and importing is None:
        pids = [driver.pid] if command == "run" else _children(driver.pid)
        importing = next((pid for pid in pids if _maps_tensorflow(pid)), None)
        time.sleep(0.01)
    assert importing is not None, "the command ended before TensorFlow loaded"
    children = _children(driver.pid)
    if target == "group":
        os.killpg(driver.pid, getattr(signal, signum))
    else:
        driver.send_signal(getattr(signal, signum))
    _, err = driver.communicate(timeout=300)
    assert driver.returncode == status, err
    assert err.strip().splitlines() == [line]
    assert not output.exists()
    assert not [pid for pid in children if _alive(pid)]  # none outlives it
    assert not _graph_processes_in(small_job)


@pytest.mark.parametrize("bad", ["data", "config"])
def test_analyze_stops_its_graph_process_on_an_error(small_job, bad):
    """A data or config error ends the command at once: the graph process,
    still importing TensorFlow, is stopped, and nothing is written."""
    if bad == "data":
        (small_job / "d.csv").write_text("x\n1\nabc\n")
    else:  # found before the analysis starts
        (small_job / "c.yaml").write_text("features:\n  x: {clip: nope}\n")
    done = subprocess.run(
        [sys.executable, "-m", "tanhguard.pipeline.cli", *ANALYZE],
        cwd=small_job,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr
    errors = done.stderr.strip().splitlines()
    assert errors[-1].startswith("tanhguard: error: "), errors
    assert ("d.csv" if bad == "data" else "clip") in done.stderr
    assert not (small_job / "a").exists()
    assert not _graph_processes_in(small_job)


def test_the_report_modules_load_on_a_thread_of_their_own():
    """analyze starts importing matplotlib while its passes run (the report
    needs it at the end); in a fresh interpreter the thread loads it."""
    probe = (
        "import sys\n"
        "from tanhguard.pipeline.html_report import preload_charts\n"
        "assert 'matplotlib.figure' not in sys.modules\n"
        "thread = preload_charts()\n"
        "assert thread.daemon\n"
        "thread.join(120)\n"
        "print('matplotlib.figure' in sys.modules,"
        " 'matplotlib.backends.backend_svg' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]


def test_a_closed_stdout_is_no_error(small_job):
    """`tanhguard analyze ... 1>&-` (a cron line throwing the summary away):
    the artifacts are written and the exit status is 0."""
    script = os.path.join(os.path.dirname(sys.executable), "tanhguard")
    command = " ".join([script, *ANALYZE, "--quiet", "1>&-"])
    done = subprocess.run(
        ["sh", "-c", command], cwd=small_job, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert (small_job / "a" / "stats.json").is_file()


def test_the_command_line_picks_numpys_sort_kernels_before_importing_it(small_job):
    """On AMD Zen 4 with NumPy 2 the command asks NumPy for its AVX2 sorting
    kernels (`pipeline/simd.py`); elsewhere it leaves NumPy alone."""
    import importlib.metadata

    from tanhguard.pipeline.simd import AVX512_TARGETS, slow_avx512_sort

    probe = (
        "import os, sys\n"
        "from tanhguard.pipeline.cli import main\n"
        "status = main(sys.argv[1:])\n"
        "print('NPY', os.environ.get('NPY_DISABLE_CPU_FEATURES'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"}
    done = subprocess.run(
        [sys.executable, "-c", probe, *ANALYZE, "--quiet"],
        cwd=small_job, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with open("/proc/cpuinfo") as handle:
        zen4 = slow_avx512_sort(handle.read())
    numpy_2 = int(importlib.metadata.version("numpy").split(".")[0]) >= 2
    expected = AVX512_TARGETS if zen4 and numpy_2 else None
    assert done.stdout.strip().splitlines()[-1] == f"NPY {expected}"
