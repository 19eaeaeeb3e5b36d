"""Fake quantization that emulates ONNX Runtime's static INT8, for quantization-aware training (the qat stage).

What is emulated, and how it matches ONNX Runtime's quantize_static (onnxruntime/quantization):
- weights of every Conv (1d/2d) and Linear: symmetric INT8, per output channel or per tensor as the
  recipe says, range [-127, 127] ([-64, 64] with reduce_range): ONNX Runtime's
  get_qmin_qmax_for_qType(INT8, symmetric=True) and its reduced range. Per-channel symmetric
  quantization commutes with folding BatchNorm into the convolution (the channel's scale factor
  multiplies the channel's absolute maximum), so the unfolded PyTorch weights see the grid the
  exported, folded ones get.
- the input of each of those layers: per-tensor asymmetric UINT8 [0, 255] (or INT8 [-128, 127]),
  with ranges set by min/max calibration on the calibration images, ONNX Runtime's MinMax rule
  (the range widened to include 0). They are recalibrated at the start of every epoch (calibrate()),
  so training always sees the ranges ONNX Runtime would compute for the current weights; after
  training the exported model is calibrated by ONNX Runtime itself on the same images.
Not emulated: Q/DQ pairs on other tensors (the inputs of residual Adds and of elementwise ops that
some recipes quantize), and the integer kernels' own rounding (VPMADDUBSW saturation included: that is
what reduce_range avoids). The fake quantization itself is torch.ao.quantization's FakeQuantize and
its observers; only where to put them is decided here (forward pre-hooks and a weight
parametrization, so any torchvision, timm or Hugging Face model is trained untouched).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize, MinMaxObserver, PerChannelMinMaxObserver
from torch.nn.utils import parametrize

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
"""The layers ONNX Runtime quantizes as weight-bearing operators (Conv, Gemm, MatMul)."""


@dataclass(frozen=True)
class Emulation:
    """What ONNX Runtime's quantizer will do, as fake quantization needs it."""

    per_channel: bool = True
    reduce_range: bool = False
    activation_type: str = "uint8"
    """uint8 or int8 (the recipe's activation_type)."""

    @classmethod
    def of(cls, q: Any) -> "Emulation":
        """From a resolved QuantizeConfig (reduce_range a bool). ValueError for what is not static
        INT8 with INT8 weights (dynamic quantization computes its ranges per batch; FP16 needs no training)."""
        if q.method != "static" or q.weight_type != "int8":
            raise ValueError(f"quantization-aware training emulates static INT8 with INT8 weights, not method {q.method} "
                             f"with {q.weight_type} weights")
        return cls(per_channel=q.per_channel, reduce_range=bool(q.reduce_range), activation_type=q.activation_type)

    def weight_fake_quant(self) -> FakeQuantize:
        bound = 64 if self.reduce_range else 127
        if self.per_channel:
            return FakeQuantize(PerChannelMinMaxObserver, quant_min=-bound, quant_max=bound, dtype=torch.qint8,
                                qscheme=torch.per_channel_symmetric, ch_axis=0)
        return FakeQuantize(MinMaxObserver, quant_min=-bound, quant_max=bound, dtype=torch.qint8,
                            qscheme=torch.per_tensor_symmetric)

    def activation_fake_quant(self) -> FakeQuantize:
        lo, hi, dtype = (0, 255, torch.quint8) if self.activation_type == "uint8" else (-128, 127, torch.qint8)
        fq = FakeQuantize(MinMaxObserver, quant_min=lo, quant_max=hi, dtype=dtype, qscheme=torch.per_tensor_affine)
        fq.disable_observer()  # ranges come from calibrate(), never from training batches
        return fq


class _WeightFakeQuant(nn.Module):
    """A parametrization: the weight as ONNX Runtime will store it. Its scale follows the weight at
    every step (min/max of the current weight, as the quantizer computes it after training)."""

    def __init__(self, fq: FakeQuantize):
        super().__init__()
        self.fq = fq

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        self.fq.activation_post_process.reset_min_max_vals()
        return self.fq(w)


def attach(model: nn.Module, emulation: Emulation) -> list[str]:
    """Put fake quantization on every Conv and Linear of model (in place): its weight through a
    parametrization, its input through a FakeQuantize child named `input_fake_quant` run by a forward
    pre-hook. Returns the paths of the layers. ValueError when the model has none."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LAYERS)]
    if not layers:
        raise ValueError("the model has no Conv or Linear layer to quantize")
    for _, m in layers:
        parametrize.register_parametrization(m, "weight", _WeightFakeQuant(emulation.weight_fake_quant()))
        m.input_fake_quant = emulation.activation_fake_quant()
        m._fake_quant_hook = m.register_forward_pre_hook(lambda mod, args: (mod.input_fake_quant(args[0]), *args[1:]))
    return [name for name, _ in layers]


def detach(model: nn.Module) -> None:
    """Remove what attach() added, leaving the trained float weights (what ONNX Runtime quantizes)."""
    for m in model.modules():
        if isinstance(m, LAYERS) and hasattr(m, "input_fake_quant"):
            m._fake_quant_hook.remove()
            del m._fake_quant_hook, m.input_fake_quant
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)


def activation_quantizers(model: nn.Module) -> list[FakeQuantize]:
    return [m.input_fake_quant for m in model.modules() if isinstance(m, LAYERS) and hasattr(m, "input_fake_quant")]


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
        fq.enable_observer()
        fq.disable_fake_quant()
    weights = [m.parametrizations.weight[0].fq for m in model.modules() if isinstance(m, LAYERS) and hasattr(m, "input_fake_quant")]
    for fq in weights:
        fq.disable_fake_quant()
    for x in batches:
        model(x.to(device))
    for fq in quantizers:
        fq.disable_observer()
        fq.enable_fake_quant()  # its scale and zero point were set from the observer on the last batch
    for fq in weights:
        fq.enable_fake_quant()
    model.train(was_training)
