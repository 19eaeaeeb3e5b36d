"""quantize: ONNX Runtime post-training quantization of the student that never ships a worse model.

mode auto (default): every recipe in quantize.recipes is applied and measured (validation accuracy
with ONNX Runtime, p90 latency at batch 1 with the benchmark's threads, in a child process). Each
candidate's accuracy drop against FP32 is paired (the same images) and comes with a 95% bootstrap
interval and its top-1 agreement with FP32 (edgedistill.runtime.stats). The rule: a candidate is within
tolerance when the upper end of that interval is at most max_accuracy_drop. Of the candidates
within tolerance that are at least min_speedup faster than FP32, the first in quantize.recipes' order
is chosen unless a later one is min_speedup faster than the one kept so far (closer timings are
noise). If no recipe is accurate enough, the most accurate static QDQ recipe fast enough to ship is
calibrated again with other methods (retry_calibration, none by default), then the nodes that add the
most quantization error are left in float, a few at a time, until one is (mixed precision); that search
stops when search_budget_s is spent.
If nothing qualifies, FP32 ships, and the metrics say why. Every candidate tried goes into the metrics
(and from there into the bundle's report), with where its graph and numbers came from (ONNX Runtime's
calibration, or NNCF's carried into ONNX Runtime's layout: edgedistill/quantization/nncf_ptq.py). On x86 CPUs
without VNNI weights are quantized to 7 bits (reduce_range auto: 8-bit ones saturate there).

mode fixed: the configured quantization, applied once.

Why one module: auto mode's search (measure each recipe, choose, calibrate again, leave nodes in float)
reads top to bottom here; the ONNX Runtime calls it makes are in quantization/ort_quantize.py.

Calibration images come from the training split and are streamed to ONNX Runtime in batches. The
test split is looked at once, after the choice: the drop of the quantized model in the result (the
one that ships unless FP32 does) on it, with its interval, is `test_drop` (quantization.test_drop in
the bundle's report when it ships, gated by max_quantization_drop).

Its result is `ptq`; the qat stage (stages/qat.py) reads it, adds quantization-aware training where
post-training is not enough, and writes `quantized`, which benchmark and bundle read.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from onnxruntime.quantization import CalibrationDataReader
from tqdm.auto import tqdm

from edgedistill.core.config import Strict
from edgedistill.core.errors import ConfigError, StageError
from edgedistill.core.stage import Context, Stage
from edgedistill.data.dataset import Dataset, read_preprocess
from edgedistill.quantization.ort_quantize import (
    NNCF_CORRECTED,
    calibration_rows,
    carry_nncf,
    host_saturates_u8s8,
    model_inputs,
    prepare_source,
    quantize_model,
    rank_nodes_by_error,
    recipe_configs,
    resolve_reduce_range,
    split_reader,
    uses_calibration,
)
from edgedistill.quantization.recipes import RECIPE_SETS, QuantizeConfig
from edgedistill.runtime.benchmark import BenchmarkConfig, alternating_timings, bench_in_child, rounds_line
from edgedistill.runtime.onnx_utils import ort_predict
from edgedistill.runtime.ortbench import model_size
from edgedistill.runtime.stats import LEVEL, paired_drop, resolution

RULE = (f"within tolerance: the upper end of the {LEVEL:.0%} bootstrap interval of the validation accuracy drop "
        f"against FP32 (paired, same examples) is at most max_accuracy_drop")
OUTPUT = "student_quantized.onnx"


class QuantizeStageConfig(Strict):
    quantize: QuantizeConfig
    latency: BenchmarkConfig
    """How candidates are timed: the benchmark's threads and graph optimization, quantize.latency_runs."""
    seed: int
    """Chooses which training images calibrate."""
    nncf: str | None = None
    """NNCF's version when a recipe takes its ranges from NNCF (the cache key follows it), else None."""


