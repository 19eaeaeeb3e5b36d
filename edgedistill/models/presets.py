"""Model presets (YAML in models/teachers and models/students, or a path of your own), the weights
they name, and the trust list for presets that import your Python."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edgedistill.core.config import PathField, Strict, check_trusted, read_yaml, validate
from edgedistill.core.errors import ConfigError
from edgedistill.core.registry import did_you_mean

#: Where the project's own model presets live (``models/teachers``, ``models/students``).
PROJECT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


# ---- model presets ---------------------------------------------------------------------------

class WeightsSpec(Strict):
    """Where pretrained weights come from. Exactly one source."""

    torchvision: str | None = None
    """A torchvision weights enum name (e.g. IMAGENET1K_V1): torchvision's own loader, which reads
    $TORCH_HOME/hub/checkpoints/ and downloads there when the file is missing."""
    timm: str | None = None
    """A timm pretrained tag ('' for the model's default): timm's own loader, which reads the Hugging
    Face Hub cache and downloads there when missing. Only for timm: architectures."""
    hf: str | None = None
    """A Hugging Face hub id (e.g. sentence-transformers/all-MiniLM-L6-v2): transformers' own loader,
    which reads the Hugging Face cache and downloads there when missing. Only for transformers: architectures."""
    package: str | None = None
    """'package_name:relative/path' of a file shipped inside an installed Python package (for
    transformers: architectures, a folder with config.json, the weights and the tokenizer)."""
    file: PathField | None = None
    """A local state_dict file (relative to the preset file)."""
    sha256: str | None = None
    """Expected sha256 of the weights file; checked before loading when given."""

    @model_validator(mode="after")
    def _one_source(self) -> "WeightsSpec":
        given = [k for k in ("torchvision", "timm", "hf", "package", "file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("weights need exactly one of torchvision, timm, hf, package, file")
        if self.package is not None:
            # a top-level package name only: finding 'a.b' would import (run) package a
            package, sep, rel = self.package.partition(":")
            if not (package.isidentifier() and sep and rel and not rel.startswith("/") and ".." not in Path(rel).parts):
                raise ValueError(f"weights.package '{self.package}' must be 'package_name:path/inside/it'")
        return self


class ModelPreset(Strict):
    """A model preset YAML (models/teachers/*.yaml, models/students/*.yaml)."""

    arch: str
    """Architecture by registry name: torchvision:<name>, timm:<name>, efficientnet_lite:<name>,
    python:<module>:<function> or edgedistill:<name> (see edgedistill.models)."""
    kwargs: dict[str, int | float | str | bool] = Field(default_factory=dict)
    """Extra keyword arguments for the architecture's constructor."""
    weights: WeightsSpec | None = None
    """Pretrained weights; None trains from scratch."""
    head: str | None = None
    """Module path of the classifier Linear to replace with one for the task's classes
    (default: the last nn.Linear). Only used with pretrained weights."""
    description: str = ""


MODELS_ENV = "EDGEDISTILL_MODELS"
"""Folders (os.pathsep-separated) searched for presets before the project's models/."""


def preset_search_dirs(role: str) -> list[Path]:
    extra = [Path(p) / role for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    return extra + [PROJECT_MODELS_DIR / role]


def pin_search_path() -> None:
    """Make $EDGEDISTILL_MODELS's folders absolute in this process's environment, so that processes it
    starts in another folder (Ray's workers start in their session's) find the same presets."""
    value = os.environ.get(MODELS_ENV)
    if value:
        os.environ[MODELS_ENV] = os.pathsep.join(str(Path(p).resolve()) for p in value.split(os.pathsep) if p)


def load_preset(ref: str, role: Literal["teachers", "students"]) -> ModelPreset:
    """A preset by name (searched in $EDGEDISTILL_MODELS/<role>, then the project's models/<role>)
    or by path to a YAML file. File paths inside the preset are resolved against it."""
    if ref.endswith((".yaml", ".yml")):
        path = Path(ref)
    else:
        dirs = preset_search_dirs(role)
        hits = [d / f"{ref}.yaml" for d in dirs if (d / f"{ref}.yaml").is_file()]
        if not hits:
            names = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
            raise ConfigError(
                f"unknown {role[:-1]} preset '{ref}'{did_you_mean(ref, names)}; "
                f"known: {', '.join(names)} (or give a path to a preset .yaml)"
            )
        path = hits[0]
    tree = read_yaml(path, f"{role[:-1]} preset")
    weights = tree.get("weights")
    if isinstance(weights, dict) and isinstance(weights.get("file"), str) and not os.path.isabs(weights["file"]):
        weights["file"] = str((path.resolve().parent / weights["file"]).resolve())
    preset = validate(ModelPreset, tree, str(path))
    check_trusted(preset.arch, str(path))
    return preset
