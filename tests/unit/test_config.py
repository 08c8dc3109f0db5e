"""One test per config validation rule, and the defaults."""

import json
from pathlib import Path

import pytest

from tanhguard.transforms.config import (
    ConfigError,
    FixedClip,
    config_json_schema,
    load_config,
    parse_config,
)


def test_empty_feature_takes_every_default():
    config = parse_config({"features": {"fare": {}}})
    fare = config.features["fare"]
    assert (fare.clip.strategy, fare.clip.lower, fare.clip.upper) == (
        "quantile",
        0.001,
        0.999,
    )
    assert fare.scale.strategy == "zscore"
    assert fare.impute.strategy == "median"
    assert fare.output_bound == 5.0
    assert fare.shape == () and fare.dtype == "float"


def test_feature_overrides_and_defaults_block_apply():
    config = parse_config(
        {
            "defaults": {"output_bound": 3.0, "clip": "quantile"},
            "features": {
                "fare": {"clip": {"strategy": "fixed", "lower": 0, "upper": 200}},
                "embedding": {"shape": [8]},
            },
        }
    )
    assert config.features["fare"].clip == FixedClip(lower=0.0, upper=200.0)
    assert config.features["fare"].output_bound == 3.0
    assert config.features["embedding"].size == 8
    assert config.csv_columns("embedding")[-1] == "embedding_7"