@dataclass
class Candidate:
    """One configuration tried, with what was measured on it."""

    name: str
    val_accuracy: float | None = None
    latency_ms_p90: float | None = None
    """p90 latency at batch 1 (ms): the median of latency_rounds_ms."""
    latency_rounds_ms: list[float] = field(default_factory=list)
    """Each timing's p90 (ms), in the order taken (retime: alternating with the other models)."""
    size_bytes: int | None = None
    excluded_nodes: list[str] = field(default_factory=list)
    error: str | None = None
    val_drop: dict | None = None
    """Paired drop against FP32 on validation, its interval and agreement (stats.paired_drop)."""
    path: Path | None = None
    preds: np.ndarray | None = None
    """Predicted class of every validation image."""
    graph_from: str = "the exported model"
    """Which tool wrote the candidate's graph and where its numbers came from (graph_from())."""

    def report(self) -> dict:
        d = asdict(self)
        d.pop("path")
        d.pop("preds")
        return d


def graph_from(q: QuantizeConfig) -> str:
    """Where a candidate's graph and numbers come from, for the report."""
    from edgedistill.quantization import nncf_ptq

    bits = ", 7-bit weights" if q.reduce_range is True else ""
    if q.method == "dynamic":
        return f"ONNX Runtime quantize_dynamic{bits}"
    if q.method == "fp16":
        return "onnxruntime.transformers float16 conversion"
    if q.ranges == "nncf":
        return f"{nncf_ptq.PROVENANCE} (nncf {nncf_ptq.version()}){bits}"
    return f"ONNX Runtime quantize_static, {q.calibrate_method} calibration{bits}"


def within_tolerance(fp32: Candidate, c: Candidate, max_drop: float) -> bool:
    """The rule (RULE): the upper end of the candidate's drop interval within max_drop."""
    return c.error is None and c.val_drop["ci_high"] <= max_drop + 1e-9


def describe_drop(d: dict) -> str:
    return (f"{d['drop']:.2f} pt below FP32 ({d['level']:.0%} interval {d['ci_low']:.2f} to {d['ci_high']:.2f}, "
            f"{d['images']} examples), top-1 agreement {d['agreement']:.1f}%")


def choose(fp32: Candidate, tried: list[Candidate], max_drop: float, min_speedup: float) -> tuple[Candidate | None, str]:
    """Of the candidates within max_drop points of FP32 and at least min_speedup faster than FP32, the
    first in `tried`'s order (quantize.recipes', then the search's), replaced by each later one that is
    min_speedup faster than the one kept so far (first_unless_faster), with the reason; (None, why) when
    FP32 should ship. Not simply the fastest: on the quickstart's 0.06-ms student five recipes time within 5% of each other, and
    the fastest of them changed from run to run with the same inputs."""
    ok = [c for c in tried if within_tolerance(fp32, c, max_drop)]
    if not ok:
        measured = [c for c in tried if c.error is None]
        best = max(measured, key=lambda c: c.val_accuracy, default=None)
        detail = f" (best: {best.name}, {describe_drop(best.val_drop)})" if best else ""
        return None, (f"no quantized configuration kept validation accuracy within {max_drop:g} pt of FP32 at the upper end of "
                      f"its {LEVEL:.0%} interval{detail}")
    fast = [c for c in ok if c.latency_ms_p90 * min_speedup <= fp32.latency_ms_p90]
    if not fast:
        best = min(ok, key=lambda c: c.latency_ms_p90)
        return None, (f"no accurate-enough quantized configuration was at least {min_speedup:g}x faster than FP32 "
                      f"(best: {best.name}, {fp32.latency_ms_p90 / best.latency_ms_p90:.2f}x)")
    best = first_unless_faster(fast, min_speedup)
    return best, (f"{best.name}: {describe_drop(best.val_drop)}; limit {max_drop:g} on the interval's upper end; "
                  f"p90 {best.latency_ms_p90:.3f} ms vs {fp32.latency_ms_p90:.3f} ms "
                  f"({fp32.latency_ms_p90 / best.latency_ms_p90:.2f}x faster)")


