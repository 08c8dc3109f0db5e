"""The command line end to end, and the demo."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from tanhguard.pipeline.beam_flags import beam_parser
from tanhguard.pipeline.cli import EXIT_ERROR, EXIT_OK, _command_flags, main
from tanhguard.pipeline.demo import demo_report, run_demo

README = Path(__file__).parent.parent / "README.md"


def test_quiet_analyze_prints_no_progress(tmp_path, capsys):
    data = tmp_path / "q.csv"
    data.write_text("x\n" + "".join(f"{v}\n" for v in range(10)))
    config = tmp_path / "c.yaml"
    config.write_text("features:\n  x: {}\n")
    argv = ["analyze", "--config", str(config), "--data", str(data)]
    status = main([*argv, "--output", str(tmp_path / "o"), "--quiet"])
    assert status == EXIT_OK
    captured = capsys.readouterr()
    assert "tanhguard:" not in captured.err
    assert "Artifacts:" in captured.out


def test_analyze_command_writes_loadable_artifacts(tmp_path, capsys):
    data = tmp_path / "small.csv"
    data.write_text("x,other\n" + "".join(f"{v},a\n" for v in range(1, 41)))
    config = tmp_path / "c.yaml"
    config.write_text(
        "features:\n  x: {clip: {strategy: fixed, lower: 5, upper: 30}}\n"
    )
    out = tmp_path / "art"
    status = main(
        ["analyze", "--config", str(config), "--data", str(data), "--output", str(out)]
    )
    assert status == EXIT_OK
    captured = capsys.readouterr()
    printed = captured.out
    assert printed.strip().splitlines()[-1].startswith(f"Artifacts: {out} (")
    assert "tanhguard: analyzing 1 csv file(s)" in captured.err
    assert f"tanhguard: read {data}: 40 rows in" in captured.err
    # 1..40 clipped to [5, 30]: 4 values below and 10 above, 14 of 40.
    assert "35.00%" in printed
    stats = json.loads((out / "stats.json").read_text())
    clipped = np.clip(np.arange(1, 41, dtype=np.float64), 5, 30)
    assert stats["num_rows"] == 40
    np.testing.assert_allclose(
        stats["features"]["x"]["scale"]["center"], clipped.mean()
    )
    assert (out / "transform_fn" / "saved_model.pb").exists()
    assert (out / "transformed_metadata").is_dir()
    # Written by default: the HTML report and the statistics for TFDV.
    report = (out / "report.html").read_text()
    assert "<svg" in report and "http://" not in report and "https://" not in report
    assert (out / "stats.tfdv.pb").stat().st_size > 0


def test_analyze_command_reports_bad_config_and_exits_nonzero(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("features:\n  x: {clip: {strategy: fixed, lower: 3, upper: 1}}\n")
    status = main(
        ["analyze", "--config", str(config), "--data", "x.csv", "--output", "o"]
    )
    assert status == EXIT_ERROR
    assert "c.yaml: feature `x`: `clip`" in capsys.readouterr().err


def test_config_schema_command_prints_json(capsys):
    assert main(["config-schema"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["required"] == ["features"]


def test_demo_shows_nan_on_raw_rows_and_none_after_transform(tmp_path):
    result = run_demo(tmp_path / "demo", rows=4000)
    comparison = result["comparison"]
    assert comparison["raw_nan_rows"] > comparison["raw_nan_input_rows"] > 0
    assert comparison["transformed_nan_rows"] == 0
    assert comparison["transformed_nonfinite_inputs"] == 0
    stats = result["stats"]
    assert stats["features"]["constant"]["constant"] is True
    assert stats["features"]["sensor"]["pos_inf"] > 0
    report = demo_report(result)
    problem = report.index("The problem:")
    cure = report.index("The cure:")
    table = report.index("rows analyzed")
    assert problem < cure < table  # the story first, the statistics last
    assert "NaN on 0 of 4,000 rows\n    (every input is finite" in report[cure:table]
    raw_nan = f"NaN on {comparison['raw_nan_rows']:,} of 4,000 rows"
    assert raw_nan in report[problem:cure]
    lines = [line for line in report.splitlines() if str(tmp_path) not in line]
    assert max(map(len, lines)) <= 100


def test_a_flag_neither_tanhguard_nor_beam_takes_is_an_error(tmp_path, capsys):
    # Beam only logs flags it does not know and drops them: a mistyped
    # --runner would run the job on the local runner.
    argv = ["analyze", "--config", "c.yaml", "--data", "d.csv"]
    argv += ["--output", str(tmp_path / "o"), "--direct_num_workers=2"]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--overwite", "--runer=DataflowRunner"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--overwite (did you mean --overwrite?)" in err
    assert "--runer=DataflowRunner (did you mean --runner?)" in err
    assert "direct_num_workers" not in err
    with pytest.raises(SystemExit):
        main([*argv, "--runner"])
    assert "argument --runner: expected one argument" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_flag_value_beam_rejects_is_one_line_and_exit_1(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("features:\n  x: {}\n")
    (tmp_path / "d.csv").write_text("x\n1\n2\n3\n")
    argv = ["analyze", "--config", str(tmp_path / "c.yaml"), "--data"]
    argv += [str(tmp_path / "d.csv"), "--output", str(tmp_path / "o")]
    assert main([*argv, "--type_check_additional=bogus"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "tanhguard: error: Apache Beam rejected the pipeline options: "
        "Unrecognized --type_check_additional feature: bogus"
    )
    assert not (tmp_path / "o").exists()


def test_every_runner_flag_the_readme_names_is_a_beam_flag():
    text = README.read_text()
    section = text[
        text.index("- With no `--runner`") : text.index("- `--output` appears")
    ]
    cloud = text[text.index("## On Dataflow") : text.index("**Vertex AI Pipelines")]
    cloud = re.sub(r"python3 -m pip .*", "", cloud)  # pip's flags, not Beam's
    flags = set(re.findall(r"--[a-z_]+", section + cloud))
    flags -= set(_command_flags("analyze"))
    assert {"--runner", "--temp_location", "--flink_master"} <= flags
    assert {"--spark_master_url", "--direct_num_workers", "--setup_file"} <= flags
    assert {"--extra_package", "--sdk_container_image"} <= flags
    parser = beam_parser()
    beam = {flag for action in parser._actions for flag in action.option_strings}
    assert flags - beam == set()
