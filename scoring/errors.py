"""Errors the job reports to its user as one line, without a stack trace.

Each class marks an *expected* failure (bad input, bad model reference, bad arguments). The command line
prints ``error: <message>`` for these and exits non-zero; anything else is a bug and keeps its traceback.
Messages name what is wrong and where, never the data itself.
"""


class ScoringError(Exception):
    """Base class of the failures a user can fix."""

    exit_code = 1


class ModelError(ScoringError):
    """The model reference cannot be resolved or the model cannot be used."""


class InputError(ScoringError):
    """The input data is missing, empty or does not match the model's signature."""


class OutputError(ScoringError):
    """The output cannot be written, or what was written does not check out."""


def first_line(message: str) -> str:
    """The first line of a library's error message, for a one-line error of ours."""
    return message.strip().splitlines()[0] if message.strip() else "unknown error"
