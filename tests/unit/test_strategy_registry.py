"""Every registered strategy implements all a strategy does, and README's
tables list exactly the registered strategies."""

import inspect
import re
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from tanhguard.transforms.config import parse_config
from tanhguard.transforms.statistics import FeatureStatistics
from tanhguard.transforms.strategies import (
    CLIP_STRATEGIES,
    IMPUTE_STRATEGIES,
    SCALE_STRATEGIES,
    ClippedSlot,
    ClipStrategy,
    ImputeStrategy,
    ScaleStrategy,
    Strategy,
)

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
REGISTRIES = {
    "impute": (IMPUTE_STRATEGIES, ImputeStrategy, ("impute_value",)),
    "clip": (CLIP_STRATEGIES, ClipStrategy, ("bounds",)),
    "scale": (SCALE_STRATEGIES, ScaleStrategy, ("center_and_scale",)),
}
ALL = [(kind, cls) for kind, (classes, _, _) in REGISTRIES.items() for cls in classes]
# Parameters a strategy cannot default (README's tables say "required").
REQUIRED = {"fixed": {"lower": -1.0, "upper": 2.0}, "constant": {"value": 7.5}}


def _tag(cls: type[Strategy]) -> str:
    return get_args(cls.model_fields["strategy"].annotation)[0]


def _instance(kind: str, cls: type[Strategy]) -> Strategy:
    return cls(**REQUIRED.get(_tag(cls), {}))


def _statistics(slots: int = 2) -> FeatureStatistics:
    """Two columns of made-up statistics: quantile k/1000 is k (0.5 -> 500)."""
    grid = 1000
    boundaries = np.tile(np.arange(1, grid, dtype=np.float64), (slots, 1))
    ones = np.ones(slots)
    return FeatureStatistics(
        count=100 * ones,
        missing=0 * ones,
        nan=0 * ones,
        pos_inf=0 * ones,
        neg_inf=0 * ones,
        mean=400 * ones,
        std=50 * ones,
        min=0 * ones,
        max=1000 * ones,
        boundaries=boundaries,
        grid=grid,
    )


def _ids(params) -> list[str]:
    return [f"{kind} {_tag(cls)}" for kind, cls in params]


def test_the_registries_are_not_empty_and_tags_are_unique():
    for classes, _, _ in REGISTRIES.values():
        tags = [_tag(cls) for cls in classes]
        assert len(tags) >= 4 and len(set(tags)) == len(tags)


@pytest.mark.parametrize(("kind", "cls"), ALL, ids=_ids(ALL))
def test_each_strategy_is_a_documented_subclass_overriding_its_methods(kind, cls):
    _, base, methods = REGISTRIES[kind]
    assert issubclass(cls, base)
    assert (cls.__doc__ or "").strip(), "a strategy says what it does"
    for method in methods:
        assert getattr(cls, method) is not getattr(base, method), method


@pytest.mark.parametrize(("kind", "cls"), ALL, ids=_ids(ALL))
def test_each_strategy_parses_from_yaml_by_its_tag(kind, cls):
    spec = {"strategy": _tag(cls), **REQUIRED.get(_tag(cls), {})}
    config = parse_config({"features": {"x": {kind: spec}}})
    assert getattr(config.features["x"], kind) == _instance(kind, cls)


@pytest.mark.parametrize(("kind", "cls"), ALL, ids=_ids(ALL))
def test_each_strategy_computes_finite_numbers_from_statistics(kind, cls):
    strategy = _instance(kind, cls)
    stats = _statistics()
    for probability in strategy.probabilities():
        assert 0 < probability < 1
    if kind == "impute":
        value = strategy.impute_value(stats, 2)
        assert value.shape == (2,) and np.all(np.isfinite(value))
    elif kind == "clip":
        lower, upper = strategy.bounds(stats, 2)
        lower, upper = strategy.final_bounds(lower, upper, np.full(2, 500.0), 10.0)
        assert np.all(np.isfinite(lower)) and np.all(lower < upper)
        raw = {"q0.5": np.full(2, 500.0), "mad": np.full(2, 10.0)}
        assert isinstance(strategy.stats_fields(raw, list), dict)
    else:
        fields = {"q0.5": 500.0, "robust_lower": 250.0, "robust_upper": 750.0}
        slot = ClippedSlot(
            lower=0.0,
            upper=1000.0,
            range=(0.0, 1000.0),
            count=100.0,
            mean=400.0,
            std=50.0,
            fields=fields,
        )
        center, scale, flags = strategy.center_and_scale(slot, collapsed=False)
        assert np.isfinite(center) and scale > 0 and flags == 0
        assert np.all(np.isfinite(strategy.range_center_and_scale(-3.0, 5.0)))
        assert isinstance(strategy.stats_fields(), dict)


def _readme_table(heading: str) -> set[str]:
    """The first-column strategy names of the table under a README heading."""
    section = README[README.index(heading) :]
    section = section[: section.index("\n\n", section.index("|"))]
    names = set()
    rows = [line for line in section.splitlines() if line.startswith("|")]
    for line in rows[2:]:  # after the header and the rule
        if line.startswith("| `"):
            names.add(re.match(r"\| `([a-z_]+)`", line).group(1))
    return names


@pytest.mark.parametrize(
    ("kind", "heading"),
    [
        ("clip", "### Clip strategies"),
        ("scale", "### Scalers"),
    ],
)
def test_readme_tables_list_exactly_the_registered_strategies(kind, heading):
    classes, _, _ = REGISTRIES[kind]
    assert _readme_table(heading) == {_tag(cls) for cls in classes}


def test_readme_lists_every_impute_strategy():
    row = next(line for line in README.splitlines() if line.startswith("| `impute`"))
    named = set(re.findall(r"`([a-z_]+)`", row)) | set(
        re.findall(r"strategy: ([a-z_]+)", row)
    )
    assert {_tag(cls) for cls in IMPUTE_STRATEGIES} <= named


def test_every_strategy_module_member_is_registered():
    import tanhguard.transforms.strategies as module

    members = {
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Strategy)
        and cls not in (Strategy, ImputeStrategy, ClipStrategy, ScaleStrategy)
    }
    assert members == {cls for _, cls in ALL}
