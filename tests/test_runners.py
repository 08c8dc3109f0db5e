"""The same analysis on Beam's other local paths: the multi-process
DirectRunner, the DirectRunner named on the command line, and the portable
route (a job service, as Flink and Spark jobs take) with Beam's embedded job
service; and the runner the jobs get when the flags name none."""

import os
import tempfile

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from graph_oracle import assert_stats_close

from tanhguard.pipeline.analyze import run_analyze
from tanhguard.pipeline.beam_runner import InProcessRunner, runner_for
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


def test_the_flags_runner_is_beams_choice_and_none_means_the_in_process_runner():
    assert isinstance(runner_for(PipelineOptions([])), InProcessRunner)
    for flags in (["--runner=DirectRunner"], ["--runner", "PortableRunner"]):
        assert runner_for(PipelineOptions(flags)) is None


def test_with_no_runner_flag_the_jobs_leave_nothing_in_the_temporary_folder(
    data_and_default, tmp_path, monkeypatch
):
    """Beam 2.77's DirectRunner first tries to download the Prism runner and,
    when it cannot, leaves three empty directories in the temporary folder a
    pipeline; the jobs skip it. Every job's pipelines, in one process."""
    root, default = data_and_default
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    data = str(root / "part-*.csv")
    stats = run_analyze(CONFIG, data, tmp_path / "run", rows_format="parquet")
    assert_stats_close(stats["features"], default["features"])
    assert check(tmp_path / "run", data).rows == 2100
    written = run_transform(tmp_path / "run", data, tmp_path / "rows")
    assert written["rows"] == 2100
    assert os.listdir(temp) == []
