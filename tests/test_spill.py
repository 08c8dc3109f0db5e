"""The first pass keeps its parsed CSV / TFRecord batches on disk for the
later passes (`pipeline/spill.py`): the statistics are the ones re-reading
the input gives, the files are gone afterwards, and any shortfall (a full
disk, a lost batch) falls back to reading the input again."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tanhguard.errors import ConfigError
from tanhguard.pipeline import spill
from tanhguard.pipeline.analyze import run_analyze
from tanhguard.transforms.config import parse_config

ROWS = 5000
PART = 2000
# A `mad` clip: three passes, two of them reading the kept batches.
CONFIG = parse_config(
    {
        "features": {
            "heavy": {"clip": {"strategy": "mad", "k": 5}},
            "vec": {"shape": [2], "inf": "missing"},
            "count": {"dtype": "int"},
        }
    }
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("spill")
    rng = np.random.default_rng(11)
    heavy = rng.standard_t(2, ROWS) * 30
    vec = rng.normal(0, 3, (ROWS, 2))
    vec[::41, 1] = np.inf
    lines = []
    for row in range(ROWS):
        cell = "" if row % 29 == 0 else repr(float(heavy[row]))
        lines.append(
            f"{cell},{float(vec[row, 0])!r},{float(vec[row, 1])!r},{row % 13}\n"
        )
    # Three files, so at least three batches.
    (root / "csv").mkdir()
    for part, start in enumerate(range(0, ROWS, PART)):
        (root / "csv" / f"part-{part}.csv").write_text(
            "heavy,vec_0,vec_1,count\n" + "".join(lines[start : start + PART])
        )
    (root / "tfrecord").mkdir()
    with tf.io.TFRecordWriter(str(root / "tfrecord" / "d.tfrecord")) as writer:
        for row in range(ROWS):
            feature = {
                "vec": tf.train.Feature(
                    float_list=tf.train.FloatList(value=list(vec[row]))
                ),
                "count": tf.train.Feature(int64_list=tf.train.Int64List(value=[row])),
            }
            if row % 29:
                feature["heavy"] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=[heavy[row]])
                )
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    return root


def _numbers(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k not in ("elapsed_seconds", "data")}


def _analyze(data, name: str, fmt: str, caplog, monkeypatch, spill_env: str) -> dict:
    monkeypatch.setenv(spill.SPILL_ENV, spill_env)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tanhguard"):
        stats = run_analyze(CONFIG, str(data / fmt), data / name)
    assert not (data / name / ".tft_tmp").exists()  # nothing kept afterwards
    return stats


def _kept_on_disk(caplog) -> list[bool]:
    """For each pass after the first, whether it read the kept batches."""
    lines = [r.getMessage() for r in caplog.records]
    later = [line for line in lines if line.startswith(("pass 2", "pass 3"))]
    return ["kept on disk" in line for line in later]


@pytest.mark.parametrize("fmt", ["csv", "tfrecord"])
def test_the_later_passes_read_the_kept_batches_with_the_same_result(
    data, fmt, caplog, monkeypatch
):
    kept = _analyze(data, f"kept-{fmt}", fmt, caplog, monkeypatch, "1")
    assert _kept_on_disk(caplog) == [True, True]
    again = _analyze(data, f"again-{fmt}", fmt, caplog, monkeypatch, "0")
    assert _kept_on_disk(caplog) == [False, False]
    assert _numbers(kept) == _numbers(again)
    assert kept["num_rows"] == ROWS


def test_nothing_is_kept_with_a_temp_location(data, tmp_path, caplog, monkeypatch):
    """With `--temp_location` the workers write elsewhere, and a run killed
    there would leave the parsed copy behind: the files are read again."""
    monkeypatch.setenv(spill.SPILL_ENV, "1")
    temp = tmp_path / "temp"
    with caplog.at_level(logging.INFO, logger="tanhguard"):
        stats = run_analyze(
            CONFIG, str(data / "csv"), tmp_path / "out", [f"--temp_location={temp}"]
        )
    assert _kept_on_disk(caplog) == [False, False]
    reference = _analyze(data, "reference-temp", "csv", caplog, monkeypatch, "1")
    assert _numbers(stats) == _numbers(reference)
    assert list(temp.iterdir()) == []  # its work directory is gone


def test_parquet_is_read_again(data, tmp_path, caplog, monkeypatch):
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    pq.write_table(pa_csv.read_csv(data / "csv" / "part-0.csv"), tmp_path / "d.parquet")
    monkeypatch.setenv(spill.SPILL_ENV, "1")
    with caplog.at_level(logging.INFO, logger="tanhguard"):
        run_analyze(CONFIG, str(tmp_path / "d.parquet"), tmp_path / "out")
    assert _kept_on_disk(caplog) == [False, False]


def test_a_disk_short_of_room_reads_the_input_again(data, caplog, monkeypatch):
    reference = _analyze(data, "reference", "csv", caplog, monkeypatch, "0")
    # Every byte of the filesystem would have to stay free: no batch fits.
    monkeypatch.setattr(spill, "_RESERVE_FRACTION", 1.0)
    full = _analyze(data, "full", "csv", caplog, monkeypatch, "1")
    assert _kept_on_disk(caplog) == [False, False]
    assert any("short of room" in r.getMessage() for r in caplog.records)
    assert _numbers(full) == _numbers(reference)


def test_a_lost_batch_reads_the_input_again(data, caplog, monkeypatch):
    reference = _analyze(data, "reference2", "csv", caplog, monkeypatch, "0")
    written = []
    original = spill.write_batch

    def lose_the_second(directory, x):
        written.append(x.shape[0])
        if len(written) != 2:
            original(directory, x)

    monkeypatch.setattr(spill, "write_batch", lose_the_second)
    lost = _analyze(data, "lost", "csv", caplog, monkeypatch, "1")
    assert len(written) == 3  # a batch per file
    assert _kept_on_disk(caplog) == [False, False]
    message = f"hold {ROWS - written[1]} rows, not {ROWS}"
    assert any(message in r.getMessage() for r in caplog.records)
    assert _numbers(lost) == _numbers(reference)


@pytest.mark.parametrize("variable", ["TANHGUARD_SPILL", "TANHGUARD_MALLOC"])
def test_a_bad_spill_or_malloc_setting_is_one_line_before_any_pass(data, variable):
    env = dict(os.environ, **{variable: "yes"})
    (data / "c.yaml").write_text(json.dumps({"features": {"heavy": {}}}))
    done = subprocess.run(
        [sys.executable, "-m", "tanhguard.pipeline.cli", "analyze", "--config",
         "c.yaml", "--data", "csv", "--output", "bad-setting"],
        cwd=data, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"tanhguard: error: {variable} must be 0 or 1. Received: 'yes'"
    )
    assert "pass 1" not in done.stderr
    assert not (data / "bad-setting").exists()


def test_spill_enabled_reads_the_setting(monkeypatch):
    monkeypatch.delenv(spill.SPILL_ENV, raising=False)
    assert spill.spill_enabled()
    monkeypatch.setenv(spill.SPILL_ENV, "0")
    assert not spill.spill_enabled()
    monkeypatch.setenv(spill.SPILL_ENV, " 2")
    with pytest.raises(ConfigError, match="must be 0 or 1"):
        spill.spill_enabled()
