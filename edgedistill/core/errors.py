"""One exception hierarchy. The CLI turns these into one line on stderr and an exit code."""

MAX_ERROR = 300
"""Longest error line, in characters: longer messages are cut (a value quoted in one can be huge)."""


def one_line(msg: str) -> str:
    """An error message as one line of at most MAX_ERROR characters."""
    msg = " ".join(msg.split())
    return msg if len(msg) <= MAX_ERROR else msg[:MAX_ERROR - 3] + "..."


class EdgeDistillError(Exception):
    """Base class: a problem the user can fix. Exit code 2 unless a subclass says otherwise."""

    exit_code = 2


class ConfigError(EdgeDistillError):
    """The pipeline, a preset, an override or a budgets file is wrong."""


class DataError(EdgeDistillError):
    """A dataset folder, image or array cannot be used."""


class StageError(EdgeDistillError):
    """A stage ran and refused its own result (for example an export parity failure)."""


class IntegrityError(EdgeDistillError):
    """A file on disk does not match what was recorded when it was written (a bundle against its
    manifest, a stored result against its meta.json), or is not the kind of file it should be."""


class StoreBusy(EdgeDistillError):
    """Another run holds the store's lock."""


class GateFailed(EdgeDistillError):
    """At least one budget does not hold. Exit code 1: the release is blocked, nothing is broken."""

    exit_code = 1