@dataclass
class Selection:
    """What quantization chose and everything it tried."""

    fp32: Candidate
    tried: list[Candidate]
    chosen: Candidate | None
    """None: FP32 should ship."""
    reason: str
    best: Candidate
    """The chosen candidate, or (FP32 chosen) the most accurate quantized one, for the report."""
    latency_from: str = "this machine"
    """Where the candidates' latencies were measured."""

    def metrics(self, mode: str, calibration_samples: int, max_drop: float) -> dict:
        res = resolution(self.best.val_drop, max_drop)
        return {
            "mode": mode,
            "choice": "fp32" if self.chosen is None else "quantized",
            "recipe": self.best.name,
            "excluded_nodes": self.best.excluded_nodes,
            "reason": self.reason,
            "rule": RULE,
            "val_drop": self.best.val_drop,
            "val_resolution": dict(res, note=None if res["resolved"] else (
                f"validation ({res['images']} examples) cannot resolve a {max_drop:g}-point tolerance: the interval is "
                f"+-{res['half_width']:.2f} points; about {res['images_needed']:,} examples would be needed"
                if res["images_needed"] else "a tolerance of 0 points cannot be resolved with any number of images")),
            "candidates": [c.report() for c in [self.fp32, *self.tried]],
            "latency_from": self.latency_from,
            "val_accuracy_fp32": self.fp32.val_accuracy,
            "val_accuracy_int8": self.best.val_accuracy,
            "size_bytes_fp32": self.fp32.size_bytes,
            "size_bytes_int8": self.best.size_bytes,
            "calibration_samples": calibration_samples,
        }


def select(fp32_path: Path, q: QuantizeConfig, latency: BenchmarkConfig, calibration: Callable[[], CalibrationDataReader],
           rank_calibration: Callable[[], CalibrationDataReader], val: tuple[Any, np.ndarray], work: Path,
           log: Callable[[str], None] = lambda m: None, progress: bool = False, seed: int = 0,
           timing_inputs: Path | None = None) -> Selection:
    """Quantize fp32_path as q says (mode fixed: once; auto: every recipe, then mixed precision if
    needed) and decide what should ship. Candidate models are written to work/. timing_inputs: an
    .npy (or .npz by input name) the candidates are timed on instead of made-up inputs (a model with
    dynamic height and width). DataError when the validation or calibration data do not fit the model."""
    q = resolve_reduce_range(q)
    if q.reduce_range and any(c.method != "fp16" for c in recipe_configs(q).values()):
        log("weights quantized to 7 bits (quantize.reduce_range)"
            + (": this x86 CPU has no VNNI, and ONNX Runtime's U8S8 kernels saturate with 8-bit weights on it"
               if q.target == "host" and host_saturates_u8s8() else ""))
    p90, latency_from = latency_meter(q, latency, timing_inputs)
    log(f"candidates are timed on {latency_from}"
        + (f", at {latency.sequence_length} tokens" if latency.sequence_length else ""))
    if uses_calibration(q):
        calibration().get_next()  # calibration data that does not fit the model is named before anything runs

    carried: dict = {}

    def nncf_source() -> tuple[Path, dict]:
        """NNCF runs once for all the recipes that take its numbers."""
        if not carried:
            carried["source"] = carry_nncf(source, calibration, work, log, progress)
        return carried["source"]

    def attempt(name: str, qc: QuantizeConfig | None, exclude: list[str] = ()) -> Candidate:
        """Quantize (unless qc is None: FP32 itself) and measure; a failure is recorded, not raised."""
        c = Candidate(name, excluded_nodes=list(exclude), path=fp32_path if qc is None else work / f"{name}.onnx")
        try:
            if qc is not None:
                c.graph_from = graph_from(qc)
                src, overrides = nncf_source() if qc.method == "static" and qc.ranges == "nncf" else (source, None)
                quantize_model(src, c.path, qc, calibration, exclude, overrides)
            measure(c, val, None if qc is None else fp32.preds, p90, seed)
        except Exception as e:  # a recipe ONNX Runtime cannot apply or run here is a result, not a crash
            if qc is None:
                raise
            c.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            log(f"{name}: failed ({c.error})")
            return c
        log(measured_line(c))
        return c

    fp32 = attempt("fp32", None)  # validation data that does not fit the model fails here, naming both shapes
    source = prepare_source(fp32_path, q, calibration, work, log)
    configs = recipe_configs(q)
    from edgedistill.quantization import nncf_ptq

    if q.mode == "auto" and not nncf_ptq.available() and any(c.ranges == "nncf" for c in configs.values()):
        skipped = [name for name, c in configs.items() if c.ranges == "nncf"]
        log(f"skipped {', '.join(skipped)}: nncf is not installed (pip install 'edgedistill[nncf]')")
        configs = {name: c for name, c in configs.items() if name not in skipped}
        if not configs:
            raise ConfigError("every recipe in quantize.recipes needs nncf: pip install 'edgedistill[nncf]', or list "
                              "recipes without _nncf")
    tried = [attempt(name, qc) for name, qc in tqdm(configs.items(), desc="quantize", disable=not progress, leave=False)]
    if q.mode == "fixed":
        if tried[0].error:
            raise StageError(f"quantization failed: {tried[0].error}")
        chosen, reason = tried[0], "quantize.mode is fixed"
    else:
        chosen, reason = choose(fp32, tried, q.max_accuracy_drop, q.min_speedup)
        if chosen is None:
            chosen, reason = search(fp32, tried, configs, q, attempt, source, rank_calibration, work, log, p90)
        chosen, reason = confirm_speed(fp32, tried, q, p90, log, chosen, reason)
    log(f"ships {'FP32: ' if chosen is None else ''}{reason}")
    measured = [c for c in tried if c.error is None]
    best = chosen or max(measured, key=lambda c: (c.val_accuracy, -c.latency_ms_p90), default=None)
    if best is None:
        raise StageError("no quantization recipe could be applied here; see the errors above")
    return Selection(fp32, tried, chosen, reason, best, latency_from)


