"""`SaveGlobally` and `load_saved`: a combine's value through a file, and the
value for no input when nothing arrived."""

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.transforms.combiners import MeanCombineFn

from tanhguard.pipeline.workdir import SaveGlobally, load_saved


def _run(values, combine, path):
    with beam.Pipeline() as pipeline:
        _ = pipeline | beam.Create(values) | SaveGlobally(combine, str(path))
    return load_saved(str(path), combine)


@pytest.mark.parametrize("values", [[3, 4, 5], []])
def test_a_callable_combine_gives_its_value_or_its_value_for_no_input(tmp_path, values):
    assert int(_run(values, sum, tmp_path / "sum.npy")) == sum(values)
    assert (tmp_path / "sum.npy").exists() == bool(values)


def test_a_combine_fn_gives_its_output_for_no_input(tmp_path):
    got = _run([2.0, 4.0], MeanCombineFn(), tmp_path / "mean.npy")
    assert float(got) == 3.0
    # MeanCombineFn's output for no element is NaN (0 / 0).
    assert np.isnan(_run([], MeanCombineFn(), tmp_path / "none.npy"))
