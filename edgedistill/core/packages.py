"""Files shipped inside installed Python packages (offline data and weights)."""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from edgedistill.core.errors import ConfigError, EdgeDistillError


def import_optional(module: str, install: str, needed_by: str = "this preset"):
    """The module, imported; ConfigError with the pip command when it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{needed_by} needs the Python package '{module}': pip install {install}") from None


def package_file(package: str, rel: str, install: str, error: type[EdgeDistillError], folder: bool | None = False) -> Path:
    """The path of rel (a file; a folder with folder=True; either with None) inside an installed package, without
    importing it. Raises error (with the pip command in install) when the package or the file is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise error(f"package '{package}' is not installed; install it with: pip install {install}")
    root = Path(list(spec.submodule_search_locations)[0]).resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise error(f"'{rel}' points outside package '{package}'")
    if not (path.exists() if folder is None else path.is_dir() if folder else path.is_file()):
        raise error(f"'{rel}' is not inside package '{package}' ({path}); reinstall it: pip install {install}")
    return path
