"""qat: quantization-aware training, when post-training quantization is not enough (quantize.qat).

The quantize stage tried the post-training recipes (its result: `ptq`). When none qualified but a static INT8
recipe was fast enough (qat auto; plan()), this stage fine-tunes the exported student for a few epochs with fake
quantization that emulates ONNX Runtime's static INT8 (edgedistill/quantization/fakequant.py), toward the FP32
student's own soft outputs: matching the FP32 model is what the quantize stage's drop and agreement measure.
Then the student is exported again and quantized by ONNX Runtime with the recipe it emulated, twice (the learned
ranges pinned; ranges recalibrated on the same images), so what ships is the graph ONNX Runtime runs fast, and
both are measured like every other candidate (validation accuracy and paired drop against the same FP32 model,
p90 latency where quantize.target says) and chosen by the same rule.

Its result `quantized` is what benchmark and bundle read. When QAT does not run: ptq's model and metrics as
they are, with the reason added. When it runs: the metrics are rebuilt with the QAT candidates beside the
post-training ones (FP32 timed again beside them, alternating; the post-training candidates' latencies are
from the quantize stage's run) and the model is the best of all. Under torchrun every process trains
(data-parallel); rank 0 exports, quantizes and measures.
"""
from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import onnx
import torch
from pydantic import Field, field_validator
from torch import nn

from edgedistill import models
from edgedistill.core.config import Strict
from edgedistill.core.distributed import from_rank0, world
from edgedistill.core.errors import ConfigError, StageError
from edgedistill.core.files import read_json
from edgedistill.core.registry import did_you_mean
from edgedistill.core.stage import Context, Stage
from edgedistill.core.store import METRICS
from edgedistill.data.dataset import Dataset
from edgedistill.quantization import fakequant, ort_quantize, placement
from edgedistill.quantization.recipes import QUANT_RECIPES, QuantizeConfig
from edgedistill.runtime.benchmark import BenchmarkConfig
from edgedistill.runtime.onnx_utils import check_loads, ort_predict
from edgedistill.runtime.stats import paired_drop
from edgedistill.stages import quantize
from edgedistill.stages.export import parity
from edgedistill.training.config import TrainConfig
from edgedistill.training.loop import fit, resolve_device
from edgedistill.training.losses import kd_loss

if TYPE_CHECKING:
    from edgedistill.pipeline import Pipeline


class QATConfig(TrainConfig):
    """Quantization-aware training (whether it runs: quantize.qat). The student is trained with fake
    quantization (edgedistill/quantization/fakequant.py: per-channel INT8 weights as ONNX Runtime stores them;
    activation ranges from min/max calibration on quantize's calibration images, then learned, or
    recalibrated every epoch) to match the FP32 student's soft outputs on the training split (labels not
    needed: unlabeled transfer images count), BatchNorm statistics frozen; then exported and quantized by
    ONNX Runtime with the recipe it emulated, and measured like every other candidate."""

    epochs: int = Field(2, ge=1)
    lr: float = Field(1e-4, gt=0)
    """Peak learning rate: a small step from the trained weights (about 1/10 of a fine-tuning's)."""
    warmup_epochs: float = Field(0.5, ge=0)
    """Without it AdamW's first step moves every weight by about lr: the 224-px MobileNetV2's loss went 0.06 -> 2.96
    and QAT lost 2.5 points where 0.5 epochs of warm-up gained 0.7 (benchmarks/RESULTS.md, QAT)."""
    precise_bn_batches: int = Field(0, ge=0, le=0)
    """Always 0: BatchNorm statistics frozen in QAT (as torchvision's QAT recipe): folded into the convolutions."""
    range_lr: float = Field(1e-4, gt=0)
    """Learning rate of the activation scales and zero points (learn_ranges), without weight decay.
    Absolute (AdamW): a step moves a scale by about this much whatever its size."""
    temperature: float = Field(1.0, gt=0)
    """Temperature of the soft outputs the quantized student matches (the FP32 student's)."""
    alpha: float = Field(1.0, ge=0, le=1)
    """Weight of matching the FP32 model; 1 - alpha goes to the cross-entropy on labels."""
    learn_ranges: bool = True
    """Learn the activation ranges with the weights (LSQ: a range one outlier stretched can shrink), and
    quantize twice after training: with the learned ranges pinned and with ranges recalibrated (both
    measured; the rule picks). False: recalibrate them every epoch, as ONNX Runtime would."""
    train_images: int | None = Field(None, ge=1)
    """Train on this many training images (a random subset drawn with the seed, the same every epoch);
    None: all of them. QAT starts from trained weights and needs far fewer images than training: on
    10^5-10^6 images, a few thousand keep its cost to minutes."""
    recipe: str | None = None
    """The quantization recipe emulated and applied after training (a static recipe with per-channel INT8
    weights). None: of the candidates min_speedup faster than FP32, the most accurate within NEAR_FASTEST of the
    fastest one's p90 (qat always, none that fast: the fastest); in fixed mode, quantize's own settings."""

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, v):
        if v is not None and v not in QUANT_RECIPES:
            raise ValueError(f"unknown recipe '{v}'{did_you_mean(v, QUANT_RECIPES.names())}")
        return v


