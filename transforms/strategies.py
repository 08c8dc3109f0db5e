"""Every impute, clip and scale strategy: one class each, all it does in one place.

A strategy class is a config model (its YAML fields, validated) and its
behaviour: the quantiles it needs from the first analysis phase, the numbers it
derives from the statistics, and the fields it adds to stats.json. The
analysis phases and the stats.json writer only call these methods, so a new
strategy is one new class here, listed in `IMPUTE_STRATEGIES`,
`CLIP_STRATEGIES` or `SCALE_STRATEGIES` (and a row in README's tables).

Numbers are float64 numpy arrays of one value per slot (one set of
statistics: an element of an elementwise vector, or a whole feature).

Only numpy and pydantic here: the config imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from tanhguard.transforms.layout import FLAG_ZERO_ROBUST_RANGE
from tanhguard.transforms.statistics import FeatureStatistics

FLOAT32_MAX = float(np.finfo(np.float32).max)
# Normal consistency constant: 1.4826 * MAD estimates the std of normal data.
MAD_TO_STD = 1.4826

Shaped = Callable[[np.ndarray], Any]
"""Turns a `[slots]` array into stats.json's value: a number or a list."""


def log_transform(values: np.ndarray) -> np.ndarray:
    """`sign(x) * log1p(|x|)`, the `log_zscore` scaler's `g`."""
    return np.sign(values) * np.log1p(np.abs(values))


class Strategy(BaseModel):
    """Base of every strategy: a frozen config model with a `strategy` tag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: str

    def probabilities(self) -> tuple[float, ...]:
        """Quantile probabilities the first phase must compute for it."""
        return ()

    def config_fields(self) -> dict[str, Any]:
        """Its configured parameters as stats.json reports them."""
        return self.model_dump(exclude={"strategy"})


def _check_probability_pair(spec: Any) -> None:
    """`lower` < `upper`, both probabilities on the 1e-4 quantile grid."""
    for name in ("lower", "upper"):
        value = getattr(spec, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(
                f"`{name}` must be a probability in [0, 1]. Received: {value}"
            )
        if abs(value * 10_000 - round(value * 10_000)) > 1e-6:
            raise ValueError(
                f"`{name}` must be a multiple of 0.0001 (the quantile grid). "
                f"Received: {value}"
            )
    if spec.lower >= spec.upper:
        raise ValueError(
            "`upper` must be greater than `lower`. "
            f"Received: lower={spec.lower}, upper={spec.upper}"
        )


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite. Received: {value}")


def _check_positive_k(value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be a finite number > 0. Received: {value}")
    return value


def _filled(value: float, slots: int) -> np.ndarray:
    return np.full(slots, value, np.float64)


def _as64(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float64)


# --- impute -----------------------------------------------------------------


class ImputeStrategy(Strategy):
    """What missing and NaN values become (then clipped like any value)."""

    # Whether the value comes from the data (a feature without finite values
    # cannot have one).
    needs_data: ClassVar[bool] = True

    def impute_value(self, stats: FeatureStatistics, slots: int) -> np.ndarray:
        """The float64 `[slots]` value missing and NaN inputs take."""
        raise NotImplementedError


class MedianImpute(ImputeStrategy):
    """Missing and NaN values become the median of the finite training values."""

    strategy: Literal["median"] = "median"

    def probabilities(self) -> tuple[float, ...]:
        return (0.5,)

    def impute_value(self, stats: FeatureStatistics, slots: int) -> np.ndarray:
        return _as64(stats.quantile(0.5))


class MeanImpute(ImputeStrategy):
    """Missing and NaN values become the mean of the finite training values."""

    strategy: Literal["mean"] = "mean"

    def impute_value(self, stats: FeatureStatistics, slots: int) -> np.ndarray:
        return _as64(stats.mean)


class ZeroImpute(ImputeStrategy):
    """Missing and NaN values become 0."""

    strategy: Literal["zero"] = "zero"
    needs_data: ClassVar[bool] = False

    def impute_value(self, stats: FeatureStatistics, slots: int) -> np.ndarray:
        return np.zeros(slots, np.float64)


class ConstantImpute(ImputeStrategy):
    """Missing and NaN values become the given finite `value`."""

    strategy: Literal["constant"] = "constant"
    needs_data: ClassVar[bool] = False
    value: float

    @model_validator(mode="after")
    def _check_value(self) -> ConstantImpute:
        _check_finite("value", self.value)
        return self

    def impute_value(self, stats: FeatureStatistics, slots: int) -> np.ndarray:
        return _filled(self.value, slots)


# --- clip -------------------------------------------------------------------


class ClipStrategy(Strategy):
    """Where values are clipped before scaling: `lower` and `upper` per slot."""

    # Whether the bounds come from the data.
    needs_data: ClassVar[bool] = True
    # Whether the bounds need the MAD, a pass after the first phase.
    needs_mad: ClassVar[bool] = False

    def bounds(
        self, stats: FeatureStatistics, slots: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """First-phase `(lower, upper)`, float64 `[slots]` each. Bounds of a
        constant feature are equal, so every value clips to that constant;
        values beyond the float32 range are clamped later, with the final
        bounds."""
        raise NotImplementedError

    def final_bounds(
        self,
        lower: np.ndarray,
        upper: np.ndarray,
        median: np.ndarray,
        mad: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The bounds once the MAD is known (`mad` only; others keep theirs)."""
        return lower, upper

    def scale_range(
        self, lower: float, upper: float, minimum: float, maximum: float
    ) -> tuple[float, float]:
        """The range a `minmax` scaler maps onto [-1, 1]: the bounds."""
        return lower, upper

    def stats_fields(self, raw: Mapping[str, np.ndarray], shaped: Shaped) -> dict:
        """What stats.json's `clip` entry adds to strategy, lower and upper."""
        return self.config_fields()


