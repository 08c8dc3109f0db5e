"""A data error raised in a Beam worker, given back as itself.

Beam re-raises a worker's exception wrapped: chained on the in-process
runner, and only as text in a `RuntimeError` from the multi-process and
portable runners. `data_errors_unwrapped` finds tanhguard's `DataError`
inside either and raises it alone, so the command line prints its one line.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from tanhguard.errors import DataError, NoFiniteValuesError, TanhguardError

# A remote traceback's last line for one of our data errors.
_REMOTE = re.compile(
    r"(?:tanhguard\.errors\.)?(DataError|NoFiniteValuesError): ([^\n]+)"
)
_CLASSES = {"DataError": DataError, "NoFiniteValuesError": NoFiniteValuesError}
# What Beam appends to a worker's exception message, re-raising it as a new
# exception of the same class (`DoFnRunner._reraise_augmented`, Beam 2.60-2.77).
_STEP_ANNOTATION = re.compile(r"\s*\[while running '[^\n]*?'\]$")


def find_data_error(error: BaseException) -> DataError | None:
    """The `DataError` behind a runner's exception, or None."""
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DataError):
            return _untagged(current)
        current = current.__cause__ or current.__context__
    match = _REMOTE.search(str(error))
    if match is not None:
        message = _STEP_ANNOTATION.sub("", match.group(2).strip().strip("'\""))
        return _CLASSES[match.group(1)](message)
    return None


def _untagged(error: TanhguardError) -> TanhguardError:
    """The error Beam re-raised as a copy with the step's name appended: the
    copy has `_tagged_with_step`, the original is its context."""
    while getattr(error, "_tagged_with_step", False):
        original = error.__context__
        if not isinstance(original, type(error)):
            break
        error = original
    return error


@contextlib.contextmanager
def data_errors_unwrapped() -> Iterator[None]:
    """Re-raises a data error hidden in a pipeline's exception as itself."""
    try:
        yield
    except TanhguardError as error:
        original = _untagged(error)
        if original is error:
            raise
        raise original from None
    except Exception as error:
        found = find_data_error(error)
        if found is None:
            raise
        raise found from None
