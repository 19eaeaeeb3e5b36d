"""Trained-model files: model.pt beside model.json (preset, classes, channels, input size), written
and read back with a check."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from edgedistill.core.errors import ConfigError, IntegrityError
from edgedistill.models.architectures import build
from edgedistill.models.presets import ModelPreset


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_trained(model: nn.Module, preset: ModelPreset, num_classes: int, in_channels: int, out: Path,
                 image_size: int) -> None:
    """model.pt (state_dict) and model.json (how to rebuild it, and the input size it was trained at) in out."""
    torch.save(model.state_dict(), out / "model.pt")
    (out / "model.json").write_text(json.dumps({
        "preset": preset.model_dump(mode="json"), "num_classes": num_classes, "in_channels": in_channels,
        "image_size": image_size, "params": num_params(model),
    }, indent=2))


def trained_info(path: Path) -> dict:
    """model.json of a trained model folder (what load_trained rebuilds from), checked."""
    path = Path(path)
    if not (path / "model.json").is_file() or not (path / "model.pt").is_file():
        raise ConfigError(f"'{path}' is not a trained model folder (model.pt and model.json), such as "
                          f"<store>/results/finetune/<key>/")
    try:
        info = json.loads((path / "model.json").read_text())
        ModelPreset.model_validate(info["preset"])
        # image_size: absent in folders written before models had sizes of their own
        if not all(isinstance(info[k], int) and info[k] > 0 for k in ("num_classes", "in_channels")) or \
                not (info.get("image_size") is None or isinstance(info["image_size"], int) and info["image_size"] > 0):
            raise ValueError("num_classes, in_channels and image_size must be positive integers")
    except Exception as e:  # not JSON, keys missing, a preset that does not validate
        raise IntegrityError(f"'{path / 'model.json'}' is not a model description edgedistill wrote "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''})") from None
    return info


def input_size(path: Path, default: int) -> int:
    """The input size a trained model folder was trained at (default: for folders that predate it)."""
    return trained_info(path).get("image_size") or default


def load_trained(path: Path) -> nn.Module:
    """A trained model folder (model.json + model.pt) back as a model, in eval mode."""
    path = Path(path)
    info = trained_info(path)
    model, _ = build(ModelPreset.model_validate(info["preset"]), info["num_classes"], info["in_channels"], pretrained=False)
    try:
        state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # torch's own message suggests weights_only=False: the wrong advice for a damaged file
        raise IntegrityError(f"'{path / 'model.pt'}' cannot be loaded as the weights of its model.json "
                             f"({type(e).__name__}); the file is damaged or not one edgedistill wrote") from None
    return model.eval()
