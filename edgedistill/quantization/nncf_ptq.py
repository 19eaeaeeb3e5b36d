"""NNCF's post-training quantization algorithm, carried into ONNX Runtime's own layout.

NNCF (github.com/openvinotoolkit/nncf, `nncf.quantize` on an ONNX model) finds activation ranges from
per-sample statistics and corrects each layer's bias for the error its quantized weights add (fast
bias correction, after Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias
Correction"). That keeps more accuracy than ONNX Runtime's MinMax calibration, but the graph NNCF writes
runs slowly in ONNX Runtime's CPU provider: its Q/DQ pairs sit after the Clip/Relu activations, and
inputs of depthwise convolutions get per-channel activation scales, so the fused integer kernels
(QLinearConv) do not apply and the convolutions run in float between DequantizeLinear nodes.

`carry` takes what NNCF learned, not its graph: the corrected biases go into a copy of the float model
and the activation ranges into ONNX Runtime's quantizer as TensorQuantOverrides (rmin/rmax per
tensor), so `quantize_static` writes its usual fast layout (activations folded, per-tensor activation
scales, per-channel weights) with NNCF's numbers. Written here because neither library does the
hand-over. NNCF is an optional dependency (`pip install 'edgedistill[nncf]'`).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper

PROVENANCE = "NNCF statistics and fast bias correction, in ONNX Runtime's quantize_static layout"


def available() -> bool:
    """Whether nncf can be imported here (without importing it: it takes seconds)."""
    return importlib.util.find_spec("nncf") is not None


def version() -> str | None:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    try:
        return v("nncf")
    except PackageNotFoundError:
        return None


def samples(batches: Iterable[dict], fixed_batch: int | None) -> Iterator[dict]:
    """NNCF counts statistics per item and recommends items of batch 1: each batch split into rows
    (kept whole for a model whose batch is fixed)."""
    for feeds in batches:
        if fixed_batch:
            yield feeds
            continue
        for i in range(len(next(iter(feeds.values())))):
            yield {k: v[i:i + 1] for k, v in feeds.items()}


def run_nncf(model: Path, batches: Iterable[dict], fixed_batch: int | None = None, progress: bool = False) -> onnx.ModelProto:
    """NNCF's post-training quantization of an ONNX model (defaults: MinMax statistics and fast bias
    correction), with per-tensor activation scales, the only kind ONNX Runtime's integer kernels take.
    batches: calibration feeds ({input name: array}); every sample is used. progress: NNCF's own
    progress bars (else its output is swallowed). Returns NNCF's quantized model (Q/DQ graph)."""
    import contextlib
    import io
    import logging

    # nncf imports torch's C++ extension helper, which warns about CUDA on machines without it
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    logging.getLogger("nncf").setLevel(logging.ERROR)
    items = list(samples(batches, fixed_batch))
    params = AdvancedQuantizationParameters(activations_quantization_params=QuantizationParameters(per_channel=False))
    quiet = contextlib.nullcontext() if progress else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        return nncf.quantize(onnx.load(str(model)), nncf.Dataset(items), subset_size=len(items), advanced_parameters=params)


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Every tensor whose value is fixed: initializers, Constant outputs, Identity of those."""
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def activation_ranges(quantized: onnx.ModelProto) -> dict[str, tuple[float, float]]:
    """tensor name -> (rmin, rmax) of every activation NNCF quantized: the real range its
    QuantizeLinear covers, from scale and zero point (per-channel ones as their union)."""
    consts = _constants(quantized.graph)
    ranges = {}
    for node in quantized.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in consts:
            continue  # weights are quantized from constants; only activations are carried
        scale = consts[node.input[1]].astype(np.float64)
        # no zero point: uint8 and 0 (the ONNX QuantizeLinear default)
        zero = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros_like(scale, dtype=np.uint8)
        info = np.iinfo(zero.dtype)
        zero = zero.astype(np.float64)
        ranges[node.input[0]] = (float(((info.min - zero) * scale).min()), float(((info.max - zero) * scale).max()))
    return ranges


FOLDED = ("Relu", "Clip")
"""Activations ONNX Runtime's quantizer folds into the operator before them."""


SHARED = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze")
"""Operators whose output ONNX Runtime's quantizer gives the quantization parameters of their input."""


def with_folded_inputs(graph: onnx.GraphProto, ranges: dict[str, tuple[float, float]],
                       through: tuple[str, ...] = FOLDED) -> dict[str, tuple[float, float]]:
    """NNCF quantizes the output of a Relu or Clip; ONNX Runtime folds the activation away and quantizes
    the tensor before it instead (by the activation's output name in the QDQ format, by its input's in
    the QOperator one): the range is given under both names, where the activation is that tensor's only
    consumer. `through` adds operators to walk back through (SHARED: those whose output takes their
    input's parameters, so a range set after a MaxPool reaches the tensor the quantizer uses)."""
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    producers = {o: node for node in graph.node for o in node.output}
    out = dict(ranges)
    for name, value in ranges.items():
        node = producers.get(name)
        while node is not None and node.op_type in through and consumers.get(node.input[0]) == 1:
            out.setdefault(node.input[0], value)
            node = producers.get(node.input[0])
    return out


