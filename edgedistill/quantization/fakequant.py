"""Fake quantization that emulates ONNX Runtime's static INT8, for quantization-aware training (the qat stage).

Where: exactly the tensors and weights ONNX Runtime quantizes in the exported model, as
placement.locate() found them in PyTorch (a CNN's Conv inputs and outputs, residual Adds, MaxPool; a
fused BERT's MatMul outputs, LayerNorm and GELU outputs, logits; not what stays in float, such as the
projections inside a fused Attention operator). How, matching quantize_static (onnxruntime/quantization):
- weights: symmetric INT8, per output channel (or per tensor where the graph says so), range
  [-127, 127] ([-64, 64] with reduce_range): ONNX Runtime's get_qmin_qmax_for_qType(INT8,
  symmetric=True) and its reduced range. Per-channel symmetric quantization commutes with folding
  BatchNorm into the convolution (the channel's scale factor multiplies the channel's absolute
  maximum), so the unfolded PyTorch weights see the grid the exported, folded ones get.
- activations: per-tensor asymmetric UINT8 [0, 255] (or INT8 [-128, 127]), one quantizer for the
  tensors ONNX Runtime gives one scale, its range set first by min/max calibration on the calibration
  images (ONNX Runtime's MinMax rule, the range widened to include 0; calibrate()). Then either learned
  (learn_ranges, the default: LSQ, Esser et al. 2020, torch.ao's _LearnableFakeQuantize: scale and zero
  point trained with the weights, so a range that one outlier stretched can shrink) and handed to ONNX
  Runtime as they are (ranges(): TensorQuantOverrides), or recalibrated at the start of every epoch, so
  training always sees the ranges ONNX Runtime's calibration would compute for the current weights.
Not emulated: the integer kernels' own rounding (VPMADDUBSW saturation included: that is what
reduce_range avoids), int32 biases, and a quantized tensor no module computes or reads whole (counted by
locate). The fake quantization itself is torch's: fake_quantize_per_channel_affine for weights,
torch.ao.quantization's FakeQuantize (or its LSQ variant) and MinMaxObserver for activations; only
where to put them is decided here (forward hooks and a weight parametrization, so any torchvision, timm
or Hugging Face model is trained untouched).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Iterable

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize, MinMaxObserver

# private by name, but torch.ao's own LSQ fake quantizer (its QAT tests use it); nothing public does this
from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize
from torch.nn.utils import parametrize

from edgedistill.quantization.placement import Placement, Point, gate_of


@dataclass(frozen=True)
class Emulation:
    """What ONNX Runtime's quantizer will do, as fake quantization needs it (where: placement.Placement)."""

    reduce_range: bool = False
    activation_type: str = "uint8"
    """uint8 or int8 (the recipe's activation_type)."""
    learn_ranges: bool = True
    """Activation ranges learned (LSQ) after calibration, else recalibrated every epoch."""

    @staticmethod
    def supports(q: Any) -> bool:
        """Whether QAT can emulate q (a resolved QuantizeConfig): static INT8 with per-channel INT8 weights (of() says why not)."""
        return q.method == "static" and q.weight_type == "int8" and q.per_channel

    @classmethod
    def of(cls, q: Any, learn_ranges: bool = True) -> "Emulation":
        """From a resolved QuantizeConfig (reduce_range a bool). ValueError for what is not static INT8
        with per-channel INT8 weights: dynamic quantization computes its ranges per batch, FP16 needs no
        training, and one per-tensor weight scale does not commute with folding BatchNorm into the
        convolution (the grid trained on would not be the one that ships)."""
        if not cls.supports(q):
            raise ValueError(f"quantization-aware training emulates static INT8 with per-channel INT8 weights, not "
                             f"method {q.method} with {'per-channel' if q.per_channel else 'per-tensor'} {q.weight_type} weights")
        return cls(reduce_range=bool(q.reduce_range), activation_type=q.activation_type,
                   learn_ranges=learn_ranges)

    def weight_fake_quant(self, per_channel: bool = True) -> nn.Module:
        return _WeightFakeQuant(64 if self.reduce_range else 127, per_channel)

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
    """A parametrization: the weight as ONNX Runtime will store it, symmetric per output channel (or per
    tensor, where the graph says so) with the scale its absolute maximum / bound, recomputed from the
    current weight at every step (what the quantizer computes after training). torch's
    fake_quantize_per_channel_affine, straight-through gradient; the scale is computed on the weight's
    device (torch.ao's observers keep CPU buffers)."""

    enabled = True

    def __init__(self, bound: int, per_channel: bool = True):
        super().__init__()
        self.bound, self.per_channel = bound, per_channel

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return w
        amax = w.detach().abs().flatten(1).amax(dim=1)
        if not self.per_channel:
            amax = amax.max().expand_as(amax)
        scale = (amax / self.bound).clamp_min(torch.finfo(torch.float32).eps)
        zero_point = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
        return torch.fake_quantize_per_channel_affine(w, scale.float(), zero_point, 0, -self.bound, self.bound)


