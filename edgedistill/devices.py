"""Results measured on target devices (bench.py run on a phone, board or Pi), recorded in a bundle."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from .errors import ConfigError
from .store import MANIFEST, read_json, sha256_file, write_json

DEVICE_FIELDS = ("latency_ms", "peak_rss_mb", "load_ms", "cold_start_ms", "throughput", "top_ops", "runs",
                 "duration_s", "protocol", "settings", "device")


def ingest(result_path: Path, bundle: Path, name: str | None = None) -> tuple[str, dict]:
    """Record a bench.py result in the bundle's report.json under devices.<name>.

    The result must be of this bundle's model.onnx (same sha256). MODEL_CARD.md and report.html are
    rewritten to show it. The bundle's content as built (manifest content_sha256, hence its version)
    does not change: device results are measurements of the bundle, added to it; manifest.json's file
    hashes are refreshed so they stay true.
    """
    bundle, result_path = Path(bundle), Path(result_path)
    report_path, manifest_path = bundle / "report.json", bundle / MANIFEST
    if not report_path.is_file() or not manifest_path.is_file():
        raise ConfigError(f"'{bundle}' is not a bundle (no report.json or manifest.json)")
    try:
        result = json.loads(result_path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"result file '{result_path}' does not exist") from None
    except json.JSONDecodeError:
        result = None
    if not (isinstance(result, dict) and isinstance(result.get("latency_ms"), dict) and "p90" in result["latency_ms"]):
        raise ConfigError(f"'{result_path}' is not a bench.py result (JSON with latency_ms.p90)")
    model_sha = read_json(manifest_path)["files"]["model.onnx"]
    if result.get("sha256") != model_sha:
        raise ConfigError(f"'{result_path}' measured a different model (sha256 {str(result.get('sha256'))[:12]}...), "
                          f"not this bundle's model.onnx ({model_sha[:12]}...); run this bundle's bench.py on the device")
    name = name or result.get("device", {}).get("name") or ""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"device name '{name}' is not usable; pass --name, e.g. --name pi4")
    entry = {k: result[k] for k in DEVICE_FIELDS if k in result}
    entry["ingested"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report = read_json(report_path)
    report.setdefault("devices", {})[name] = entry
    write_json(report_path, report)
    # the documents that show the report follow it
    from .report import model_card, write_html

    labels = list(read_json(bundle / "labels.json").values())
    (bundle / "MODEL_CARD.md").write_text(model_card(report, labels, read_json(bundle / "preprocess.json")))
    write_html(report, bundle / "report.html", labels)
    manifest = read_json(manifest_path)
    for f in ("report.json", "MODEL_CARD.md", "report.html"):
        manifest["files"][f] = sha256_file(bundle / f)
    manifest["devices"] = sorted(report["devices"])
    write_json(manifest_path, manifest)
    return name, entry
