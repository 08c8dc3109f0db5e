"""The same analysis on Beam's other local paths: the multi-process
DirectRunner, the DirectRunner named on the command line, and the portable
route (a job service, as Flink and Spark jobs take) with Beam's embedded job
service; and the runner the jobs get when the flags name none."""

import os
import re
import tempfile

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner
from graph_oracle import assert_stats_close

from tanhguard.errors import DataError, OptionsError
from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.beam_runner import InProcessRunner, new_pipeline, runner_for
from tanhguard.pipeline.check import check
from tanhguard.pipeline.transform_job import run_transform
from tanhguard.transforms.config import parse_config

CONFIG = parse_config(
    {
        "features": {
            "a": {"clip": "mad", "indicators": ["clipped"]},
            "b": {"scale": "robust"},
            "v": {"shape": [2], "elementwise": False, "clip": "iqr"},
        }
    }
)
RUNNERS = {
    "multi-process DirectRunner": [
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
    ],
    "DirectRunner named on the command line": ["--runner=DirectRunner"],
    # Beam wraps every function in a check that reads its name (CSV input:
    # the later passes read the kept values).
    "runtime type checks": ["--runtime_type_check"],
    "PortableRunner with the embedded job service": [
        "--runner=PortableRunner",
        "--job_endpoint=embed",
        "--environment_type=LOOPBACK",
    ],
}


@pytest.fixture(scope="module")
def data_and_default(tmp_path_factory):
    root = tmp_path_factory.mktemp("runners")
    rng = np.random.default_rng(8)
    paths = []
    for part in range(3):  # several files, so workers share the reading
        path = root / f"part-{part}.csv"
        with open(path, "w") as handle:
            handle.write("a,b,v_0,v_1\n")
            for _ in range(700):
                a, b, v0, v1 = (rng.standard_t(3, 4) * [5, 100, 1, 2]).tolist()
                handle.write(f"{a!r},{b!r},{v0!r},{v1!r}\n")
        paths.append(path)
    default = run_analyze(CONFIG, str(root / "part-*.csv"), root / "default")
    return root, default


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_other_runner_gives_the_same_statistics(data_and_default, runner):
    root, default = data_and_default
    output = root / runner.replace(" ", "_")
    stats = run_analyze(CONFIG, str(root / "part-*.csv"), output, RUNNERS[runner])
    assert stats["num_rows"] == default["num_rows"] == 2100
    assert_stats_close(stats["features"], default["features"])
    assert (output / "transform_fn" / "saved_model.pb").exists()


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        # Beam's own validation: a ValueError, which would read as a bug.
        (
            ["--type_check_additional=bogus"],
            r"^Apache Beam rejected the pipeline options: Unrecognized "
            r"--type_check_additional feature: bogus$",
        ),
        (
            ["--runner=DirectRunner", "--type_check_additional=bogus"],
            r"^Apache Beam rejected the pipeline options: Unrecognized",
        ),
        # The pipelines declare no type hint on every transform.
        (
            ["--type_check_strictness=ALL_REQUIRED"],
            r"^--type_check_strictness=ALL_REQUIRED: tanhguard's pipelines do "
            "not declare a type hint on every transform",
        ),
    ],
)
def test_flags_beam_rejects_are_an_options_error_with_nothing_written(
    data_and_default, tmp_path, flags, match
):
    root, _ = data_and_default
    data = str(root / "part-*.csv")
    with pytest.raises(OptionsError, match=match):
        run_analyze(CONFIG, data, tmp_path / "out", flags)
    assert not (tmp_path / "out").exists()
    with pytest.raises(OptionsError, match=match):
        check(root / "default", data, beam_args=flags)
    with pytest.raises(OptionsError, match=match):
        run_transform(root / "default", data, tmp_path / "rows", beam_args=flags)
    assert not (tmp_path / "rows").exists()