def measure(c: Candidate, val: tuple[Any, np.ndarray], reference: np.ndarray | None, p90: Callable[[Path], float],
            seed: int = 0) -> Candidate:
    """Fill in c's validation accuracy (%), its paired drop against `reference` (FP32's predicted
    classes; None: c is FP32 itself), its p90 latency (ms, from p90(path)) and its size (bytes)."""
    x_val, y_val = val
    c.preds = ort_predict(c.path, x_val, what="the validation data").argmax(axis=1)
    c.val_accuracy = float((c.preds == np.asarray(y_val)).mean() * 100.0)
    c.val_drop = None if reference is None else paired_drop(y_val, reference, c.preds, seed=seed)
    c.latency_ms_p90 = p90(c.path)
    c.latency_rounds_ms = [c.latency_ms_p90]
    c.size_bytes = model_size(str(c.path))
    return c


SEARCH_STOPPED = "; the search stopped"
RETIME_WITHIN = 1.5
"""confirm_speed times again the candidates within tolerance whose first p90 is at most this many times FP32's."""


def retime(models: list[Candidate], p90: Callable[[Path], float], rounds: int,
           log: Callable[[str], None] = lambda m: None) -> None:
    """Time each of `models` again until it has `rounds` timings (one already taken counts), the models
    alternating (runtime.benchmark.alternating_timings); each one's latency_ms_p90 becomes the median of its
    rounds: a drift in the machine's load hits every model alike instead of the one timed during it."""
    timings = alternating_timings({i: c.path for i, c in enumerate(models)}, p90, rounds,
                                  {i: c.latency_rounds_ms or [c.latency_ms_p90] for i, c in enumerate(models)})
    for i, c in enumerate(models):
        c.latency_rounds_ms = timings[i]
        c.latency_ms_p90 = float(np.median(c.latency_rounds_ms))
    if rounds > 1:
        log(f"timed again, {rounds} alternating rounds (median p90, range): "
            + rounds_line({c.name: c.latency_rounds_ms for c in models}))


