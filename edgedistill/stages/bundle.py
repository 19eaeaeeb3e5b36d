"""bundle: the folder that ships to the device: model.onnx, model.ort and its operator config, labels.json,
preprocess.json, report.json, MODEL_CARD.md, report.html with its plots, bench.py, and (bundle.include_test_set)
test_inputs.npy / test_labels.npy. The runner publishes it as
bundles/<name>/v<N>/ with manifest.json."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from edgedistill.core.config import Strict
from edgedistill.core.errors import StageError
from edgedistill.core.files import read_json
from edgedistill.core.stage import Context, Stage
from edgedistill.core.store import METRICS
from edgedistill.data.dataset import Dataset
from edgedistill.release.report import model_card, plot_tradeoffs, plot_training, write_html
from edgedistill.runtime import ortbench
from edgedistill.runtime.onnx_utils import ort_predict, write_model


class BundleConfig(Strict):
    ort_target_platform: Literal["arm", "amd64"] = "arm"
    """Platform the ORT-format model (model.ort) is optimized for: arm for phones and boards."""
    ort_max_abs_diff: float = Field(1e-4, gt=0)
    """Largest logit difference allowed between model.ort and model.onnx on the test images (a float
    model; an integer one is checked by ort_min_top1_agreement)."""
    ort_min_top1_agreement: float = Field(0.99, ge=0, le=1)
    """A quantized model: smallest share of test examples whose top-1 class model.ort and model.onnx
    agree on. The mobile-format conversion fuses an integer graph again (QLinear kernels with their own
    rounding at every layer), so its logits move by quantization steps, not by 1e-4."""

    ship: Literal["auto", "quantized", "fp32"] = "auto"
    """Which student goes into the bundle as model.onnx. auto: the quantize stage's choice (in fixed
    mode: the quantized model). quantized / fp32: that one, whatever the choice."""
    include_test_set: int = Field(256, ge=0)
    """Preprocessed test inputs shipped as test_inputs.npy and test_labels.npy (the first N of the test
    split, at most test_set_max_mb): `bench.py --inputs test_inputs.npy --labels test_labels.npy`
    measures accuracy on the device, and `edgedistill verify --target` compares its answers with this
    machine's. 0: none."""
    test_set_max_mb: float = Field(16.0, gt=0)
    """Most MiB of shipped test inputs (float32): a 224-px RGB image takes 0.57 MiB, so 16 MiB holds 27."""


class BundleStageConfig(Strict):
    bundle: BundleConfig
    name: str


def build_report(name: str, shipped_role: str, bench: dict, export: dict, quant: dict) -> dict:
    """report.json: the numbers a release is gated on. Accuracy in percent on the test split
    (ONNX Runtime), latency in ms at batch 1, sizes in bytes, memory in MiB."""
    shipped = bench[shipped_role]
    students = export["student"]
    accuracy = {role: r["accuracy"] for role, r in bench.items()}
    if students["alone"] is not None:  # PyTorch, on the same test split
        accuracy["student_alone"] = students["alone"]["test_accuracy"]
    return {
        "pipeline": name,
        "shipped": shipped_role,
        "quantization": dict({k: quant[k] for k in ("mode", "choice", "recipe", "excluded_nodes", "reason", "rule", "val_drop",
                                                    "val_resolution", "candidates", "latency_from", "qat") if k in quant},
                             # the shipped model's loss to quantization on test (None: FP32 ships, nothing lost)
                             test_drop=quant["test_drop"] if shipped_role == "student_int8" else None),
        "accuracy": accuracy,
        "distillation": students,
        "latency_ms": dict(shipped["latency_ms"]),
        "size_bytes": shipped["size_bytes"],
        "peak_rss_mb": shipped["peak_rss_mb"],
        "load_ms": shipped["load_ms"],
        "cold_start_ms": shipped["cold_start_ms"],
        "throughput": shipped.get("throughput"),
        "top_ops": shipped.get("top_ops", []),
        # runs, duration and isolation: the first round's; rounds: how many latency_ms is the median of
        "benchmark": dict({k: shipped[k] for k in ("runs", "duration_s", "warmup", "settings", "protocol", "batch", "input_shapes",
                                                   "isolation") if k in shipped}, rounds=len(shipped.get("latency_rounds_ms") or [0])),
        "device": {k: shipped["device"][k] for k in ("cpu", "flags", "cores", "threads", "onnxruntime")},
        "devices": {},
        "parity": {k: export["parity"]["student"][k] for k in ("max_abs_diff", "top1_agreement")},
        "params": {"teacher": export["parity"]["teacher"]["params"], "student": export["parity"]["student"]["params"]},
        "image_size": {"teacher": export["parity"]["teacher"]["image_size"], "student": export["parity"]["student"]["image_size"]},
        "test_samples": shipped["eval_samples"],
        "models": bench,
    }


