"""Shared helpers of the numeric-core unit tests, as fixtures.

The analysis phases' combiners are called directly (create_accumulator,
add_input, merge_accumulators, extract_output): no Beam pipeline, no
TensorFlow graph. `analysis` runs them the way the batch job does (first
phase, MAD pass, moments of the clipped data, `fit`); `assert_quantile_rank`
is the quantile oracle: numpy's `inverted_cdf` definition, within the
summary's documented rank error.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from tanhguard.transforms.config import Config
from tanhguard.transforms.first_phase import FirstPhaseCombineFn
from tanhguard.transforms.fit_phase import (
    MadCombineFn,
    final_bounds,
    fit,
    fit_part,
)
from tanhguard.transforms.layout import field_slice
from tanhguard.transforms.moments import merge_moments
from tanhguard.transforms.slots import element_columns, needs_mad, plan_slots


def combine(combine_fn, batches: Sequence, groups: Sequence[Sequence[int]] | None):
    """Runs a CombineFn by hand: the batches of each group (indices into
    `batches`) go into an accumulator of their own, then all accumulators are
    merged once and the output extracted. `groups=None`: one accumulator."""
    groups = [range(len(batches))] if groups is None else groups
    accumulators = []
    for group in groups:
        accumulator = combine_fn.create_accumulator()
        for index in group:
            accumulator = combine_fn.add_input(accumulator, batches[index])
        accumulators.append(accumulator)
    return combine_fn.extract_output(combine_fn.merge_accumulators(accumulators))


def row_batches(cuts: Sequence[int], *arrays: np.ndarray) -> list[list[np.ndarray]]:
    """The rows of `arrays` cut at `cuts` into batches `[a[i:j], b[i:j], ...]`."""
    edges = [0, *cuts, len(arrays[0])]
    return [[a[i:j] for a in arrays] for i, j in itertools.pairwise(edges)]


@dataclass
class Analyzed:
    """What the batch job's passes produce for `x`, `missing`."""

    parameters: np.ndarray  # the first phase's vector
    mads: np.ndarray
    lower: np.ndarray  # final bounds
    upper: np.ndarray
    vector: np.ndarray  # the whole statistics vector
    slots: int

    def field(self, name: str) -> np.ndarray:
        return self.vector[field_slice(name, self.slots)]


class Analysis:
    """The analysis passes over in-memory batches."""

    @staticmethod
    def first_phase(
        config: Config,
        x: np.ndarray,
        missing: np.ndarray,
        cuts: Sequence[int] = (),
        groups: Sequence[Sequence[int]] | None = None,
    ) -> np.ndarray:
        batches = row_batches(cuts, x.astype(np.float32), missing.astype(bool))
        return combine(FirstPhaseCombineFn(config), batches, groups)

    @staticmethod
    def run(
        config: Config,
        x: np.ndarray,
        missing: np.ndarray,
        cuts: Sequence[int] = (),
        groups: Sequence[Sequence[int]] | None = None,
    ) -> Analyzed:
        """First phase, MADs, moments of `g(clip(x))`, `fit`: the statistics
        vector as the batch job computes it. The first phase sees the raw
        values; the later passes see the graph's float64 view after the inf
        policy (`inf: missing` turns +-Inf into NaN)."""
        parameters = Analysis.first_phase(config, x, missing, cuts, groups)
        slots = plan_slots(config)
        x64 = x.astype(np.float32).astype(np.float64)
        for name, columns in element_columns(config).items():
            if config.features[name].inf == "missing":
                part = x64[:, columns]
                x64[:, columns] = np.where(np.isinf(part), np.nan, part)
        if needs_mad(slots):
            mad_batches = [
                [batch, parameters[np.newaxis]] for (batch,) in row_batches(cuts, x64)
            ]
            mads = combine(MadCombineFn(slots), mad_batches, groups)
        else:
            mads = np.full(len(slots), np.nan)
        lower, upper = final_bounds(slots, parameters, mads)
        moments = functools.reduce(
            merge_moments,
            [
                fit_part(b[0], slots, lower, upper, None)[0]
                for b in row_batches(cuts, x64)
            ],
        )
        vector = np.concatenate([parameters, fit(slots, parameters, mads, moments)])
        return Analyzed(parameters, mads, lower, upper, vector, len(slots))


@pytest.fixture(scope="session")
def analysis() -> type[Analysis]:
    return Analysis


def rank_interval(ordered: np.ndarray, value: float) -> tuple[int, int]:
    """(values below `value`, values at or below it) in sorted `ordered`."""
    low = int(np.searchsorted(ordered, value, side="left"))
    high = int(np.searchsorted(ordered, value, side="right"))
    return low, high


def _assert_quantile_rank(value, values, probability, epsilon, label=""):
    """`value` is a value of the data whose rank is within `epsilon * n` of
    `probability * n`: numpy's `inverted_cdf` quantile is the value whose rank
    interval `[below, at or below]` holds `probability * n` exactly; the
    summary may miss it by the documented rank error."""
    ordered = np.sort(np.asarray(values, np.float64))
    n = ordered.size
    reference = np.quantile(ordered, probability, method="inverted_cdf")
    low, high = rank_interval(ordered, value)
    assert high > low, f"{label}: {value} is not a value of the data"
    slack = epsilon * n
    target = probability * n
    assert low - slack <= target <= high + slack, (
        f"{label}: quantile {probability} = {value} has ranks ({low}, {high}]; "
        f"numpy's inverted_cdf gives {reference} at rank {target:.1f} "
        f"(allowed error {slack:.1f} ranks)"
    )


@pytest.fixture(scope="session")
def assert_quantile_rank():
    return _assert_quantile_rank


def _finite_values(x: np.ndarray, columns) -> np.ndarray:
    """The finite values of `columns` of `x`, as the graph's float64 view."""
    values = np.asarray(x, np.float32)[:, list(columns)].astype(np.float64).ravel()
    return values[np.isfinite(values)]


@pytest.fixture(scope="session")
def finite_values():
    return _finite_values
