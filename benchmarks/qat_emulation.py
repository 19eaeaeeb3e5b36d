"""How closely QAT's fake quantization answers as ONNX Runtime's INT8 model does (issue 18): the same
trained model, the same calibration rows, PyTorch's fake-quantized logits against ONNX Runtime's.

Cases:
  text        the text quickstart's shipped MiniLM student (pipelines/text_quickstart.yaml, run until
              export in --store: cached when it ran there), recipe qdq_u8s8_no_elementwise
  teacher224  the quickstart's MobileNetV2 teacher as a one-epoch linear probe at 224 px
              (quantization_fidelity.py builds it, in --store/teacher224), recipe qdq_u8s8
  mnv3        the 224-px MobileNetV3-Small student that benchmarks/mnv3_qat.py train trained in --store
              (--record RUNS/seedN/record.json says with which settings), recipe qdq_u8s8: hard-swish
              and squeeze-excitation blocks
Rules compared:
  graph   what the qat stage does: fake quantization where ONNX Runtime quantizes the exported graph
          (edgedistill/quantization/placement.py)
  layers  the rule it replaced: every Conv and Linear's input and weight
For each, on the validation split: top-1 agreement with ONNX Runtime's INT8 model (as it ships: fused
integer kernels) and the largest logit difference; for scale, the same between FP32 and INT8, and
between ONNX Runtime's own QDQ graph run as written (no fusion) and fused. Calibration: the quantize
stage's rows (quantize.calibration_samples, drawn with the seed), MinMax, for both sides.

    python benchmarks/qat_emulation.py --case text --store DIR [--recipe R]
    python benchmarks/qat_emulation.py --case mnv3 --store DIR --record RUNS/seed2/record.json

Accuracy only (no timing): it may run beside other work.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgedistill import models  # noqa: E402
from edgedistill.core.runner import Runner  # noqa: E402
from edgedistill.core.store import Store  # noqa: E402
from edgedistill.data.dataset import Dataset  # noqa: E402
from edgedistill.pipeline import load_pipeline  # noqa: E402
from edgedistill.quantization import fakequant, ort_quantize  # noqa: E402
from edgedistill.quantization.placement import Placement, Point  # noqa: E402
from edgedistill.runtime.onnx_utils import feed_batches, ort_predict  # noqa: E402
from edgedistill.runtime.ortbench import run_rows, select  # noqa: E402
from edgedistill.stages import STAGES  # noqa: E402
from edgedistill.quantization.placement import locate_quantized  # noqa: E402

RECIPES = {"text": "qdq_u8s8_no_elementwise", "teacher224": "qdq_u8s8", "mnv3": "qdq_u8s8"}


def layers_rule(model: nn.Module) -> Placement:
    """The rule before placement.locate: every Conv and Linear's input (a quantizer each) and weight."""
    plan = Placement()
    for path, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            plan.activations[path], plan.tensors[path], plan.weights[path] = [Point(path, "input")], [path], True
    return plan


def load_case(case: str, store: Path, record: Path | None = None) -> tuple[nn.Module, Path, Dataset, int | None, object]:
    """(trained model, its FP32 export, dataset, input size, pipeline)."""
    if case in ("text", "mnv3"):
        if case == "text":
            pipeline = load_pipeline(ROOT / "pipelines" / "text_quickstart.yaml")
        else:
            from mnv3_qat import PIPELINE
            pipeline = load_pipeline(PIPELINE, json.loads(record.read_text())["sets"])
        report = Runner(Store(store), STAGES, progress=True).run(pipeline, until="export")
        export = report.result("export").path
        shipped = json.loads((export / "metrics.json").read_text())["student"]["shipped"]
        folder = report.result("baseline" if shipped == "alone" else "distill").path
        ds = Dataset.load(report.result("prepare").path)
        return models.load_trained(folder), export / "student.onnx", ds, models.input_size(folder, ds.size), pipeline
    from quantization_fidelity import teacher224_model

    work = store / "work"
    work.mkdir(parents=True, exist_ok=True)
    fp32, ds, pipeline = teacher224_model(Store(store / "teacher224"), 0, [], work)
    folder = Runner(Store(store / "teacher224"), STAGES, progress=False).run(pipeline, until="finetune").result("finetune").path
    return models.load_trained(folder), fp32, ds, 224, pipeline


