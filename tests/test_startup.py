"""What a command loads at start-up: the Keras-free commands do not import
Keras 3 (and scikit-learn, which it pulls in) when TensorFlow is imported,
unless the user chose otherwise with `TF_USE_LEGACY_KERAS`."""

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


def test_analyze_does_not_import_keras_3(small_job):
    line = _probe(*ANALYZE, "--quiet", cwd=small_job)
    assert line.startswith("STATUS 0 "), line
    loaded = line.split("LOADED ")[1].split(" LEGACY")[0].split(",")
    assert "tensorflow" in loaded  # the probe does see what was imported
    assert "keras" not in loaded and "sklearn" not in loaded, line
    assert line.endswith("LEGACY 1")


def test_a_users_choice_of_keras_is_kept(small_job):
    line = _probe(*ANALYZE, "--quiet", cwd=small_job, legacy="0")
    assert line.startswith("STATUS 0 "), line
    assert line.endswith("LEGACY 0")
    # With Keras 3 chosen, TensorFlow loads it as it always does.
    assert "keras" in line.split("LOADED ")[1].split(" LEGACY")[0].split(",")


@pytest.mark.parametrize(
    "signum, status, line",
    [
        ("SIGINT", 130, "tanhguard: interrupted; nothing was written"),
        ("SIGTERM", 143, "tanhguard: terminated; nothing was written"),
    ],
)
def test_a_signal_while_tensorflow_loads_stops_quietly(small_job, signum, status, line):
    """Importing TensorFlow takes seconds: a signal then is handled like one
    during the analysis: one line (not the start-up lines TensorFlow printed
    into the captured stderr), the exit status, nothing written."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    child = subprocess.Popen(
        [sys.executable, "-m", "tanhguard.pipeline.cli", *ANALYZE],
        cwd=small_job,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    maps = f"/proc/{child.pid}/maps"
    deadline = time.monotonic() + 120
    # TensorFlow's framework library is mapped early in `import tensorflow`.
    while time.monotonic() < deadline and child.poll() is None:
        with open(maps) as handle:
            if "libtensorflow_framework" in handle.read():
                break
        time.sleep(0.01)
    assert child.poll() is None, "the command ended before TensorFlow loaded"
    child.send_signal(getattr(signal, signum))
    _, err = child.communicate(timeout=300)
    assert child.returncode == status, err
    assert err.strip().splitlines() == [line]
    assert not (small_job / "a").exists()


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
