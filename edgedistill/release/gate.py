"""Release gate: a bundle's report.json against a budgets file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, model_validator

from edgedistill.core.bundles import verify_bundle
from edgedistill.core.config import Strict, read_yaml, validate
from edgedistill.core.errors import ConfigError, GateFailed, IntegrityError
from edgedistill.core.files import read_json
from edgedistill.core.table import text_table

MB = 1024 * 1024  # sizes and memory in MiB throughout


class DeviceBudgets(Strict):
    """Budgets for one target device, checked against its ingested bench.py result."""

    max_latency_ms_p90: float | None = Field(None, gt=0)
    """Largest p90 latency on that device, in milliseconds."""
    max_peak_rss_mb: float | None = Field(None, gt=0)
    """Largest peak resident memory on that device, in MiB."""
    max_cold_start_ms: float | None = Field(None, gt=0)
    """Largest session creation plus first inference on that device, in milliseconds."""
    min_top1_agreement: float | None = Field(None, ge=0, le=100)
    """Smallest top-1 agreement with the build host on the shipped test inputs, in percent
    (`edgedistill verify BUNDLE --target aarch64:CPU` records it, emulated)."""
    min_accuracy: float | None = Field(None, ge=0, le=100)
    """Smallest accuracy on the device on the shipped test inputs, in percent (verify --target, or a
    bench.py result run with --inputs test_inputs.npy --labels test_labels.npy)."""


class RegressionBudgets(Strict):
    """With `gate --baseline BUNDLE`: how much worse than a previous release the new bundle may be."""

    max_latency_increase_pct: float = Field(10.0, ge=0)
    """Largest p90 latency increase over the baseline, in percent."""
    max_size_increase_pct: float = Field(10.0, ge=0)
    """Largest model size increase over the baseline, in percent."""
    max_accuracy_decrease_pts: float = Field(0.5, ge=0)
    """Largest test accuracy decrease below the baseline, in percentage points."""
    max_peak_rss_increase_pct: float = Field(20.0, ge=0)
    """Largest peak resident memory increase over the baseline, in percent."""


class Budgets(Strict):
    """A budgets file (YAML). Every key is optional; at least one must be given."""

    max_size_mb: float | None = Field(None, gt=0)
    """Largest shipped model.onnx, in MiB (2^20 bytes)."""
    max_latency_ms_p90: float | None = Field(None, gt=0)
    """Largest p90 latency of the shipped model at batch 1, in milliseconds."""
    min_accuracy: float | None = Field(None, ge=0, le=100)
    """Smallest test accuracy of the shipped model, in percent."""
    max_accuracy_drop: float | None = Field(None, ge=0)
    """Largest teacher-minus-shipped test accuracy difference, in percentage points."""
    max_peak_rss_mb: float | None = Field(None, gt=0)
    """Largest peak resident memory of a process running the shipped model, in MiB."""
    max_quantization_drop: float | None = Field(None, ge=0)
    """Largest accuracy the shipped model lost to quantization on the test split, in points: FP32 minus
    quantized on the same images (report.json quantization.test_drop.drop; its 95% interval is shown
    beside it). An FP32 model that ships has lost nothing."""
    regression: RegressionBudgets = RegressionBudgets()
    """Thresholds for `gate --baseline` (defaults: +10% latency, +10% size, -0.5 pt accuracy, +20% memory)."""
    devices: dict[str, DeviceBudgets] = Field(default_factory=dict)
    """Per target device (name as ingested or verified), e.g. {pi4: {max_latency_ms_p90: 40},
    aarch64-a72: {min_top1_agreement: 99.5}}. A device with budgets but no result fails."""

    @model_validator(mode="after")
    def _not_empty(self) -> "Budgets":
        given = {k: v for k, v in self.model_dump(exclude={"regression"}).items()}
        if all(v in (None, {}) for v in given.values()) and "regression" not in self.model_fields_set:
            raise ValueError(f"a budgets file needs at least one of {', '.join(type(self).model_fields)}")
        return self


@dataclass
class Check:
    metric: str
    budget: str
    actual: str
    passed: bool


def load_budgets(path: Path) -> Budgets:
    return validate(Budgets, read_yaml(Path(path), "budgets file"), str(path))


def load_report(bundle: Path) -> dict:
    """A bundle's report.json, after checking the whole bundle against its manifest."""
    verify_bundle(bundle)
    report = read_json(Path(bundle) / "report.json")
    if not isinstance(report, dict):
        raise IntegrityError(f"'{Path(bundle) / 'report.json'}' is not a report edgedistill wrote")
    return report