@pytest.mark.parametrize("runner", ["default in-process runner", *RUNNERS])
def test_a_bad_cell_is_the_readers_line_on_every_runner(tmp_path, runner):
    """Beam re-raises a worker's error as a copy with the step's name appended
    (in-process) or as text in a RuntimeError (other runners): the user gets
    the reader's own line either way, ending where the reader's does."""
    path = tmp_path / "bad.csv"
    rows = "".join(f"{i},{i},0,1\n" for i in range(5))
    path.write_text("a,b,v_0,v_1\n" + rows + "1,oops,0,1\n")
    flags = RUNNERS.get(runner, [])
    with pytest.raises(DataError) as caught:
        run_analyze(CONFIG, str(path), tmp_path / "out", flags)
    assert re.fullmatch(
        r"\S*bad\.csv: row 6: column `b`: 'oops' is not a valid number "
        r"\(cells must be numbers, `nan`, `inf`, `-inf` or empty; rows are "
        r"numbered from 1 after the header\)",
        str(caught.value),
    ), str(caught.value)
    assert not (tmp_path / "out").exists()


def test_the_flags_runner_is_beams_choice_and_none_means_the_in_process_runner():
    assert isinstance(runner_for(PipelineOptions([])), InProcessRunner)
    for flags in (["--runner=DirectRunner"], ["--runner", "PortableRunner"]):
        assert runner_for(PipelineOptions(flags)) is None


def test_with_no_runner_flag_the_jobs_leave_nothing_in_the_temporary_folder(
    data_and_default, tmp_path, monkeypatch
):
    """Beam 2.77's DirectRunner first tries to download the Prism runner and,
    when it cannot, leaves three empty directories in the temporary folder a
    pipeline; the jobs skip it. Every job's pipelines, in one process, on the
    in-process runner, none converted to the runner API and back (Beam does
    that for a runner it does not know; Beam 2.60 has no Prism attempt, so
    there only the last two show the runner)."""
    root, default = data_and_default
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    runs, round_trips = [], []
    run_pipeline = InProcessRunner.run_pipeline
    monkeypatch.setattr(
        InProcessRunner,
        "run_pipeline",
        lambda self, *args: runs.append(1) or run_pipeline(self, *args),
    )
    from_runner_api = beam.Pipeline.from_runner_api
    monkeypatch.setattr(
        beam.Pipeline,
        "from_runner_api",
        staticmethod(lambda *args: round_trips.append(1) or from_runner_api(*args)),
    )
    data = str(root / "part-*.csv")
    stats = run_analyze(CONFIG, data, tmp_path / "run", rows_format="parquet")
    assert_stats_close(stats["features"], default["features"])
    assert check(tmp_path / "run", data).rows == 2100
    written = run_transform(tmp_path / "run", data, tmp_path / "rows")
    assert written["rows"] == 2100
    assert os.listdir(temp) == []
    # analyze: three passes (the `mad` clip takes one of its own) and the
    # rows; check; transform.
    assert len(runs) == 6
    assert round_trips == []


def test_the_workers_get_the_pipeline_options(monkeypatch):
    """As the DirectRunner gives them: in the provision info (which the
    multi-process runner's workers read)."""
    given = []
    init = fn_runner.FnApiRunner.__init__

    def recording_init(self, *args, **kwargs):
        given.append(kwargs.get("provision_info"))
        init(self, *args, **kwargs)

    monkeypatch.setattr(fn_runner.FnApiRunner, "__init__", recording_init)
    options = PipelineOptions(["--experiments=tanhguard_probe", "--job_name=probe"])
    with new_pipeline(options) as pipeline:
        _ = pipeline | beam.Create([1, 2]) | beam.Map(lambda x: x)
    (info,) = given
    sent = info.provision_info.pipeline_options
    assert "tanhguard_probe" in list(sent["beam:option:experiments:v1"])
    assert sent["beam:option:job_name:v1"] == "probe"
