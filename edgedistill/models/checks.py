"""Structure checks before any training: the model runs at the input size it will see (on the meta
device where it can), so a wrong size or a model that returns no logits fails in a second with a
clear message instead of after an epoch."""
from __future__ import annotations

import torch
from torch import nn

from edgedistill.core.errors import ConfigError
from edgedistill.core.registry import did_you_mean
from edgedistill.models.architectures import build, builder_module, parameter_names
from edgedistill.models.presets import ModelPreset
from edgedistill.models.transformers import transformer_config

CHECK_SIZES = (8, 16, 24, 32, 40, 48, 56, 64, 75, 96, 112, 128, 160, 192, 224, 256, 299, 320, 384, 448, 512)
"""Input sizes (px) a model that fails at the configured one is tried at, to say which it takes."""


def structure(preset: ModelPreset, num_classes: int, in_channels: int) -> nn.Module:
    """The model a preset builds (head included), without loading weights, on PyTorch's meta device
    (shapes only: no memory, no compute, even for a 600M-parameter model). A model whose construction
    computes with tensors (torchvision's RegNets derive their widths with torch) is built with only
    its parameters and buffers put on the meta device as they are registered, which is what
    accelerate's init_empty_weights does (not a dependency here, hence these few lines)."""
    try:
        with torch.device("meta"):
            return build(preset, num_classes, in_channels, pretrained=False)[0]
    except NotImplementedError:  # "Cannot copy out of meta tensor"
        pass
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(self, name, param):
        meta = None if param is None else nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, meta)

    def buffer(self, name, tensor, persistent=True):
        register_buffer(self, name, None if tensor is None else tensor.to("meta"), persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer
    try:
        return build(preset, num_classes, in_channels, pretrained=False, seed=0)[0]
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


@torch.no_grad()
def run_problem(model: nn.Module, in_channels: int, size: int, num_classes: int) -> str | None:
    """Why the model cannot train and predict on a batch of 2 images of size x size, or None: it must
    return one (2, num_classes) logits tensor in training mode and in evaluation mode."""
    device = next(model.parameters()).device
    x = torch.zeros(2, in_channels, size, size, device=device)
    for training in (True, False):
        model.train(training)
        mode = "training" if training else "evaluation"
        try:
            out = model(x)
        except Exception as e:  # shape errors come in many types
            return f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        if not isinstance(out, torch.Tensor):
            return (f"in {mode} mode it returns {type(out).__name__}, not one tensor of logits (auxiliary outputs?); "
                    f"build it without them (kwargs)")
        if tuple(out.shape) != (2, num_classes):
            return f"in {mode} mode its output has shape {tuple(out.shape)}, not (batch, {num_classes} classes)"
    return None


_CHECKED: set[tuple] = set()
"""check_runs calls that passed in this process: plan checks the student for two stages."""


def check_runs(preset: ModelPreset, num_classes: int, in_channels: int, size: int | None, role: str) -> None:
    """ConfigError, before anything is computed, when the model a preset builds cannot train on inputs
    of size x size px (too small for its pooling, a fixed-size ViT, auxiliary outputs in training):
    checked on the meta device, naming the sizes it does take. Text models (size None): the model
    type is checked (transformer_layout) as the architecture is built."""
    key = (preset.model_dump_json(), num_classes, in_channels, size)
    if key in _CHECKED:
        return
    _check_runs(preset, num_classes, in_channels, size, role)
    _CHECKED.add(key)


def _check_runs(preset: ModelPreset, num_classes: int, in_channels: int, size: int | None, role: str) -> None:
    if size is None:
        family, _, name = preset.arch.partition(":")
        if family == "transformers":
            transformer_config(name, dict(preset.kwargs), preset.weights)
        return
    model = structure(preset, num_classes, in_channels)
    _check_kwargs_used(preset, num_classes, in_channels, model, role)
    problem = run_problem(model, in_channels, size, num_classes)
    if problem is None:
        return
    sizes = [s for s in CHECK_SIZES if run_problem(model, in_channels, s, num_classes) is None]
    fix = (f"it runs at {', '.join(map(str, sizes[:8]))}{' ...' if len(sizes) > 8 else ''} px: set {role}.image_size "
           f"(or data.image_size)" if sizes else "no size from 8 to 512 px works with these settings")
    raise ConfigError(f"the {role} ({preset.arch}) cannot train on {size}x{size} inputs ({problem}); {fix}")


def _layout(model: nn.Module) -> tuple:
    """What a constructor keyword can change: the modules with their settings, and every tensor's shape."""
    return repr(model), [(n, tuple(t.shape)) for n, t in [*model.named_parameters(), *model.named_buffers()]]


def _check_kwargs_used(preset: ModelPreset, num_classes: int, in_channels: int, model: nn.Module, role: str) -> None:
    """ConfigError for a constructor keyword that no function or class of the model's module (or of its
    builder's) takes and that changes nothing in the model built: a misspelt name swallowed by a constructor that takes
    **kwargs (torchvision's MobileNetV3 drops what it does not know, so `width_mul: 0.5` would train the
    full-width model). One more build on the meta device for each such keyword. torchvision and
    edgedistill models only: timm's builder takes keywords of its own (drop_rate...) that leave no trace
    in the model's modules."""
    family, _, name = preset.arch.partition(":")
    if family not in ("torchvision", "edgedistill"):
        return
    names = parameter_names(type(model).__module__) | parameter_names(builder_module(family, name))
    for key in preset.kwargs:
        if key in names:
            continue
        without = preset.model_copy(update={"kwargs": {k: v for k, v in preset.kwargs.items() if k != key}})
        if _layout(structure(without, num_classes, in_channels)) == _layout(model):
            raise ConfigError(f"the {role}'s kwargs key '{key}' changes nothing in {preset.arch} (its constructor "
                              f"drops keywords it does not take){did_you_mean(key, sorted(names))}; fix or remove it")
