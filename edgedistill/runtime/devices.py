"""Target devices: the devices file (name -> target, threads, python), bench.py results read strictly, and
verifying a bundle's answers on emulated or SSH targets (release.ingest records them in the bundle)."""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgedistill.core.bundles import verify_bundle
from edgedistill.core.config import format_validation_error
from edgedistill.core.errors import ConfigError, DataError

DEVICE_FIELDS = ("latency_ms", "peak_rss_mb", "load_ms", "cold_start_ms", "throughput", "top_ops", "runs",
                 "duration_s", "protocol", "settings", "device", "accuracy", "eval_samples", "batch", "input_shapes")
DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_RESULT_BYTES = 16 * 2**20  # a bench.py result is a few KB


# ---- devices.yaml: the team's target devices by name ---------------------------------------------
class DeviceSpec(BaseModel):
    """One device in a devices file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    target: str
    """Where it is: ssh://user@host[:port][/dir] (a real device) or aarch64[:CPU] (emulated, answers only)."""
    threads: int = Field(1, ge=1)
    """Threads bench.py and quantize.target time with there (what the app gives the model)."""
    arch: Literal["aarch64", "armv7l", "x86_64"] = "aarch64"
    python: str = "python3"
    """The interpreter there (needs numpy and onnxruntime)."""
    notes: str = ""

    @property
    def emulated(self) -> bool:
        return not self.target.startswith("ssh://")

    @model_validator(mode="after")
    def _target(self) -> "DeviceSpec":
        from edgedistill.runtime import remote, targets

        try:
            remote.parse_target(self.target) if self.target.startswith("ssh://") else targets.parse_target(self.target)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return self


