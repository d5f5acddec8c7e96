"""The one exception family mlp raises for bad input.

Every message names the file, argument or value at fault and says what to do.
The command-line tools catch :class:`MLPError` and print its message (no
traceback) before exiting with a non-zero status.
"""


class MLPError(Exception):
    """Base class of mlp's user-facing errors."""


class DataError(MLPError, ValueError):
    """A data file is missing, truncated, corrupt or fails its checksum."""


class ModelFileError(MLPError, ValueError):
    """A saved model file is missing an array, malformed, or from a future format."""


class DivergenceError(MLPError, FloatingPointError):
    """The training loss became NaN or infinite."""