def confirm_speed(fp32: Candidate, tried: list[Candidate], q: QuantizeConfig, p90: Callable[[Path], float],
                  log: Callable[[str], None], chosen: Candidate | None, reason: str) -> tuple[Candidate | None, str]:
    """Auto mode's speed rule on alternated timings: FP32 and the candidates within tolerance that are
    not far slower than it (RETIME_WITHIN) are timed quantize.latency_rounds times in all (retime) and
    choose() decides again on the medians. (chosen, reason) unchanged when no candidate is within
    tolerance (accuracy decided) or latency_rounds is 1."""
    ok = [c for c in tried if within_tolerance(fp32, c, q.max_accuracy_drop)
          and c.latency_ms_p90 <= RETIME_WITHIN * fp32.latency_ms_p90]
    if q.latency_rounds <= 1 or not ok:
        return chosen, reason
    retime([fp32, *ok], p90, q.latency_rounds, log)
    stopped = reason[reason.index(SEARCH_STOPPED):] if SEARCH_STOPPED in reason else ""  # the search's note stays
    # among the retimed only: one timing of another against FP32's median would mix the two ways of timing
    chosen, reason = choose(fp32, ok, q.max_accuracy_drop, q.min_speedup)
    return chosen, reason + stopped


def measured_line(c: Candidate) -> str:
    d = c.val_drop
    drop = "" if d is None else f" (drop {d['drop']:.2f} [{d['ci_low']:.2f}, {d['ci_high']:.2f}])"
    return (f"{c.name}: val accuracy {c.val_accuracy:.2f}%{drop}, p90 {c.latency_ms_p90:.3f} ms, {c.size_bytes / 1024:.0f} KiB"
            + (f", {len(c.excluded_nodes)} node(s) in float" if c.excluded_nodes else ""))


def latency_meter(q: QuantizeConfig, latency: BenchmarkConfig, inputs: Path | None = None) -> tuple[Callable[[Path], float], str]:
    """p90 latency of a candidate model where quantize.target says (on `inputs` when given, else on
    made-up ones), and a line naming where."""
    from edgedistill.runtime import ortbench
    from edgedistill.runtime.remote import bench_over_ssh

    if q.target == "host":
        return ((lambda path: bench_in_child(path, latency, inputs=inputs)["latency_ms"]["p90"]),
                f"this machine ({ortbench.cpu_info()[0]})")

    def over_ssh(path: Path) -> float:
        with tempfile.TemporaryDirectory() as tmp:  # a one-model bundle: what bench_over_ssh copies
            shutil.copy2(path, Path(tmp) / "model.onnx")
            shutil.copy2(ortbench.__file__, Path(tmp) / "bench.py")
            return bench_over_ssh(Path(tmp), q.target, latency, remote_python=q.target_python)["latency_ms"]["p90"]

    return over_ssh, f"{q.target} (bench.py over SSH)"


def first_unless_faster(ranked: list, min_speedup: float, p90: Callable[[Any], float] = lambda c: c.latency_ms_p90):
    """The first of `ranked` (candidates, in quantize.recipes' order; p90 gives an item's latency when
    items are not Candidates), replaced by each later one that is min_speedup faster than the one picked
    so far: between equals, a difference smaller than the speed rule's own margin decides nothing."""
    best = ranked[0]
    for item in ranked[1:]:
        if p90(item) * min_speedup <= p90(best):
            best = item
    return best