def devices_file(explicit: Path | None = None) -> Path | None:
    """The devices file: --devices, else $EDGEDISTILL_DEVICES, else ./devices.yaml if there is one."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get("EDGEDISTILL_DEVICES"):
        return Path(os.environ["EDGEDISTILL_DEVICES"])
    return Path("devices.yaml") if Path("devices.yaml").is_file() else None


def load_devices(path: Path) -> dict[str, DeviceSpec]:
    """name -> DeviceSpec, every entry checked (names as device names, targets parsed)."""
    from edgedistill.core.config import read_yaml, validate

    tree = read_yaml(Path(path), "devices file")
    out = {}
    for name, entry in tree.items():
        if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name):
            raise ConfigError(f"devices file '{path}': '{str(name)[:40]}' is not a usable device name (letters, digits, '_', '.', '-')")
        if not isinstance(entry, dict):
            raise ConfigError(f"devices file '{path}': {name} must be a mapping with target, threads, arch, python, notes")
        out[name] = validate(DeviceSpec, entry, f"devices file '{path}', device {name}")
    return out


def find_device(name: str, path: Path | None) -> DeviceSpec:
    """A device by name from the devices file; an unknown name is an error naming the nearest ones."""
    from edgedistill.core.registry import did_you_mean

    if path is None:
        raise ConfigError(f"device '{name}' needs a devices file: give --devices FILE, set $EDGEDISTILL_DEVICES, "
                          f"or put devices.yaml in this folder")
    known = load_devices(path)
    if name not in known:
        raise ConfigError(f"unknown device '{name}' in devices file '{path}'{did_you_mean(name, list(known))}; "
                          f"known: {', '.join(known) or 'none'}")
    return known[name]


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
    accuracy: Annotated[float, Field(strict=True, ge=0, le=100, allow_inf_nan=False)] | None = None
    """With --inputs and --labels (the bundle's test_inputs.npy, test_labels.npy): accuracy on the device."""
    eval_samples: Count | None = None
    batch: Count | None = None
    """The batch timed (1, or the model's fixed batch); absent from results of bench.py before issue 17."""
    input_shapes: dict[Text, list[Count]] | None = None
    """The shape of every input timed."""
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


@dataclass
class VerifyTarget:
    """Where `verify --target` runs a bundle: an emulated aarch64 CPU or a device over SSH."""

    name: str
    """devices.<name> in report.json."""
    spec: str
    """aarch64:cortex-a72 or ssh://user@host..."""
    predict: Callable[[Path, str, Path, Path], tuple]
    """(bundle, model file name, inputs.npy, labels.npy) -> (logits, bench.py's verify JSON)."""
    emulated: bool


def verify_targets(specs: list[str], root: Path | None = None, name: str | None = None,
                   remote_python: str = "python3", devices: list[str] = (), devices_path: Path | None = None) -> list[VerifyTarget]:
    """--target values and --device names -> targets, every one checked before anything runs."""
    from edgedistill.runtime import remote, targets

    items = [(spec, name, remote_python) for spec in specs]
    for device in devices:
        d = find_device(device, devices_path)
        items.append((d.target, device, d.python))
    out: list[VerifyTarget] = []
    for spec, given, python in items:
        if spec.startswith("ssh://"):
            device = check_device_name(given or remote.parse_target(spec)[0].rpartition("@")[2])
            out.append(VerifyTarget(device, spec, lambda b, m, x, y, spec=spec, device=device, python=python:
                                    remote.predict_over_ssh(b, spec, m, x, y, device, python), emulated=False))
            continue
        cpus = targets.parse_target(spec)
        for cpu in cpus:
            device = given if given and len(cpus) == 1 else targets.device_name(cpu)
            out.append(VerifyTarget(device, f"{targets.ARCH}:{cpu}", lambda b, m, x, y, cpu=cpu: targets.predict(
                root or targets.default_root(), cpu, b / "bench.py", b / m, x, y), emulated=True))
    if any(t.emulated for t in out):
        targets.status(root or targets.default_root(), same_versions=True)
    names = [t.name for t in out]
    if len(set(names)) < len(names):
        raise ConfigError(f"--target names a device twice ({', '.join(names)}); give each once")
    return out


TEST_INPUTS = ("test_inputs.npy", "test_inputs.npz")
"""A bundle's shipped test inputs: float images (.npy), or token ids and masks by input name (.npz)."""


def verifiable(bundle: Path) -> dict:
    """The bundle's manifest, once the bundle matches it and carries what verify needs."""
    manifest = verify_bundle(bundle)
    if not any(f in manifest["files"] for f in TEST_INPUTS):
        raise ConfigError(f"bundle '{bundle}' carries no test inputs (test_inputs.npy, or .npz for text); rebuild it "
                          f"with bundle.include_test_set > 0 (the default, 256)")
    if "--logits" not in (Path(bundle) / "bench.py").read_text():
        raise ConfigError(f"bundle '{bundle}' has a bench.py from before verify mode (no --logits); rebuild the bundle")
    return manifest


def verify_on_targets(bundle: Path, chosen: list[VerifyTarget], images: int | None = None, log=print) -> dict[str, dict]:
    """Run the bundle's model.onnx and model.ort with its own bench.py (verify mode: logits, no timing)
    on each target, on the bundle's test inputs, and compare with ONNX Runtime on this machine: top-1
    agreement, max abs logit difference, accuracy. Returns {device name: entry}. An emulated target
    has no latency, ever; a device's latency comes from `bench --target`."""
    import numpy as np

    from edgedistill.runtime import ortbench

    bundle = Path(bundle)
    manifest = verifiable(bundle)
    name = next(f for f in TEST_INPUTS if f in manifest["files"])
    y = np.load(bundle / "test_labels.npy")
    n = len(y) if images is None else max(1, min(images, len(y)))
    models = [m for m in ("model.onnx", "model.ort") if m in manifest["files"]]
    entries = {}
    with tempfile.TemporaryDirectory() as tmp:
        inputs, labels = Path(tmp) / name, Path(tmp) / "test_labels.npy"
        if name.endswith(".npz"):  # text: one array per input name
            with np.load(bundle / name) as z:
                x = {k: z[k][:n] for k in z.files}
            np.savez(inputs, **x)
        else:
            x = np.ascontiguousarray(np.load(bundle / name, mmap_mode="r")[:n])
            np.save(inputs, x)
        np.save(labels, y[:n])
        try:
            host = {m: ortbench.predict(str(bundle / m), x, y[:n], str(Path(tmp) / f"host_{m}.npy")) for m in models}
        except ortbench.InputMismatch as e:  # a bundle whose test inputs do not fit its model (edited by hand)
            raise DataError(f"bundle '{bundle}': {e}") from None
        host_logits = {m: np.load(Path(tmp) / f"host_{m}.npy") for m in models}
        for t in chosen:
            per_model, device = {}, {}
            for m in models:
                started = time.time()
                logits, result = t.predict(bundle, m, inputs, labels)
                ref = host_logits[m]
                if logits.shape != ref.shape:
                    raise ConfigError(f"{t.spec}: {m} gave logits of shape {logits.shape}, here {ref.shape}")
                per_model[m] = {"top1_agreement": 100.0 * float((logits.argmax(1) == ref.argmax(1)).mean()),
                                "max_abs_diff": float(np.abs(logits - ref).max()), "accuracy": result["accuracy"],
                                "host_accuracy": host[m]["accuracy"]}
                device = result["device"]
                log(f"{t.name} {m}: top-1 agreement {per_model[m]['top1_agreement']:.2f}%, max |diff| "
                    f"{per_model[m]['max_abs_diff']:.2e}, accuracy {result['accuracy']:.2f}% (here {host[m]['accuracy']:.2f}%), "
                    f"{time.time() - started:.0f} s")
            if t.emulated:
                device = dict(device, cpu=f"{t.spec.partition(':')[2]} (QEMU, emulated)")
            entries[t.name] = {
                "emulated": t.emulated, "target": t.spec, "images": int(n),
                "top1_agreement": min(v["top1_agreement"] for v in per_model.values()),
                "max_abs_diff": max(v["max_abs_diff"] for v in per_model.values()),
                "accuracy": per_model["model.onnx"]["accuracy"], "host_accuracy": per_model["model.onnx"]["host_accuracy"],
                "models": per_model, "device": dict(device, host_onnxruntime=host["model.onnx"]["device"]["onnxruntime"]),
                "verified": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
    return entries
