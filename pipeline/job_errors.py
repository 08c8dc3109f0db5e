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


def find_data_error(error: BaseException) -> DataError | None:
    """The `DataError` behind a runner's exception, or None."""
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DataError):
            return current
        current = current.__cause__ or current.__context__
    match = _REMOTE.search(str(error))
    if match is not None:
        message = match.group(2).strip().strip("'\"")
        return _CLASSES[match.group(1)](message)
    return None


@contextlib.contextmanager
def data_errors_unwrapped() -> Iterator[None]:
    """Re-raises a data error hidden in a pipeline's exception as itself."""
    try:
        yield
    except TanhguardError:
        raise
    except Exception as error:
        found = find_data_error(error)
        if found is None:
            raise
        raise found from None
