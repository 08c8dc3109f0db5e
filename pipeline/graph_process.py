"""Saving the transform graph, in a process of its own while the passes run.

The graph needs nothing from the data but the statistics vector, and
importing TensorFlow and TFT takes 2-3 s (most of `tanhguard analyze` on a
small file). So the command starts a child Python process first
(`start_early`): the child imports TensorFlow, TFT and the graph code while
the driver, which does not import TensorFlow for local CSV and Parquet files
(`files`), runs the passes. Then the driver sends the statistics
(`GraphProcess.send`); the child traces and saves `transform_fn/`,
`transformed_metadata/` and `metadata/` and exits, while the driver writes
stats.json and report.html, then waits for it (`GraphProcess.wait`). On a
machine with a free core, the import costs no wall time. Python threads
cannot do this: the import holds the interpreter lock most of its time, and
on a thread it and the passes took as long as one after the other.

When TensorFlow is already imported (a Python session that imported it, a
TFRecord input, `tanhguard run`, which transforms the rows), the driver
saves the graph itself (`write_graph`): a child would only repeat the
import.

The child's stderr goes to a temporary file, shown only when it fails (and
straight through with `--verbose`). A child that finds its stdin closed
before the statistics arrive (the driver failed or was stopped) exits
without writing anything, and the driver stops it on the way out in any
case: it never outlives the command.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import pickle
import posixpath
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from tanhguard.errors import ArtifactsError, OutputError

if TYPE_CHECKING:
    from tanhguard.transforms.config import Config

logger = logging.getLogger(__name__)

# Seconds the driver waits for a child it stops (SIGTERM, then SIGKILL).
_STOP_SECONDS = 5.0


def write_graph(
    config: Config,
    parameters: np.ndarray,
    vector: np.ndarray,
    work: str,
    staging: str | Path,
) -> None:
    """Saves the transform graph, `transform_fn/` and `transformed_metadata/`,
    into `work`, with every analysis result as a constant, and the raw
    schema, `metadata/`, into `staging` (in this process).

    The preprocessing_fn then has no analyzers, and TFT's own route for such
    a function (`impl_helper.analyze_in_place`, the one TFX's Transform
    component takes for it) traces and saves it without a Beam job. The
    graph is the one `analyze.AnalyzeFeatures` gives for the same statistics:
    the vector is captured under `STATS_VECTOR_NAME` either way.

    That route traces the function twice: once to save it, once more for
    the schema annotations its TFT mappers may leave (vocabularies, bucket
    ranges), with which it infers `transformed_metadata/` from the saved
    function's outputs. tanhguard's function leaves none, so `_save_graph`
    takes the same steps but the second trace (0.2-0.3 s, on the command's
    critical path for a small file).
    """
    import numpy as np
    import tensorflow as tf
    from tfx_bsl.tfxio.tensor_adapter import TensorAdapter

    from tanhguard.pipeline.artifacts import write_raw_metadata
    from tanhguard.pipeline.batch_layout import raw_feature_spec, tensor_adapter_config
    from tanhguard.pipeline.graph_stats import read_graph_stats
    from tanhguard.transforms.preprocessing import build_preprocessing_fn

    statistics = tf.constant(vector, dtype=tf.float64)

    def constant_fit(*_args, **_kwargs) -> tf.Tensor:
        return statistics

    preprocessing_fn = build_preprocessing_fn(
        config, fit_phase=constant_fit, parameters=parameters
    )
    specs = TensorAdapter(tensor_adapter_config(config)).OriginalTypeSpecs()
    _save_graph(preprocessing_fn, raw_feature_spec(config), specs, work)
    # stats.json is written from `vector`: the saved graph must hold it.
    saved_config, saved = read_graph_stats(work)
    same_config = saved_config.to_json_dict() == config.to_json_dict()
    if not same_config or not np.array_equal(saved, vector, equal_nan=True):
        raise ArtifactsError(
            f"{work}: the saved graph's statistics differ from the analysis's "
            "(a bug: please report it)"
        )
    write_raw_metadata(staging, config)


def _save_graph(preprocessing_fn, feature_specs, type_specs, work: str) -> None:
    """`impl_helper.analyze_in_place(preprocessing_fn, False, feature_specs,
    type_specs, work)` in one trace: its steps, through the same TFT
    functions, but for the metadata trace, whose annotations are empty for
    a function with no TFT mappers (tests/test_graph_process.py compares
    the schema with the full route's). With a TFT whose helpers are missing
    or take other arguments, the full route."""
    from tensorflow_transform import impl_helper, schema_inference
    from tensorflow_transform.output_wrapper import TFTransformOutput
    from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io

    trace_and_write = getattr(impl_helper, "_trace_and_write_transform_fn", None)
    arguments = {
        "saved_model_dir": posixpath.join(work, TFTransformOutput.TRANSFORM_FN_DIR),
        "preprocessing_fn": preprocessing_fn,
        "input_signature": type_specs,
        "base_temp_dir": None,
        "tensor_replacement_map": None,
        "output_keys_to_name_map": None,
        "save_options": None,
    }
    if (
        trace_and_write is None
        or set(inspect.signature(trace_and_write).parameters) != set(arguments)
        or not hasattr(schema_inference, "infer_feature_schema_v2")
    ):
        _save_graph_tft_route(preprocessing_fn, feature_specs, type_specs, work)
        return
    concrete = trace_and_write(**arguments)
    no_analyzers = getattr(impl_helper, "_assert_no_analyzers_in_graph", None)
    if no_analyzers is not None:
        no_analyzers(concrete.graph)
    schema = schema_inference.infer_feature_schema_v2(
        concrete.structured_outputs, dict, evaluate_schema_overrides=True
    )
    metadata_io.write_metadata(
        dataset_metadata.DatasetMetadata(schema=schema),
        posixpath.join(work, TFTransformOutput.TRANSFORMED_METADATA_DIR),
    )


def _save_graph_tft_route(
    preprocessing_fn, feature_specs, type_specs, work: str
) -> None:
    """What `_save_graph` does, by TFT's own route: two traces."""
    from tensorflow_transform import impl_helper

    impl_helper.analyze_in_place(
        preprocessing_fn,
        force_tf_compat_v1=False,
        feature_specs=feature_specs,
        type_specs=type_specs,
        transform_output_path=work,
    )


class GraphProcess:
    """A child process that saves the graph once it has the statistics."""

    def __init__(self) -> None:
        if not sys.executable:
            raise OSError("sys.executable is empty")
        passthrough = logging.getLogger("tanhguard").isEnabledFor(logging.DEBUG)
        self._stderr: IO[bytes] | None = (
            None if passthrough else tempfile.TemporaryFile()  # noqa: SIM115 - see stop
        )
        env = dict(os.environ)
        # The child loads no Keras model: skip Keras 3's import (see the
        # command line's KERAS_FREE_COMMANDS); TFT would set it anyway.
        env.setdefault("TF_USE_LEGACY_KERAS", "1")
        # The modules this process imports, wherever it found them (a script
        # may have extended sys.path), as multiprocessing's spawn does.
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(entry or os.curdir) for entry in sys.path
        )
        self._process = subprocess.Popen(
            [sys.executable, "-c", _CHILD_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        self._result: str | None = None  # what the child said, once read

    def send(
        self,
        config: Config,
        parameters: np.ndarray,
        vector: np.ndarray,
        work: str,
        staging: str | Path,
    ) -> None:
        """Hands the child what `write_graph` takes; it saves the graph while
        this process goes on. `wait` for it before using the graph."""
        request = {
            "config": config,
            "parameters": parameters,
            "vector": vector,
            "work": work,
            "staging": str(staging),
        }
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
            stdin.close()
        except BrokenPipeError:  # it has died: `wait` tells why
            pass

    def check(self) -> None:
        """Raises now if the child has already ended before its work (see
        `wait`): called between passes, so that a broken one is reported
        early."""
        if self._process.poll() is not None and self._result is None:
            self.wait()

    def wait(self) -> None:
        """Returns when the child has saved the graph: it says so on its
        stdout (an exit status alone is not proof: with SIGCHLD ignored, as
        some daemons leave it, every child's status reads as 0).

        Raises:
          OutputError: the child failed, naming its exception.
        """
        if self._result is None:
            stdout = self._process.stdout
            assert stdout is not None
            self._result = stdout.read().decode("utf-8", "replace").strip()
            stdout.close()
        status = self._process.wait()
        if status != 0 or self._result != _SAVED:
            if -status in _GROUP_SIGNALS:
                _let_our_signal_in()
            raise OutputError(f"saving the transform graph failed: {self._why(status)}")

    def _why(self, status: int) -> str:
        if self._result and self._result.startswith(_FAILED):
            return self._result[len(_FAILED) :]
        if status < 0:
            return f"its process was stopped by signal {-status}"
        lines: list[str] = []
        if self._stderr is not None:
            self._stderr.seek(0)
            text = self._stderr.read().decode("utf-8", "replace")
            logger.debug("the graph process's stderr:\n%s", text)
            lines = [line.strip() for line in text.splitlines() if line.strip()]
        else:
            lines = ["its messages are above"]
        if lines:
            return f"exit status {status}: {lines[-1]}"
        return f"exit status {status}, without a message"

    def stop(self) -> None:
        """Ends the child if it still runs (the driver is leaving)."""
        process = self._process
        if process.stdin is not None and not process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()


_early: list[GraphProcess] = []


def _start() -> GraphProcess | None:
    try:
        return GraphProcess()
    except OSError as error:  # no usable interpreter to start
        logger.debug("saving the graph in this process: %s", error)
        return None


def likely_needs_tensorflow(data: str, fmt: str | None = None) -> bool:
    """Whether reading `data` will import TensorFlow in this process anyway:
    TFRecord by `--format` or by name (`*.tfrecord*`, ExampleGen's
    `data_tfrecord-*.gz`), or a path with a scheme (`gs://`). A guess from
    the name only: `analyze` stops the graph process when the files prove
    it wrong (`take`'s caller)."""
    return fmt == "tfrecord" or "://" in data or "tfrecord" in data.lower()


def start_early(data: str | None = None, fmt: str | None = None) -> None:
    """Starts the graph process now, for the next `take` (the command line
    calls this before importing the analysis job, whose Beam import then
    overlaps TensorFlow's too). Does nothing if TensorFlow is imported, or
    if reading `data` (in format `fmt`) likely imports it
    (`likely_needs_tensorflow`)."""
    if data is not None and likely_needs_tensorflow(data, fmt):
        return
    if "tensorflow" not in sys.modules and not _early:
        started = _start()
        if started is not None:
            _early.append(started)


def stop_early() -> None:
    """Stops a graph process `start_early` started that nothing took (the
    command failed before the analysis began)."""
    while _early:
        _early.pop().stop()


def take(data: str | None = None, fmt: str | None = None) -> GraphProcess | None:
    """The graph process `start_early` started, or a new one; None when this
    process has imported TensorFlow (it then saves the graph itself) or
    reading `data` likely will (`likely_needs_tensorflow`)."""
    if _early:
        return _early.pop()
    if "tensorflow" in sys.modules:
        return None
    if data is not None and likely_needs_tensorflow(data, fmt):
        return None
    return _start()


def _child(result: IO[str]) -> int:
    """The child: import, wait for the statistics, save the graph, say so."""
    try:
        # What `write_graph` imports, while the driver runs the passes.
        from tensorflow_transform import impl_helper, schema_inference  # noqa: F401
        from tensorflow_transform.tf_metadata import metadata_io  # noqa: F401
        from tfx_bsl.tfxio import tensor_adapter  # noqa: F401

        from tanhguard.pipeline import graph_stats  # noqa: F401
        from tanhguard.transforms import preprocessing  # noqa: F401

        request = pickle.load(sys.stdin.buffer)
    except EOFError:  # the driver stopped before it had the statistics
        return 0
    write_graph(
        request["config"],
        request["parameters"],
        request["vector"],
        request["work"],
        request["staging"],
    )
    result.write(_SAVED + "\n")
    return 0


def _main() -> None:
    # The result goes to the driver on the original stdout; anything a
    # library prints goes to stderr (kept, shown on failure).
    result = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        status = _child(result)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group
        status = 130
    except BaseException as error:  # the driver names it
        traceback.print_exc()
        message = " ".join(f"{type(error).__name__}: {error}".split())
        result.write(f"{_FAILED}{message}\n")
        status = 1
    result.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    # The files are closed; TensorFlow's teardown would add 1-3 s that the
    # driver waits for.
    os._exit(status)


# Signals that reach a whole process group (Ctrl-C at a terminal, `kill` of
# the group): a child stopped by one was most likely stopped with its driver.
_GROUP_SIGNALS = {
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP")
    if hasattr(signal, name)
}
# How long the driver waits for its own share of such a signal, which the
# kernel may deliver a little after the child's death was seen.
_SIGNAL_GRACE_SECONDS = 0.5


def _let_our_signal_in() -> None:
    """Sleeps up to `_SIGNAL_GRACE_SECONDS` in small steps, so that a signal
    sent to the whole group reaches this process's handler (which raises,
    `output_dir.handle_termination`) before the child's death is reported
    as a failure of its own."""
    deadline = time.monotonic() + _SIGNAL_GRACE_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.01)


# The child's command: `python -c`, without the current directory on its
# path (`-m` would put it first, and a `csv.py` or `random.py` there would
# shadow the standard library's in TensorFlow's imports); it finds modules
# where the driver did (PYTHONPATH, above).
_CHILD_CODE = (
    "import sys\n"
    "if sys.path and sys.path[0] == '':\n"
    "    del sys.path[0]\n"
    "from tanhguard.pipeline.graph_process import _main\n"
    "_main()\n"
)
_SAVED = "saved"
_FAILED = "failed: "