NEAR_FASTEST = 1.25
"""QAT emulates the most accurate static recipe within this factor of the fastest one's p90 (room for one timing's
noise): it recovers accuracy, not speed. On x86 S8S8 runs ~1.8x slower than U8S8; RESULTS.md's 224-px MobileNetV2
(seed 1): QAT of U8S8 ended 1.07 pt above FP32 on validation at 1.89 ms, of S8S8 (1.7 pt ahead before) 0.13 below at 3.46."""

OUTPUT = quantize.OUTPUT
CANDIDATE = "qat_candidate.onnx"
"""The quantized QAT-trained student, in the result whenever QAT ran (student_quantized.onnx too when it is the best)."""


class QATStageConfig(Strict):
    mode: Literal["auto", "always", "never"]
    """quantize.qat."""
    qat: QATConfig
    quantize: QuantizeConfig
    """As the quantize stage resolved it (recipe set, reduce_range, target)."""
    latency: BenchmarkConfig
    seed: int
    horizontal_flip: bool = False


def configure(p: Pipeline) -> QATStageConfig:
    qc = quantize.configure(p)
    if p.qat.recipe and not fakequant.Emulation.supports(qc.quantize.with_recipe(p.qat.recipe)):
        raise ConfigError(f"qat.recipe '{p.qat.recipe}': quantization-aware training emulates static INT8 with "
                          f"per-channel INT8 weights (qdq_u8s8, qdq_s8s8, qoperator_u8s8, qdq_u8s8_no_elementwise...)")
    return QATStageConfig(mode=p.quantize.qat, qat=p.qat, quantize=qc.quantize, latency=qc.latency, seed=p.seed,
                          horizontal_flip=p.data.horizontal_flip)


def plan(cfg: QATStageConfig, ptq: dict) -> tuple[str | None, str | None]:
    """(why QAT does not run, None) or (None, the recipe it emulates), from the quantize stage's metrics."""
    q = cfg.quantize
    if cfg.mode == "never":
        return "quantize.qat is never", None
    if q.mode == "fixed":
        if cfg.mode == "auto":
            return "quantize.mode is fixed (quantized once, as given); quantize.qat: always trains for it", None
        return (None, "fixed") if fakequant.Emulation.supports(q) else (f"QAT emulates static INT8 with INT8 weights, not method {q.method}", None)
    fp32, tried = ptq["candidates"][0], [c for c in ptq["candidates"][1:] if c["error"] is None]
    if cfg.mode == "auto" and ptq["choice"] == "quantized":
        return f"post-training quantization is enough ({ptq['recipe']} ships)", None
    if cfg.qat.recipe:
        return None, cfg.qat.recipe
    static = [c for c in tried if c["name"] in QUANT_RECIPES and fakequant.Emulation.supports(q.with_recipe(c["name"]))]
    if not static:
        return (f"no static INT8 recipe with INT8 weights was tried ({', '.join(q.recipes)}); QAT emulates one "
                f"(set qat.recipe)"), None
    fast = [c for c in static if c["latency_ms_p90"] * q.min_speedup <= fp32["latency_ms_p90"]]
    if cfg.mode == "auto" and not fast:
        # QAT makes a recipe's graph more accurate, not faster (a candidate with nodes left in float may be
        # accurate enough but slow: the QAT graph has none in float)
        return (f"no static INT8 recipe was {q.min_speedup:g}x faster than FP32 here: QAT changes accuracy, "
                f"not speed"), None
    # QAT changes accuracy, not speed: the most accurate graph about as fast as the fastest, ties in recipe order (one
    # timing cannot rank near-equal graphs); none fast, qat always: the fastest
    near = [c for c in fast if c["latency_ms_p90"] <= NEAR_FASTEST * min(f["latency_ms_p90"] for f in fast)]
    return None, (max(near, key=lambda c: c["val_accuracy"]) if near else min(static, key=lambda c: c["latency_ms_p90"]))["name"]


