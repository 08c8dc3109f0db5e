"""The terminal summary of stats.json: 100 columns, the worst vector element."""

import numpy as np

from tanhguard.pipeline.report import WIDTH, summary_table


def _feature(size=None, clipped=0.0, **overrides):
    def value(x):
        return x if size is None else [x] * size

    feature = {
        "count": value(1_000),
        "missing": value(0),
        "nan": value(0),
        "pos_inf": value(0),
        "neg_inf": value(0),
        "min": value(-123456.789),
        "max": value(-1.5e-30),
        "clip": {"lower": value(-3.0e38), "upper": value(3.0e38)},
        "clipped_below": value(clipped),
        "clipped_above": value(0.0),
        "scale": {"center": value(-0.000123456), "scale": value(98765.4321)},
        "warnings": [],
    }
    feature.update(overrides)
    return feature


def test_every_line_fits_100_columns_with_long_names_and_extreme_numbers():
    stats = {
        "num_rows": 12_345_678_901,
        "features": {
            "a_feature_name_far_longer_than_the_column": _feature(
                missing=12_345_678, nan=9_999_999, pos_inf=1, neg_inf=1
            ),
            "v" * 40: _feature(size=1000, warnings=["x" * 300]),
        },
    }
    stats["features"]["v" * 40]["warnings"] = ["word " * 80]
    text = summary_table(stats)
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    cut = [line.split()[0] for line in text.splitlines() if line.startswith("a_f")]
    assert len(cut) == 1 and cut[0].endswith("~")  # cut, and marked as cut
    assert "a_feature_name_far_longer_than_the_column".startswith(cut[0][:-1])


def test_a_vector_shows_its_most_clipped_element_and_its_size():
    rng = np.random.default_rng(7)
    below = rng.uniform(0, 0.05, 9)
    above = rng.uniform(0, 0.05, 9)
    feature = _feature(size=9)
    feature["clipped_below"] = below.tolist()
    feature["clipped_above"] = above.tolist()
    feature["min"] = list(range(9))
    text = summary_table({"num_rows": 10, "features": {"emb": feature}})
    worst = int(np.argmax(below + above))
    row = next(line for line in text.splitlines() if line.startswith("emb["))
    assert row.startswith(f"emb[{worst}]")
    assert f"{100 * (below[worst] + above[worst]):.2f}%" in row
    assert row.split()[3] == str(worst)  # min of that element (min[i] = i)
    assert f"emb: 9 elements; the line shows element {worst}" in text


def test_counts_sum_nan_and_infinities_and_numbers_keep_three_digits():
    feature = _feature(missing=27, nan=65, pos_inf=22, neg_inf=13)
    text = summary_table({"num_rows": 2_000, "features": {"sensor": feature}})
    row = next(line for line in text.splitlines() if line.startswith("sensor"))
    fields = row.split()
    assert fields[1:3] == ["27", "100"]  # 65 + 22 + 13
    assert fields[3] == "-1.23e+05"  # -123456.789 to 3 significant digits