def corrected_constants(source: onnx.ModelProto, quantized: onnx.ModelProto) -> dict[tuple[str, int], np.ndarray]:
    """(node name, input index) -> new value, for every float constant input NNCF changed (the biases
    fast bias correction moved), matched by node name; quantized weights are not constants there."""
    before, after = _constants(source.graph), _constants(quantized.graph)
    theirs = {n.name: n for n in quantized.graph.node if n.name}
    changed = {}
    for node in source.graph.node:
        other = theirs.get(node.name)
        if other is None or other.op_type != node.op_type:
            continue
        for i, (a, b) in enumerate(zip(node.input, other.input)):
            if a in before and b in after and before[a].dtype.kind == "f" and before[a].shape == after[b].shape \
                    and not np.array_equal(before[a], after[b]):
                changed[(node.name, i)] = after[b].astype(before[a].dtype)
    return changed


def apply_constants(model: onnx.ModelProto, changed: dict[tuple[str, int], np.ndarray]) -> onnx.ModelProto:
    """model with those node inputs pointing to new initializers holding the new values (a shared
    original is left to its other users; one nothing uses any more is removed)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = {n.name: n for n in model.graph.node}
    replaced = set()
    for (name, i), value in changed.items():
        new = f"{name}_input{i}_nncf"
        model.graph.initializer.append(numpy_helper.from_array(value, new))
        replaced.add(nodes[name].input[i])
        nodes[name].input[i] = new
    used = _used_names(model.graph) | {o.name for o in model.graph.output}
    kept = [init for init in model.graph.initializer if init.name in used or init.name not in replaced]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model


def _used_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node of graph reads, in its subgraphs (If, Loop, Scan bodies) too."""
    used = set()
    for node in graph.node:
        used.update(node.input)
        for a in node.attribute:
            for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
                used |= _used_names(sub)
    return used


def carry(source: Path, batches: Iterable[dict], dst: Path, fixed_batch: int | None = None, progress: bool = False) -> dict:
    """Run NNCF on source and write into dst the float model with NNCF's corrected biases. Returns
    ONNX Runtime's TensorQuantOverrides for NNCF's activation ranges ({tensor: [{rmin, rmax}]}) and
    counts for the report.

    NNCF runs in a child process (this module run as a script): importing it into a process that
    later forks (DataLoader workers, torchrun) left the forked children hung in the test suite, and
    it brings its own logging and telemetry set-up. The calibration batches reach it through .npz
    files in a folder beside dst, one batch at a time (removed afterwards)."""
    import json
    import shutil
    import subprocess
    import sys

    from edgedistill.core.errors import StageError

    folder = dst.parent / f"{dst.stem}_calibration"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        for i, feeds in enumerate(batches):
            np.savez(folder / f"{i:06d}.npz", **feeds)
        out = dst.parent / f"{dst.stem}_ranges.json"
        cmd = [sys.executable, "-m", "edgedistill.quantization.nncf_ptq", str(source), str(folder), str(dst), str(out), str(fixed_batch or 0)]
        proc = subprocess.run(cmd, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
            raise StageError(f"NNCF's post-training quantization failed: {last}")
        result = json.loads(out.read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    from edgedistill.runtime.onnx_utils import range_overrides

    result["overrides"] = range_overrides(result["overrides"])
    return result


def _carry_here(source: Path, batches: Iterable[dict], dst: Path, fixed_batch: int | None, progress: bool) -> dict:
    """carry's work, in this process: the ranges as (rmin, rmax) pairs."""
    quantized = run_nncf(source, batches, fixed_batch, progress)
    model = onnx.load(str(source))
    changed = corrected_constants(model, quantized)
    onnx.save(apply_constants(model, changed), str(dst))
    ranges = with_folded_inputs(model.graph, activation_ranges(quantized))
    return {"overrides": ranges, "biases_corrected": len(changed), "ranges": len(ranges)}


if __name__ == "__main__":  # carry's child: SOURCE BATCH_FOLDER DST OUT_JSON FIXED_BATCH
    import json
    import sys

    source, folder, dst, out, fixed = sys.argv[1:6]
    files = sorted(Path(folder).glob("*.npz"))
    batches = (dict(np.load(f)) for f in files)
    result = _carry_here(Path(source), batches, Path(dst), int(fixed) or None, progress=True)
    Path(out).write_text(json.dumps(result))