class QATResult(NamedTuple):
    history: list[dict]
    """Per epoch: the loss and the validation accuracy of the fake-quantized model (PyTorch)."""
    final_epoch: int
    val_accuracy: float
    emulated: dict
    """What was fake-quantized: {"activations": quantizers (ONNX Runtime's scales), "tensors": ONNX tensors
    they cover, "weights": layers, "missed" and "missed_weights": quantized tensors and weighted nodes not
    found in PyTorch (left in float)}: placement.Placement.counts."""
    ranges: list[tuple[list[placement.Point], float, float]]
    """Each activation quantizer's points in the model and the float range it ended with (learned, or
    calibrated): what quantize_trained pins."""


def train_qat(model: nn.Module, ds: Dataset, size: int | None, calibration, q: QuantizeConfig, t: QATConfig, *,
              fp32: Path, seed: int, checkpoint: Path, horizontal_flip: bool = False, log=print, progress: bool = False) -> QATResult:
    """Quantization-aware training of model, in place: fake quantization where and as ONNX Runtime will
    apply q to its export `fp32` (placement.locate_quantized, fakequant.Emulation; ranges calibrated on
    `calibration`, a subset of the training split, then learned (t.learn_ranges, at t.range_lr) or
    recalibrated at the start of every epoch), BatchNorm statistics frozen, the loss t.alpha * T^2 * KL
    to the FP32 model's soft outputs (a frozen copy of model as it came in) + (1 - t.alpha) * CE on the
    labels, over the training images (t.train_images of them). Resumable from checkpoint (train.fit).
    Ends with the fake quantization removed: the trained float weights, for ONNX Runtime to quantize.
    ValueError when q is not static INT8, or ONNX Runtime quantizes nothing found in the model."""
    emulation = fakequant.Emulation.of(q, learn_ranges=t.learn_ranges)
    reference = copy.deepcopy(model).eval().requires_grad_(False)  # the FP32 model, the target
    try:  # rank 0 locates (ONNX Runtime quantizes the export once); every process trains with its plan
        plan = from_rank0(lambda: placement.locate_quantized(model, fp32, calibration, q, checkpoint.parent))
    except Exception as e:
        raise StageError(f"could not find where ONNX Runtime quantizes the student ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else ''})") from e
    emulating = fakequant.attach(model, emulation, plan)
    emulated = plan.counts()
    missed = len(plan.missed) + len(plan.missed_weights)
    log(f"fake quantization where ONNX Runtime quantizes: {emulated['tensors']} tensors ({emulated['activations']} "
        f"scales, {emulation.activation_type}, {'learned' if t.learn_ranges else 'calibrated'} ranges) and "
        f"{emulated['weights']} layers' weights ({'7' if emulation.reduce_range else '8'}-bit)"
        f"{f'; {missed} quantized tensors or weights not found in PyTorch stay in float' if missed else ''}; "
        f"target: the FP32 model's outputs")
    device = resolve_device(t.device)
    reference.to(device)
    norms = tuple(m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))

    def epoch_start(epoch: int) -> tuple[nn.Module, ...]:
        # calibrated ranges: those ONNX Runtime would compute for the current weights; learned ones start
        # from calibration (a resumed run has them from its checkpoint). BatchNorm statistics frozen.
        if epoch == 0 or not t.learn_ranges:
            batches = (torch.from_numpy(calibration.inputs(slice(i, i + t.batch_size)))
                       for i in range(0, len(calibration), t.batch_size))
            fakequant.calibrate(emulating, batches, device)
        fakequant.settle(emulating)
        return norms

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = reference(x)
        return kd_loss(logits, target, y, t.temperature, t.alpha, t.label_smoothing)

    # training images with or without labels: the target is the FP32 model's output
    n = len(ds.splits["train"][1])
    rows = np.arange(n) if t.train_images is None else np.sort(np.random.default_rng(seed).permutation(n)[:t.train_images])
    batches = ds.modality.batches(ds, t, rows=rows, seed=seed, size=size, teacher_size=None,
                                  horizontal_flip=horizontal_flip)
    val = ds.split("val", size)
    ranges = {id(p) for p in fakequant.range_parameters(emulating)}
    groups = [{"params": [p for p in emulating.parameters() if id(p) not in ranges], "lr": t.lr},
              {"params": fakequant.range_parameters(emulating), "lr": t.range_lr, "weight_decay": 0.0}]
    result = fit(emulating, batches, (val, val.labels), cfg=t, param_groups=[g for g in groups if g["params"]],
                 loss_fn=loss_fn, seed=seed, checkpoint=checkpoint, desc="qat", epoch_start=epoch_start, progress=progress)
    trained = fakequant.ranges(emulating, plan)
    fakequant.detach(emulating)
    return QATResult(result.history, result.final_epoch, result.val_accuracy, emulated, trained)


