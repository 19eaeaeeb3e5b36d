"""Feature taps: forward hooks on named modules for hint and relation distillation, and the path of
the classification head."""
from __future__ import annotations

import torch
from torch import nn

from edgedistill.core.errors import ConfigError
from edgedistill.core.registry import did_you_mean
from edgedistill.models.architectures import last_head
from edgedistill.models.presets import ModelPreset


def head_path(model: nn.Module, preset: ModelPreset) -> str:
    return preset.head or last_head(model)


def find_module(model: nn.Module, path: str, role: str) -> nn.Module:
    """model's submodule at path, or a ConfigError naming the nearest valid paths."""
    names = [n for n, _ in model.named_modules() if n]
    if path not in names:
        raise ConfigError(f"the {role} has no module '{path}'{did_you_mean(path, names)}; "
                          f"its modules: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}")
    return model.get_submodule(path)


class Taps:
    """Outputs (or inputs) of named modules in the latest forward pass, taken with forward hooks, so
    any torchvision or timm model can be distilled untouched (torchdistill's ForwardHookManager idea;
    here the module paths come from the config and are checked by find_module)."""

    def __init__(self, model: nn.Module, role: str):
        self.model, self.role = model, role
        self.values: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def add(self, name: str, path: str, use_input: bool = False) -> None:
        module = find_module(self.model, path, self.role)
        if use_input:
            hook = module.register_forward_pre_hook(lambda m, args: self.values.__setitem__(name, args[0]))
        else:
            # a transformer layer returns a tuple: its first element is the hidden states
            hook = module.register_forward_hook(
                lambda m, args, out: self.values.__setitem__(name, out[0] if isinstance(out, tuple) else out))
        self._handles.append(hook)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
