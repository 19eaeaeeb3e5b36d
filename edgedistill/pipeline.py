"""The pipeline schema: the stages' own config classes composed into one strict YAML document,
loaded with its paths resolved against the file and --set overrides applied."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field

from edgedistill.core.config import PathField, Strict, get_dotted, parse_overrides, read_yaml, set_dotted, validate
from edgedistill.data.config import DataConfig
from edgedistill.quantization.recipes import QuantizeConfig
from edgedistill.runtime.benchmark import BenchmarkConfig
from edgedistill.stages.bundle import BundleConfig
from edgedistill.stages.distill import DistillConfig, StudentConfig
from edgedistill.stages.export import ExportConfig
from edgedistill.stages.finetune import TeacherConfig
from edgedistill.stages.qat import QATConfig


class Pipeline(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Pipeline name; bundles go to <store>/bundles/<name>/v<N>/."""
    seed: int = 0
    """Seed for the data split, weight initialization and data order."""
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    distill: DistillConfig = DistillConfig()
    export: ExportConfig = ExportConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    qat: QATConfig = QATConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    bundle: BundleConfig = BundleConfig()
    budgets: PathField | None = None
    """Budgets file the bundle is gated on at the end of `run` (path). None: no gate."""
    devices: PathField | None = None
    """Devices file (path) that quantize.target may name a device of. None: $EDGEDISTILL_DEVICES or
    ./devices.yaml."""


# Keys whose values are paths: relative values are resolved against the pipeline file's folder
# (or the current directory for --set).
PATH_KEYS = ("data.train_dir", "data.val_dir", "data.test_dir", "data.unlabeled_dir", "data.csv_file", "budgets", "devices",
             "teacher.preset", "student.preset")
#: Lists of mappings with a path field: (list key, field).
PATH_LIST_KEYS = (("distill.extra_teachers", "model"),)


def _is_path_value(key: str, value: Any) -> bool:
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return False  # an empty value stays empty: validation refuses it
    if key.endswith(".preset"):  # a preset is a name unless it looks like a file
        return value.endswith((".yaml", ".yml"))
    return True


def _resolve_paths(tree: dict, base: Path, only: set[str] | None = None) -> None:
    for key in PATH_KEYS:
        if only is not None and key not in only:
            continue
        value = get_dotted(tree, key)
        if _is_path_value(key, value):
            set_dotted(tree, key, str((base / value).resolve()))
    for key, field in PATH_LIST_KEYS:
        items = get_dotted(tree, key)
        if (only is None or key in only) and isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and _is_path_value(field, item.get(field)):
                    item[field] = str((base / item[field]).resolve())


def load_pipeline(path: Path, overrides: list[str] | None = None, values: dict[str, Any] | None = None,
                  values_base: Path | None = None) -> Pipeline:
    """Read a pipeline YAML, apply ``--set`` overrides (KEY=VALUE strings) and then values ({dotted key:
    value}, a sweep's trial), resolve relative paths (those of overrides and values against values_base,
    default the current directory), validate strictly. ConfigError naming the key when invalid."""
    path = Path(path)
    tree = read_yaml(path, "pipeline file")
    _resolve_paths(tree, path.resolve().parent)
    parsed = {**parse_overrides(overrides or []), **(values or {})}
    for key, value in parsed.items():
        set_dotted(tree, key, value)
    _resolve_paths(tree, values_base or Path.cwd(), only=set(parsed))
    return validate(Pipeline, tree, str(path))
