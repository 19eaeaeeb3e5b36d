"""Results measured on a device into a bundle: a bench.py result read strictly, recorded in the
manifest, and the model card and page rendered again."""
from __future__ import annotations

import json
import time
from pathlib import Path

from edgedistill.core.bundles import update_bundle, verify_bundle
from edgedistill.core.errors import ConfigError
from edgedistill.core.files import read_json
from edgedistill.core.locks import held
from edgedistill.core.store import Store
from edgedistill.runtime.devices import DEVICE_FIELDS, check_device_name, read_result


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
    record(bundle, name, entry)
    return name, entry


def record(bundle: Path, name: str, entry: dict) -> None:
    """Put a device's entry into report.json under devices.<name>; report.json, MODEL_CARD.md,
    report.html and manifest.json are replaced together, all or nothing. A bundle published in a store
    (<store>/bundles/<name>/v<N>) is updated holding the store (gc waits) and its name's bundle lock (a
    run publishing that name, or another ingest, waits), so neither sees it half-replaced."""
    bundle = Path(bundle)
    if bundle.parent.parent.name == "bundles" and (bundle.parents[2] / "lock").is_file():
        store = Store(bundle.parents[2])
        with store.lock(wait_s=60.0, what="ingest"), held(store.root / "locks" / f"bundle-{bundle.parent.name}"):
            _record(bundle, name, entry)
    else:
        _record(bundle, name, entry)


def _record(bundle: Path, name: str, entry: dict) -> None:
    report = read_json(bundle / "report.json")
    report.setdefault("devices", {})[name] = entry
    # the documents that show the report follow it; everything is rendered before anything is replaced
    from edgedistill.release.report import model_card, render_html

    labels = list(read_json(bundle / "labels.json").values())
    update_bundle(bundle, {
        "report.json": json.dumps(report, indent=2) + "\n",
        "MODEL_CARD.md": model_card(report, labels, read_json(bundle / "preprocess.json")),
        "report.html": render_html(report, labels),
    }, {"devices": sorted(report["devices"])})
