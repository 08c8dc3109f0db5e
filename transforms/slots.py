"""Slots: the sets of statistics a config asks for, and where their values sit.

A slot is one set of statistics with the strategies that use it: one per
element of an elementwise vector, one for a scalar or a shared
(`elementwise: false`) vector. The graph puts every feature's elements side
by side (`[batch, D]`, config order); a slot names its columns there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tanhguard.transforms.config import Config
from tanhguard.transforms.strategies import ClipStrategy, ScaleStrategy


@dataclass(frozen=True)
class Slot:
    """One set of statistics and the strategies that use it."""

    feature: str
    columns: tuple[int, ...]  # element columns of the side-by-side input
    clip: ClipStrategy
    scale: ScaleStrategy
    # False only when neither the clip nor the impute value needs the data.
    needs_data: bool


def total_slots(config: Config) -> int:
    """S: the number of sets of statistics, summed over features."""
    return sum(feature.slots for feature in config.features.values())


def needs_mad(slots: list[Slot]) -> bool:
    """Whether a slot's bounds need the MAD (a pass of their own)."""
    return any(slot.clip.needs_mad for slot in slots)


def element_columns(config: Config) -> dict[str, np.ndarray]:
    """Each feature's element columns in the side-by-side `[rows, D]` input."""
    columns, start = {}, 0
    for name, feature in config.features.items():
        columns[name] = np.arange(start, start + feature.size)
        start += feature.size
    return columns


def plan_slots(config: Config) -> list[Slot]:
    """The slots of a config, in feature order, with their element columns."""
    slots = []
    for name, columns in element_columns(config).items():
        feature = config.features[name]
        columns = [int(c) for c in columns]
        groups = [(c,) for c in columns] if feature.elementwise else [tuple(columns)]
        needs_data = feature.clip.needs_data or feature.impute.needs_data
        slots += [
            Slot(name, group, feature.clip, feature.scale, needs_data)
            for group in groups
        ]
    return slots


def spread_over_columns(
    slots: list[Slot], values: np.ndarray, columns: int
) -> np.ndarray:
    """A `[S]` per-slot array spread over the `[columns]` element columns."""
    spread = np.zeros(columns, dtype=np.asarray(values).dtype)
    for index, slot in enumerate(slots):
        spread[list(slot.columns)] = values[index]
    return spread


def float32_bound(bound: float) -> np.float32:
    """The largest float32 not above `bound` (> 0, at most float32 max).

    `np.float32(0.1)` is 0.10000000149: clipping to it would let outputs
    exceed an `output_bound` of 0.1 as written.
    """
    rounded = np.float32(bound)
    if float(rounded) > bound:
        rounded = np.nextafter(rounded, np.float32(0))
    return rounded


def slot_output_bounds(config: Config) -> np.ndarray:
    """Each slot's output bound as the graph applies it (float32, rounded
    down, `float32_bound`): the fit phase maps the output histograms into
    it."""
    return np.array(
        [
            float(float32_bound(config.features[slot.feature].output_bound))
            for slot in plan_slots(config)
        ]
    )
