"""Fake quantization that emulates ONNX Runtime's static INT8, for quantization-aware training (the qat stage).

What is emulated, and how it matches ONNX Runtime's quantize_static (onnxruntime/quantization):
- weights of every Conv (1d/2d) and Linear: symmetric INT8, per output channel or per tensor as the
  recipe says, range [-127, 127] ([-64, 64] with reduce_range): ONNX Runtime's
  get_qmin_qmax_for_qType(INT8, symmetric=True) and its reduced range. Per-channel symmetric
  quantization commutes with folding BatchNorm into the convolution (the channel's scale factor
  multiplies the channel's absolute maximum), so the unfolded PyTorch weights see the grid the
  exported, folded ones get.
- the input of each of those layers: per-tensor asymmetric UINT8 [0, 255] (or INT8 [-128, 127]),
  its range set first by min/max calibration on the calibration images (ONNX Runtime's MinMax rule,
  the range widened to include 0; calibrate()). Then either learned (learn_ranges, the default: LSQ,
  Esser et al. 2020, torch.ao's _LearnableFakeQuantize: scale and zero point trained with the
  weights, so a range that one outlier stretched can shrink) and handed to ONNX Runtime as they are
  (onnx_inputs() finds each layer's input tensor for ONNX Runtime's TensorQuantOverrides), or recalibrated at the start of
  every epoch, so training always sees the ranges ONNX Runtime's calibration would compute for the
  current weights.
Not emulated: Q/DQ pairs on other tensors (the inputs of residual Adds and of elementwise ops that
some recipes quantize), and the integer kernels' own rounding (VPMADDUBSW saturation included: that is
what reduce_range avoids). The fake quantization itself is torch's: fake_quantize_per_channel_affine
for weights, torch.ao.quantization's FakeQuantize (or its LSQ variant) and MinMaxObserver for inputs;
only where to put them is decided here (forward pre-hooks and a weight
parametrization, so any torchvision, timm or Hugging Face model is trained untouched).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize, MinMaxObserver

# private by name, but torch.ao's own LSQ fake quantizer (its QAT tests use it); nothing public does this
from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize
from torch.nn.utils import parametrize

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
"""The layers ONNX Runtime quantizes as weight-bearing operators (Conv, Gemm, MatMul)."""


@dataclass(frozen=True)
class Emulation:
    """What ONNX Runtime's quantizer will do, as fake quantization needs it (weights: per channel, always)."""

    reduce_range: bool = False
    activation_type: str = "uint8"
    """uint8 or int8 (the recipe's activation_type)."""
    learn_ranges: bool = True
    """Activation ranges learned (LSQ) after calibration, else recalibrated every epoch."""

    @classmethod
    def of(cls, q: Any, learn_ranges: bool = True) -> "Emulation":
        """From a resolved QuantizeConfig (reduce_range a bool). ValueError for what is not static INT8
        with per-channel INT8 weights: dynamic quantization computes its ranges per batch, FP16 needs no
        training, and one per-tensor weight scale does not commute with folding BatchNorm into the
        convolution (the grid trained on would not be the one that ships)."""
        if q.method != "static" or q.weight_type != "int8" or not q.per_channel:
            raise ValueError(f"quantization-aware training emulates static INT8 with per-channel INT8 weights, not "
                             f"method {q.method} with {'per-channel' if q.per_channel else 'per-tensor'} {q.weight_type} weights")
        return cls(reduce_range=bool(q.reduce_range), activation_type=q.activation_type,
                   learn_ranges=learn_ranges)

    def weight_fake_quant(self) -> nn.Module:
        return _WeightFakeQuant(64 if self.reduce_range else 127)

    def activation_fake_quant(self) -> nn.Module:
        lo, hi, dtype = (0, 255, torch.quint8) if self.activation_type == "uint8" else (-128, 127, torch.qint8)
        kind = _LearnableFakeQuantize if self.learn_ranges else FakeQuantize
        fq = kind(MinMaxObserver, quant_min=lo, quant_max=hi, dtype=dtype, qscheme=torch.per_tensor_affine)
        _observe(fq, False)  # ranges come from calibrate() (then, learn_ranges, from training), never from batches
        return fq


def _observe(fq: nn.Module, on: bool) -> None:
    """Calibration (on: observe the float input, no fake quantization) or training (off: fake quantize,
    scale and zero point learned when the quantizer is a learnable one)."""
    if isinstance(fq, _LearnableFakeQuantize):
        fq.toggle_observer_update(on).toggle_fake_quant(not on).toggle_qparam_learning(not on)
    else:
        (fq.enable_observer if on else fq.disable_observer)()
        (fq.disable_fake_quant if on else fq.enable_fake_quant)()


class _WeightFakeQuant(nn.Module):
    """A parametrization: the weight as ONNX Runtime will store it, symmetric per output channel with
    the scale its absolute maximum / bound, recomputed from the current weight at every step (what the
    quantizer computes after training). torch's fake_quantize_per_channel_affine, straight-through
    gradient; the scale is computed on the weight's device (torch.ao's observers keep CPU buffers)."""

    enabled = True

    def __init__(self, bound: int):
        super().__init__()
        self.bound = bound

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        scale = (w.detach().abs().flatten(1).amax(dim=1) / self.bound).clamp_min(torch.finfo(torch.float32).eps)
        zero_point = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(w, scale.float(), zero_point, 0, -self.bound, self.bound)


