"""The `tanhguard` command line: a thin layer over importable functions."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Sequence

from tanhguard.errors import TanhguardError
from tanhguard.pipeline.formats import FORMATS
from tanhguard.pipeline.progress import configure_logging, quiet_third_party
from tanhguard.version import __version__

logger = logging.getLogger("tanhguard")

EXIT_OK = 0
EXIT_ERROR = 1
DEBUG_ENV = "TANHGUARD_DEBUG"
# Commands that load TensorFlow (its start-up lines are captured unless
# --verbose); `config-schema` does not.
TENSORFLOW_COMMANDS = (
    "analyze",
    "run",
    "transform",
    "export",
    "demo",
    "audit",
    "check",
)
# Commands that import TensorFlow only if they need it (`analyze` saves its
# graph in a process of its own: `graph_process`; it imports it here for a
# TFRecord input or a `gs://` path, quietly too).
LAZY_TENSORFLOW_COMMANDS = ("analyze",)
BEAM_COMMANDS = ("analyze", "run", "transform", "check")
# Commands that load no Keras model. Importing TensorFlow imports Keras 3's
# optimizers eagerly (with Keras 3 itself and scikit-learn: about 2 s of a
# 3-5 s import) unless `TF_USE_LEGACY_KERAS` is set, and TFT sets it to 1
# when it is imported anyway; setting it before the import (unless the user
# set it) changes nothing else for these commands.
KERAS_FREE_COMMANDS = (*BEAM_COMMANDS, "demo", "report")
# `tanhguard.pipeline.audit.FAIL_CONDITIONS` (not imported here: the parser
# loads nothing but the standard library; a test checks they agree).
AUDIT_FAIL_CONDITIONS = ("overflow", "saturation")
MODEL_HELP = (
    "Keras model taking the transformed features (its inputs are checked "
    "against the preprocessing's outputs): a tf_keras SavedModel directory, "
    ".h5 or .keras file, or a Keras 3 .keras file"
)


def _add_input_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        help="CSV, TFRecord or Parquet file, a glob (quoted) or a directory",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="input format (default: from each file's content)",
    )


def _add_output_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output-format",
        "--output_format",  # the spelling of Beam's flags beside it
        dest="output_format",
        choices=FORMATS,
        default="parquet",
        help="format of the transformed shards (default parquet)",
    )
    parser.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="COLUMN",
        help="copy this input column (a label, an id) into the transformed rows "
        "unchanged, first; repeat for more (CSV and Parquet input)",
    )


def _add_write_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output"
    )


def _add_log_flags(parser: argparse.ArgumentParser) -> None:
    level = parser.add_mutually_exclusive_group()
    level.add_argument(
        "--quiet", action="store_true", help="no progress lines on stderr"
    )
    level.add_argument(
        "--verbose", action="store_true", help="debug lines on stderr too"
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the traceback of an error (or set {DEBUG_ENV}=1)",
    )


def _share(text: str) -> float:
    """A share in [0, 1], for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a share in [0, 1] expected: {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tanhguard",
        description=(
            "Finite, bounded model inputs: per-feature statistics, clip bounds and "
            "scaling computed by a TensorFlow Transform job."
        ),
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"tanhguard {__version__} (Python {platform.python_version()})",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    analyze = commands.add_parser(
        "analyze",
        help="compute statistics and bounds over a dataset; write the TFT graph",
        description=(
            "Other flags go to Apache Beam, e.g. --runner=DataflowRunner or "
            "--direct_running_mode=multi_processing; a flag neither takes is "
            "an error."
        ),
    )
    analyze.add_argument("--config", required=True, help="YAML feature config")
    _add_input_flags(analyze)
    analyze.add_argument("--output", required=True, help="artifacts directory")
    _add_write_flags(analyze)

    run = commands.add_parser(
        "run",
        help="analyze and transform in one pipeline: artifacts plus rows/",
        description="Other flags go to Apache Beam (see `analyze --help`).",
    )
    run.add_argument("--config", required=True, help="YAML feature config")
    _add_input_flags(run)
    run.add_argument(
        "--output", required=True, help="artifacts directory; rows go to rows/"
    )
    _add_output_format(run)
    _add_write_flags(run)

    transform = commands.add_parser(
        "transform",
        help="apply an artifacts directory's graph to a dataset; write the rows",
        description="Other flags go to Apache Beam (see `analyze --help`).",
    )
    transform.add_argument(
        "--artifacts", required=True, help="artifacts directory from `analyze`"
    )
    _add_input_flags(transform)
    transform.add_argument("--output", required=True, help="output directory")
    _add_output_format(transform)
    _add_write_flags(transform)

    export = commands.add_parser(
        "export",
        help="write a serving SavedModel: the preprocessing, optionally a model",
        description=(
            "Signatures: serving_default (serialized tf.Example strings) and "
            "transform_features (one tensor per raw feature). With --model, both "
            "return the model's predictions for raw features."
        ),
    )
    export.add_argument(
        "--artifacts", required=True, help="artifacts directory from `analyze`"
    )
    export.add_argument("--output", required=True, help="SavedModel directory")
    export.add_argument("--model", help=MODEL_HELP)
    _add_write_flags(export)

    report = commands.add_parser(
        "report",
        help="write the HTML report of an artifacts directory (opens offline)",
        description=(
            "One self-contained HTML file: warnings, and per feature the raw "
            "distribution with the clip bounds, the output distribution, the "
            "counts and the scaler. `analyze` and `run` write it too."
        ),
    )
    report.add_argument(
        "--artifacts", required=True, help="artifacts directory from `analyze`"
    )
    report.add_argument("--output", help="HTML file (default ARTIFACTS/report.html)")

    audit = commands.add_parser(
        "audit",
        help="prove each tanh layer's pre-activation range from the artifacts",
        description=(
            "Interval bound propagation from the preprocessing's output box "
            "through the model: per tanh layer, the proven pre-activation "
            "range, whether a hand-written tanh can overflow, and the same on "
            "raw inputs. With --data, the observed values too. Exit status 1 "
            "with --fail-on when the condition holds, or when an observed "
            "value lies outside its proven interval."
        ),
    )
    audit.add_argument(
        "--artifacts", required=True, help="artifacts directory from `analyze`"
    )
    audit.add_argument("--model", required=True, help=MODEL_HELP)
    audit.add_argument(
        "--data",
        help="raw rows to observe: CSV, TFRecord or Parquet file, a glob or a "
        "directory",
    )
    audit.add_argument(
        "--fail-on",
        "--fail_on",
        dest="fail_on",
        choices=AUDIT_FAIL_CONDITIONS,
        help="exit 1 if a hand-written tanh can overflow, or a unit can saturate",
    )
    audit.add_argument("--json", action="store_true", help="print JSON")

    check = commands.add_parser(
        "check",
        help="check new data against the training statistics (clipping, drift)",
        description=(
            "One streaming pass over new data with the training graph's bounds: "
            "per feature the share clipped, missing, NaN and +-Inf, and the "
            "drift of its histogram from the training data's. Exit status 1 "
            "when a threshold is exceeded, naming the features. Other flags go "
            "to Apache Beam (see `analyze --help`)."
        ),
    )
    check.add_argument(
        "--artifacts", required=True, help="artifacts directory from `analyze`"
    )
    _add_input_flags(check)
    check.add_argument(
        "--max-clipped-increase",
        "--max_clipped_increase",
        dest="max_clipped_increase",
        type=_share,
        default=0.05,
        help="fail when a feature's clipped share grew by more (default 0.05)",
    )
    check.add_argument(
        "--max-missing-increase",
        "--max_missing_increase",
        dest="max_missing_increase",
        type=_share,
        default=0.05,
        help=(
            "fail when a feature's share of missing, NaN or +-Inf values grew by "
            "more (default 0.05)"
        ),
    )
    check.add_argument(
        "--max-drift",
        "--max_drift",
        dest="max_drift",
        type=_share,
        help="fail when a histogram's L-infinity drift exceeds this (default: off)",
    )
    check.add_argument("--json", action="store_true", help="print JSON")
    check.add_argument(
        "--html",
        help="also write the findings as an HTML page (histograms, training vs new)",
    )

    commands.add_parser("config-schema", help="print the JSON Schema of a config")

    demo = commands.add_parser(
        "demo", help="show the problem and the cure on built-in synthetic data"
    )
    demo.add_argument(
        "--output",
        default="demo-output",
        help="where the demo writes (a folder an earlier demo wrote is replaced; "
        "any other is refused)",
    )
    demo.add_argument("--rows", type=int, default=20_000, help="rows to generate")
    for sub in (analyze, run, transform, export, audit, check, report, demo):
        _add_log_flags(sub)
    return parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's parser, by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags_of(parser: argparse.ArgumentParser) -> list[str]:
    """The flags a parser takes, e.g. `--overwrite`."""
    return [flag for action in parser._actions for flag in action.option_strings]


def _command_flags(command: str) -> list[str]:
    """The flags of one subcommand, e.g. `--overwrite`."""
    return _flags_of(_commands(_parser())[command])


def _other_commands_flag(
    argument: str, command: str, commands: dict[str, argparse.ArgumentParser]
) -> str:
    """`; --output-format is a flag of `transform` and `run`` when `argument`
    is a flag of other commands (`commands`, by name) but not of `command`,
    else ""."""
    flag = argument.split("=")[0]
    if flag in _flags_of(commands[command]):
        return ""
    owners = [
        f"`{name}`"
        for name, sub in commands.items()
        if name != command and flag in _flags_of(sub)
    ]
    if not owners:
        return ""
    *others, last = owners
    listed = f"{', '.join(others)} and {last}" if others else last
    return f"; {flag} is a flag of {listed}, not of `{command}`"


def _check_command_name(argv: Sequence[str], parser: argparse.ArgumentParser) -> None:
    """A usage error with the closest command for a mistyped one (Python
    3.10 and 3.11's argparse suggests none)."""
    given = next((a for a in argv if not a.startswith("-")), None)
    names = list(_commands(parser))
    if given is None or given in names or argv[0].startswith("-"):
        return
    close = difflib.get_close_matches(given, names, n=1)
    if close:
        parser.error(
            f"unknown command {given!r} (did you mean `{close[0]}`?); "
            f"commands: {', '.join(names)}"
        )


def _print_summary(stats: dict, output: str, started: float) -> None:
    """The summary table with every warning report.html lists, then where
    the artifacts are and the command's time since `started`."""
    from tanhguard.pipeline.html_report import report_warnings
    from tanhguard.pipeline.report import summary_table

    warnings = [(name, text) for name, _, text in report_warnings(stats)]
    print(summary_table(stats, warnings))
    seconds = time.monotonic() - started
    print(f"\nArtifacts: {os.path.abspath(output)} ({seconds:.1f} s)")


def _run(args: argparse.Namespace, beam_args: list[str], started: float) -> int:
    """Runs one command; returns its exit status. tanhguard's errors
    propagate to `main`."""
    if args.command in ("analyze", "run"):
        from tanhguard.pipeline import graph_process

        # `analyze` has not imported TensorFlow: the graph's process starts
        # importing it now, while this one imports Beam and runs the passes.
        graph_process.start_early(args.data, args.format)
        try:
            from tanhguard.pipeline.analyze import run_analyze
            from tanhguard.transforms.config import load_config

            config = load_config(args.config)
            stats = run_analyze(
                config,
                args.data,
                args.output,
                beam_args,
                overwrite=args.overwrite,
                fmt=args.format,
                rows_format=getattr(args, "output_format", None),
                protect=[args.config],
                keep=getattr(args, "keep", []),
            )
        finally:
            graph_process.stop_early()
        _print_summary(stats, args.output, started)
    elif args.command == "transform":
        from tanhguard.pipeline.transform_job import run_transform

        result = run_transform(
            args.artifacts,
            args.data,
            args.output,
            args.output_format,
            beam_args,
            overwrite=args.overwrite,
            fmt=args.format,
            keep=args.keep,
        )
        print(
            f"Transformed {result['rows']:,} rows into {len(result['files'])} "
            f"file(s) in {os.path.abspath(args.output)} "
            f"({result['seconds']:.1f} s)"
        )
    elif args.command == "export":
        from tanhguard.pipeline.export import export
        from tanhguard.pipeline.keras_attach import load_keras_model

        model = load_keras_model(args.model) if args.model else None
        path = export(args.artifacts, args.output, model, overwrite=args.overwrite)
        print(f"SavedModel: {path}")
        print("Signatures: serving_default (examples), transform_features")
    elif args.command == "demo":
        from tanhguard.pipeline.demo import demo_report, run_demo

        print(demo_report(run_demo(args.output, rows=args.rows)))
    elif args.command == "check":
        from tanhguard.pipeline.check import check

        if args.html is not None:  # before the pass over the data
            from tanhguard.pipeline.html_report import CHECK_GENERATOR, check_page_path

            check_page_path(args.html, CHECK_GENERATOR)
        result = check(
            args.artifacts,
            args.data,
            beam_args,
            fmt=args.format,
            max_clipped_increase=args.max_clipped_increase,
            max_missing_increase=args.max_missing_increase,
            max_drift=args.max_drift,
        )
        if args.html is not None:  # before printing: a closed stdout stops that
            from tanhguard.pipeline.html_report import write_check_report

            logger.info("check report: %s", write_check_report(result, args.html))
        failed = result.failed
        if failed:
            logger.warning("check failed: %s", ", ".join(failed))
        print(json.dumps(result.to_json(), indent=2) if args.json else result.table())
        if failed:
            return EXIT_ERROR
    elif args.command == "report":
        from tanhguard.pipeline.html_report import run_report_command

        return run_report_command(args)
    elif args.command == "audit":
        from tanhguard.pipeline.audit import run_audit_command

        return run_audit_command(args)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status.

    Every `TanhguardError` becomes one line on stderr, `tanhguard: error:
    ...`, and exit status 1; a usage error exits 2 (argparse).
    """
    started = time.monotonic()  # the closing line's time: the whole command's
    parser = _parser()
    _check_command_name(sys.argv[1:] if argv is None else argv, parser)
    args, beam_args = parser.parse_known_args(argv)
    commands = _commands(parser)
    usage = commands[args.command]  # its errors show its usage
    from tanhguard.pipeline.malloc import keep_freed_memory
    from tanhguard.pipeline.simd import prefer_avx2_sort

    prefer_avx2_sort()  # before NumPy is imported (see `simd`)
    keep_freed_memory()  # glibc keeps what a batch freed (see `malloc`)
    if args.command in KERAS_FREE_COMMANDS:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    hint = _unquoted_glob_hint(args, beam_args)
    other = "".join(_other_commands_flag(a, args.command, commands) for a in beam_args)
    if args.command not in BEAM_COMMANDS and beam_args:
        usage.error(f"unrecognized arguments: {' '.join(beam_args)}{other}{hint}")
    if beam_args:
        from tanhguard.pipeline.beam_flags import unknown_beam_flags

        unknown = [
            # A flag of another command is no typo, nor is a flag's value:
            # no "did you mean" for them.
            item.split(" (")[0]
            if not item.startswith("-")
            or _other_commands_flag(item.split(" (")[0], args.command, commands)
            else item
            for item in unknown_beam_flags(beam_args, _flags_of(usage))
        ]
        if unknown:
            usage.error(
                "unrecognized arguments, neither tanhguard's nor Apache Beam's: "
                + ", ".join(unknown)
                + other
                + hint
            )
    if getattr(args, "quiet", False):
        configure_logging(logging.WARNING)
    elif getattr(args, "verbose", False):
        configure_logging(logging.DEBUG)
    else:
        configure_logging(logging.INFO)
    debug = getattr(args, "debug", False) or os.environ.get(DEBUG_ENV) == "1"
    from tanhguard.pipeline.output_dir import handle_termination, received_signal

    status = EXIT_OK
    try:
        # Signals are handled from here on: importing TensorFlow takes seconds.
        with handle_termination():
            if not getattr(args, "verbose", False):
                quiet_third_party(
                    import_tensorflow=args.command in TENSORFLOW_COMMANDS
                    and args.command not in LAZY_TENSORFLOW_COMMANDS
                )
                # Beam logs a worker's exception before re-raising it: the
                # error would be printed twice, with a traceback.
                logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
            if args.command == "config-schema":
                from tanhguard.transforms.config import config_json_schema

                print(json.dumps(config_json_schema(), indent=2))
            else:
                status = _run(args, beam_args, started)
    except TanhguardError as error:
        return _fail(str(error), debug)
    except KeyboardInterrupt:
        return _stopped_by(signal.SIGINT)
    except SystemExit as stop:  # SIGTERM or SIGHUP (handle_termination)
        if isinstance(stop.code, int) and stop.code > 128:
            return _stopped_by(stop.code - 128)
        raise
    except BrokenPipeError:
        return _reader_gone()
    except Exception as error:  # a bug or an unforeseen environment problem
        signum = received_signal()
        if signum is not None:  # the runner wrapped the signal's exception
            return _stopped_by(signum)
        return _fail(
            f"unexpected {type(error).__name__}: {error} (a bug? run with "
            f"--debug for the traceback)",
            debug,
        )
    return status


def _unquoted_glob_hint(args: argparse.Namespace, extra: Sequence[str]) -> str:
    """A hint when the shell expanded an unquoted `--data` glob: the first
    file became `--data`'s value and the others stray arguments."""
    data = getattr(args, "data", None)
    strays = [a for a in extra if not a.startswith("-") and os.path.exists(a)]
    if data is None or not strays or not os.path.exists(data):
        return ""
    names = [data, *strays]
    # Character by character on purpose: `big-1.parquet`, `big-2.parquet`
    # -> `big-` and `.parquet`.
    prefix = os.path.commonprefix(names)  # noqa: RUF071
    suffix = os.path.commonprefix([n[::-1] for n in names])[::-1]  # noqa: RUF071
    suffix = suffix[max(0, len(suffix) - (len(data) - len(prefix))) :]
    return (
        f"; the shell expanded an unquoted glob into {len(names)} files? "
        f"--data takes one value: quote the pattern, e.g. --data '{prefix}*{suffix}'"
    )


def _stopped_by(signum: int) -> int:
    """One line for a run stopped by a signal; exit 128 + its number."""
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    print(f"tanhguard: {what}; nothing was written", file=sys.stderr)
    return 128 + signum


def _reader_gone() -> int:
    """Standard output's reader closed it (`tanhguard ... | head -1`): what
    is left to print goes nowhere, and the status is a command's stopped by
    SIGPIPE, as `cat` and `grep` end there, without a message. The jobs
    print after their outputs are published: those are whole."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 128 + signal.SIGPIPE


def _fail(message: str, debug: bool) -> int:
    """`tanhguard: error: ...` on stderr, one line per problem (a config with
    several mistakes names each), the traceback first with `--debug`; exit 1."""
    if debug:
        traceback.print_exc()
    for line in message.strip().splitlines() or ["(no message)"]:
        print(f"tanhguard: error: {line}", file=sys.stderr)
    return EXIT_ERROR


def entry() -> None:
    """The `tanhguard` console script: `main`, then a fast exit.

    Once `main` has returned, every output is published and closed; what
    remains is the interpreter's teardown of TensorFlow's and Beam's threads
    and modules, 1.3 to 3 s on a 2-core machine, a quarter of a small job.
    So the logs and streams are flushed and the process ends at once with
    `main`'s status. A usage error (`SystemExit` from argparse) and
    `--version` leave the ordinary way.
    """
    status = main()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None: the descriptor was closed (`1>&-`)
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    os._exit(status)


if __name__ == "__main__":
    entry()
