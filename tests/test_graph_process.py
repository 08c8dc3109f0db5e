"""`tanhguard analyze` saves its graph in a process of its own
(`pipeline/graph_process.py`): the artifacts are the ones the in-process
route writes, and a failure there is one line with nothing written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_transform as tft
from graph_oracle import apply_graph

from tanhguard.pipeline.analyze import run_analyze
from tanhguard.transforms.config import load_config

CONFIG = """\
features:
  heavy: {}
  count: {dtype: int}
  vec: {shape: [2], clip: {strategy: fixed, lower: -3, upper: 3}, indicators: [missing]}
  logged: {scale: log_zscore, clip: {strategy: mad, k: 4}}
"""


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("graph_process")
    rng = np.random.default_rng(3)
    rows = 2000
    lines = ["heavy,count,vec_0,vec_1,logged"]
    for row in range(rows):
        heavy = "" if row % 37 == 0 else repr(float(rng.standard_cauchy() * 50))
        if row % 101 == 5:
            heavy = "inf"
        vec = "" if row % 53 == 0 else repr(float(rng.normal()))
        lines.append(
            f"{heavy},{int(rng.integers(0, 9))},{vec},{rng.normal(5, 2)!r},"
            f"{rng.lognormal(3, 2)!r}"
        )
    (root / "d.csv").write_text("\n".join(lines) + "\n")
    (root / "c.yaml").write_text(CONFIG)
    return root


def _analyze_command(root, output, env=None, flags=()):
    return subprocess.run(
        [sys.executable, "-m", "tanhguard.pipeline.cli", "analyze", "--config",
         "c.yaml", "--data", "d.csv", "--output", output, *flags],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip


def _numbers(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k not in ("elapsed_seconds", "data")}


def test_the_graph_process_writes_what_the_in_process_route_writes(job):
    done = _analyze_command(job, "child")
    assert done.returncode == 0, done.stderr
    # This process has imported TensorFlow: run_analyze saves the graph itself.
    run_analyze(load_config(job / "c.yaml"), str(job / "d.csv"), job / "here")
    child = json.loads((job / "child" / "stats.json").read_text())
    here = json.loads((job / "here" / "stats.json").read_text())
    assert _numbers(child) == _numbers(here)
    assert sorted(os.listdir(job / "child")) == sorted(os.listdir(job / "here"))
    raw = {
        "heavy": np.array([np.nan, np.inf, -1e30, 3.0, 1e6], np.float32),
        "count": np.array([0, 4, 9, -5, 2**40], np.int64),
        "vec": np.array(
            [[np.nan, 1], [0, np.inf], [-np.inf, 1e9], [2, 2], [5, -5]], np.float32
        ),
        "logged": np.array([np.nan, 0.0, 1e-30, 1e30, 20.0], np.float32),
    }
    out_child = apply_graph(job / "child", raw)
    out_here = apply_graph(job / "here", raw)
    assert sorted(out_child) == sorted(out_here)
    for name, values in out_child.items():
        np.testing.assert_array_equal(values, out_here[name], err_msg=name)
    # The raw schema the child wrote is the one TFT reads back.
    raw_spec = tft.TFTransformOutput(str(job / "child")).raw_feature_spec()
    assert sorted(raw_spec) == ["count", "heavy", "logged", "vec"]


def test_a_temp_location_of_this_process_alone_gets_the_graph_saved_here(job):
    # TensorFlow's `ram://` filesystem lives in one process: a graph the
    # child saved there was lost, and the artifacts came out without it.
    done = _analyze_command(job, "ram", flags=["--temp_location", "ram://b/t"])
    assert done.returncode == 0, done.stderr
    assert (job / "ram" / "transform_fn" / "saved_model.pb").exists()
    assert (job / "ram" / "transformed_metadata").is_dir()
    raw = {
        "heavy": np.array([np.nan, 3.0], np.float32),
        "count": np.array([0, 4], np.int64),
        "vec": np.array([[np.nan, 1], [0, np.inf]], np.float32),
        "logged": np.array([1e30, 20.0], np.float32),
    }
    run_analyze(load_config(job / "c.yaml"), str(job / "d.csv"), job / "ram_here")
    out_ram, out_here = (
        apply_graph(job / "ram", raw),
        apply_graph(job / "ram_here", raw),
    )
    for name, values in out_here.items():
        np.testing.assert_array_equal(out_ram[name], values, err_msg=name)


def test_the_graph_is_traced_once_with_the_schema_of_tfts_full_route(
    job, monkeypatch, tmp_path
):
    from tanhguard.pipeline import graph_process
    from tanhguard.transforms import preprocessing

    traces = []
    build = preprocessing.build_preprocessing_fn

    def counting_build(*args, **kwargs):
        preprocessing_fn = build(*args, **kwargs)

        def counted(inputs):
            traces.append(1)
            return preprocessing_fn(inputs)

        return counted

    monkeypatch.setattr(preprocessing, "build_preprocessing_fn", counting_build)
    config = load_config(job / "c.yaml")
    run_analyze(config, str(job / "d.csv"), tmp_path / "once")
    assert len(traces) == 1

    # TFT's `impl_helper.analyze_in_place`, as `_save_graph` falls back to.
    monkeypatch.setattr(
        graph_process, "_save_graph", graph_process._save_graph_tft_route
    )
    traces.clear()
    run_analyze(config, str(job / "d.csv"), tmp_path / "full")
    assert len(traces) == 2  # TFT's route traces it again for the schema
    once = tft.TFTransformOutput(str(tmp_path / "once"))
    full = tft.TFTransformOutput(str(tmp_path / "full"))
    assert once.transformed_metadata.schema == full.transformed_metadata.schema
    assert once.transformed_feature_spec() == full.transformed_feature_spec()
    assert len(once.transformed_feature_spec()) == 5  # vec__missing too


@pytest.mark.parametrize("path_from", ["PYTHONPATH", "sys.path"])
def test_a_failing_graph_process_is_one_line_and_nothing_written(
    job, tmp_path, path_from
):
    """The driver does not import TFT; the graph process does, and here a
    broken one, found where the driver would find it (a script that extends
    sys.path reaches the child too): the command reports the child's error
    in one line."""
    broken = tmp_path / "broken"
    (broken / "tensorflow_transform").mkdir(parents=True)
    (broken / "tensorflow_transform" / "__init__.py").write_text(
        "raise ImportError('tensorflow_transform is broken here')\n"
    )
    if path_from == "PYTHONPATH":
        env = dict(os.environ, PYTHONPATH=str(broken))
        done = _analyze_command(job, "failed", env=env)
    else:
        script = (
            f"import sys; sys.path.insert(0, {str(broken)!r})\n"
            "from tanhguard.pipeline.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, "analyze", "--config", "c.yaml",
             "--data", "d.csv", "--output", "failed"],
            cwd=job, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(
        "tanhguard: error: saving the transform graph failed: "
    ), errors
    assert "tensorflow_transform is broken here" in errors[0]
    assert not (job / "failed").exists()


@pytest.mark.parametrize(
    "fmt, filename, in_process",
    [("csv", "", False), ("tfrecord", "d.tfrecord", True), ("tfrecord", "d.bin", True)],
)
def test_a_tfrecord_input_saves_the_graph_in_the_commands_process(
    job, tmp_path, fmt, filename, in_process
):
    """Reading TFRecord imports TensorFlow in the command's process, so the
    graph is saved there, not imported twice: no graph process starts for a
    file named as TFRecord, and one started for a file whose name does not
    tell (`d.bin`) is stopped once the content does."""
    import pyarrow.csv as pa_csv
    import tensorflow as tf

    if fmt == "tfrecord":
        table = pa_csv.read_csv(job / "d.csv").to_pydict()
        with tf.io.TFRecordWriter(str(tmp_path / filename)) as writer:
            for row in range(len(table["heavy"])):
                feature = {}
                for name, values in table.items():
                    if values[row] is None:
                        continue
                    if name == "count":
                        kind = tf.train.Int64List(value=[values[row]])
                        feature[name] = tf.train.Feature(int64_list=kind)
                    else:
                        kind = tf.train.FloatList(value=[values[row]])
                        feature[name] = tf.train.Feature(float_list=kind)
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
        data = str(tmp_path / filename)
    else:
        data = "d.csv"
    config = tmp_path / "c.yaml"
    config.write_text("features:\n  heavy: {}\n  count: {dtype: int}\n")
    done = subprocess.run(
        [sys.executable, "-m", "tanhguard.pipeline.cli", "analyze", "--config",
         str(config), "--data", data, "--output", str(tmp_path / "out"),
         "--verbose"],
        cwd=job, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    said = "the graph is saved in this process" in done.stderr
    assert said == in_process, done.stderr[-2000:]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["num_rows"] == 2000
    assert (tmp_path / "out" / "transform_fn" / "saved_model.pb").is_file()


def _command(*args: str) -> list[str]:
    """The `tanhguard` console script, as installed (it does not put the
    current directory on the path, as `python -m` would)."""
    script = os.path.join(os.path.dirname(sys.executable), "tanhguard")
    return [script, *args]


def test_modules_in_the_current_directory_do_not_reach_the_graph_process(job):
    """A user's `random.py` or `csv.py` beside the data shadows nothing."""
    shadow = job / "shadow"
    shadow.mkdir()
    for name in ("random", "csv", "json", "inspect"):
        (shadow / f"{name}.py").write_text(
            "open('executed', 'a').write(__name__ + '\\n')\n"
            "raise SystemExit('a script of the user, not a library')\n"
        )
    done = subprocess.run(
        _command("analyze", "--config", "../c.yaml", "--data", "../d.csv",
                 "--output", "out"),
        cwd=shadow, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not (shadow / "executed").exists()
    assert (shadow / "out" / "transform_fn" / "saved_model.pb").is_file()


@pytest.fixture
def broken_tensorflow(tmp_path):
    """A directory whose `tensorflow` fails to import at once."""
    broken = tmp_path / "broken-tf"
    (broken / "tensorflow").mkdir(parents=True)
    (broken / "tensorflow" / "__init__.py").write_text(
        "raise ImportError('tensorflow is broken here')\n"
    )
    return broken


def test_a_graph_process_that_fails_early_is_reported_after_the_first_pass(
    job, broken_tensorflow
):
    env = dict(os.environ, PYTHONPATH=str(broken_tensorflow))
    done = subprocess.run(
        _command("analyze", "--config", "c.yaml", "--data", "d.csv",
                 "--output", "early"),
        cwd=job, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "tanhguard: error: saving the transform graph failed: ImportError: "
        "tensorflow is broken here"
    )
    assert "pass 1 of" in done.stderr and "pass 2 of" not in done.stderr
    assert not (job / "early").exists()


def test_a_failed_graph_process_is_an_error_with_sigchld_ignored(
    job, broken_tensorflow
):
    """With SIGCHLD ignored (inherited from some daemons), every child's exit
    status reads as 0: the child's own word decides."""
    script = (
        "import signal, sys\n"
        "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
        "from tanhguard.pipeline.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(broken_tensorflow))
    done = subprocess.run(
        [sys.executable, "-c", script, "analyze", "--config", "c.yaml",
         "--data", "d.csv", "--output", "ignored"],
        cwd=job, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "saving the transform graph failed: ImportError" in done.stderr
    assert not (job / "ignored").exists()


def test_a_graph_that_does_not_hold_the_statistics_is_an_error(job, monkeypatch):
    """stats.json is written from the vector the graph was given; the saved
    graph is read back and must hold exactly that vector."""
    from tanhguard.errors import ArtifactsError
    from tanhguard.pipeline import graph_stats

    original = graph_stats.read_graph_stats

    def off_by_one_ulp(path):
        config, vector = original(path)
        vector = vector.copy()
        vector[0] = np.nextafter(vector[0], np.inf)  # the row count
        return config, vector

    monkeypatch.setattr(graph_stats, "read_graph_stats", off_by_one_ulp)
    config = load_config(job / "c.yaml")
    with pytest.raises(ArtifactsError, match="statistics differ from the analysis"):
        run_analyze(config, str(job / "d.csv"), job / "differs")
    assert not (job / "differs").exists()


def test_the_python_api_starts_the_graph_process_before_importing_beam(job):
    """`tanhguard.analyze` in a fresh script, as the command line: the graph
    process starts (and imports TensorFlow) before Beam is imported, and the
    analysis takes that process."""
    script = (
        "import sys\n"
        "from tanhguard.pipeline import graph_process\n"
        "original = graph_process.GraphProcess.__init__\n"
        "def init(self):\n"
        "    print('beam loaded at start:', 'apache_beam' in sys.modules,\n"
        "          file=sys.stderr)\n"
        "    original(self)\n"
        "graph_process.GraphProcess.__init__ = init\n"
        "import tanhguard\n"
        "stats = tanhguard.analyze('c.yaml', 'd.csv', 'api')\n"
        "print('rows', stats['num_rows'], 'tensorflow here:',\n"
        "      'tensorflow' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=job, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # One graph process, started before Beam; the graph saved there.
    assert done.stderr.count("beam loaded at start:") == 1
    assert "beam loaded at start: False" in done.stderr
    assert "rows 2000 tensorflow here: False" in done.stderr
    assert (job / "api" / "transform_fn" / "saved_model.pb").exists()
