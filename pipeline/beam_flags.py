"""Checking the flags a command passes on to Apache Beam.

Beam logs a flag it does not know and drops it, so a mistyped `--runner`
would quietly run on the local runner and a mistyped `--overwrite` would be
ignored. This builds the parser Beam builds (from Beam's private
`_BeamArgumentParser` and each options class's `_add_argparse_args`: Beam
exposes no public way to list its flags) and names every argument it does
not take, with the closest flag. Kept in one small module so that a Beam
upgrade that changes them breaks one place, which the tests cover.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence


def beam_parser() -> argparse.ArgumentParser:
    """A parser of every Apache Beam pipeline option (what Beam builds)."""
    from apache_beam.options import pipeline_options

    parser = pipeline_options._BeamArgumentParser(
        prog="tanhguard",
        usage="tanhguard {analyze,run,transform,check} ... [Apache Beam flags]",
        allow_abbrev=False,
        add_help=False,
    )
    for options in {
        str(cls): cls for cls in pipeline_options.PipelineOptions.__subclasses__()
    }.values():
        options._add_argparse_args(parser)
    return parser


def unknown_beam_flags(
    beam_args: Sequence[str], own_flags: Sequence[str] = ()
) -> list[str]:
    """The arguments that no Apache Beam pipeline option takes, each with the
    closest flag (Beam's or one of `own_flags`) when one is close. Beam itself
    only logs and drops them, so a mistyped `--runner` would quietly run on
    the local runner."""
    parser = beam_parser()
    _, unknown = parser.parse_known_args(list(beam_args))
    known = [flag for action in parser._actions for flag in action.option_strings]
    known += own_flags
    problems = []
    for argument in unknown:
        close = difflib.get_close_matches(argument.split("=")[0], known, n=1)
        problems.append(f"{argument} (did you mean {close[0]}?)" if close else argument)
    return problems