class QuantileClip(ClipStrategy):
    """Clip to the `lower` and `upper` quantiles (probabilities) of the data."""

    strategy: Literal["quantile"] = "quantile"
    lower: float = 0.001
    upper: float = 0.999

    @model_validator(mode="after")
    def _check_probabilities(self) -> QuantileClip:
        _check_probability_pair(self)
        return self

    def probabilities(self) -> tuple[float, ...]:
        return (self.lower, self.upper)

    def bounds(self, stats, slots):
        return _as64(stats.quantile(self.lower)), _as64(stats.quantile(self.upper))

    def stats_fields(self, raw, shaped):
        return {"probabilities": [self.lower, self.upper]}


class FixedClip(ClipStrategy):
    """Clip to the given `lower` and `upper` values."""

    strategy: Literal["fixed"] = "fixed"
    needs_data: ClassVar[bool] = False
    lower: float
    upper: float

    @model_validator(mode="after")
    def _check_bounds(self) -> FixedClip:
        _check_finite("lower", self.lower)
        _check_finite("upper", self.upper)
        if self.lower >= self.upper:
            raise ValueError(
                "`upper` must be greater than `lower`. "
                f"Received: lower={self.lower}, upper={self.upper}"
            )
        return self

    def bounds(self, stats, slots):
        return _filled(self.lower, slots), _filled(self.upper, slots)

    def stats_fields(self, raw, shaped):
        return {}  # the configured values are the bounds


class SigmaClip(ClipStrategy):
    """Clip to `mean +- k * std` (feature-engine's `gaussian` capping)."""

    strategy: Literal["sigma"] = "sigma"
    k: float = 3.0

    _k = field_validator("k")(_check_positive_k)

    def bounds(self, stats, slots):
        mean, std = _as64(stats.mean), _as64(stats.std)
        return mean - self.k * std, mean + self.k * std


class IqrClip(ClipStrategy):
    """Clip to Tukey's fences `Q1 - k * IQR`, `Q3 + k * IQR`."""

    strategy: Literal["iqr"] = "iqr"
    k: float = 1.5

    _k = field_validator("k")(_check_positive_k)

    def probabilities(self) -> tuple[float, ...]:
        return (0.25, 0.75)

    def bounds(self, stats, slots):
        q1, q3 = _as64(stats.quantile(0.25)), _as64(stats.quantile(0.75))
        return q1 - self.k * (q3 - q1), q3 + self.k * (q3 - q1)


class MadClip(ClipStrategy):
    """Clip to `median +- k * 1.4826 * MAD`, MAD = median(|x - median|).

    1.4826 makes `1.4826 * MAD` estimate the std of normal data; the default
    k = 3.5 is Iglewicz and Hoaglin's outlier threshold. The MAD needs the
    median first, so the bounds are NaN until `final_bounds`.
    """

    strategy: Literal["mad"] = "mad"
    needs_mad: ClassVar[bool] = True
    k: float = 3.5

    _k = field_validator("k")(_check_positive_k)

    def probabilities(self) -> tuple[float, ...]:
        return (0.5,)

    def bounds(self, stats, slots):
        return _filled(math.nan, slots), _filled(math.nan, slots)

    def final_bounds(self, lower, upper, median, mad):
        half_width = self.k * MAD_TO_STD * np.asarray(mad, np.float64)
        return median - half_width, median + half_width

    def stats_fields(self, raw, shaped):
        return {"k": self.k, "median": shaped(raw["q0.5"]), "mad": shaped(raw["mad"])}


class MinMaxClip(ClipStrategy):
    """Clip to the training min and max: serving values stay in the seen range."""

    strategy: Literal["minmax"] = "minmax"

    def bounds(self, stats, slots):
        return _as64(stats.min), _as64(stats.max)


class NoClip(ClipStrategy):
    """No clip before scaling (only +-Inf meet the float32 range); the output
    bound still holds."""

    strategy: Literal["none"] = "none"

    def bounds(self, stats, slots):
        return _filled(-FLOAT32_MAX, slots), _filled(FLOAT32_MAX, slots)

    def scale_range(self, lower, upper, minimum, maximum):
        # No clip bounds: a `minmax` scaler maps the training range instead.
        return minimum, maximum


# --- scale ------------------------------------------------------------------


