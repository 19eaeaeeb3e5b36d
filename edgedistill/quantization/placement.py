"""Where ONNX Runtime's static quantizer puts its QuantizeLinear nodes, found in the PyTorch model: the
plan that quantization-aware training emulates (fakequant.attach), read from the graph that ships
rather than from a rule about layer types.

ONNX Runtime decides what to quantize from the graph it is given. On a CNN that is the input of every
Conv and Gemm, their outputs (after the Relu or Clip it folds away), the tensors MaxPool and Reshape pass
on, the inputs and outputs of residual Adds. On a BERT model that ONNX Runtime's transformer optimizer
fused, the query, key and value projections and the attention itself sit inside one Attention operator
and stay in float, while the outputs of the other MatMuls (before their bias, which SkipLayerNormalization
and BiasGelu add), the LayerNorm outputs that feed a MatMul (for every consumer: the residual path reads
the quantized tensor too), GELU's output and the logits are quantized. A fixed rule ("every Linear's
input and weight") gets that wrong both ways.

So locate() takes a model ONNX Runtime quantized and, for each tensor it quantized, finds the same value
in PyTorch on a few examples: as the output of the module that computes it (the innermost one: forward
hooks fire as modules finish; a module called several times in one forward, such as ResNet's shared
ReLU, by its call), before a Linear's bias (a MatMul's output, its bias added by a later fused node),
or, for a tensor no module returns (a functional op's: a residual Add, BERT's pooler taking the first
token), as the input of the modules that read it (the outermost of nested ones). One tensor inside a
module is looked for too: the gate of an nn.Hardswish (x * hardsigmoid(x), which ONNX Runtime's
pre-processing splits into HardSigmoid and Mul; MobileNetV3-Small has 19) or of an nn.SiLU (x *
sigmoid(x), exported as Sigmoid and Mul), quantized as the Mul's input (GATES). The same functions
called functionally (F.hardswish, F.silu), or another class computing them, leave their gate in float. Tensors ONNX Runtime
quantizes with one scale (MaxPool, Reshape: their output takes their input's) share one quantizer. A
weight-bearing layer gets its weight quantized when its input is the input of a node whose weight ONNX
Runtime quantized, per channel when that weight's scale has one value per channel.

Written here: neither ONNX Runtime nor torch maps an exported graph's tensors to a module's, and
exporters rename tensors and fold BatchNorm into convolutions, so names and scopes do not say it; values
do. Not found (a tensor no module computes or reads as a whole): left in float, and counted.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from edgedistill.quantization import ort_quantize
from edgedistill.quantization.recipes import QuantizeConfig

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
"""Operators whose weight ONNX Runtime quantizes."""
LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
"""The layers whose weight fake quantization emulates (a ConvTranspose's or Conv3d's is counted as missed)."""
TOLERANCE = 1e-3
"""Largest difference between a PyTorch tensor and an ONNX one for the same value, relative to the
tensor's largest magnitude (at least 1): ONNX Runtime's fused kernels (attention, GELU, LayerNorm) round
differently; different tensors differ by far more."""
GATES = {nn.Hardswish: nn.functional.hardsigmoid, nn.SiLU: torch.sigmoid}
"""Activation modules computing x * gate(x) that ONNX Runtime quantizes as a Mul of x and gate(x): the
gate tensor no module returns is found at Point(module, "gate") and fake-quantized there."""


def gate_of(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    return next((g for cls, g in GATES.items() if isinstance(module, cls)), None)


OUTPUT_SUFFIX = "_QuantizeLinear_Input"
"""ONNX Runtime renames a graph output it quantizes: the float tensor gets this suffix."""


@dataclass(frozen=True, order=True)
class Point:
    """Where a tensor is in the PyTorch model: `where` is "output" (the module's output; of a tuple, its
    `index`-th tensor), "prebias" (a Linear's output before its bias), "input" (its first positional
    argument) or "gate" (in a GATES module, x * gate(x): gate(x) before it multiplies x), on the
    module's `call`-th call in one forward."""

    module: str
    """Its path in model.named_modules() ("" is the model)."""
    where: str
    call: int = 0
    index: int = 0


@dataclass
class Placement:
    """What ONNX Runtime quantizes, in PyTorch's terms."""

    activations: dict[str, list[Point]] = field(default_factory=dict)
    """One entry per quantizer (ONNX Runtime's scale): the name of its first tensor in the graph -> every
    point that carries one of its tensors."""
    tensors: dict[str, list[str]] = field(default_factory=dict)
    """The same keys -> the ONNX tensors quantized with that scale (TensorQuantOverrides' names)."""
    weights: dict[str, bool] = field(default_factory=dict)
    """Layer path -> whether its weight is quantized per channel (else per tensor)."""
    missed: list[str] = field(default_factory=list)
    """Quantized tensors found nowhere in PyTorch (left in float, unless a tensor of the same scale was found)."""
    missed_weights: list[str] = field(default_factory=list)
    """Nodes whose quantized weight no layer was found for (left in float)."""

    def counts(self) -> dict:
        """What is emulated, for the stage's metrics and log: quantizers (ONNX Runtime's scales), tensors
        and weights found, and what was not."""
        found = sum(len(ts) for ts in self.tensors.values()) - sum(t in self.missed for ts in self.tensors.values() for t in ts)
        return {"activations": len(self.activations), "tensors": found, "weights": len(self.weights),
                "missed": self.missed, "missed_weights": self.missed_weights}


