"""stats.json as TFDV / Facets statistics: a `DatasetFeatureStatisticsList`.

`analyze` and `run` write `stats.tfdv.pb` next to stats.json: the binary proto
`tfdv.load_stats_binary` reads, so `tfdv.visualize_statistics`,
`tfdv.infer_schema` and Facets Overview show the training data tanhguard
measured, with the histograms and quantiles of stats.json. Every number comes
from stats.json (no pass over the data):

- `num_examples`: the row count. Per feature (its name, type FLOAT or INT):
- common stats: `num_non_missing` (rows with the feature), `num_missing`,
  and the values per present row (`min/max/avg_num_values`,
  `tot_num_values`): 1 for a scalar, d for a vector `[d]`;
- numeric stats over the finite values (NaN and +-Inf are left out, as
  tanhguard counts them apart): `mean`, `std_dev` (population), `min`, `max`,
  `median` (the sketch's 0.5 quantile), `num_zeros`;
- histograms: the raw histogram as a STANDARD histogram (the values below /
  above its range join the first / last bucket, whose edge moves to the min
  / max, so the counts add up to the finite values; `num_nan` counts the
  NaN values), and the quantile grid as a QUANTILES histogram (bucket `i`
  runs from the grid's value at probability `p_i` to the next, holding
  `(p_i+1 - p_i) * count` values; the first and last buckets start at the min
  and end at the max).

A vector feature is one TFDV feature, its elements pooled, as TFDV computes
it. A shared vector's statistics are already pooled. An elementwise vector's
mean, std, min, max and zeros pool exactly; its median and histograms do not
(each element has its own bins), so the feature's median is left unset (0
in the proto) and each element's two histograms are `custom_stats` named
`element i: histogram` and `element i: quantiles`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TFDV_STATS_FILE = "stats.tfdv.pb"
STATS_NAME = "tanhguard"


def _as_list(value: Any, size: int) -> list:
    return value if isinstance(value, list) else [value] * size


def _standard_histogram(entry: dict, minimum: float, maximum: float, nan: int):
    """stats.json's `histogram` as a STANDARD histogram (outside values join
    the end buckets, which stretch to the min and max)."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    histogram = statistics_pb2.Histogram(
        type=statistics_pb2.Histogram.STANDARD, num_nan=nan
    )
    edges, counts = list(entry["edges"]), list(entry["counts"])
    counts[0] += entry["below"]
    counts[-1] += entry["above"]
    if entry["below"]:
        edges[0] = minimum
    if entry["above"]:
        edges[-1] = maximum
    for low, high, count in zip(edges[:-1], edges[1:], counts, strict=True):
        histogram.buckets.add(low_value=low, high_value=high, sample_count=count)
    return histogram


def _quantiles_histogram(grid: dict, count: int, minimum: float, maximum: float):
    """stats.json's `quantile_grid` as a QUANTILES histogram."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    histogram = statistics_pb2.Histogram(type=statistics_pb2.Histogram.QUANTILES)
    probabilities = [0.0, *grid["probabilities"], 1.0]
    values = [minimum, *grid["values"], maximum]
    for index in range(len(values) - 1):
        share = probabilities[index + 1] - probabilities[index]
        histogram.buckets.add(
            low_value=values[index],
            high_value=values[index + 1],
            sample_count=share * count,
        )
    return histogram


def _pooled_moments(counts, means, stds) -> tuple[float, float]:
    """Mean and population std of the union of groups (law of total variance)."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0, 0.0
    means = np.nan_to_num(np.asarray(means, np.float64))
    stds = np.nan_to_num(np.asarray(stds, np.float64))
    mean = float((counts * means).sum() / total)
    variance = (counts * (stds**2 + (means - mean) ** 2)).sum() / total
    return mean, float(np.sqrt(max(variance, 0.0)))


