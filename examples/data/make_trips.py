"""Writes trips.csv, the sample data of README's "Use on your data": 2,000
taxi-like rows for configs/example.yaml (fare, trip_miles, passenger_count,
embedding_0..7, tips) plus a `label` column the config does not read.

The ways real data breaks tanh units are in it: log-normal fares with a few
absurd values, distances of which 2% were recorded in feet, empty cells, NaN
and +-Inf. Deterministic: `python3 examples/data/make_trips.py` rewrites the
same file.
"""

import csv
from pathlib import Path

import numpy as np

ROWS = 2_000
SEED = 20261129


def main() -> None:
    rng = np.random.default_rng(SEED)
    fare = rng.lognormal(2.5, 0.7, ROWS)
    # One absurd value at each end: the default clip, the 0.001 and 0.999
    # quantiles, clips it (on about 1,970 finite values those are the second
    # smallest and the second largest).
    fare[rng.choice(ROWS, 2, replace=False)] = [-50.0, 2e7]
    miles = rng.gamma(2.0, 1.8, ROWS)
    feet = rng.random(ROWS) < 0.02
    miles[feet] *= 5_280.0
    passengers = rng.integers(1, 7, ROWS)
    embedding = rng.normal(0.0, 1.0, (ROWS, 8)) * np.arange(1, 9)
    tips = np.maximum(0.0, fare * rng.normal(0.15, 0.08, ROWS))
    label = (tips > 0.18 * np.abs(fare)).astype(int)

    def cell(value: float, row: int, column: int) -> str:
        draw = (row * 31 + column * 7) % 211
        if draw == 0:
            return ""  # missing
        if draw == 1:
            return "nan"
        if draw == 2:
            return "inf" if row % 2 else "-inf"
        return f"{value:.6g}"

    path = Path(__file__).with_name("trips.csv")
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        names = ["fare", "trip_miles", "passenger_count"]
        names += [f"embedding_{i}" for i in range(8)] + ["tips", "label"]
        out.writerow(names)
        for r in range(ROWS):
            values = [fare[r], miles[r]]
            row = [cell(v, r, c) for c, v in enumerate(values)]
            row.append(str(passengers[r]))
            row += [cell(v, r, 3 + i) for i, v in enumerate(embedding[r])]
            row += [cell(tips[r], r, 11), str(label[r])]
            out.writerow(row)


if __name__ == "__main__":
    main()
