"""Strict configs: the frozen base class every config derives from, YAML read safely, validation errors
as one line, --set overrides. The pipeline's schema composes the stages' configs (edgedistill.pipeline).

Every field is documented where it is defined. Unknown keys and wrong types are errors that name the
key and suggest the nearest valid one. Paths written in a pipeline file are relative to that file;
paths given with ``--set`` are relative to the current directory.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from edgedistill.core.errors import ConfigError
from edgedistill.core.registry import did_you_mean

#: Module prefixes whose code `python:` architectures may run, given at the command line (--trust-code).
TRUSTED_CODE: list[str] = []


def trusted_code() -> list[str]:
    """--trust-code prefixes and those of $EDGEDISTILL_TRUST_CODE (comma-separated)."""
    env = [p.strip() for p in os.environ.get("EDGEDISTILL_TRUST_CODE", "").split(",") if p.strip()]
    return [*TRUSTED_CODE, *env]


def check_trusted(arch: str, where: str) -> None:
    """A `python:<module>:<function>` architecture runs code: only from modules the person at the
    command line trusts, never because a YAML file or a stored model.json names them."""
    family, _, ref = arch.partition(":")
    module = ref.rpartition(":")[0]
    if family != "python" or not module:
        return  # not code, or malformed (the architecture registry says how)
    if not any(module == p or module.startswith(p + ".") for p in trusted_code()):
        raise ConfigError(f"{where}: arch '{shorten(arch)}' would import and run Python module '{shorten(module)}'; "
                          f"if that is your code, allow it with --trust-code {shorten(module.split('.')[0])} "
                          f"(or EDGEDISTILL_TRUST_CODE={shorten(module.split('.')[0])})")


def _not_empty(path: Path) -> Path:
    if str(path) in ("", "."):  # Path("") is ".": an empty value would silently mean the current folder
        raise ValueError("is empty; give a path")
    return path


# Paths accept strings from YAML; everything else is strict (a quoted "3" is not an int).
PathField = Annotated[Path, Field(strict=False), AfterValidator(_not_empty)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def get_dotted(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


class YamlLoader(yaml.SafeLoader):
    """yaml.safe_load's loader (no object-building tags), reading 1e-3 as a number as YAML 1.2 does:
    PyYAML follows YAML 1.1, where a float needs a dot, so `lr: 1e-3` would be the string '1e-3'."""


YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 -- a SafeLoader subclass


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``a.b=VALUE`` strings to {dotted key: value}; VALUE is parsed as YAML (4 -> int, true -> bool)."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{item}': expected KEY=VALUE, e.g. --set distill.temperature=4")
        try:
            parsed[key.strip()] = load_yaml(raw) if raw != "" else ""
        except yaml.YAMLError:
            parsed[key.strip()] = raw
    return parsed


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (sub)model at loc, to suggest the nearest valid key."""
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    """One line per problem, the first one first; each names the dotted key."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            hint = did_you_mean(str(loc[-1]), _fields_at(model, loc[:-1]))
            lines.append(f"{source}: unknown key '{key}'{hint}")
        elif e["type"] == "missing":
            lines.append(f"{source}: missing required key '{key}'")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = f" (got {shorten(repr(e['input']))})" if e["type"] != "value_error" else ""
            lines.append(f"{source}: {key}: {msg}{got}")
    return "; ".join(lines)


def shorten(text: str, limit: int = 60) -> str:
    """text, cut to about limit characters: values quoted in error messages can be huge."""
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


#: At most this many values in one YAML file. A config is a few hundred; a few lines of nested
#: aliases ("billion laughs") expand to billions, which validation and error messages would walk.
MAX_YAML_VALUES = 100_000


def _count_values(tree: Any, what: str, path: Path) -> None:
    count, todo = 0, [tree]
    while todo:
        node = todo.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise ConfigError(f"{what} '{path}' holds more than {MAX_YAML_VALUES:,} values (nested YAML aliases?); "
                              f"write the values out")
        if isinstance(node, dict):
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)


def read_yaml(path: Path, what: str) -> dict:
    """An inert YAML mapping (safe_load: no object-building tags)."""
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist")
    try:
        tree = load_yaml(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{what} '{path}' is not a text file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{what} '{path}'{where} is not valid YAML: {getattr(e, 'problem', e)}") from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{what} '{path}' must be a YAML mapping of keys to values")
    _count_values(tree, what, path)
    return tree


def validate(model: type[BaseModel], tree: dict, source: str):
    try:
        return model.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, model, source)) from None
