"""A TFX pipeline with tanhguard as the Transform module, run locally.

    CsvExampleGen -> StatisticsGen -> SchemaGen -> Transform (tanhguard)
      -> Trainer (tf_keras tanh model, tft_layer serving) -> Pusher (a folder)

Run it (in the TFX environment, `python3 dev.py tfx-example`):

    .venv-tfx/bin/python examples/tfx/pipeline.py --output tfx-output

Without `--data`, it writes demo data (heavy tails, NaN, +-Inf, empty cells)
to `OUTPUT/data/{train,eval}/data.csv`. With `--data DIR`, DIR holds
`train/*.csv` and `eval/*.csv` with a header and a 0/1 `label` column.
Afterwards OUTPUT holds `serving/` (the pushed model), `stats.json` (read back
from the Transform component's graph) and the pipeline's own files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from tfx import v1 as tfx

from tanhguard.pipeline.demo import demo_config, generate_demo_rows, write_demo_csv
from tanhguard.pipeline.graph_stats import stats_from_transform_graph

HERE = Path(__file__).resolve().parent
LABEL = "label"


def write_demo_data(root: Path, rows: int = 2000, seed: int = 17) -> Path:
    """Demo rows with a label (fare above its median), split 3:1."""
    columns = generate_demo_rows(rows, seed=seed)
    fare = columns["fare"]
    columns[LABEL] = (fare > np.nanmedian(fare)).astype(np.float64)
    split = rows * 3 // 4
    for name, part in (("train", slice(0, split)), ("eval", slice(split, rows))):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        write_demo_csv(
            folder / "data.csv", {k: v[part] for k, v in columns.items()}, seed
        )
    # Integers stay integers in the CSV (the schema then says INT).
    for name in ("train", "eval"):
        path = root / name / "data.csv"
        lines = path.read_text().splitlines()
        header = lines[0].split(",")
        index = header.index(LABEL)
        fixed = [lines[0]]
        for line in lines[1:]:
            cells = line.split(",")
            cells[index] = str(int(float(cells[index])))
            fixed.append(",".join(cells))
        path.write_text("\n".join(fixed) + "\n")
    return root


def create_pipeline(
    data_root: Path,
    output: Path,
    custom_config: dict,
    transform_module_file: str | None = None,
    train_steps: int = 200,
) -> tfx.dsl.Pipeline:
    """The pipeline; Transform uses tanhguard's entry point by name, or a
    `module_file` that re-exports it."""
    example_gen = tfx.components.CsvExampleGen(
        input_base=str(data_root),
        input_config=tfx.proto.Input(
            splits=[
                tfx.proto.Input.Split(name="train", pattern="train/*"),
                tfx.proto.Input.Split(name="eval", pattern="eval/*"),
            ]
        ),
    )
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"]
    )
    # Without inferred shapes every feature is a VarLenFeature: a serving
    # example may then leave any feature out, and tanhguard imputes it.
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=False
    )
    if transform_module_file:
        entry = {"module_file": transform_module_file}
    else:
        entry = {"preprocessing_fn": "tanhguard.transforms.preprocessing_fn"}
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        custom_config=custom_config,
        **entry,
    )
    trainer = tfx.components.Trainer(
        module_file=str(HERE / "trainer_module.py"),
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=10),
    )
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=str(output / "serving")
            )
        ),
    )
    return tfx.dsl.Pipeline(
        pipeline_name="tanhguard_example",
        pipeline_root=str(output / "pipeline_root"),
        metadata_connection_config=(
            tfx.orchestration.metadata.sqlite_metadata_connection_config(
                str(output / "metadata.sqlite")
            )
        ),
        components=[
            example_gen,
            statistics_gen,
            schema_gen,
            transform,
            trainer,
            pusher,
        ],
        beam_pipeline_args=["--direct_running_mode=in_memory"],
    )


def latest(pattern_root: Path) -> Path:
    """The newest execution folder under a component output directory."""
    folders = sorted(
        (p for p in pattern_root.iterdir() if p.is_dir()),
        key=lambda p: int(p.name) if p.name.isdigit() else -1,
    )
    if not folders:
        raise FileNotFoundError(f"{pattern_root}: no execution output")
    return folders[-1]


def run(
    output: Path,
    data_root: Path | None = None,
    custom_config: dict | None = None,
    transform_module_file: str | None = None,
    train_steps: int = 200,
) -> dict:
    """Runs the pipeline; returns the paths it produced and the statistics."""
    output = output.absolute()
    if data_root is None:
        data_root = write_demo_data(output / "data")
    if custom_config is None:
        # No `features`: every numeric schema feature but the label, with the
        # demo config's defaults.
        custom_config = {
            "config": {"defaults": demo_config().defaults.model_dump()},
            "passthrough": [LABEL],
        }
    pipeline = create_pipeline(
        data_root, output, custom_config, transform_module_file, train_steps
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)
    root = output / "pipeline_root"
    transform_graph = latest(root / "Transform" / "transform_graph")
    stats = stats_from_transform_graph(transform_graph)
    (output / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return {
        "serving": latest(output / "serving"),
        "transform_graph": transform_graph,
        "stats": stats,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--data", type=Path, help="folder with train/ and eval/")
    parser.add_argument("--train-steps", type=int, default=200)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = run(args.output, args.data, train_steps=args.train_steps)
    print(f"Pushed model:    {result['serving']}")
    print(f"Transform graph: {result['transform_graph']}")
    print(f"Statistics:      {args.output / 'stats.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
