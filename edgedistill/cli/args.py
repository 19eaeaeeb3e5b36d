"""What the command groups share: the argparse parser that reports errors as one line, the argument types,
and the defaults (pipeline file, store folder)."""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from edgedistill.core.errors import EdgeDistillError


def show_progress() -> bool:
    """Progress bars on a terminal, not in CI logs."""
    return sys.stderr.isatty() and not os.environ.get("CI")


DEFAULT_PIPELINE = "pipelines/quickstart.yaml"


def default_store() -> Path:
    return Path(os.environ.get("EDGEDISTILL_STORE", "artifacts"))


class UsageError(EdgeDistillError):
    """A command line argparse refuses."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line and exit code 2 like every other bad input."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def seconds(text: str) -> float:
    """A --wait value: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text[:40]}' is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"'{text[:40]}' must be a finite number of seconds, 0 or more")
    return value


def count(text: str) -> int:
    """A non-negative whole number."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"'{text[:40]}' is not a whole number, 0 or more")
    return int(text)