@pytest.mark.parametrize(
    ("features", "match"),
    [
        ({"fare": {"colour": 1}}, r"feature `fare`: `colour`: unknown key"),
        ({"fare": {"clip": "winsor"}}, r"feature `fare`: `clip`: unknown strategy"),
        (
            {"fare": {"clip": {"strategy": "fixed", "lower": 1.0}}},
            r"feature `fare`: `clip.upper`: is required",
        ),
        (
            {"fare": {"clip": {"strategy": "fixed", "lower": 5, "upper": 1}}},
            r"`upper` must be greater than `lower`. Received: lower=5.0, upper=1.0",
        ),
        (
            {"fare": {"clip": {"strategy": "quantile", "lower": 0.9, "upper": 0.1}}},
            r"`upper` must be greater than `lower`",
        ),
        (
            {"fare": {"clip": {"strategy": "quantile", "lower": -0.1}}},
            r"probability in \[0, 1\]. Received: -0.1",
        ),
        (
            {"fare": {"clip": {"strategy": "quantile", "lower": 0.00001}}},
            r"multiple of 0.0001",
        ),
        ({"fare": {"output_bound": 0}}, r"`output_bound`: must be a finite number > 0"),
        (
            {"fare": {"output_bound": 1.0e39}},
            r"`output_bound`: .* at most 3.402823e\+38 \(the float32 range",
        ),
        ({"fare": {"dtype": "string"}}, r"feature `fare`: `dtype`"),
        ({"fare": {"shape": [2, 3]}}, r"`shape`: must be `scalar` or a one-element"),
        ({"fare": {"shape": [0]}}, r"`d` must be an integer >= 1"),
        ({"fare": ["not", "a", "mapping"]}, r"feature `fare`: must be a mapping"),
        ({"1fare": {}}, r"feature `1fare`: a name must be"),
        ({"v": {"shape": [2]}, "v_0": {}}, r"column `v_0` is also a column"),
        (
            {"fare": {"clip": {"strategy": "sigma", "k": 0}}},
            r"feature `fare`: `clip.k`: must be a finite number > 0. Received: 0",
        ),
        (
            {"fare": {"clip": {"strategy": "iqr", "k": -1.5}}},
            r"feature `fare`: `clip.k`: must be a finite number > 0",
        ),
        (
            {"fare": {"clip": {"strategy": "mad", "k": float("inf")}}},
            r"feature `fare`: `clip.k`: must be a finite number > 0",
        ),
        (
            {"fare": {"clip": {"strategy": "sigma", "lower": 0.1}}},
            r"feature `fare`: `clip.lower`: unknown key",
        ),
        ({"fare": {"scale": "standard"}}, r"feature `fare`: `scale`: unknown strategy"),
        (
            {"fare": {"scale": {"strategy": "robust", "lower": 0.75, "upper": 0.25}}},
            r"feature `fare`: `scale`: `upper` must be greater than `lower`",
        ),
        (
            {"fare": {"scale": {"strategy": "robust", "upper": 1.5}}},
            r"feature `fare`: `scale`: `upper` must be a probability in \[0, 1\]",
        ),
        (
            {"fare": {"impute": "constant"}},
            r"feature `fare`: `impute.value`: is required",
        ),
        (
            {"fare": {"impute": {"strategy": "constant", "value": float("nan")}}},
            r"feature `fare`: `impute`: `value` must be finite",
        ),
        ({"fare": {"impute": "mode"}}, r"feature `fare`: `impute`: unknown strategy"),
        ({"fare": {"inf": "drop"}}, r"feature `fare`: `inf`: .*'clip' or 'missing'"),
        (
            {"fare": {"indicators": ["missing", "outlier"]}},
            r"feature `fare`: `indicators.1`: .*'missing' or 'clipped'",
        ),
        (
            {"fare": {"indicators": ["missing", "missing"]}},
            r"feature `fare`: `indicators`: lists an indicator twice",
        ),
        (
            {"fare": {"indicators": ["missing"]}, "fare__missing": {}},
            r"feature `fare`: its indicator output `fare__missing` has the name of "
            r"feature `fare__missing`",
        ),
        ({"v": {"shape": [2], "elementwise": "yes"}}, r"feature `v`: `elementwise`"),
    ],
    ids=[
        "unknown key is rejected",
        "unknown clip strategy is rejected",
        "fixed clip without upper is rejected",
        "fixed clip with lower above upper is rejected",
        "quantile clip with lower above upper is rejected",
        "probability below zero is rejected",
        "probability off the quantile grid is rejected",
        "zero output bound is rejected",
        "output bound beyond float32 is rejected",
        "unknown dtype is rejected",
        "two-dimensional shape is rejected",
        "zero-length vector is rejected",
        "feature that is not a mapping is rejected",
        "feature name starting with a digit is rejected",
        "vector columns colliding with another feature are rejected",
        "sigma clip with k of zero is rejected",
        "iqr clip with negative k is rejected",
        "mad clip with infinite k is rejected",
        "sigma clip with a quantile parameter is rejected",
        "unknown scale strategy is rejected",
        "robust scale with lower above upper is rejected",
        "robust scale with probability above one is rejected",
        "constant impute without value is rejected",
        "constant impute with NaN value is rejected",
        "unknown impute strategy is rejected",
        "unknown inf policy is rejected",
        "unknown indicator is rejected",
        "repeated indicator is rejected",
        "indicator output colliding with a feature is rejected",
        "non-boolean elementwise is rejected",
    ],
)
def test_invalid_feature_config_names_feature_and_field(features, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({"features": features})


def test_every_strategy_parses_with_its_defaults():
    config = parse_config(
        {
            "defaults": {"inf": "missing", "indicators": ["clipped"]},
            "features": {
                "a": {"clip": "sigma", "scale": "robust", "impute": "mean"},
                "b": {"clip": "iqr", "scale": "minmax", "impute": "zero"},
                "c": {"clip": "mad", "scale": "log_zscore"},
                "d": {"clip": "minmax", "scale": "none", "inf": "clip"},
                "e": {"clip": "none", "impute": {"strategy": "constant", "value": 2}},
                "v": {"shape": [3], "elementwise": False},
            },
        }
    )
    features = config.features
    assert features["a"].clip.k == 3.0 and features["b"].clip.k == 1.5
    assert features["c"].clip.k == 3.5
    assert (features["a"].scale.lower, features["a"].scale.upper) == (0.25, 0.75)
    assert features["e"].impute.value == 2.0
    assert features["a"].inf == "missing" and features["d"].inf == "clip"
    assert config.output_names("a") == ["a", "a__clipped"]
    assert features["v"].slots == 1 and features["v"].size == 3
    assert features["a"].elementwise is True


def test_unknown_top_level_key_is_rejected_with_the_closest_key():
    with pytest.raises(ConfigError) as raised:
        parse_config({"feature": {"fare": {}}})
    # One line: the misspelt `features` is not reported missing as well.
    assert str(raised.value) == (
        "unknown top-level key 'feature' (did you mean `features`?); expected "
        "`defaults` and `features`"
    )


def test_defaults_block_errors_name_defaults():
    with pytest.raises(ConfigError, match=r"defaults: `output_bound`"):
        parse_config({"defaults": {"output_bound": -1}, "features": {"a": {}}})


def test_empty_features_are_rejected():
    with pytest.raises(ConfigError, match=r"`features` must be a non-empty mapping"):
        parse_config({"features": {}})


def test_load_config_errors_name_the_file(tmp_path):
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match=r"absent.yaml: cannot read config"):
        load_config(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("features: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML"):
        load_config(broken)
    bad = tmp_path / "bad.yaml"
    bad.write_text("features:\n  fare: {output_bound: -2}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: feature `fare`: `output_bound`"):
        load_config(bad)


CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_are_valid(name):
    config = load_config(CONFIGS / name)
    assert config.features


def test_strategies_config_shows_every_strategy():
    config = load_config(CONFIGS / "strategies.yaml")
    features = config.features.values()
    assert {f.clip.strategy for f in features} == {
        "quantile",
        "fixed",
        "sigma",
        "iqr",
        "mad",
        "minmax",
        "none",
    }
    assert {f.scale.strategy for f in features} == {
        "zscore",
        "robust",
        "minmax",
        "log_zscore",
        "none",
    }
    assert {f.impute.strategy for f in features} == {
        "median",
        "mean",
        "zero",
        "constant",
    }


def test_json_schema_describes_features_and_defaults():
    schema = config_json_schema()
    json.dumps(schema)  # serializable
    assert schema["required"] == ["features"]
    feature = schema["$defs"]["FeatureConfig"]
    assert {"dtype", "shape", "column", "clip", "scale", "impute"} <= set(
        feature["properties"]
    )
    assert set(schema["$defs"]["Defaults"]["properties"]) == {
        "impute",
        "clip",
        "scale",
        "inf",
        "indicators",
        "elementwise",
        "output_bound",
    }


def test_every_error_in_a_config_is_reported_at_once():
    with pytest.raises(ConfigError) as raised:
        parse_config(
            {
                "defaults": {"scael": "robust"},
                "features": {
                    "fare": {"cilp": "iqr", "output_bound": -1},
                    "tips": {"clip": {"strategy": "sigma", "kk": 2}},
                    "ok": {},
                    "miles": {"impute": "median", "scale": "zscor"},
                },
            }
        )
    assert str(raised.value).split("\n") == [
        "defaults: `scael`: unknown key (did you mean `scale`?). Received: 'robust'",
        "feature `fare`: `output_bound`: must be a finite number > 0 and at most "
        "3.402823e+38 (the float32 range the graph computes in). Received: -1.0",
        "feature `fare`: `cilp`: unknown key (did you mean `clip`?). Received: 'iqr'",
        "feature `tips`: `clip.kk`: unknown key (did you mean `k`?). Received: 2",
        "feature `miles`: `scale`: unknown strategy 'zscor' (did you mean "
        "`zscore`?); expected one of 'zscore', 'robust', 'minmax', 'log_zscore', "
        "'none'",
    ]


def test_a_far_off_unknown_key_gets_no_suggestion():
    with pytest.raises(ConfigError, match=r"`weight`: unknown key\. Received: 1$"):
        parse_config({"features": {"fare": {"weight": 1}}})


def test_feature_name_and_collision_errors_are_collected_with_the_others():
    with pytest.raises(ConfigError) as raised:
        parse_config(
            {
                "features": {
                    "1x": {},
                    "y": [1],
                    "v": {"shape": [2]},
                    "v_1": {"dtype": "text"},
                    "v_0": {},
                }
            }
        )
    lines = str(raised.value).split("\n")
    assert len(lines) == 4
    assert lines[0].startswith("feature `1x`: a name must be")
    assert lines[1].startswith("feature `y`: must be a mapping")
    assert lines[2].startswith("feature `v_1`: `dtype`:")
    assert lines[3].startswith("feature `v_0`: its source column `v_0` is also")


def test_load_config_names_the_file_on_every_line(tmp_path):
    path = tmp_path / "typos.yaml"
    path.write_text("features:\n  a: {cilp: iqr}\n  b: {scael: robust}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    lines = str(raised.value).split("\n")
    assert lines == [
        f"{path}: feature `a`: `cilp`: unknown key (did you mean `clip`?). "
        "Received: 'iqr'",
        f"{path}: feature `b`: `scael`: unknown key (did you mean `scale`?). "
        "Received: 'robust'",
    ]


def test_column_maps_a_feature_to_its_source_column():
    config = parse_config(
        {
            "features": {
                "mean_radius": {"column": "mean radius"},
                "emb": {"shape": [2], "column": "word emb"},
                "fare": {},
            }
        }
    )
    assert config.source_column("mean_radius") == "mean radius"
    assert config.csv_columns("mean_radius") == ["mean radius"]
    assert config.source_column("emb") == "word emb"
    assert config.csv_columns("emb") == ["word emb_0", "word emb_1"]
    assert config.source_column("fare") == "fare"
    # Outputs keep the feature names.
    assert config.model_matrix_names() == ["mean_radius", "emb", "fare"]
    features = config.to_json_dict()["features"]
    assert features["mean_radius"]["column"] == "mean radius"
    assert "column" not in features["fare"]
    # stats.json's config round-trips.
    assert parse_config(config.to_json_dict()) == config


@pytest.mark.parametrize(
    ("features", "match"),
    [
        ({"a": {"column": ""}}, r"feature `a`: `column`: must be the non-empty"),
        ({"a": {"column": "x "}}, r"feature `a`: `column`: must not start or end"),
        ({"a": {"column": "x\ty"}}, r"feature `a`: `column`: must not hold control"),
        ({"a": {"column": ["x"]}}, r"feature `a`: `column`: must be the non-empty"),
        (
            {"a": {"column": "m r"}, "b": {"column": "m r"}},
            r"feature `b`: its source column `m r` is also a column of feature `a`",
        ),
        (
            {"a": {}, "b": {"column": "a"}},
            r"feature `b`: its source column `a` is also a column of feature `a`",
        ),
        (
            {"x": {}, "v": {"shape": [2], "column": "x"}},
            r"feature `v`: its source column `x` is also a column of feature `x`",
        ),
        (
            {"v": {"shape": [2], "column": "w"}, "w_1": {}},
            r"feature `w_1`: its source column `w_1` is also a column of feature `v`",
        ),
    ],
    ids=[
        "an empty column is rejected",
        "a column with a trailing space is rejected",
        "a column with a control character is rejected",
        "a column that is not a string is rejected",
        "two features reading one column are rejected",
        "a column named like another feature is rejected",
        "a vector whose list column is another feature's column is rejected",
        "a vector's element column colliding with a feature is rejected",
    ],
)
def test_invalid_column_is_rejected(features, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({"features": features})


def test_column_is_not_a_default():
    with pytest.raises(ConfigError, match=r"defaults: `column`: unknown key"):
        parse_config({"defaults": {"column": "x"}, "features": {"a": {}}})
