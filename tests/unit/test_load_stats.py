"""Reading stats.json: refuse what this tanhguard cannot read correctly."""

import json

import pytest

from tanhguard.errors import ArtifactsError
from tanhguard.pipeline.artifacts import load_stats
from tanhguard.pipeline.stats_json import STATS_FORMAT_VERSION


def _write(tmp_path, content):
    (tmp_path / "stats.json").write_text(json.dumps(content))
    return tmp_path


def test_this_and_older_formats_are_read(tmp_path):
    for version in (3, STATS_FORMAT_VERSION):
        stats = {"format_version": version, "features": {}}
        assert load_stats(_write(tmp_path, stats)) == stats


def test_a_newer_format_is_refused_naming_both_versions(tmp_path):
    stats = {"format_version": STATS_FORMAT_VERSION + 95, "features": {}}
    with pytest.raises(ArtifactsError) as error:
        load_stats(_write(tmp_path, stats))
    message = str(error.value)
    assert f"format_version {STATS_FORMAT_VERSION + 95} is newer" in message
    assert f"(up to {STATS_FORMAT_VERSION})" in message


def test_json_that_is_not_an_object_is_refused(tmp_path):
    with pytest.raises(ArtifactsError, match="a JSON object expected"):
        load_stats(_write(tmp_path, [1, 2]))
