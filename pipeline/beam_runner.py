"""The Beam pipelines of tanhguard's jobs, and the runner they get when the
flags name none.

With no `--runner`, Beam runs a pipeline on its `DirectRunner`. Since Beam
2.68 that runner first tries the Prism runner: it downloads a Go program from
GitHub and runs the job there, and only falls back to the in-process
`FnApiRunner` when that fails (Beam's release notes advise pinning the
`FnApiRunner` where that matters). On a machine that cannot reach GitHub the
attempt costs about 0.1 s a pipeline and leaves three empty directories in
the system's temporary folder each time (measured with Beam 2.77); on one that
can, the job runs in a downloaded program that tanhguard was never tested
with. Beam 2.60 (the TFX environment) goes straight to the `FnApiRunner`.

So with no `--runner`, tanhguard's jobs get the `FnApiRunner`, built the way
the `DirectRunner` builds it; `--direct_num_workers` and
`--direct_running_mode` work as with the `DirectRunner`. A runner the flags
name, `--runner=DirectRunner` included, is Beam's to choose as before.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    StandardOptions,
    TypeOptions,
)
from apache_beam.runners.runner import PipelineRunner

from tanhguard.errors import OptionsError

# How Beam's `Pipeline` starts the `ValueError` of its options' validation,
# one error a line after it (Beam 2.60-2.77).
_VALIDATION_ERRORS = "Pipeline has validations errors:"


class InProcessRunner(PipelineRunner):
    """Beam's in-process `FnApiRunner`, with the pipeline options its workers
    get from the `DirectRunner` (which builds it the same way). Run through
    `new_pipeline`."""

    def is_fnapi_compatible(self) -> bool:
        # What the DirectRunner answers, so that the pipeline is built alike
        # (Beam adds the `beam_fn_api` experiment before building it when a
        # runner says True; the FnApiRunner adds it when it runs).
        return False

    def run_pipeline(self, pipeline, options):
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        provision_info = fn_runner.ExtendedProvisionInfo(
            beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
        )
        runner = fn_runner.FnApiRunner(provision_info=provision_info)
        return runner.run_pipeline(pipeline, options)


def runner_for(options: PipelineOptions) -> PipelineRunner | None:
    """The runner for a pipeline with `options`: None (Beam's choice, from
    `--runner`) when they name one, else an `InProcessRunner`."""
    if options.view_as(StandardOptions).runner is not None:
        return None
    return InProcessRunner()


class _InProcessPipeline(beam.Pipeline):
    """A pipeline on an `InProcessRunner`, run as Beam runs the
    DirectRunner's: without first converting it to the runner API and back.
    `Pipeline.run` skips that round trip for the DirectRunner (by its class
    name) and for runners that say they use the Fn API, which this one does
    not say, so that the pipeline is built as for the DirectRunner; the
    round trip cost 0.05-0.15 s a pipeline."""

    def run(self, test_runner_api="AUTO"):
        if (
            test_runner_api == "AUTO"
            and not self.options.view_as(StandardOptions).streaming
        ):
            test_runner_api = False
        return super().run(test_runner_api)


def new_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A pipeline with `options` on the runner `runner_for` picks.

    Raises:
      OptionsError: Beam's validation of the options failed (Beam raises a
        `ValueError`, which would read as a bug), or they ask for a type
        hint on every transform (`--type_check_strictness=ALL_REQUIRED`),
        which tanhguard's pipelines do not declare.
    """
    if options.view_as(TypeOptions).type_check_strictness == "ALL_REQUIRED":
        raise OptionsError(
            "--type_check_strictness=ALL_REQUIRED: tanhguard's pipelines do "
            "not declare a type hint on every transform; leave it at "
            "DEFAULT_TO_ANY (Beam still checks the hints they declare)"
        )
    runner = runner_for(options)
    try:
        if runner is None:
            return beam.Pipeline(options=options)
        return _InProcessPipeline(runner=runner, options=options)
    except ValueError as error:
        message = str(error)
        if not message.startswith(_VALIDATION_ERRORS):
            raise
        details = [line.strip() for line in message.splitlines()[1:]]
        raise OptionsError(
            "Apache Beam rejected the pipeline options: "
            + "; ".join(line for line in details if line)
        ) from None
