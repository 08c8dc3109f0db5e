"""`tanhguard config-schema` validates with `jsonschema` what `parse_config`
accepts, and rejects what it rejects (for the rules a schema can state)."""

import json
import re
from pathlib import Path

import jsonschema
import pytest
import referencing
import referencing.jsonschema
import yaml

from tanhguard.errors import ConfigError
from tanhguard.transforms.config import config_json_schema, parse_config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def _readme_yaml_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```ya?ml\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def _validator() -> jsonschema.protocols.Validator:
    schema = config_json_schema()
    # The draft the schema names: 2020-12.
    validator_class = jsonschema.validators.validator_for(schema)
    assert validator_class is jsonschema.Draft202012Validator
    validator_class.check_schema(schema)
    return validator_class(schema)


def test_the_schema_is_json_and_a_valid_draft_2020_12_schema():
    schema = json.loads(json.dumps(config_json_schema()))
    jsonschema.Draft202012Validator.check_schema(schema)
    # Every reference resolves inside the document (no PointerToNowhere).
    refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(schema))
    assert refs
    resource = referencing.jsonschema.DRAFT202012.create_resource(schema)
    resolver = referencing.Registry().with_resource("", resource).resolver()
    for ref in set(refs):
        resolver.lookup(ref)  # raises PointerToNowhere if it does not


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_is_valid_under_the_schema(path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    errors = [error.message for error in _validator().iter_errors(data)]
    assert errors == []
    parse_config(data)  # and tanhguard agrees


def test_the_readme_config_examples_are_valid_under_the_schema():
    blocks = [yaml.safe_load(block) for block in _readme_yaml_blocks()]
    configs = [block for block in blocks if isinstance(block, dict)]
    assert configs, "README.md shows no YAML config"
    for data in configs:
        assert [e.message for e in _validator().iter_errors(data)] == []
        parse_config(data)


VALID = [
    {"features": {"fare": None}},
    {"defaults": None, "features": {"fare": {}}},
    {"features": {"fare": {"clip": "iqr", "scale": "log_zscore", "impute": "zero"}}},
    {"features": {"fare": {"impute": {"strategy": "constant", "value": 2}}}},
    {"features": {"v": {"shape": [3], "column": "v vec", "elementwise": False}}},
    {"features": {"v": {"shape": 3}, "s": {"shape": "scalar", "dtype": "int"}}},
    {"features": {"mean_radius": {"column": "mean radius"}}},
    {"defaults": {"indicators": ["missing", "clipped"]}, "features": {"a": {}}},
]


@pytest.mark.parametrize("data", VALID, ids=[json.dumps(d) for d in VALID])
def test_configs_tanhguard_accepts_the_schema_accepts(data):
    parse_config(data)
    assert [e.message for e in _validator().iter_errors(data)] == []


INVALID = [
    ({"features": {"fare": {"colour": 1}}}, r"`colour`: unknown key"),
    ({"features": {"fare": {"output_bound": "big"}}}, r"`output_bound`"),
    ({"features": {"fare": {"clip": "winsor"}}}, r"unknown strategy 'winsor'"),
    (
        {"features": {"fare": {"clip": {"strategy": "winsor"}}}},
        r"unknown strategy 'winsor'",
    ),
    ({"features": {"fare": {"impute": "constant"}}}, r"`impute.value`: is required"),
    ({"features": {"fare": {"clip": {"lower": 0.1}}}}, r"needs `strategy`"),
    (
        {"features": {"fare": {"clip": {"strategy": "sigma", "lower": 0.1}}}},
        r"`clip.lower`: unknown key",
    ),
    ({"features": {"fare": {"shape": [2, 3]}}}, r"`shape`"),
    ({"features": {"fare": {"elementwise": "yes"}}}, r"`elementwise`"),
    ({"features": {"fare": {"indicators": ["outlier"]}}}, r"`indicators.0`"),
    ({"features": {"fare": {"column": " fare"}}}, r"`column`: must not start"),
    ({"features": {"fare": {"column": 3}}}, r"`column`"),
    ({"features": {"1fare": {}}}, r"a name must be"),
    ({"features": {"mean radius": {}}}, r"give the source's name as `column`"),
    ({"features": {}}, r"non-empty mapping"),
    ({"feature": {"fare": {}}}, r"unknown top-level key"),
    ({"defaults": {"shape": [2]}, "features": {"a": {}}}, r"defaults: `shape`"),
    ({"features": {"fare": {"output_bound": 0}}}, r"`output_bound`"),
]


@pytest.mark.parametrize(
    ("data", "match"), INVALID, ids=[json.dumps(d) for d, _ in INVALID]
)
def test_configs_tanhguard_rejects_the_schema_rejects(data, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(data)
    assert list(_validator().iter_errors(data)), "the schema accepted it"
