"""`edgedistill quantize`: a model you already have, quantized by the quantize stage's own rule."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from edgedistill.cli.args import show_progress
from edgedistill.core.errors import ConfigError


def cmd_quantize(a: argparse.Namespace) -> int:
    import numpy as np

    from edgedistill.core.config import parse_overrides, validate
    from edgedistill.core.errors import DataError
    from edgedistill.core.table import text_table
    from edgedistill.data.dataset import read_preprocess
    from edgedistill.data.inputs import open_inputs
    from edgedistill.quantization import ort_quantize
    from edgedistill.quantization.recipes import QUANT_RECIPES, QuantizeConfig
    from edgedistill.runtime.benchmark import BenchmarkConfig
    from edgedistill.runtime.onnx_utils import write_model
    from edgedistill.runtime.ortbench import InputMismatch, check_feed, describe, fixed_batch, model_size, select
    from edgedistill.stages import quantize

    model = Path(a.model)
    if not model.is_file():
        raise ConfigError(f"model '{model}' does not exist")
    overrides = dict(parse_overrides(a.set), mode=a.mode)
    if a.recipe is not None and a.mode != "fixed":
        raise ConfigError("--recipe picks the one recipe of --mode fixed; in auto mode list the recipes to try with "
                          "--set recipes=[...]")
    if a.mode == "fixed" and "recipes" in overrides:
        raise ConfigError("recipes are what --mode auto tries; in fixed mode pick one with --recipe NAME")
    if a.recipe is not None:  # the recipe's settings first, then what --set changes of them
        overrides = {"ranges": "onnxruntime", **QUANT_RECIPES.get(a.recipe), **overrides}
    q = validate(QuantizeConfig, overrides, "edgedistill quantize --set")
    from edgedistill.quantization import nncf_ptq

    if q.mode == "fixed" and q.method == "static" and q.ranges == "nncf" and not nncf_ptq.available():
        raise ConfigError("ranges=nncf needs the nncf package: pip install 'edgedistill[nncf]', or --set ranges=onnxruntime")
    spec = read_preprocess(Path(a.preprocess)) if a.preprocess else None
    if q.mode == "auto" and a.val is None:
        raise ConfigError("--mode auto measures accuracy: give --val (an .npz with x and y, or an image folder), "
                          "or use --mode fixed")
    calib = open_inputs(Path(a.calib), spec)
    val = open_inputs(Path(a.val), spec) if a.val is not None else None
    if val is not None and val.labels is None:
        raise ConfigError(f"--val '{a.val}' has no labels (an .npz needs an array y)")
    inputs = ort_quantize.model_inputs(model)
    for given, option in ((calib, "--calib"), (val, "--val")):  # arrays are checked whole (read lazily): their shapes named
        if given is not None and isinstance(given.items, np.ndarray):
            try:
                check_feed(inputs, select([m.name for m in inputs], given.items), f"{option} '{getattr(a, option[2:])}'")
            except InputMismatch as e:
                raise DataError(str(e)) from None
    n = min(len(calib.items), q.calibration_samples)
    what = f"--calib '{a.calib}'"
    reader = lambda: ort_quantize.BatchReader(n, calib.inputs, inputs, progress=show_progress(), what=what)
    out = Path(a.out) if a.out else model.with_name(f"{model.stem}_quantized.onnx")
    log = lambda m: print(f"    {m}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if val is None:
            reader().get_next()  # calibration data that does not fit the model is named before anything runs
            source, overrides = ort_quantize.prepare_source(model, q, reader, work, log), None
            if q.method == "static" and q.ranges == "nncf":
                source, overrides = ort_quantize.carry_nncf(source, reader, work, log, show_progress())
            ort_quantize.quantize_model(source, work / "quantized.onnx", q, reader, overrides=overrides)
            write_model(work / "quantized.onnx", out)
            print(f"wrote {out} ({model_size(str(out)) / 1024:.1f} KiB; fixed mode, accuracy not measured)")
            return 0
        timing = work / "timing_input.npy"  # candidates are timed on a real input: its shape is the data's
        np.save(timing, val.inputs(slice(0, 1)))
        latency = quantize.latency_settings(BenchmarkConfig(threads=a.threads), q)
        sel = quantize.select(model, q, latency, calibration=reader,
                              rank_calibration=lambda: ort_quantize.BatchReader(min(n, 64), calib.inputs, inputs, what=what),
                              val=(val, val.labels), work=work, log=log, timing_inputs=timing)
        num = lambda v, f: "-" if v is None else format(v, f)
        interval = lambda d: "-" if d is None else f"{d['drop']:.2f} [{d['ci_low']:.2f}, {d['ci_high']:.2f}]"
        print(text_table(("configuration", "val acc %", "drop pt [95% CI]", "agree %", "p90 ms", "size KiB", "in float",
                          "graph from", "error"), [
            (c.name, num(c.val_accuracy, ".2f"), interval(c.val_drop), num(c.val_drop and c.val_drop["agreement"], ".1f"),
             num(c.latency_ms_p90, ".3f"), num(c.size_bytes and c.size_bytes / 1024, ".1f"),
             str(len(c.excluded_nodes)), c.graph_from, c.error or "") for c in [sel.fp32, *sel.tried]]))
        fixed = fixed_batch(inputs)
        print(f"latency: p90 over runs of one validation input, shape {describe([fixed or 1, *np.load(timing).shape[1:]])}"
              f"{' (the batch the model is fixed to)' if fixed else ''}")
        res = sel.metrics(q.mode, n, q.max_accuracy_drop)["val_resolution"]
        if res["note"]:
            print(f"warning: {res['note']}", file=sys.stderr)
        if a.report:
            Path(a.report).write_text(json.dumps(sel.metrics(q.mode, n, q.max_accuracy_drop), indent=2) + "\n")
        if sel.chosen is None:
            print(f"\nkept FP32: {sel.reason}; nothing written (the FP32 model is the better one to ship)")
            return 0
        write_model(sel.chosen.path, out)
    print(f"\nwrote {out}: {sel.reason}")
    return 0


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    """This group's sub-commands on the parser's sub-parsers (common: the global options)."""
    p = sub.add_parser("quantize", parents=[common], help="quantize an existing ONNX model (auto: never worse than FP32)")
    p.add_argument("model", help="FP32 ONNX model")
    p.add_argument("--calib", required=True, metavar="DATA",
                   help="calibration inputs: .npy of preprocessed inputs (streamed), .npz with x, or an image folder")
    p.add_argument("--val", metavar="DATA", help="labeled validation data (.npz with x and y, or an image folder); needed by --mode auto")
    p.add_argument("--preprocess", metavar="JSON", help="preprocess.json for image folders (every bundle has one)")
    p.add_argument("--mode", choices=["auto", "fixed"], default="auto")
    from edgedistill.quantization.recipes import QUANT_RECIPES

    p.add_argument("--recipe", choices=QUANT_RECIPES.names(), metavar="NAME",
                   help=f"fixed mode: quantize with this recipe ({', '.join(QUANT_RECIPES.names())})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a quantize option, e.g. --set max_accuracy_drop=0.5 --set recipes=[qdq_u8s8,dynamic_s8] "
                        "(auto: the recipes tried, or a named set: x86, arm, transformer)")
    p.add_argument("--threads", type=int, default=1, help="threads for the latency measurements (default 1)")
    p.add_argument("--out", metavar="FILE", help="output model (default: MODEL_quantized.onnx)")
    p.add_argument("--report", metavar="FILE", help="write what was tried and chosen as JSON")
    p.set_defaults(fn=cmd_quantize)