def search(fp32: Candidate, tried: list[Candidate], configs: dict[str, QuantizeConfig], q: QuantizeConfig,
           attempt: Callable[..., Candidate], source: Path, rank_calibration: Callable[[], CalibrationDataReader],
           work: Path, log: Callable[[str], None], p90: Callable[[Path], float]) -> tuple[Candidate | None, str]:
    """Auto mode's search when no recipe qualified and none is accurate enough: the most accurate static
    QDQ recipe that is min_speedup faster than FP32 (else the fastest one) calibrated again with each of
    quantize.retry_calibration, then the nodes that add the most
    quantization error left in float (1, 2, 4... of them) on the most accurate of those, within
    quantize.search_budget_s. Appends what it tries to `tried`; returns choose()'s answer."""
    chosen, reason = choose(fp32, tried, q.max_accuracy_drop, q.min_speedup)
    qdq = [(c, name) for c, name in zip(tried, configs) if c.error is None
           and configs[name].method == "static" and configs[name].format == "qdq"]
    if any(within_tolerance(fp32, c, q.max_accuracy_drop) for c in tried) or not qdq:
        return chosen, reason  # accurate enough but too slow (more float nodes would not help), or nothing to refine
    deadline = time.monotonic() + q.search_budget_s
    out_of_time = f"{SEARCH_STOPPED} when its {q.search_budget_s:g}-s budget (quantize.search_budget_s) ran out"
    # the start: the most accurate static QDQ candidate fast enough to ship (else the fastest). Not
    # simply the fastest: on a MobileNetV2 at 224 px a per-tensor recipe 30 points down timed 0.4 ms
    # (noise) faster than the per-channel ones, and the search then started from it. Equally accurate
    # candidates (qdq_u8s8 and qdq_u8s8_no_elementwise on the 224-px MobileNetV2 linear probe, every
    # seed) are timed again, alternating, and taken in quantize.recipes' order unless one is min_speedup
    # faster: a tie broken by one timing made that model's search start from either on two runs, and
    # ship INT8 once, FP32 once
    fast = [t for t in qdq if t[0].latency_ms_p90 * q.min_speedup <= fp32.latency_ms_p90]
    if fast:
        top = max(t[0].val_accuracy for t in fast)
        tied = [t for t in fast if t[0].val_accuracy == top]
        if len(tied) > 1:
            retime([t[0] for t in tied], p90, q.latency_rounds, log)
        base, base_name = first_unless_faster(tied, q.min_speedup, p90=lambda t: t[0].latency_ms_p90)
    else:
        base, base_name = min(qdq, key=lambda t: t[0].latency_ms_p90)
    family = [(base, configs[base_name])]
    # NNCF's ranges replace ONNX Runtime's calibrator: calibrating such a base again would change nothing
    retry = [] if configs[base_name].ranges == "nncf" else q.retry_calibration
    for method in retry:
        if method == configs[base_name].calibrate_method:
            continue
        if time.monotonic() >= deadline:
            return chosen, reason + out_of_time
        qc = configs[base_name].model_copy(update={"calibrate_method": method})
        family.append((attempt(f"{base_name}_{method}", qc), qc))
        tried.append(family[-1][0])
        chosen, reason = choose(fp32, tried, q.max_accuracy_drop, q.min_speedup)
        if chosen is not None:
            return chosen, reason
    if q.max_excluded_nodes == 0:
        return chosen, reason
    base, base_qc = max((t for t in family if t[0].error is None), key=lambda t: t[0].val_accuracy)
    # against the float model the base was quantized from (NNCF's bias-corrected one for an nncf base)
    float_model = work / NNCF_CORRECTED if base_qc.ranges == "nncf" and (work / NNCF_CORRECTED).is_file() else source
    ranking = rank_nodes_by_error(float_model, base.path, rank_calibration, work)
    log("nodes adding the most quantization error (dB): " + ", ".join(f"{n} {e:.1f}" for n, e in ranking[:5]))
    k = 1
    while chosen is None and k <= min(q.max_excluded_nodes, len(ranking)):
        if time.monotonic() >= deadline:
            return chosen, reason + out_of_time
        tried.append(attempt(f"{base.name}+float{k}", base_qc, [n for n, _ in ranking[:k]]))
        chosen, reason = choose(fp32, tried, q.max_accuracy_drop, q.min_speedup)
        k *= 2
    return chosen, reason


