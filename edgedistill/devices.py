"""Results measured on target devices (bench.py run on a phone, board or Pi), recorded in a bundle."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import format_validation_error
from .errors import ConfigError
from .store import read_json, update_bundle, verify_bundle

DEVICE_FIELDS = ("latency_ms", "peak_rss_mb", "load_ms", "cold_start_ms", "throughput", "top_ops", "runs",
                 "duration_s", "protocol", "settings", "device")
DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_RESULT_BYTES = 16 * 2**20  # a bench.py result is a few KB

# ---- the schema of a bench.py (ortbench.py) result: what ingest accepts --------------------------
Number = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
"""A finite, non-negative JSON number (a string "0.5" is not one)."""
Count = Annotated[int, Field(strict=True, ge=1)]
Text = Annotated[str, Field(strict=True, max_length=200)]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Latency(_Schema):
    p50: Number
    p90: Number
    p95: Number
    p99: Number
    min: Number
    mean: Number
    std: Number


class Throughput(_Schema):
    batch: Count
    images_per_s: Number


class TopOp(_Schema):
    op_type: Text
    ms_per_run: Number
    share: Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]


class Settings(_Schema):
    intra_op_threads: Count
    inter_op_threads: Count
    graph_optimization: Literal["all", "extended", "basic", "disabled"]


class Device(_Schema):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: Text | None = None
    cpu: Text
    flags: list[Text] = []
    machine: Text = ""
    cores: Count | None = None
    threads: Count
    onnxruntime: Text


class BenchResult(_Schema):
    sha256: Annotated[str, Field(strict=True, pattern=r"^[0-9a-f]{64}$")]
    latency_ms: Latency
    peak_rss_mb: Number
    load_ms: Number
    cold_start_ms: Number
    runs: Count
    duration_s: Number
    throughput: Throughput | None = None
    top_ops: list[TopOp] = []
    protocol: Literal["ci", "mlperf"] | None = None
    settings: Settings
    device: Device


def read_result(path: Path) -> BenchResult:
    """A device's bench.py result, checked against the schema: required fields, finite and
    non-negative numbers, the right types. Anything else is an error naming the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"result file '{path}' does not exist")
    if path.stat().st_size > MAX_RESULT_BYTES:
        raise ConfigError(f"'{path}' is {path.stat().st_size:,} bytes, too big for a bench.py result")
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raw = None
    if not (isinstance(raw, dict) and isinstance(raw.get("latency_ms"), dict) and "p90" in raw["latency_ms"]):
        raise ConfigError(f"'{path}' is not a bench.py result (JSON with latency_ms.p90)")
    try:
        return BenchResult.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"'{path}': {format_validation_error(e, BenchResult, 'not a valid bench.py result')}") from None


def check_device_name(name: str) -> str:
    if not DEVICE_NAME.fullmatch(name or ""):
        raise ConfigError(f"device name '{name[:40]}' is not usable (letters, digits, '_', '.', '-'; at most 64); "
                          f"pass --name, e.g. --name pi4")
    return name


def ingest(result_path: Path, bundle: Path, name: str | None = None) -> tuple[str, dict]:
    """Record a bench.py result in the bundle's report.json under devices.<name>.

    The bundle must match its manifest, and the result must be valid and of this bundle's model.onnx
    (same sha256). report.json, MODEL_CARD.md, report.html and manifest.json are replaced together,
    all or nothing. The bundle's content as built (manifest content_sha256, hence its version) does
    not change: device results are measurements of the bundle, added to it.
    """
    bundle, result_path = Path(bundle), Path(result_path)
    manifest = verify_bundle(bundle)
    result = read_result(result_path)
    model_sha = manifest["files"].get("model.onnx")
    if result.sha256 != model_sha:
        raise ConfigError(f"'{result_path}' measured a different model (sha256 {result.sha256[:12]}...), "
                          f"not this bundle's model.onnx ({str(model_sha)[:12]}...); run this bundle's bench.py on the device")
    name = check_device_name(name or result.device.name or "")
    measured = result.model_dump(mode="json")
    entry = {k: measured[k] for k in DEVICE_FIELDS if measured.get(k) is not None}
    entry["ingested"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report = read_json(bundle / "report.json")
    report.setdefault("devices", {})[name] = entry
    # the documents that show the report follow it; everything is rendered before anything is replaced
    from .report import model_card, render_html

    labels = list(read_json(bundle / "labels.json").values())
    update_bundle(bundle, {
        "report.json": json.dumps(report, indent=2) + "\n",
        "MODEL_CARD.md": model_card(report, labels, read_json(bundle / "preprocess.json")),
        "report.html": render_html(report, labels),
    }, {"devices": sorted(report["devices"])})
    return name, entry
