"""The same analysis on Beam's other local paths: the multi-process
DirectRunner, and the portable route (a job service, as Flink and Spark jobs
take) with Beam's embedded job service."""

import numpy as np
import pytest
from graph_oracle import assert_stats_close

from tanhguard.pipeline.analyze import run_analyze
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