@dataclass(frozen=True)
class ClippedSlot:
    """What a scaler sees of one slot: its final clip bounds, the moments of
    `g(clip(x))` over its finite values, and first-phase quantiles."""

    lower: float
    upper: float
    range: tuple[float, float]  # the clip's `scale_range`
    count: float  # finite training values
    mean: float
    std: float
    fields: Mapping[str, float]  # the slot's first-phase fields (`layout`)


class ScaleStrategy(Strategy):
    """How the clipped value is centered and scaled: `(g(v) - center) / scale`."""

    # `g` is `sign(v) * log1p(|v|)` (else the identity).
    log: ClassVar[bool] = False
    # Whether a feature whose clipped values are one number gets scale 0
    # (output 0); the `none` scaler keeps the clipped value.
    zero_scale_when_constant: ClassVar[bool] = True

    def range_probabilities(self) -> tuple[float, float] | None:
        """Two quantiles the first phase keeps as `robust_lower` and
        `robust_upper` for this scaler (None: it needs none)."""
        return None

    def center_and_scale(
        self, slot: ClippedSlot, collapsed: bool
    ) -> tuple[float, float, int]:
        """`(center, scale, flags)` from a slot with finite values. `collapsed`:
        the clipped values are one number (the caller then sets scale 0);
        `flags` are warning bits of `tanhguard.transforms.layout`."""
        raise NotImplementedError

    def range_center_and_scale(self, lower: float, upper: float) -> tuple[float, float]:
        """`(center, scale)` mapping `[g(lower), g(upper)]` onto [-1, 1]."""
        if self.log:
            lower, upper = (float(v) for v in log_transform(np.array([lower, upper])))
        # Halves first: `upper - lower` can exceed the float32 range.
        return lower / 2 + upper / 2, upper / 2 - lower / 2

    def stats_fields(self) -> dict[str, Any]:
        """What stats.json's `scale` entry adds to strategy, center and scale."""
        return self.config_fields()


class ZScoreScale(ScaleStrategy):
    """Center on the mean and divide by the std of the clipped data."""

    strategy: Literal["zscore"] = "zscore"

    def center_and_scale(self, slot, collapsed):
        return slot.mean, slot.std, 0


class RobustScale(ScaleStrategy):
    """Center on the median and divide by the `lower`..`upper` quantile range of
    the clipped data (scikit-learn's `RobustScaler(quantile_range=(25, 75))` for
    the defaults)."""

    strategy: Literal["robust"] = "robust"
    lower: float = 0.25
    upper: float = 0.75

    @model_validator(mode="after")
    def _check_probabilities(self) -> RobustScale:
        _check_probability_pair(self)
        return self

    def probabilities(self) -> tuple[float, ...]:
        return (0.5, self.lower, self.upper)

    def range_probabilities(self) -> tuple[float, float] | None:
        return self.lower, self.upper

    def center_and_scale(self, slot, collapsed):
        # Clipping is monotone: a quantile of the clipped data is the clipped
        # quantile of the data.
        def clipped(field: str) -> float:
            return float(np.clip(slot.fields[field], slot.lower, slot.upper))

        center = clipped("q0.5")
        scale = clipped("robust_upper") - clipped("robust_lower")
        if scale == 0.0 and not collapsed:
            # scikit-learn's rule: a zero range on varying data gives scale 1.
            return center, 1.0, FLAG_ZERO_ROBUST_RANGE
        return center, scale, 0

    def stats_fields(self):
        return {"probabilities": [self.lower, self.upper]}


class MinMaxScale(ScaleStrategy):
    """Map `[lower, upper]` (the clip bounds) onto `[-1, 1]`, tanh's range."""

    strategy: Literal["minmax"] = "minmax"

    def center_and_scale(self, slot, collapsed):
        return (*self.range_center_and_scale(*slot.range), 0)


class LogZScoreScale(ScaleStrategy):
    """`g(x) = sign(x) * log1p(|x|)`, then the zscore of `g` over the clipped
    data: for positive heavy-tailed features (fares, counts, durations)."""

    strategy: Literal["log_zscore"] = "log_zscore"
    log: ClassVar[bool] = True

    def center_and_scale(self, slot, collapsed):
        return slot.mean, slot.std, 0  # the moments are of g(clip(x))


class NoScale(ScaleStrategy):
    """Center 0, scale 1: only the clip and the output bound apply."""

    strategy: Literal["none"] = "none"
    zero_scale_when_constant: ClassVar[bool] = False

    def center_and_scale(self, slot, collapsed):
        return 0.0, 1.0, 0

    def range_center_and_scale(self, lower, upper):
        return 0.0, 1.0


# The registries: the config accepts exactly these, by their `strategy` tag.
IMPUTE_STRATEGIES = (MedianImpute, MeanImpute, ZeroImpute, ConstantImpute)
CLIP_STRATEGIES = (
    QuantileClip,
    FixedClip,
    SigmaClip,
    IqrClip,
    MadClip,
    MinMaxClip,
    NoClip,
)
SCALE_STRATEGIES = (ZScoreScale, RobustScale, MinMaxScale, LogZScoreScale, NoScale)