def unfused(path: Path, split) -> np.ndarray:
    """ONNX Runtime's QDQ graph as written: each DequantizeLinear, float operator and QuantizeLinear on its own."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [m.name for m in session.get_inputs()]
    return np.concatenate([run_rows(session, select(names, chunk)) for chunk in feed_batches(split, 50)])


def compare(a: np.ndarray, b: np.ndarray) -> str:
    return f"{(a.argmax(1) == b.argmax(1)).mean() * 100:.2f} | {np.abs(a - b).max():.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=sorted(RECIPES), required=True)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--recipe", default=None, help="default: text qdq_u8s8_no_elementwise, teacher224 and mnv3 qdq_u8s8")
    ap.add_argument("--record", type=Path, help="mnv3: the record.json mnv3_qat.py train wrote for the seed")
    a = ap.parse_args()
    if a.case == "mnv3" and a.record is None:
        ap.error("--case mnv3 needs --record RUNS/seedN/record.json")
    torch.manual_seed(0)
    model, fp32, ds, size, pipeline = load_case(a.case, a.store, a.record)
    model.eval()
    q = ort_quantize.resolve_reduce_range(pipeline.quantize.with_recipe(a.recipe or RECIPES[a.case]))
    q = q.model_copy(update={"calibrate_method": "minmax"})
    train, val = ds.split("train", size), ds.split("val", size)
    calibration = train.subset(ort_quantize.calibration_rows(len(train), q.calibration_samples, pipeline.seed))
    names = ort_quantize.model_inputs(fp32)
    reader = lambda: ort_quantize.split_reader(calibration, names)
    with tempfile.TemporaryDirectory() as tmp:
        source = ort_quantize.prepare_source(fp32, q, reader, Path(tmp), log=print)
        int8 = Path(tmp) / "int8.onnx"
        ort_quantize.quantize_model(source, int8, q, reader)
        shipped, reference, float_logits = ort_predict(int8, val), unfused(int8, val), ort_predict(fp32, val)
        plans = {"graph": locate_quantized(model, fp32, calibration, q, Path(tmp)), "layers": layers_rule(model)}
    y = val.labels
    rows = [f"| ONNX Runtime INT8 (fused kernels) | {(shipped.argmax(1) == y).mean() * 100:.2f} | 100.00 | 0 | - |",
            f"| ONNX Runtime's QDQ graph unfused | {(reference.argmax(1) == y).mean() * 100:.2f} | {compare(reference, shipped)} | - |",
            f"| FP32 | {(float_logits.argmax(1) == y).mean() * 100:.2f} | {compare(float_logits, shipped)} | - |"]
    for rule, plan in plans.items():
        emulating = fakequant.attach(copy.deepcopy(model), fakequant.Emulation.of(q, learn_ranges=False), plan)
        fakequant.calibrate(emulating, (torch.from_numpy(calibration.inputs(slice(i, i + 32))) for i in range(0, len(calibration), 32)))
        with torch.no_grad():
            logits = torch.cat([emulating.eval()(torch.from_numpy(val.inputs(slice(i, i + 50))))
                                for i in range(0, len(val), 50)]).numpy()
        c = plan.counts()
        missed = len(c["missed"]) + len(c["missed_weights"])
        where = f"{c['tensors']} tensors ({c['activations']} scales), {c['weights']} weights{f', {missed} not found' if missed else ''}"
        rows.append(f"| fake quantization, rule `{rule}` | {(logits.argmax(1) == y).mean() * 100:.2f} | "
                    f"{compare(logits, shipped)} | {where} |")
    print(f"\n{a.case}: recipe {a.recipe or RECIPES[a.case]}, "
          f"reduce_range {q.reduce_range}, {len(calibration)} calibration rows, {len(val)} validation examples\n")
    print("| model | val acc % | top-1 agreement with ONNX Runtime INT8 % | max abs logit diff | fake-quantized |")
    print("|---|---|---|---|---|")
    print(*rows, sep="\n")


if __name__ == "__main__":
    main()