def check(report: dict, budgets: Budgets, baseline: dict | None = None, bundle: Path | str = "the bundle") -> list[Check]:
    """The budgets against a report (and the regression thresholds against a baseline report, when
    given). A report without the numbers a budget needs is an error (exit 2), as is a budgets file
    with nothing to check: a gate that checks nothing must not pass."""
    try:
        rows = _check(report, budgets)
        if baseline is not None:
            rows += _check_regression(report, baseline, budgets.regression)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        raise IntegrityError(f"report.json of {bundle} (or of its baseline) lacks or garbles what the gate reads "
                             f"({type(e).__name__}: {str(e)[:80]}); rebuild the bundle") from None
    if not rows:
        raise ConfigError("the budgets file has no budget that applies (its regression thresholds apply only with "
                          "--baseline); add at least one of max_size_mb, max_latency_ms_p90, min_accuracy, ...")
    return rows


def shipped_accuracy(report: dict) -> float:
    """The shipped model's test accuracy: the lower of model.onnx's and model.ort's (bundles from
    before model.ort was measured: model.onnx's)."""
    acc = report["accuracy"]
    return min(acc[report["shipped"]], acc.get("model_ort", acc[report["shipped"]]))


def _check(report: dict, budgets: Budgets) -> list[Check]:
    shipped_acc = shipped_accuracy(report)
    drop = report["accuracy"]["teacher"] - shipped_acc
    rows = []
    b = budgets
    if b.max_size_mb is not None:
        rows.append(Check("size_mb", f"<= {b.max_size_mb:g}", f"{report['size_bytes'] / MB:.3f}", report["size_bytes"] / MB <= b.max_size_mb))
    if b.max_latency_ms_p90 is not None:
        p90 = report["latency_ms"]["p90"]
        rows.append(Check("latency_ms_p90", f"<= {b.max_latency_ms_p90:g}", f"{p90:.3f}", p90 <= b.max_latency_ms_p90))
    if b.min_accuracy is not None:
        rows.append(Check("accuracy", f">= {b.min_accuracy:g}", f"{shipped_acc:.2f}", shipped_acc >= b.min_accuracy))
    if b.max_accuracy_drop is not None:
        rows.append(Check("accuracy_drop_pts", f"<= {b.max_accuracy_drop:g}", f"{drop:.2f}", drop <= b.max_accuracy_drop))
    if b.max_quantization_drop is not None:
        q = report["quantization"]["test_drop"]
        actual = "0 (FP32 ships)" if q is None else f"{q['drop']:.2f} [{q['ci_low']:.2f}, {q['ci_high']:.2f}]"
        rows.append(Check("quantization_drop_pts", f"<= {b.max_quantization_drop:g}", actual,
                          q is None or q["drop"] <= b.max_quantization_drop))
    if b.max_peak_rss_mb is not None:
        rss = report["peak_rss_mb"]
        rows.append(Check("peak_rss_mb", f"<= {b.max_peak_rss_mb:g}", f"{rss:.1f}", rss <= b.max_peak_rss_mb))
    for name, db in sorted(b.devices.items()):
        measured = report.get("devices", {}).get(name)
        for metric, budget, op in (
            ("latency_ms_p90", db.max_latency_ms_p90, "<="), ("peak_rss_mb", db.max_peak_rss_mb, "<="),
            ("cold_start_ms", db.max_cold_start_ms, "<="), ("top1_agreement", db.min_top1_agreement, ">="),
            ("accuracy", db.min_accuracy, ">="),
        ):
            if budget is None:
                continue
            value = None if measured is None else DEVICE_METRICS[metric](measured)
            if value is None:
                how = "verify --target" if metric == "top1_agreement" else "ingest or verify --target"
                what = "no result" if measured is None else "not in its result (emulated: no latency)" if measured.get("emulated") else "not in its result"
                rows.append(Check(f"{name}.{metric}", f"{op} {budget:g}", f"{what} ({how})", False))
            else:
                rows.append(Check(f"{name}.{metric}", f"{op} {budget:g}", f"{value:.3f}",
                                  value <= budget if op == "<=" else value >= budget))
    return rows