def run(cfg: QuantizeStageConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    q = cfg.quantize
    ds = Dataset.load(inputs["dataset"])
    size = read_preprocess(inputs["onnx"] / "student_preprocess.json").get("height")  # the student's input size
    train = ds.split("train", size)
    # the chosen rows are read from the memory-mapped split: calibration_samples examples in memory
    calibration = train.subset(calibration_rows(len(train), q.calibration_samples, cfg.seed))
    val = ds.split("val", size)
    fp32 = inputs["onnx"] / "student.onnx"
    names = model_inputs(fp32)
    sel = select(fp32, q, cfg.latency,
                 calibration=lambda: split_reader(calibration, names, progress=ctx.progress),
                 rank_calibration=lambda: split_reader(calibration.subset(slice(0, 64)), names),
                 val=(val, val.labels), work=ctx.work, log=ctx.log, progress=ctx.progress, seed=cfg.seed)
    # the best quantized model goes into the result even when FP32 ships, so it is benchmarked and reported
    shutil.copy2(sel.best.path, out / OUTPUT)
    metrics = sel.metrics(q.mode, int(len(calibration)) if uses_calibration(q) else 0, q.max_accuracy_drop)
    # the test split, once, after the choice: the drop of the quantized model in the result (the one
    # that ships unless FP32 does)
    test = ds.split("test", size)
    metrics["test_drop"] = paired_drop(test.labels, ort_predict(inputs["onnx"] / "student.onnx", test).argmax(axis=1),
                                       ort_predict(sel.best.path, test).argmax(axis=1), seed=cfg.seed)
    ctx.log(f"on test, once: {sel.best.name} {describe_drop(metrics['test_drop'])}")
    if metrics["val_resolution"]["note"]:
        ctx.log(f"warning: {metrics['val_resolution']['note']}")
    return metrics


def configure(p) -> QuantizeStageConfig:
    """The stage's config; a quantize.target that names a device becomes that device's ssh target,
    python and threads (so the cache key follows the device, not its name)."""
    from edgedistill.data.dataset import for_kind

    q, bench = p.quantize, p.benchmark
    modality = for_kind(p.data.kind)
    if "recipes" not in q.model_fields_set:  # the modality's sane set: CNN recipes for images, transformer ones for text
        q = q.model_copy(update={"recipes": list(RECIPE_SETS[modality.recipes])})
    if not modality.sized and bench.sequence_length is None:  # text: candidates timed at the stored length
        bench = bench.model_copy(update={"sequence_length": p.data.max_length})
    if q.target != "host" and not q.target.startswith("ssh://"):
        from edgedistill.runtime.devices import devices_file, find_device

        d = find_device(q.target, p.devices or devices_file())
        if d.emulated:
            raise ConfigError(f"quantize.target '{q.target}' is emulated ({d.target}): latency under emulation means "
                              f"nothing; name a real device (ssh://) or host")
        q = q.model_copy(update={"target": d.target, "target_python": d.python})
        bench = bench.model_copy(update={"threads": d.threads})
    from edgedistill.quantization import nncf_ptq

    uses_nncf = any(c.method == "static" and c.ranges == "nncf" for c in recipe_configs(q).values())
    if uses_nncf and q.mode == "fixed" and not nncf_ptq.available():
        raise ConfigError("quantize.ranges: nncf needs the nncf package: pip install 'edgedistill[nncf]', or set "
                          "quantize.ranges: onnxruntime")
    return QuantizeStageConfig(quantize=resolve_reduce_range(q), latency=latency_settings(bench, q), seed=p.seed,
                               nncf=nncf_ptq.version() if uses_nncf else None)


def latency_settings(bench: BenchmarkConfig, q: QuantizeConfig) -> BenchmarkConfig:
    """Only what changes a latency ranking: threads and graph optimization, not the release protocol."""
    return BenchmarkConfig(threads=bench.threads, inter_op_threads=bench.inter_op_threads,
                           graph_optimization=bench.graph_optimization, sequence_length=bench.sequence_length,
                           warmup=20, runs=q.latency_runs,
                           min_duration_s=q.latency_min_duration_s, throughput_batch=0, profile_runs=0)


STAGE = Stage(
    name="quantize", version=13, inputs=("dataset", "onnx"), output="ptq",
    configure=configure, key_exclude={"quantize": {"qat"}, "latency": {"rounds"}},  # rounds: the benchmark stage's
    run=run,
    headline=lambda m: f"ships {'FP32' if m['choice'] == 'fp32' else m['recipe']}; val acc FP32 {m['val_accuracy_fp32']:.2f}% "
                       f"vs {m['recipe']} {m['val_accuracy_int8']:.2f}%, {m['size_bytes_fp32'] / 1024:.0f} -> {m['size_bytes_int8'] / 1024:.0f} KiB",
)
