"""The artifacts directory: what `analyze` writes and every later step reads.

    transform_fn/, transformed_metadata/   the TFT graph (`tft.TFTransformOutput`)
    metadata/                              the raw schema (one VarLenFeature each)
    stats.json                             the statistics and bounds it applies
    stats.tfdv.pb                          the same, for TFDV / Facets (`tfdv_stats`)
    rows/                                  `tanhguard run` only: the rows

Reading and writing those files lives here; `graph_stats` reads the
statistics back from a graph, and `stats_json` formats them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tanhguard.errors import ArtifactsError
from tanhguard.transforms.config import Config, parse_config

STATS_FILE = "stats.json"
ROWS_DIR = "rows"
TRANSFORM_FN_DIR = "transform_fn"
# stats.json's keys in their documented order.
STATS_KEY_ORDER = (
    "format_version",
    "tanhguard_version",
    "tensorflow_transform_version",
    "num_rows",
    "elapsed_seconds",
    "data",
    "config",
    "features",
)


def load_stats(artifacts: str | Path) -> dict[str, Any]:
    """Reads stats.json from an artifacts directory.

    Raises:
      ArtifactsError: it is missing, not valid JSON, not an object, or
        written by a newer tanhguard (a `format_version` this one does not
        know: its fields may mean something else).
    """
    from tanhguard.pipeline.stats_json import STATS_FORMAT_VERSION

    path = Path(artifacts) / STATS_FILE
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactsError(
            f"{artifacts}: not a tanhguard artifacts directory (no {STATS_FILE}; "
            "expected the output of `tanhguard analyze`)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactsError(f"{path}: cannot read stats.json: {error}") from None
    if not isinstance(stats, dict):
        raise ArtifactsError(f"{path}: not a stats.json (a JSON object expected)")
    version = stats.get("format_version")
    if isinstance(version, int) and version > STATS_FORMAT_VERSION:
        raise ArtifactsError(
            f"{path}: format_version {version} is newer than this tanhguard reads "
            f"(up to {STATS_FORMAT_VERSION}): upgrade tanhguard"
        )
    return stats


def write_stats(directory: str | Path, stats: dict[str, Any]) -> None:
    """Writes stats.json, keys in their documented order."""
    ordered = {key: stats[key] for key in STATS_KEY_ORDER}
    (Path(directory) / STATS_FILE).write_text(json.dumps(ordered, indent=2) + "\n")


def load_artifacts_config(artifacts: str | Path) -> Config:
    """The config an artifacts directory was analyzed with (from stats.json).

    Raises:
      ArtifactsError: not an artifacts directory, or its stats.json is broken.
    """
    if not (Path(artifacts) / TRANSFORM_FN_DIR).is_dir():
        raise ArtifactsError(
            f"{artifacts}: not a tanhguard artifacts directory (expected "
            "stats.json and transform_fn/ from `tanhguard analyze`)"
        )
    check_transform_graph(artifacts)
    stats = load_stats(artifacts)
    if not isinstance(stats, dict) or not isinstance(stats.get("config"), dict):
        raise ArtifactsError(
            f"{Path(artifacts) / STATS_FILE}: holds no `config`; write it again "
            "with `tanhguard analyze`"
        )
    return parse_config(stats["config"])


def check_transform_graph(artifacts: str | Path):
    """Checks that `transform_fn/saved_model.pb` parses as a SavedModel (a
    cheap check before a job or an export loads it); returns it (a
    `SavedModel` protocol buffer).

    Raises:
      ArtifactsError: it is missing, unreadable or corrupt.
    """
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    path = Path(artifacts) / TRANSFORM_FN_DIR / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString(path.read_bytes())
    except OSError as error:
        raise ArtifactsError(
            f"{path}: cannot read the transform graph: {error.strerror or error}"
        ) from None
    except DecodeError:
        raise ArtifactsError(
            f"{path}: not a valid SavedModel (corrupt or truncated); write the "
            "artifacts again with `tanhguard analyze`"
        ) from None
    return saved_model


def passes_full_inputs_through(artifacts: str | Path) -> bool:
    """Whether the transform graph has the branch that passes full sparse
    inputs through without reading their indices (`mappers.densify_all`'s
    `FULL_INPUTS_BRANCH`, a conditional of that name in one of its
    functions). A graph written before that branch existed scatters every
    input, reading the indices.

    Raises:
      ArtifactsError: as `check_transform_graph`.
    """
    from tanhguard.transforms.mappers import FULL_INPUTS_BRANCH

    conditionals = {"If", "StatelessIf"}
    for meta_graph in check_transform_graph(artifacts).meta_graphs:
        for function in meta_graph.graph_def.library.function:
            for node in function.node_def:
                if (
                    node.op in conditionals
                    and node.name.rsplit("/", 1)[-1] == FULL_INPUTS_BRANCH
                ):
                    return True
    return False


def write_raw_metadata(directory: str | Path, config: Config) -> None:
    """The raw schema, as TFX writes it: `TFTransformOutput.raw_feature_spec()`
    and `transform_features_layer()` read it."""
    import tensorflow_transform as tft
    from tensorflow_transform.tf_metadata import (
        dataset_metadata,
        metadata_io,
        schema_utils,
    )

    from tanhguard.pipeline.batch_layout import raw_feature_spec

    metadata_io.write_metadata(
        dataset_metadata.DatasetMetadata(
            schema_utils.schema_from_feature_spec(raw_feature_spec(config))
        ),
        str(Path(directory) / tft.TFTransformOutput.RAW_METADATA_DIR),
    )