@dataclass(frozen=True)
class WeightedNode:
    """A Conv, Gemm or MatMul whose weight ONNX Runtime quantized."""

    name: str
    input: str
    """Its activation input (the name in the model it was quantized from)."""
    weight: np.ndarray
    """The weight as ONNX Runtime will use it (dequantized), in the graph's layout."""
    per_channel: bool


def dequantize_constant(node: Any, init: dict) -> np.ndarray:
    """The float32 value a DequantizeLinear node (onnx.NodeProto) of a constant computes: (x - zero point)
    * scale, per channel along its axis (ONNX's default 1) when the scale is a vector. init: the graph's
    initializers by name (onnx.TensorProto); the node's inputs must be among them (KeyError otherwise)."""
    from onnx import numpy_helper

    values = numpy_helper.to_array(init[node.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(init[node.input[1]]).astype(np.float32)
    zero = numpy_helper.to_array(init[node.input[2]]).astype(np.float32) if len(node.input) > 2 and node.input[2] else 0.0
    if scale.size > 1:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [-1 if d == axis % values.ndim else 1 for d in range(values.ndim)]
        scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
    return (values - zero) * scale


def quantized_tensors(quantized: Any) -> tuple[dict[str, list[str]], list[WeightedNode]]:
    """From an ONNX Runtime QDQ model (onnx.ModelProto): ({first tensor: tensors sharing its scale}, in
    graph order, and the nodes with a quantized weight). Tensor names are those of the model it was
    quantized from."""
    from onnx import numpy_helper

    graph = quantized.graph
    init = {i.name: i for i in graph.initializer}
    quantizes = {n.output[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
    dequantizes = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}

    def source(q) -> str:
        return q.input[0].removesuffix(OUTPUT_SUFFIX)

    groups: dict[str, list[str]] = {}
    by_scale: dict[str, str] = {}
    for q in quantizes.values():
        if q.input[0] in init:  # a weight or bias ONNX Runtime quantized itself
            continue
        first = by_scale.setdefault(q.input[1], source(q))
        groups.setdefault(first, []).append(source(q))
    weighted = []
    for node in graph.node:
        if node.op_type not in WEIGHTED or len(node.input) < 2:
            continue
        w, a = dequantizes.get(node.input[1]), dequantizes.get(node.input[0])
        if w is None or a is None or w.input[0] not in init or a.input[0] not in quantizes:
            continue
        weighted.append(WeightedNode(node.name, source(quantizes[a.input[0]]), dequantize_constant(w, init),
                                     numpy_helper.to_array(init[w.input[1]]).size > 1))
    return groups, weighted


def _is_weight_of(layer: nn.Module, node: WeightedNode) -> bool:
    """Whether node's weight is layer's: the same shape (a MatMul's is a Linear's transposed) and, for a
    Linear, the same values up to the quantization step (two projections of one input have the same
    shape). A convolution's is compared by shape only: ONNX Runtime's has the BatchNorm folded in."""
    w = layer.weight.detach().float().numpy()
    if isinstance(layer, nn.Linear):
        step = float(np.max(np.abs(node.weight))) / 64  # at least the step of 7-bit weights
        return any(c.shape == node.weight.shape and float(np.abs(c - node.weight).max()) <= step for c in (w, w.T))
    return w.shape == node.weight.shape


@torch.no_grad()
def module_values(model: nn.Module, x: torch.Tensor, keep: Callable[[np.ndarray], bool] = lambda v: True,
                  ) -> tuple[list[tuple[Point, np.ndarray]], list[tuple[Point, np.ndarray]]]:
    """Every floating-point tensor the modules of model return (in the order they finish; Linear's also
    before its bias) and take as first argument (in the order they start), on input x; of those, the
    ones `keep` accepts (memory then follows what is kept, not the model's depth)."""
    outputs: list[tuple[Point, np.ndarray]] = []
    inputs: list[tuple[Point, np.ndarray]] = []
    calls: dict[str, int] = {}

    def is_float(t) -> bool:
        return isinstance(t, torch.Tensor) and t.is_floating_point()

    def pre(mod, args, path):
        calls[path] = calls.get(path, -1) + 1
        if args and is_float(args[0]) and keep(v := args[0].float().numpy()):
            inputs.append((Point(path, "input", calls[path]), v.copy()))
        if (gate := gate_of(mod)) and args and is_float(args[0]) and keep(v := gate(args[0]).float().numpy()):
            outputs.append((Point(path, "gate", calls[path]), v))  # before an in-place activation overwrites x

    def post(mod, args, out, path):
        call = calls[path]
        tensors = list(enumerate(out)) if isinstance(out, (tuple, list)) else [(0, out)]
        for index, t in tensors:
            if is_float(t) and keep(v := t.float().numpy()):
                outputs.append((Point(path, "output", call, index), v.copy()))
        if isinstance(mod, nn.Linear) and mod.bias is not None and is_float(out) and keep(v := (out - mod.bias).float().numpy()):
            outputs.append((Point(path, "prebias", call), v))

    hooks = []
    for path, mod in model.named_modules():
        hooks.append(mod.register_forward_pre_hook(lambda m, a, path=path: pre(m, a, path)))
        hooks.append(mod.register_forward_hook(lambda m, a, o, path=path: post(m, a, o, path)))
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return outputs, inputs


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and float(np.abs(a - b).max()) <= TOLERANCE * max(1.0, float(np.abs(b).max()))


def _inside(path: str, outer: str) -> bool:
    return outer == "" or path.startswith(outer + ".")


@torch.no_grad()
def locate(model: nn.Module, source: Path, quantized: Path, split: Any, rows: slice = slice(0, 4)) -> Placement:
    """The Placement of what ONNX Runtime quantized in `quantized` (a QDQ model made from `source`, the
    float ONNX model exported from `model`), found by value on split's rows (a data Split: .inputs(rows)
    for PyTorch, .feeds(rows) for ONNX Runtime). model in eval mode, on the CPU, without fake quantization."""
    import onnx
    import onnxruntime as ort

    from edgedistill.runtime.ortbench import feed_rows, select

    groups, weighted = quantized_tensors(onnx.load(str(quantized)))
    wanted = sorted({t for ts in groups.values() for t in ts} | {n.input for n in weighted})
    graph_model = onnx.load(str(source))
    known = {o for n in graph_model.graph.node for o in n.output} | {i.name for i in graph_model.graph.input}
    outputs = {o.name for o in graph_model.graph.output}
    graph_model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in wanted if t in known and t not in outputs)
    session = ort.InferenceSession(graph_model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = feed_rows(session, select([m.name for m in session.get_inputs()], split.feeds(rows)), slice(None))
    names = [o.name for o in session.get_outputs()]
    values = {n: v for n, v in zip(names, session.run(names, feeds)) if n in wanted and np.issubdtype(v.dtype, np.floating)}
    by_shape: dict[tuple, list[np.ndarray]] = {}
    for v in values.values():
        by_shape.setdefault(v.shape, []).append(v)
    produced, read = module_values(model.eval(), torch.from_numpy(split.inputs(rows)),
                                   keep=lambda x: any(_close(x, v) for v in by_shape.get(x.shape, ())))
    inputs = {p: x for p, x in read}

    def points(tensor: str) -> list[Point]:
        v = values.get(tensor)
        if v is None:
            return []
        for p, x in produced:
            # a module that passes its input on (Dropout, Identity in eval mode) does not compute the
            # tensor: in training Dropout's output is another tensor, so quantize where it is read
            read_in = inputs.get(Point(p.module, "input", p.call))
            passes_on = p.where == "output" and read_in is not None and _close(read_in, v)
            if _close(x, v) and not passes_on:
                return [p]
        hits = [p for p, x in read if _close(x, v)]
        return [p for p in hits if not any(o != p and _inside(p.module, o.module) for o in hits)]

    plan = Placement()
    for first, tensors in groups.items():
        found = [(t, points(t)) for t in tensors]
        plan.missed += [t for t, ps in found if not ps]
        if any(ps for _, ps in found):
            plan.activations[first] = sorted({p for _, ps in found for p in ps})
            plan.tensors[first] = tensors
    modules = dict(model.named_modules())
    candidates = {node.name: frozenset(p.module for p, x in read if node.input in values and _close(x, values[node.input])
                                       and isinstance(modules[p.module], LAYERS) and _is_weight_of(modules[p.module], node))
                  for node in weighted}
    for node in weighted:
        layers = candidates[node.name]
        # one layer; or layers that cannot be told apart (two convolutions of one shape reading one
        # tensor) but exactly as many nodes as layers, all quantized: each is one of them
        if len(layers) == 1 or (layers and sum(c == layers for c in candidates.values()) == len(layers)):
            plan.weights.update((layer, node.per_channel) for layer in sorted(layers))
        else:  # none, or more layers than nodes: left in float rather than guessed
            plan.missed_weights.append(node.name)
    return plan


def locate_quantized(model: nn.Module, fp32: Path, calibration: Any, q: QuantizeConfig, work: Path) -> Placement:
    """Where ONNX Runtime quantizes `fp32` (the model's export) with q's recipe, in the model's terms
    (locate()): fp32 quantized once with ranges from 8 calibration rows (where Q/DQ pairs go does
    not depend on the ranges), in the QDQ format whatever q's (QOperator's fused operators quantize the
    same tensors but do not show them)."""
    names = ort_quantize.model_inputs(fp32)
    few = calibration.subset(slice(0, min(8, len(calibration))))
    reader = lambda: ort_quantize.split_reader(few, names)
    qdq = q.model_copy(update={"format": "qdq"})
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        source = ort_quantize.prepare_source(fp32, qdq, reader, Path(tmp), log=lambda m: None)
        ort_quantize.quantize_model(source, Path(tmp) / "located.onnx", qdq, reader)
        return locate(model, source, Path(tmp) / "located.onnx", few)
