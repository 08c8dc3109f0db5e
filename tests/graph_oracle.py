"""Test helpers: apply a saved graph, the documented formula in numpy, and
stats compared to rounding.

The formula is written here from README's statement of it, independently of
the TensorFlow code under test:

    out = clip((g(clip(impute(x), lower, upper)) - center) / scale, -B, B)
"""

import functools
import math

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft


def dense_as_sparse(values: np.ndarray) -> tf.SparseTensor:
    """Every value present (tf.sparse.from_dense would drop zeros as missing)."""
    values = np.asarray(values)
    values = values.reshape(len(values), -1)
    if np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float32)
    rows, cols = np.meshgrid(
        np.arange(values.shape[0]), np.arange(values.shape[1]), indexing="ij"
    )
    indices = np.stack([rows.ravel(), cols.ravel()], axis=1)
    return tf.SparseTensor(indices, values.reshape(-1), values.shape)


@functools.lru_cache(maxsize=8)
def _transform_output(artifacts: str) -> tft.TFTransformOutput:
    return tft.TFTransformOutput(artifacts)


def apply_graph(artifacts, raw: dict) -> dict:
    """Runs the saved transform graph on dense numpy columns (all present)."""
    output = _transform_output(str(artifacts))
    tensors = {name: dense_as_sparse(v) for name, v in raw.items()}
    return {k: v.numpy() for k, v in output.transform_raw_features(tensors).items()}


def element(feature: dict, index: int | None) -> dict:
    """The stats.json numbers of one element (`index` None: scalar or shared)."""

    def pick(value):
        return value if index is None or not isinstance(value, list) else value[index]

    return {
        "impute": pick(feature["impute"]["value"]),
        "lower": pick(feature["clip"]["lower"]),
        "upper": pick(feature["clip"]["upper"]),
        "center": pick(feature["scale"]["center"]),
        "scale": pick(feature["scale"]["scale"]),
        "log": feature["scale"]["strategy"] == "log_zscore",
        "inf": feature["inf"],
        "bound": feature["output_bound"],
    }


def expected_output(numbers: dict, x: np.ndarray) -> np.ndarray:
    """The formula in float32 with one element's numbers (see `element`)."""
    f32 = np.float32
    x = np.asarray(x, dtype=f32)
    if numbers["inf"] == "missing":
        x = np.where(np.isinf(x), f32(np.nan), x)
    imputed = np.where(np.isnan(x), f32(numbers["impute"]), x)
    clipped = np.clip(imputed, f32(numbers["lower"]), f32(numbers["upper"]))
    # The bound as float32 holds it: the largest float32 not above B.
    bound = f32(numbers["bound"])
    if float(bound) > numbers["bound"]:
        bound = np.nextafter(bound, f32(0))
    if numbers["log"]:
        # README: log_zscore runs in float64 from the clip on.
        clipped64 = clipped.astype(np.float64)
        g = np.sign(clipped64) * np.log1p(np.abs(clipped64))
        if numbers["scale"] == 0:
            return np.zeros_like(clipped)
        z = ((g - numbers["center"]) / numbers["scale"]).astype(f32)
        return np.clip(z, -bound, bound)
    scale = f32(numbers["scale"])
    if scale == 0:
        return np.zeros_like(clipped)
    with np.errstate(over="ignore"):
        z = (clipped - f32(numbers["center"])) / scale
    return np.clip(z, -bound, bound)


def assert_stats_close(got, want, path=""):
    """Equal structures; floats to 1e-9 (merge order differs across workers)."""
    if isinstance(want, dict):
        assert set(got) == set(want), path
        for key in want:
            assert_stats_close(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_stats_close(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), path
    else:
        assert got == want, path