def feature_statistics(name: str, feature: dict, config: dict, num_rows: int):
    """One feature's `FeatureNameStatistics` from its stats.json entry.

    Args:
      name: The feature's name.
      feature: Its entry under stats.json's `features`.
      config: Its entry under stats.json's `config.features` (`dtype`,
        `shape`).
      num_rows: stats.json's `num_rows`.
    """
    from tensorflow_metadata.proto.v0 import statistics_pb2

    shape = config.get("shape") or []
    size = int(np.prod(shape)) if shape else 1
    listed = isinstance(feature["count"], list)
    elements = size if listed else 1
    counts = _as_list(feature["count"], elements)
    nans = _as_list(feature["nan"], elements)
    # A row without the feature misses every element: the rows missing it are
    # the missing values of the element missing least (per row, d values of
    # a shared vector). Exact for CSV and Parquet; a TFRecord list shorter
    # than d misses only its trailing elements.
    missing = _as_list(feature["missing"], elements)
    rows_missing = int(min(missing)) if listed else int(missing[0]) // size
    present = num_rows - rows_missing
    kind = (
        statistics_pb2.FeatureNameStatistics.INT
        if config.get("dtype") == "int"
        else statistics_pb2.FeatureNameStatistics.FLOAT
    )
    result = statistics_pb2.FeatureNameStatistics(name=name, type=kind)
    common = result.num_stats.common_stats
    common.num_non_missing = present
    common.num_missing = rows_missing
    common.min_num_values = size if present else 0
    common.max_num_values = size if present else 0
    common.avg_num_values = float(size) if present else 0.0
    common.tot_num_values = present * size
    numeric = result.num_stats
    minimums = [m for m in _as_list(feature["min"], elements) if m is not None]
    maximums = [m for m in _as_list(feature["max"], elements) if m is not None]
    mean, std = _pooled_moments(
        counts,
        _as_list(feature["mean"], elements),
        _as_list(feature["std"], elements),
    )
    numeric.mean, numeric.std_dev = mean, std
    numeric.min = min(minimums) if minimums else 0.0
    numeric.max = max(maximums) if maximums else 0.0
    numeric.num_zeros = int(sum(_as_list(feature["zeros"], elements)))
    histograms = _as_list(feature["histogram"], elements)
    grids = _as_list(feature["quantile_grid"], elements)
    element_stats = []
    for index in range(elements):
        low = _as_list(feature["min"], elements)[index]
        high = _as_list(feature["max"], elements)[index]
        if counts[index] == 0 or low is None:
            element_stats.append(None)
            continue
        element_stats.append(
            (
                _standard_histogram(histograms[index], low, high, nans[index]),
                _quantiles_histogram(grids[index], counts[index], low, high),
            )
        )
    if not listed:
        numeric.median = _as_list(feature["quantiles"]["0.5"], 1)[0] or 0.0
        if element_stats[0] is not None:
            numeric.histograms.extend(element_stats[0])
    else:
        for index, pair in enumerate(element_stats):
            if pair is None:
                continue
            standard, quantiles = pair
            result.custom_stats.add(
                name=f"element {index}: histogram", histogram=standard
            )
            result.custom_stats.add(
                name=f"element {index}: quantiles", histogram=quantiles
            )
    return result


def statistics_list(stats: dict[str, Any]):
    """stats.json (format_version 4 or later; or what
    `graph_stats.stats_from_transform_graph` returns) as a
    `DatasetFeatureStatisticsList`.

    Raises:
      ValueError: stats.json is older than format_version 4 (no histograms).
    """
    from tensorflow_metadata.proto.v0 import statistics_pb2

    old = [name for name, f in stats["features"].items() if "histogram" not in f]
    if old:
        raise ValueError(
            f"stats.json has no histograms (feature `{old[0]}`; format_version "
            f"{stats.get('format_version')}, needs 4 or later); write it again "
            "with `tanhguard analyze`"
        )
    dataset = statistics_pb2.DatasetFeatureStatistics(
        name=STATS_NAME, num_examples=stats["num_rows"]
    )
    configs = stats["config"]["features"]
    for name, feature in stats["features"].items():
        dataset.features.append(
            feature_statistics(name, feature, configs[name], stats["num_rows"])
        )
    return statistics_pb2.DatasetFeatureStatisticsList(datasets=[dataset])


def write_tfdv_stats(directory: str | Path, stats: dict[str, Any]) -> Path:
    """Writes `stats.tfdv.pb` (binary `DatasetFeatureStatisticsList`) into
    `directory`; returns its path."""
    path = Path(directory) / TFDV_STATS_FILE
    path.write_bytes(statistics_list(stats).SerializeToString())
    return path
