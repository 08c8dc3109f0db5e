"""`tanhguard.analyze`: the batch job as a function, started the way the
command line starts it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tanhguard.transforms.config import Config


def analyze(
    config: Config | str | Path,
    data: str,
    output: str | Path,
    beam_args: Sequence[str] = (),
    overwrite: bool = False,
    fmt: str | None = None,
) -> dict[str, Any]:
    """`tanhguard analyze` as a function: `run_analyze` with the config given
    as a validated `Config` or the path of a YAML file; returns stats.json's
    content.

    Example: `tanhguard.analyze("configs/demo.yaml", "data.csv", "artifacts")`.

    As on the command line, the process that saves the graph starts before
    Beam is imported, so that TensorFlow's import overlaps Beam's (about 1 s
    less on a small input, the first time in a process).
    """
    from tanhguard.pipeline import graph_process

    graph_process.start_early(data, fmt)
    try:
        from tanhguard.pipeline.analyze import run_analyze
        from tanhguard.transforms.config import Config, load_config

        if not isinstance(config, Config):
            config = load_config(config)
        return run_analyze(
            config, data, output, beam_args, overwrite=overwrite, fmt=fmt
        )
    finally:
        graph_process.stop_early()  # one nothing took: the job failed first