def shipped_role(ship: str, quant: dict) -> str:
    """bundle.ship auto follows the quantize stage's choice."""
    if ship == "auto":
        ship = "fp32" if quant["choice"] == "fp32" else "quantized"
    return "student_fp32" if ship == "fp32" else "student_int8"


def to_ort_format(model: Path, out: Path, platform: str, work: Path) -> None:
    """model.ort (ONNX Runtime's mobile format) and model.required_operators.config (the operator list
    for a reduced ONNX Runtime build: build.py --include_ops_by_config), with ONNX Runtime's own tool."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    conv = work / "ort"
    shutil.rmtree(conv, ignore_errors=True)
    conv.mkdir(parents=True)
    shutil.copy2(model, conv / "model.onnx")
    for name in ("ort_format_model", "ort_format_model.utils"):  # its INFO lines go to the real stderr
        logging.getLogger(name).setLevel(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        convert_onnx_models_to_ort(conv / "model.onnx", output_dir=conv / "out",
                                   optimization_styles=[OptimizationStyle.Fixed], target_platform=platform)
    shutil.copy2(conv / "out" / "model.ort", out / "model.ort")
    # the tool names the absolute temporary path in a comment; name the bundle's file instead so the
    # same model gives the same bytes (and the same bundle version)
    lines = (conv / "out" / "model.required_operators.config").read_text().splitlines()
    lines = ["# - model.ort" if line.startswith("# - ") else line for line in lines]
    (out / "model.required_operators.config").write_text("\n".join(lines) + "\n")


def output_step(model: Path) -> float | None:
    """The quantization step (scale) of the model's first output when a DequantizeLinear with a scalar
    scale produces it, else None (a float output)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model), load_external_data=False).graph
    producer = {o: n for n in graph.node for o in n.output}
    node = producer.get(graph.output[0].name)
    scales = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    if node is None or node.op_type != "DequantizeLinear" or node.input[1] not in scales or scales[node.input[1]].size != 1:
        return None
    return float(scales[node.input[1]])


def check_ort_format(out: Path, test, max_abs_diff: float, quantized: bool, min_agreement: float) -> dict:
    """model.ort must load and give model.onnx's outputs on the whole test split. A float model: max abs
    diff of the logits within max_abs_diff and the same top-1 class everywhere. A quantized one: the
    mobile-format conversion fuses the integer graph again (its own rounding at every layer), so its
    logits move by quantization steps; there top-1 agreement must be at least min_agreement, and the
    difference is reported in the output's quantization steps. Returns both files' test accuracy (%).
    StageError when they do not match."""
    onnx_logits, ort_logits = ort_predict(out / "model.onnx", test), ort_predict(out / "model.ort", test)
    diff = float(np.abs(onnx_logits - ort_logits).max())
    agreement = float((onnx_logits.argmax(1) == ort_logits.argmax(1)).mean())
    step = output_step(out / "model.onnx") if quantized else None
    if quantized and agreement < min_agreement:
        raise StageError(f"model.ort does not match model.onnx: top-1 agreement {agreement:.2%} on {len(test)} test examples "
                         f"(limit {min_agreement:.0%}, bundle.ort_min_top1_agreement), max abs diff {diff:.2e}")
    if not quantized and (diff > max_abs_diff or agreement < 1.0):
        raise StageError(f"model.ort does not match model.onnx: max abs diff {diff:.2e} (limit {max_abs_diff:.0e}), "
                         f"top-1 agreement {agreement:.2%}")
    labels = np.asarray(test.labels)
    return {"max_abs_diff": diff, "max_abs_diff_steps": None if not step else diff / step, "top1_agreement": agreement,
            "samples": int(len(labels)), "accuracy": float((ort_logits.argmax(1) == labels).mean() * 100),
            "onnx_accuracy": float((onnx_logits.argmax(1) == labels).mean() * 100),
            "rule": "top-1 agreement" if quantized else "max abs diff and top-1 agreement"}