class FakeQuantized(nn.Module):
    """A model with fake quantization attached (attach()): runs `model`, whose modules' hooks apply the
    activation quantizers held here (a child of the model itself would change an nn.Sequential's forward),
    so one state_dict, checkpoint and DDP wrapper carry the weights and the ranges."""

    def __init__(self, model: nn.Module, quantizers: nn.ModuleList, hooks: list, inplace: dict[str, bool] | None = None):
        super().__init__()
        self.model, self.quantizers, self.hooks = model, quantizers, hooks
        self.inplace = inplace or {}  # the gated activations attach made not in-place, their flag before: detach restores it

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


def attach(model: nn.Module, emulation: Emulation, plan: Placement) -> FakeQuantized:
    """Fake quantization where ONNX Runtime will quantize (plan, from placement.locate): model's
    quantized weights through a parametrization and forward hooks at every point of each activation
    quantizer (one for the tensors ONNX Runtime gives one scale), in place; returns the model to train,
    which holds the quantizers. ValueError when the plan has nothing."""
    if not plan.activations and not plan.weights:
        raise ValueError("ONNX Runtime quantizes no tensor of this model that was found in it")
    modules = dict(model.named_modules())
    if any(parametrize.is_parametrized(modules[path], "weight") for path in plan.weights):
        raise ValueError("the model's weights are parametrized already (weight norm, spectral norm...); remove that first")
    for path, per_channel in plan.weights.items():
        parametrize.register_parametrization(modules[path], "weight", emulation.weight_fake_quant(per_channel))
    quantizers = nn.ModuleList(emulation.activation_fake_quant() for _ in plan.activations)
    at: dict[str, list[tuple[Point, nn.Module]]] = {}
    for fq, points in zip(quantizers, plan.activations.values()):
        for p in points:
            at.setdefault(p.module, []).append((p, fq))
    calls: dict[str, int] = {}  # a module's calls in this forward (ResNet's ReLU serves twice a block)
    hooks = [model.register_forward_pre_hook(lambda mod, args: calls.clear(), prepend=True)]
    inplace = {}
    for path, here in at.items():
        if any(p.where == "gate" for p, _ in here):  # its output is recomputed from its input (_quantize_output)
            inplace[path], modules[path].inplace = modules[path].inplace, False
        hooks.append(modules[path].register_forward_pre_hook(partial(_quantize_input, path=path, here=here, calls=calls)))
        hooks.append(modules[path].register_forward_hook(partial(_quantize_output, path=path, here=here, calls=calls)))
    return FakeQuantized(model, quantizers, hooks, inplace)


def _quantize_input(mod: nn.Module, args: tuple, *, path: str, here: list, calls: dict):
    call = calls[path] = calls.get(path, -1) + 1
    fq = next((fq for p, fq in here if p.where == "input" and p.call == call), None)
    return None if fq is None else (fq(args[0]), *args[1:])