def quantize_trained(model: nn.Module, ds: Dataset, calibration, test, q: QuantizeConfig, opset: int, recalibrated: Path,
                     pinned: Path | None, ranges: list[tuple[list[placement.Point], float, float]], work: Path, log=print) -> dict:
    """A QAT-trained model exported to ONNX (work/qat_fp32.onnx) and quantized by ONNX Runtime as q says
    twice: into `recalibrated` with ranges from ONNX Runtime's calibration on `calibration`, and into
    `pinned` (unless None) with the ranges training ended with (QATResult.ranges) pinned through
    TensorQuantOverrides, on the tensors ONNX Runtime quantized in `recalibrated` that are found at the
    same points of the model (placement.locate; the others calibrated). Returns the export's parity
    against PyTorch on 64 test examples and how many tensors' ranges were pinned."""
    from edgedistill.quantization import nncf_ptq
    from edgedistill.runtime.onnx_utils import range_overrides

    float_path = work / "qat_fp32.onnx"
    ds.modality.export(model, test.inputs(slice(0, 2)), float_path, opset, log=log)  # two rows: a dynamic batch
    check_loads(float_path, "the exported QAT model")
    info = {"export_parity": parity(model, float_path, test.subset(slice(0, 64)))}
    names = ort_quantize.model_inputs(float_path)
    reader = lambda: ort_quantize.split_reader(calibration, names)
    source = ort_quantize.prepare_source(float_path, q, reader, work, log)
    ort_quantize.quantize_model(source, recalibrated, q, reader)
    if pinned is None:
        return info
    pins: dict[str, tuple[float, float]] = {}
    try:
        located = (placement.locate(model, source, recalibrated, calibration.subset(slice(0, 8))) if q.format == "qdq"
                   else placement.locate_quantized(model, float_path, calibration, q, work))  # QOperator's hides its Q/DQ
        for key, points in located.activations.items():
            # the trained quantizers at these points (one, unless the new export shares a scale the
            # first did not): ONNX Runtime quantizes the tensors with one range, their union
            trained = [(lo, hi) for ps, lo, hi in ranges if set(ps) & set(points)]
            if trained:
                union = (min(lo for lo, _ in trained), max(hi for _, hi in trained))
                pins.update((tensor, union) for tensor in located.tensors[key])  # one scale in ONNX Runtime
        ranges_by_name = nncf_ptq.with_folded_inputs(onnx.load(str(source)).graph, pins, through=nncf_ptq.FOLDED)
        ort_quantize.quantize_model(source, pinned, q, reader, overrides=range_overrides(ranges_by_name))
    except Exception as e:  # the recalibrated candidate still stands; this one is recorded as failed
        info["pinned_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        log(f"pinning the learned ranges failed ({info['pinned_error']})")
        return info
    info["pinned_tensors"] = len(pins)
    log(f"learned ranges pinned on {len(pins)} of the {located.counts()['tensors'] + len(located.missed)} "
        f"tensors ONNX Runtime quantizes")
    return info


def same_graph(q: QuantizeConfig, ptq: dict, recipe: str) -> bool:
    """Whether the post-training choice is the graph QAT's model is quantized into (same recipe, no node
    left in float), so the two run at the same speed."""
    return q.mode == "fixed" or (ptq["recipe"] == recipe and not ptq["excluded_nodes"])


def decide(q: QuantizeConfig, fp32: quantize.Candidate, qat: quantize.Candidate, ptq: quantize.Candidate | None,
           same: bool) -> tuple[bool, str]:
    """Whether the QAT candidate ships instead of what post-training quantization chose (ptq; None:
    FP32), and why. The quantize rule throughout: where post-training kept FP32, QAT must pass it
    (within max_accuracy_drop, min_speedup faster); against a post-training model of the same graph
    (same speed), the more accurate on validation ships; against another graph (qat: always), QAT
    ships only if it is within the tolerance and min_speedup faster (a smaller difference is noise),
    timed in the same minutes (a few validation images more do not buy a slower or larger model)."""
    if ptq is None:
        chosen, reason = quantize.choose(fp32, [qat], q.max_accuracy_drop, q.min_speedup)
        return chosen is not None, reason
    if same:
        if qat.val_accuracy > ptq.val_accuracy:
            return True, f"{qat.name} is more accurate on validation than the post-training model (the same graph)"
        return False, f"{qat.name} was not more accurate on validation than the post-training model (the same graph)"
    if not quantize.within_tolerance(fp32, qat, q.max_accuracy_drop):
        return False, f"{qat.name} is not within {q.max_accuracy_drop:g} pt of FP32 ({quantize.describe_drop(qat.val_drop)})"
    # faster by min_speedup, as between the quantize stage's candidates: a smaller difference is noise
    if quantize.first_unless_faster([ptq, qat], q.min_speedup) is qat:
        return True, (f"{qat.name} is within the tolerance and faster than {ptq.name}, the post-training choice "
                      f"(p90 {qat.latency_ms_p90:.3f} vs {ptq.latency_ms_p90:.3f} ms)")
    return False, (f"{qat.name} is not {q.min_speedup:g}x faster than {ptq.name}, the post-training choice (p90 "
                   f"{qat.latency_ms_p90:.3f} vs {ptq.latency_ms_p90:.3f} ms, timed together)")


def run(cfg: QATStageConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    ptq = read_json(inputs["ptq"] / METRICS)
    rank, _ = world()
    why_not, recipe = plan(cfg, ptq)
    if why_not:
        ctx.log(f"not run: {why_not}")
        shutil.copy2(inputs["ptq"] / OUTPUT, out / OUTPUT)
        return dict(ptq, qat={"ran": False, "reason": why_not})

    q = cfg.quantize
    rq = (q if recipe == "fixed" else q.with_recipe(recipe)).model_copy(update={"calibrate_method": "minmax"})
    ds = Dataset.load(inputs["dataset"])
    export = read_json(inputs["onnx"] / METRICS)
    folder = inputs["student_alone" if export["student"]["shipped"] == "alone" else "student"]
    size = models.input_size(folder, ds.size)
    model = models.load_trained(folder)
    train = ds.split("train", size)
    calibration = train.subset(ort_quantize.calibration_rows(len(train), q.calibration_samples, cfg.seed))
    result = train_qat(model, ds, size, calibration, rq, cfg.qat, fp32=inputs["onnx"] / "student.onnx", seed=cfg.seed,
                       checkpoint=ctx.work / "checkpoint.pt",
                       horizontal_flip=cfg.horizontal_flip, log=ctx.log, progress=ctx.progress)
    if rank > 0:  # rank 0 exports, quantizes and measures
        return {}
    val, test = ds.split("val", size), ds.split("test", size)
    origin = (f"ONNX Runtime quantize_static of the QAT-trained student ({cfg.qat.epochs} epochs, torch.ao fake "
              f"quantization emulating {recipe}){', 7-bit weights' if rq.reduce_range is True else ''}")
    ours = [quantize.Candidate(f"qat_{recipe}", path=ctx.work / f"qat_{recipe}.onnx",
                               graph_from=f"{origin}, ranges recalibrated (minmax)")]
    if cfg.qat.learn_ranges:
        ours.append(quantize.Candidate(f"qat_{recipe}_pinned", path=ctx.work / f"qat_{recipe}_pinned.onnx",
                                       graph_from=f"{origin}, its learned ranges pinned"))
    info = quantize_trained(model, ds, calibration, test, rq, export["opset"], ours[0].path,
                            ours[1].path if len(ours) > 1 else None, result.ranges, ctx.work, ctx.log)
    p90, latency_from = quantize.latency_meter(q, cfg.latency)
    fp32 = quantize.measure(quantize.Candidate("fp32", path=inputs["onnx"] / "student.onnx"), (val, val.labels), None, p90, cfg.seed)
    if "pinned_error" in info:
        ours[1].error = info["pinned_error"]
    for c in ours:
        if c.error is None:
            quantize.measure(c, (val, val.labels), fp32.preds, p90, cfg.seed)
            ctx.log(quantize.measured_line(c))

    # the post-training candidates as measured by the quantize stage, and QAT's. The two QAT graphs are
    # the same graph with other ranges: the more accurate one stands for QAT (not the one that timed faster)
    tried = [quantize.Candidate(**c) for c in ptq["candidates"][1:]] + ours
    qat = max((c for c in ours if c.error is None), key=lambda c: c.val_accuracy)
    ptq_chosen = next((c for c in tried if ptq["choice"] == "quantized" and c.name == ptq["recipe"]), None)
    same = same_graph(q, ptq, recipe)
    if ptq_chosen is not None and not same:  # its speed from these minutes, as FP32's and QAT's
        ptq_chosen = quantize.measure(dataclasses.replace(ptq_chosen, path=inputs["ptq"] / OUTPUT), (val, val.labels), fp32.preds, p90, cfg.seed)
        ctx.log(f"{quantize.measured_line(ptq_chosen)} (the post-training choice, timed again beside QAT's)")
    quantize.retime([fp32, *(c for c in ours if c.error is None)] + ([ptq_chosen] if ptq_chosen and not same else []),
                    p90, q.latency_rounds, ctx.log)  # FP32 and these in the same minutes, alternating (speed rule)
    qat_ok, qat_reason = decide(q, fp32, qat, ptq_chosen, same)
    chosen, reason = (qat, qat_reason) if qat_ok else (ptq_chosen, f"{ptq['reason']}; after QAT: {qat_reason}")
    best_ptq = next(c for c in tried if c.name == ptq["recipe"])
    best = chosen or (qat if qat.val_accuracy > best_ptq.val_accuracy else best_ptq)
    ctx.log(f"ships {'FP32: ' if chosen is None else ''}{reason}")
    sel = quantize.Selection(fp32, tried, chosen, reason, best, latency_from)
    metrics = sel.metrics(q.mode, ptq["calibration_samples"], q.max_accuracy_drop)
    shutil.copy2(qat.path, out / CANDIDATE)  # kept, shipped or not: the better of what QAT made is part of the record
    if best is qat:
        shutil.copy2(qat.path, out / OUTPUT)
        metrics["test_drop"] = paired_drop(test.labels, ort_predict(fp32.path, test).argmax(axis=1),
                                           ort_predict(qat.path, test).argmax(axis=1), seed=cfg.seed)
        ctx.log(f"on test, once: {qat.name} {quantize.describe_drop(metrics['test_drop'])}")
    else:
        shutil.copy2(inputs["ptq"] / OUTPUT, out / OUTPUT)
        metrics["test_drop"] = ptq["test_drop"]
    metrics["qat"] = {"ran": True, "recipe": recipe, "candidate": qat.name, "shipped": chosen is qat,
                      "reason": qat_reason, "emulated": result.emulated, "history": result.history,
                      "final_epoch": result.final_epoch, "val_accuracy_fake_quant": result.val_accuracy, **info}
    return metrics


def headline(m: dict) -> str:
    if not m["qat"]["ran"]:
        return f"not run: {m['qat']['reason']}"
    c = next(c for c in m["candidates"] if c["name"] == m["qat"]["candidate"])
    return (f"{c['name']} val acc {c['val_accuracy']:.2f}% (drop {c['val_drop']['drop']:.2f}); "
            f"ships {'FP32' if m['choice'] == 'fp32' else m['recipe']}")


STAGE = Stage(
    name="qat", version=7, inputs=("dataset", "onnx", "ptq", "student", "student_alone"), output="quantized",
    configure=configure, run=run, distributed=True, headline=headline,
    key_exclude={"qat": {"device", "channels_last", "compile", "workers"}, "latency": {"rounds"}},
)