def write_test_set(test, out: Path, n: int, max_mb: float, work: Path) -> int:
    """test_inputs (as the model takes them: .npy of float32 images, or .npz of token ids and masks by
    input name) and test_labels.npy (int64): the first n test examples, fewer where n would pass
    max_mb. Returns how many."""
    probe = test.save_inputs(work / "probe", slice(0, 1))
    per_example = probe.stat().st_size
    n = min(n, len(test.labels), int(max_mb * 2**20) // per_example)
    if n > 0:
        test.save_inputs(out / "test_inputs", slice(0, n))
        np.save(out / "test_labels.npy", np.asarray(test.labels[:n], dtype=np.int64))
    return n


def run(cfg: BundleStageConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    quant = read_json(inputs["quantized"] / METRICS)
    role = shipped_role(cfg.bundle.ship, quant)
    model = inputs["onnx"] / "student.onnx" if role == "student_fp32" else inputs["quantized"] / "student_quantized.onnx"
    write_model(model, out / "model.onnx")
    shipped = next((c for c in quant["candidates"] if c["name"] == quant["recipe"]), {})
    if role == "student_int8" and cfg.bundle.ort_target_platform == "arm" and "7-bit" in shipped.get("graph_from", ""):
        ctx.log("note: the shipped weights are 7-bit (quantize.reduce_range, resolved for the x86 CPU the candidates "
                "were timed on); ARM's kernels do not saturate with 8: for an ARM release set quantize.target to the "
                "device or quantize.reduce_range: false")
    shutil.copy2(ortbench.__file__, out / "bench.py")  # benchmark on the device: python3 bench.py --name pi4
    to_ort_format(out / "model.onnx", out, cfg.bundle.ort_target_platform, ctx.work)
    pre = read_json(inputs["onnx"] / "student_preprocess.json")  # the student's input, which the bundle takes
    ds = Dataset.load(inputs["dataset"])
    test = ds.split("test", pre.get("height"))
    shipped_test = write_test_set(test, out, cfg.bundle.include_test_set, cfg.bundle.test_set_max_mb, ctx.work)
    if shipped_test:
        ctx.log(f"test inputs: the first {shipped_test} test examples, preprocessed")
    ort_parity = check_ort_format(out, test, cfg.bundle.ort_max_abs_diff, role == "student_int8",
                                  cfg.bundle.ort_min_top1_agreement)
    extra = ds.modality.bundle_files(inputs["dataset"], test, out / "model.onnx", out)
    steps = f" ({ort_parity['max_abs_diff_steps']:.1f} output quantization steps)" if ort_parity["max_abs_diff_steps"] else ""
    ctx.log(f"model.ort ({cfg.bundle.ort_target_platform}): max abs diff to model.onnx {ort_parity['max_abs_diff']:.1e}{steps}, "
            f"top-1 agreement {ort_parity['top1_agreement']:.2%}; test accuracy model.ort {ort_parity['accuracy']:.2f}%, "
            f"model.onnx {ort_parity['onnx_accuracy']:.2f}%")
    labels = read_json(inputs["dataset"] / "classes.json")
    (out / "labels.json").write_text(json.dumps({str(i): name for i, name in enumerate(labels)}, indent=2) + "\n")
    (out / "preprocess.json").write_text(json.dumps(pre, indent=2) + "\n")
    report = build_report(cfg.name, role, read_json(inputs["benchmark"] / "benchmark.json"), read_json(inputs["onnx"] / METRICS), quant)
    report["ort_format"] = dict(ort_parity, target_platform=cfg.bundle.ort_target_platform,
                                size_bytes=(out / "model.ort").stat().st_size)
    # the shipped model's accuracy in report["accuracy"] is model.onnx's (what bench.py and verify run);
    # model.ort's, the file ONNX Runtime Mobile runs, beside it: the gate takes the lower of the two
    report["accuracy"]["model_ort"] = ort_parity["accuracy"]
    if extra:
        report["input_files"] = extra
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "MODEL_CARD.md").write_text(model_card(report, labels, pre))
    online = report["distillation"].get("mode") == "online"
    histories = {"teacher (trained with the student)" if online else "teacher (finetune)": read_json(inputs["teacher"] / METRICS)["history"],
                 "student (distill, online)" if online else "student (distill)": read_json(inputs["student"] / METRICS)["history"]}
    alone = read_json(inputs["student_alone"] / METRICS)
    if alone["enabled"]:
        histories["student alone (baseline)"] = alone["history"]
    plot_tradeoffs(report, out / "tradeoffs.png")
    first = read_json(inputs["student"] / METRICS).get("losses", ["kd"])[0]  # kd, dist or ce; mutual_ online
    response = "" if first == "ce" else " + DIST" if first.endswith("dist") else " + KL"
    plot_training(histories, out / "training.png",
                  f"each model: CE{response} to the other" if online else f"distill: CE{response} to the teacher")
    write_html(report, out / "report.html", labels)
    return {k: report[k] for k in ("accuracy", "latency_ms", "size_bytes", "peak_rss_mb")}


STAGE = Stage(
    name="bundle", version=15, inputs=("dataset", "teacher", "student", "student_alone", "onnx", "quantized", "benchmark"),
    output="bundle",
    configure=lambda p: BundleStageConfig(bundle=p.bundle, name=p.name), run=run,
    headline=lambda m: f"{m['size_bytes'] / 1024:.0f} KiB, p90 {m['latency_ms']['p90']:.3f} ms",
)