def _quantize_output(mod: nn.Module, args: tuple, out: Any, *, path: str, here: list, calls: dict):
    gate = next((fq for p, fq in here if p.where == "gate" and p.call == calls[path]), None)
    if gate is not None:  # x * gate(x) (placement.GATES): ONNX Runtime quantizes gate(x) as the Mul's input
        out = args[0] * gate(gate_of(mod)(args[0]))
    for p, fq in here:
        if p.call != calls[path] or p.where in ("input", "gate"):
            continue
        if p.where == "prebias":  # a MatMul's output: its bias is added after (SkipLayerNormalization, BiasGelu)
            out = fq(out - mod.bias) + mod.bias
        elif isinstance(out, (tuple, list)):
            items = [(fq(t) if i == p.index else t) for i, t in enumerate(out)]
            out = out._make(items) if hasattr(out, "_make") else type(out)(items)  # a namedtuple, or a tuple or list
        else:
            out = fq(out)
    return out


def detach(model: FakeQuantized) -> nn.Module:
    """Remove what attach() added; returns the model with its trained float weights (what ONNX Runtime
    quantizes)."""
    for h in model.hooks:
        h.remove()
    inner = model.model
    modules = dict(inner.named_modules())
    for path, flag in model.inplace.items():
        modules[path].inplace = flag
    for m in inner.modules():
        if parametrize.is_parametrized(m, "weight") and isinstance(m.parametrizations.weight[0], _WeightFakeQuant):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)  # ours is the only one: attach checks
    return inner


def activation_quantizers(model: FakeQuantized) -> list[nn.Module]:
    return list(model.quantizers)


def weight_quantizers(model: nn.Module) -> list[nn.Module]:
    return [m.parametrizations.weight[0] for m in model.modules()
            if parametrize.is_parametrized(m, "weight") and isinstance(m.parametrizations.weight[0], _WeightFakeQuant)]


def range_parameters(model: FakeQuantized) -> list[nn.Parameter]:
    """The learned scales and zero points (learn_ranges), for their own optimizer group."""
    return [p for fq in activation_quantizers(model) if isinstance(fq, _LearnableFakeQuantize)
            for p in (fq.scale, fq.zero_point)]


def ranges(model: FakeQuantized, plan: Placement) -> list[tuple[list[Point], float, float]]:
    """Each quantizer's points and the float range its scale and zero point cover (rmin, rmax: what
    ONNX Runtime's TensorQuantOverrides take), in plan order."""
    out = []
    for fq, points in zip(activation_quantizers(model), plan.activations.values()):
        scale, zero_point = (float(v.reshape(-1)[0]) for v in fq.calculate_qparams())
        out.append((points, scale * (fq.quant_min - round(zero_point)), scale * (fq.quant_max - round(zero_point))))
    return out


@torch.no_grad()
def calibrate(model: FakeQuantized, batches: Iterable[torch.Tensor], device: torch.device | str = "cpu") -> None:
    """Set every input range to the min/max over `batches` (model inputs), in eval mode, as ONNX
    Runtime's MinMax calibration does: observed without fake quantization upstream (ONNX Runtime
    collects the float model's activations), then frozen."""
    quantizers = activation_quantizers(model)
    was_training = model.training
    model.eval()
    for fq in quantizers:
        fq.activation_post_process.reset_min_max_vals()
        _observe(fq, True)
    weights = weight_quantizers(model)
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


def settle(model: FakeQuantized) -> None:
    """Which learned range parameters train, from the quantizers' state (so a run resumed from a
    checkpoint decides as the uninterrupted one did): none of a quantizer calibration never reached (its
    points are on a path the forward did not take: no gradient, and DDP would wait for one); not the zero point of a range that
    starts at 0 (after a ReLU), which keeps starting there: pinned in ONNX Runtime, whose quantizer drops
    the ReLU, a negative start would let negatives through."""
    for fq in activation_quantizers(model):
        if isinstance(fq, _LearnableFakeQuantize):
            observed = bool(torch.isfinite(fq.activation_post_process.min_val))
            fq.scale.requires_grad_(observed)
            fq.zero_point.requires_grad_(observed and float(fq.zero_point.detach().reshape(-1)[0]) != fq.quant_min)
