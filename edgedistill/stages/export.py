"""export: teacher and student to ONNX (dynamic batch, named input/output), the ONNX checker, and a
parity check against PyTorch on real test images, each model at its own input size. Parity beyond
tolerance fails the stage. <role>_preprocess.json beside each model says how to make its input.

The student exported is the distilled one unless the student trained alone (the baseline stage) is
better on validation beyond the split's noise (choose_student), so distillation never ships a worse
student than training without it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import Field

from edgedistill.core.config import Strict
from edgedistill.core.errors import StageError
from edgedistill.core.files import read_json
from edgedistill.core.stage import Context, Stage
from edgedistill.core.store import METRICS
from edgedistill.data.dataset import Dataset
from edgedistill.models.saved import input_size, load_trained, num_params
from edgedistill.runtime.onnx_utils import check_loads, ort_predict
from edgedistill.runtime.ortbench import model_size
from edgedistill.runtime.stats import paired_drop
from edgedistill.training.loop import predict


class ExportConfig(Strict):
    opset: int = Field(18, ge=17)
    """ONNX opset version (17 or newer)."""
    parity_samples: int = Field(128, ge=1)
    """Test images run through both PyTorch and ONNX Runtime for the parity check."""
    parity_max_abs_diff: float = Field(1e-3, gt=0)
    """Largest allowed absolute difference between PyTorch and ONNX Runtime logits."""
    parity_min_top1_agreement: float = Field(0.99, ge=0, le=1)
    """Smallest allowed share of samples whose top-1 class agrees between the two."""


def parity(model, path: Path, x) -> dict:
    """PyTorch against ONNX Runtime on x (an array of inputs, or a split: its feeds for ONNX Runtime,
    as a device sends them, e.g. right-padded token ids with their attention mask)."""
    torch_logits = predict(model, x).numpy()
    ort_logits = ort_predict(path, x)
    return {
        "max_abs_diff": float(np.abs(torch_logits - ort_logits).max()),
        "top1_agreement": float((torch_logits.argmax(1) == ort_logits.argmax(1)).mean()),
        "samples": int(len(x)),
    }


def with_inputs(spec: dict, path: Path) -> dict:
    """preprocess.json of an exported model: the data's rule, with the inputs the graph takes (name,
    dtype, shape with its dynamic axes named), so an app knows exactly what to feed."""
    from edgedistill.runtime.onnx_utils import session

    inputs = [{"name": m.name, "dtype": m.type.removeprefix("tensor(").rstrip(")"), "shape": list(m.shape)}
              for m in session(path).get_inputs()]
    spec = dict(spec, model_inputs=inputs)
    if len(inputs) == 1:
        spec["input_name"] = inputs[0]["name"]
    return spec


def choose_student(teacher: dict, distilled: dict, alone: dict, val_drop: dict | None) -> dict:
    """Which student ships, from the three stages' metrics and val_drop, the distilled student's paired
    accuracy drop against the student alone on validation (stats.paired_drop; None without a baseline).

    The student alone ships when it is better on validation beyond the split's noise: when the 95%
    interval of the distilled student's drop lies above zero. A difference of a few images, which the
    interval cannot tell from none, keeps the distilled student. A warning says when the teacher is not
    better than the student alone on validation (its soft targets then add little beyond the labels,
    and can pull the student toward the teacher's mistakes)."""
    out = {"shipped": "distilled", "teacher_val_accuracy": teacher["val_accuracy"],
           "distilled": {k: distilled[k] for k in ("val_accuracy", "test_accuracy")},
           "alone": {k: alone[k] for k in ("val_accuracy", "test_accuracy")} if alone.get("enabled") else None,
           "val_drop_vs_alone": val_drop, "warning": None,
           "rule": "the student alone ships when the 95% interval of the distilled student's validation accuracy drop "
                   "against it lies above 0"}
    if distilled.get("mode") == "online":  # offline's record is left as it was, so its results keep their keys
        out["mode"] = "online"
    if out["alone"] is None:
        return out
    if val_drop["ci_low"] > 0:
        out["shipped"] = "alone"
    if teacher["val_accuracy"] <= alone["val_accuracy"]:
        online = out.get("mode") == "online"
        more = "more epochs (distill.epochs: online, the teacher trains in distill's loop)" if online else "more teacher epochs"
        out["warning"] = (f"the {'teacher trained online' if online else 'fine-tuned teacher'} ({teacher['val_accuracy']:.2f}% on "
                          f"validation) is not better than the student trained alone ({alone['val_accuracy']:.2f}%): its soft "
                          f"targets teach little beyond the labels (unlabeled transfer examples may still help); what usually "
                          f"helps: a higher teacher resolution (teacher.image_size), {more}, or a stronger teacher (preset, "
                          f"or strategy full)")
    return out


def run(cfg: ExportConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    ds = Dataset.load(inputs["dataset"])
    teacher, distilled, alone = (read_json(inputs[a] / METRICS) for a in ("teacher", "student", "student_alone"))
    val_drop = None
    if alone.get("enabled"):  # both students on the same validation images
        val = ds.split("val", input_size(inputs["student"], ds.size))
        preds = [predict(load_trained(inputs[a]), val).argmax(1).numpy() for a in ("student_alone", "student")]
        val_drop = paired_drop(val.labels, *preds)
    choice = choose_student(teacher, distilled, alone, val_drop)
    if choice["warning"]:
        ctx.log(f"warning: {choice['warning']}")
    if choice["shipped"] == "alone":
        ctx.log(f"the student trained alone is better on validation ({choice['alone']['val_accuracy']:.2f}% against "
                f"{choice['distilled']['val_accuracy']:.2f}% distilled, beyond the split's noise): it is the one exported")
    folders = {"teacher": inputs["teacher"], "student": inputs["student_alone" if choice["shipped"] == "alone" else "student"]}
    metrics = {}
    for role, folder in folders.items():
        test = ds.split("test", input_size(folder, ds.size))
        model = load_trained(folder)
        path = out / f"{role}.onnx"
        done = ds.modality.export(model, test.inputs(slice(0, 2)), path, cfg.opset, log=ctx.log)
        check_loads(path, f"the exported {role}")
        (out / f"{role}_preprocess.json").write_text(json.dumps(with_inputs(test.spec, path), indent=2) + "\n")
        p = parity(model, path, test.subset(slice(0, cfg.parity_samples)))
        ctx.log(f"{role}: max |torch - onnxruntime| = {p['max_abs_diff']:.2e}, top-1 agreement {p['top1_agreement']:.2%}")
        if p["max_abs_diff"] > cfg.parity_max_abs_diff or p["top1_agreement"] < cfg.parity_min_top1_agreement:
            raise StageError(
                f"export parity failed for the {role}: max abs diff {p['max_abs_diff']:.2e} "
                f"(limit {cfg.parity_max_abs_diff:.0e}), top-1 agreement {p['top1_agreement']:.2%} "
                f"(limit {cfg.parity_min_top1_agreement:.2%}); raise export.parity_* only if the difference is understood"
            )
        metrics[role] = dict(p, **done, size_bytes=model_size(str(path)), params=num_params(model),
                             image_size=test.spec.get("height"))
    return {"parity": metrics, "opset": cfg.opset, "student": choice}


STAGE = Stage(
    name="export", version=8, inputs=("dataset", "teacher", "student", "student_alone"), output="onnx",
    configure=lambda p: p.export, run=run,
    headline=lambda m: f"student parity max|diff| {m['parity']['student']['max_abs_diff']:.1e}, "
                       f"top-1 {m['parity']['student']['top1_agreement']:.0%}",
)
