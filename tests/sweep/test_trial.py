"""A trial's budgets during the search: the release gate's own checks on validation numbers; device
budgets only for the device latency is measured on, and only what that measures."""
from edgedistill.release.gate import Budgets, check
from edgedistill.sweep.trial import search_budgets, validation_view

REPORT = {
    "shipped": "student_int8", "size_bytes": 2 * 2**20, "latency_ms": {"p90": 3.0}, "peak_rss_mb": 50.0,
    "accuracy": {"teacher": 99.0, "student_fp32": 97.0, "student_int8": 96.5, "model_ort": 96.0},  # test split
    "quantization": {"test_drop": {"drop": 0.5, "ci_low": 0.1, "ci_high": 0.9}},
    "distillation": {"teacher_val_accuracy": 98.0}, "devices": {},
}
QUANT = {"val_accuracy_fp32": 95.0, "val_accuracy_int8": 94.0, "val_drop": {"drop": 1.0, "ci_low": 0.5, "ci_high": 1.5}}


def test_the_gate_reads_validation_numbers_only():
    view = validation_view(REPORT, QUANT, "host", None)
    rows = {r.metric: r for r in check(view, Budgets(min_accuracy=95, max_accuracy_drop=3.5, max_quantization_drop=0.8))}
    assert rows["accuracy"].actual == "94.00" and not rows["accuracy"].passed  # 96.5 on test would pass
    assert rows["accuracy_drop_pts"].actual == "4.00" and not rows["accuracy_drop_pts"].passed  # 98 - 94
    assert rows["quantization_drop_pts"].actual.startswith("1.00") and not rows["quantization_drop_pts"].passed
    assert REPORT["accuracy"]["student_int8"] == 96.5  # the report itself is untouched


def test_device_budgets_are_checked_only_where_latency_is_measured():
    budgets = Budgets(devices={"lab": {"max_latency_ms_p90": 5, "min_top1_agreement": 99}, "pi4": {"max_latency_ms_p90": 9}})
    kept, notes = search_budgets(budgets, "lab")
    assert set(kept.devices) == {"lab"} and kept.devices["lab"].min_top1_agreement is None
    assert any(n.startswith("pi4: max_latency_ms_p90") for n in notes) and any("lab: min_top1_agreement" in n for n in notes)
    view = validation_view(REPORT, QUANT, "lab", {"latency_ms": {"p90": 6.0}})
    rows = check(view, kept)
    assert [(r.metric, r.passed) for r in rows] == [("lab.latency_ms_p90", False)]
    assert search_budgets(budgets, "host")[0].devices == {}


def test_shared_stages_when_the_space_switches_distillation_mode(tmp_path):
    """Corners in offline and online mode share the data and the student alone, not the teacher."""
    from conftest import write_pipeline
    from edgedistill.pipeline import load_pipeline
    from edgedistill.stages import STAGES
    from edgedistill.sweep.trial import shared_stages

    path = write_pipeline(tmp_path / "p")
    corners = [load_pipeline(path, [f"distill.mode={m}"]) for m in ("offline", "online")]
    assert shared_stages(STAGES, corners) == ["prepare", "baseline"]
    assert shared_stages(STAGES, corners[:1]) == ["prepare", "baseline", "finetune", "teach", "distill", "export",
                                                  "quantize", "qat", "benchmark", "bundle"]
    assert "distill" in shared_stages(STAGES, [load_pipeline(path, ["distill.mode=online", f"quantize.calibration_samples={n}"])
                                               for n in (32, 64)])