DEVICE_METRICS = {
    "latency_ms_p90": lambda m: (m.get("latency_ms") or {}).get("p90"),
    "peak_rss_mb": lambda m: m.get("peak_rss_mb"),
    "cold_start_ms": lambda m: m.get("cold_start_ms"),
    "top1_agreement": lambda m: m.get("top1_agreement"),
    "accuracy": lambda m: m.get("accuracy"),
}
"""How each device budget reads its number from a devices.<name> entry (None: not measured there)."""


def _check_regression(report: dict, baseline: dict, r: RegressionBudgets) -> list[Check]:
    shipped = shipped_accuracy
    rows = []
    for metric, new, old, pct in (
        ("latency_ms_p90", report["latency_ms"]["p90"], baseline["latency_ms"]["p90"], r.max_latency_increase_pct),
        ("size_bytes", report["size_bytes"], baseline["size_bytes"], r.max_size_increase_pct),
        ("peak_rss_mb", report["peak_rss_mb"], baseline["peak_rss_mb"], r.max_peak_rss_increase_pct),
    ):
        limit = old * (1 + pct / 100)
        rows.append(Check(f"vs baseline {metric}", f"<= {limit:.4g} (+{pct:g}%)", f"{new:.4g}", new <= limit))
    floor = shipped(baseline) - r.max_accuracy_decrease_pts
    rows.append(Check("vs baseline accuracy", f">= {floor:.2f} (-{r.max_accuracy_decrease_pts:g} pt)",
                      f"{shipped(report):.2f}", shipped(report) >= floor))
    return rows


def format_table(rows: list[Check]) -> str:
    return text_table(("metric", "budget", "actual", "result"),
                      [(r.metric, r.budget, r.actual, "pass" if r.passed else "FAIL") for r in rows])


def to_json(rows: list[Check], bundle: Path, budgets: Path) -> dict:
    return {"bundle": str(bundle), "budgets": str(budgets), "passed": all(r.passed for r in rows),
            "checks": [{"metric": r.metric, "budget": r.budget, "actual": r.actual, "passed": r.passed} for r in rows]}


def write_junit(rows: list[Check], bundle: Path, path: Path) -> None:
    """JUnit XML, one test case per budget, so CI systems show each budget as a test."""
    import xml.etree.ElementTree as ET

    suite = ET.Element("testsuite", name="edgedistill.gate", tests=str(len(rows)),
                       failures=str(sum(not r.passed for r in rows)), errors="0")
    for r in rows:
        case = ET.SubElement(suite, "testcase", classname=f"gate.{Path(bundle).parent.name}.{Path(bundle).name}", name=r.metric)
        if not r.passed:
            ET.SubElement(case, "failure", message=f"{r.metric} = {r.actual}, budget {r.budget}").text = \
                f"{r.metric}: actual {r.actual}, budget {r.budget}"
        else:
            ET.SubElement(case, "system-out").text = f"actual {r.actual}, budget {r.budget}"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def check_device_names(budgets: Budgets, report: dict, devices_path: Path | None) -> None:
    """With a devices file, every device a budget names must be one of its devices, one the report
    already has, or an emulated core (aarch64-a72...): a misspelt name is an error (exit 2) naming the
    nearest, not a budget that fails for want of a result."""
    if devices_path is None or not budgets.devices:
        return
    from edgedistill.core.registry import did_you_mean
    from edgedistill.runtime import targets
    from edgedistill.runtime.devices import load_devices

    known = [*load_devices(devices_path), *report.get("devices", {}), *(targets.device_name(c) for c in targets.CPUS)]
    for name in budgets.devices:
        if name not in known:
            raise ConfigError(f"budgets name device '{name}', which is not in devices file '{devices_path}'"
                              f"{did_you_mean(name, known)}; known: {', '.join(dict.fromkeys(known))}")


def enforce(rows: list[Check]) -> None:
    """Raise GateFailed (exit code 1) naming the budgets that do not hold."""
    failed = [r.metric for r in rows if not r.passed]
    if failed:
        raise GateFailed(f"gate failed: {', '.join(failed)} over budget")