def attach(model: nn.Module, emulation: Emulation) -> list[str]:
    """Put fake quantization on every Conv and Linear of model (in place): its weight through a
    parametrization, its input through a FakeQuantize child named `input_fake_quant` run by a forward
    pre-hook. Returns the paths of the layers. ValueError when the model has none."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LAYERS)]
    if not layers:
        raise ValueError("the model has no Conv or Linear layer to quantize")
    if any(parametrize.is_parametrized(m, "weight") for _, m in layers):
        raise ValueError("the model's weights are parametrized already (weight norm, spectral norm...); remove that first")
    for _, m in layers:
        parametrize.register_parametrization(m, "weight", emulation.weight_fake_quant())
        m.input_fake_quant = emulation.activation_fake_quant()
        m._fake_quant_hook = m.register_forward_pre_hook(lambda mod, args: (mod.input_fake_quant(args[0]), *args[1:]))
    return [name for name, _ in layers]


def detach(model: nn.Module) -> None:
    """Remove what attach() added, leaving the trained float weights (what ONNX Runtime quantizes)."""
    for m in model.modules():
        if isinstance(m, LAYERS) and hasattr(m, "input_fake_quant"):
            m._fake_quant_hook.remove()
            del m._fake_quant_hook, m.input_fake_quant
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)  # ours is the only one: attach checks


def activation_quantizers(model: nn.Module) -> list[nn.Module]:
    return [m.input_fake_quant for m in model.modules() if isinstance(m, LAYERS) and hasattr(m, "input_fake_quant")]


def range_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learned scales and zero points (learn_ranges), for their own optimizer group."""
    return [p for fq in activation_quantizers(model) if isinstance(fq, _LearnableFakeQuantize)
            for p in (fq.scale, fq.zero_point)]


def input_qparams(model: nn.Module) -> dict[str, tuple[float, int]]:
    """Layer path -> (scale, zero point) of its input quantizer, as ONNX Runtime would store them."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, LAYERS) and hasattr(m, "input_fake_quant"):
            scale, zero_point = m.input_fake_quant.calculate_qparams()
            out[name] = (float(scale.reshape(-1)[0]), int(zero_point.reshape(-1)[0]))
    return out


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device | str = "cpu") -> None:
    """Set every input range to the min/max over `batches` (model inputs), in eval mode, as ONNX
    Runtime's MinMax calibration does: observed without fake quantization upstream (ONNX Runtime
    collects the float model's activations), then frozen."""
    quantizers = activation_quantizers(model)
    was_training = model.training
    model.eval()
    for fq in quantizers:
        fq.activation_post_process.reset_min_max_vals()
        _observe(fq, True)
    weights = [m.parametrizations.weight[0] for m in model.modules() if isinstance(m, LAYERS) and hasattr(m, "input_fake_quant")]
    for w in weights:  # ONNX Runtime calibrates the float model: its weights unquantized
        w.enabled = False
    try:
        for x in batches:
            model(x.to(device))
    finally:
        for w in weights:
            w.enabled = True
    for fq in quantizers:
        _observe(fq, False)  # its scale and zero point were set from the observer on the last batch
    settle(model)
    model.train(was_training)


def settle(model: nn.Module) -> None:
    """Which learned range parameters train, from the quantizers' state (so a run resumed from a
    checkpoint decides as the uninterrupted one did): none of a layer the forward never called (a
    functional path: no gradient, and DDP would wait for one); not the zero point of a range that
    starts at 0 (after a ReLU), which keeps starting there: pinned in ONNX Runtime, whose quantizer drops
    the ReLU, a negative start would let negatives through."""
    for fq in activation_quantizers(model):
        if isinstance(fq, _LearnableFakeQuantize):
            observed = bool(torch.isfinite(fq.activation_post_process.min_val))
            fq.scale.requires_grad_(observed)
            fq.zero_point.requires_grad_(observed and float(fq.zero_point.detach().reshape(-1)[0]) != fq.quant_min)


@torch.no_grad()
def onnx_inputs(model: nn.Module, onnx_path: Any, split: Any, rows: slice) -> dict[str, str]:
    """Layer path -> the name of the tensor that feeds it in the exported ONNX model (a Conv, Gemm or
    MatMul input), matched by value on split's rows (a data.image.Split, or a subset; a few examples): exporters
    rename, fold BatchNorm into the convolution and attribute the fused node to the BatchNorm, so names
    and scopes do not say it. Layers without an unambiguous match are left out. model: after detach()."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from edgedistill.runtime.ortbench import DTYPES, select

    seen: dict[str, np.ndarray] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: seen.__setitem__(name, args[0].numpy()))
             for name, m in model.named_modules() if isinstance(m, LAYERS)]
    try:
        model.eval()(torch.from_numpy(split.inputs(rows)))
    finally:
        for h in hooks:
            h.remove()
    graph_model = onnx.load(str(onnx_path))
    inputs = {n.input[0] for n in graph_model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    outputs = {o.name for o in graph_model.graph.output}
    graph_model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in sorted(inputs - outputs))
    session = ort.InferenceSession(graph_model.SerializeToString(), providers=["CPUExecutionProvider"])
    # the model's own feeds (token ids and their attention mask, for a transformer)
    feeds = select([m.name for m in session.get_inputs()], split.feeds(rows))
    feeds = {m.name: np.ascontiguousarray(feeds[m.name], dtype=DTYPES.get(m.type, np.float32)) for m in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    values = {n: v for n, v in zip(names, session.run(names, feeds)) if n in inputs}
    matched = {}
    for layer, x in seen.items():
        close = [n for n, v in values.items() if v.shape == x.shape
                 and np.abs(v - x).max() <= 1e-4 * max(1.0, float(np.abs(x).max()))]
        if len(close) == 1:
            matched[layer] = close[0]
    return matched
