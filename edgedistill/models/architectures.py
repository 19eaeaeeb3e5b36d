"""Architectures by registry name, pretrained weights from their real sources, new task heads.

Architecture names (FAMILIES):
  torchvision:<name>          any torchvision classification model (torchvision.models.list_models)
  timm:<name>                 any timm model (timm.list_models), when timm is installed
  efficientnet_lite:<name>    efficientnet-lite0..4 of the efficientnet-lite-pytorch package
  transformers:auto           a Hugging Face transformers sequence classifier (AutoModelForSequenceClassification)
                              from its weights source, optionally keeping a subset of its layers (text)
  python:<module>:<function>  your own: function(num_classes=..., [in_channels=...], **kwargs) -> nn.Module
  edgedistill:<name>          the small students defined here (ARCHS)
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from edgedistill.core.config import check_trusted
from edgedistill.core.errors import ConfigError
from edgedistill.core.files import sha256_file
from edgedistill.core.packages import import_optional, package_file
from edgedistill.core.registry import Registry, did_you_mean
from edgedistill.models.presets import ModelPreset, WeightsSpec
from edgedistill.models.transformers import build_transformer

ARCHS: Registry = Registry("architecture")


@ARCHS.register("small_cnn")
def small_cnn(num_classes: int, in_channels: int = 3, width: int = 32, grid: int = 4) -> nn.Module:
    """Three conv-BN-ReLU-maxpool blocks (width, 2*width, 2*width channels), the feature map pooled
    to grid x grid and flattened into a linear head: ~77k parameters at width 32, grid 4.

    Keeping a coarse spatial grid instead of global average pooling matters for shape-defined classes
    such as digits (measured on MNIST-5k at 32 px: 98.4% vs 97.1% validation accuracy, same training).
    Plain convolutions quantize well to INT8 (no depthwise layers, no hard-swish)."""
    w = width

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

    return nn.Sequential(
        *block(in_channels, w), *block(w, 2 * w), *block(2 * w, 2 * w),
        nn.AdaptiveAvgPool2d(grid), nn.Flatten(), nn.Linear(2 * w * grid * grid, num_classes),
    )


@ARCHS.register("text_cnn")
def text_cnn(num_classes: int, in_channels: int = 1, vocab_size: int = 30522, embed_dim: int = 128, filters: int = 128,
             widths: str = "3,4,5", pad_id: int = 0, dropout: float = 0.2) -> nn.Module:
    """A 1-D CNN over token ids for the smallest devices (Kim, 2014; as a distillation student of
    BERT after Tang et al., 2019): embeddings, parallel convolutions of the given widths, max-pooled
    over the tokens that are not padding, a linear head. ~4.0M parameters at the defaults, 3.9M of
    them the embedding table of a 30,522-token vocabulary."""
    return TextCNN(num_classes, vocab_size, embed_dim, filters, [int(w) for w in str(widths).split(",")], pad_id, dropout)


class TextCNN(nn.Module):
    def __init__(self, num_classes: int, vocab_size: int, embed_dim: int, filters: int, widths: list[int], pad_id: int,
                 dropout: float):
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.convs = nn.ModuleList([nn.Conv1d(embed_dim, filters, w, padding="same") for w in widths])
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(filters * len(widths), num_classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pad = (input_ids == self.pad_id).unsqueeze(1)
        x = self.embed(input_ids).transpose(1, 2)
        pooled = [torch.relu(conv(x)).masked_fill(pad, float("-inf")).amax(dim=2) for conv in self.convs]
        return self.head(self.dropout(torch.cat(pooled, dim=1)))


def _torchvision_name(name: str) -> str:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ConfigError(f"unknown torchvision classification model '{name}'{did_you_mean(name, known)}")
    return name


def weights_file(spec: WeightsSpec) -> Path | None:
    """The local file (or, for transformers models, folder) the weights come from (None for torchvision
    names and hub ids: their own loaders resolve them). Its content is part of the cache key."""
    if spec.file is not None:
        if not Path(spec.file).exists():
            raise ConfigError(f"weights file '{spec.file}' does not exist")
        return Path(spec.file)
    if spec.package is not None:
        package, _, rel = spec.package.partition(":")
        return package_file(package, rel, f"--no-deps {package.replace('_', '-')}", ConfigError, folder=None)
    return None


def _load_torchvision_weights(name: str, weights_name: str) -> dict:
    """torchvision's own path: $TORCH_HOME/hub/checkpoints/<file>, downloaded there when missing."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name)[weights_name]
    except KeyError:
        names = [w.name for w in torchvision.models.get_model_weights(name)]
        raise ConfigError(f"torchvision model '{name}' has no weights '{weights_name}'; known: {', '.join(names)}") from None
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except OSError as e:  # URLError is an OSError: offline and not in the cache
        raise ConfigError(
            f"cannot get torchvision weights {name}.{weights_name} ({e}); put {Path(weights.url).name} in "
            f"$TORCH_HOME/hub/checkpoints/ or use a preset with a weights package or file"
        ) from None


def _state_dict(arch_name: str, spec: WeightsSpec) -> dict:
    path = weights_file(spec)
    if path is None:
        return _load_torchvision_weights(arch_name, spec.torchvision or "")
    if spec.sha256 and sha256_file(path) != spec.sha256:
        raise ConfigError(f"weights file '{path}' does not match the preset's sha256; it is corrupt or not the file meant")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses pickled code; other errors mean a damaged file
        raise ConfigError(f"weights file '{path}' cannot be loaded as a state_dict ({type(e).__name__}); "
                          f"give a torch.save'd state_dict of tensors") from None


def is_head(module: nn.Module) -> bool:
    """A classifier layer edgedistill can replace: nn.Linear, or a 1x1 nn.Conv2d (SqueezeNet's)."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
                                             and module.groups == 1)


def last_head(model: nn.Module) -> str:
    """Module path of the model's classifier: its last nn.Linear, or for a model without one, its last
    1x1 nn.Conv2d (torchvision's SqueezeNets classify with a 1x1 convolution)."""
    modules = list(model.named_modules())
    names = [n for n, m in modules if isinstance(m, nn.Linear)] or [n for n, m in modules if is_head(m)]
    if not names:
        raise ConfigError("the model has no nn.Linear (or 1x1 nn.Conv2d) classifier; name the head module in the preset "
                          "(head: ...)")
    return names[-1]


def swap_head(model: nn.Module, head: str, num_classes: int, arch: str) -> None:
    """Replace the classifier at `head` with a new one of the same kind for num_classes classes."""
    try:
        old = model.get_submodule(head)
    except AttributeError:
        raise ConfigError(f"preset head '{head}' is not a module of {arch}") from None
    if not is_head(old):
        raise ConfigError(f"preset head '{head}' is a {type(old).__name__}, not nn.Linear (or a 1x1 nn.Conv2d)")
    new = (nn.Linear(old.in_features, num_classes) if isinstance(old, nn.Linear)
           else nn.Conv2d(old.in_channels, num_classes, 1))
    model.set_submodule(head, new.to(next(old.parameters()).device))


# A family builds its model from (name, kwargs, num_classes, in_channels, weights): with weights it keeps
# the original classifier (the weights fit it; build() then puts a new head on), without it builds the
# task's head directly.
Constructor = Callable[[str, dict, int, int, "WeightsSpec | None"], nn.Module]
FAMILIES: Registry[Constructor] = Registry("architecture family")
FAMILIES.register("transformers")(build_transformer)  # type: ignore[arg-type]  (build() calls it with `pretrained`)


def parameter_names(module_name: str) -> set[str]:
    """Every parameter name of the functions and classes a module defines: the keywords its model
    constructors can take, whichever helper pops them (torchvision's builders hand **kwargs on to
    configuration functions and classes of the same module)."""
    import sys

    module = sys.modules.get(module_name)
    names: set[str] = set()
    for obj in vars(module).values() if module else ():
        if getattr(obj, "__module__", None) != module_name or not callable(obj):
            continue
        try:
            names |= {n for n, q in inspect.signature(obj).parameters.items()
                      if q.kind not in (q.VAR_POSITIONAL, q.VAR_KEYWORD)}
        except (TypeError, ValueError):  # builtins and the like have no signature
            pass
    return names


def builder_module(family: str, name: str) -> str:
    """The module that defines the constructor of family:name (for naming the keywords it takes; the
    model's own class may live elsewhere: small_cnn returns an nn.Sequential)."""
    if family == "torchvision":
        import torchvision

        return torchvision.models.get_model_builder(name).__module__
    if family == "edgedistill":
        return ARCHS.get(name).__module__
    return ""


@FAMILIES.register("edgedistill")
def _edgedistill(name: str, kwargs: dict, num_classes: int, in_channels: int, weights: WeightsSpec | None) -> nn.Module:
    if weights is not None:
        raise ConfigError(f"arch 'edgedistill:{name}' takes no pretrained weights")
    return ARCHS.get(name)(num_classes=num_classes, in_channels=in_channels, **kwargs)


def _three_channels(arch: str, in_channels: int) -> None:
    if in_channels != 3:
        raise ConfigError(f"'{arch}' takes 3 input channels; set data.channels: 3")


@FAMILIES.register("torchvision")
def _torchvision(name: str, kwargs: dict, num_classes: int, in_channels: int, weights: WeightsSpec | None) -> nn.Module:
    import torchvision

    name = _torchvision_name(name)
    _three_channels(f"torchvision:{name}", in_channels)
    if name in ("googlenet", "inception_v3"):
        # in training mode these return a named tuple with auxiliary logits (vision#302), and Inception v3's
        # auxiliary head needs 299 px: built without them, they train on one logits tensor like any model
        # (torchvision drops them after loading pretrained weights too). transform_input: as torchvision's
        # builder sets it for its own pretrained weights.
        kwargs = {"aux_logits": False, "init_weights": True,
                  "transform_input": weights is not None and weights.torchvision is not None, **kwargs}
    if weights is None:
        return torchvision.models.get_model(name, num_classes=num_classes, **kwargs)
    return torchvision.models.get_model(name, weights=None, **kwargs)


@FAMILIES.register("timm")
def _timm(name: str, kwargs: dict, num_classes: int, in_channels: int, weights: WeightsSpec | None) -> nn.Module:
    timm = import_optional("timm", "timm")
    if not timm.list_models(name):
        raise ConfigError(f"unknown timm model '{name}'{did_you_mean(name, timm.list_models())}")
    if weights is not None and weights.timm is not None:
        # timm's own loader: the Hugging Face Hub, or its local cache ($HF_HUB_CACHE) when offline;
        # with num_classes it puts a new, randomly initialized classifier on the pretrained body
        tag = f"{name}.{weights.timm}" if weights.timm else name
        try:
            return timm.create_model(tag, pretrained=True, num_classes=num_classes, in_chans=in_channels, **kwargs)
        except (OSError, RuntimeError) as e:
            raise ConfigError(f"cannot get timm weights for '{tag}' ({str(e).splitlines()[0]}); "
                              f"put them in the Hugging Face cache or use a weights file") from None
    if weights is None:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
    return timm.create_model(name, pretrained=False, in_chans=in_channels, **kwargs)


@FAMILIES.register("efficientnet_lite")
def _efficientnet_lite(name: str, kwargs: dict, num_classes: int, in_channels: int, weights: WeightsSpec | None) -> nn.Module:
    module = import_optional("efficientnet_lite_pytorch", "--no-deps efficientnet-lite-pytorch==0.1.0")
    _three_channels(f"efficientnet_lite:{name}", in_channels)
    known = [f"efficientnet-lite{i}" for i in range(5)]
    if name not in known:
        raise ConfigError(f"unknown EfficientNet-Lite '{name}'{did_you_mean(name, known)}; known: {', '.join(known)}")
    return module.EfficientNet.from_name(name, **({} if weights is not None else {"num_classes": num_classes}), **kwargs)


@FAMILIES.register("python")
def _python(ref: str, kwargs: dict, num_classes: int, in_channels: int, weights: WeightsSpec | None) -> nn.Module:
    """Your own model: python:<module>:<function>. The module is imported as Python code (your code, on
    your PYTHONPATH), only when the command line trusts it (--trust-code): the YAML, and a stored
    model.json, stay inert."""
    module_name, sep, function = ref.rpartition(":")
    if not sep or not module_name or not function:
        raise ConfigError(f"arch 'python:{ref}' must be 'python:<module>:<function>', e.g. python:mymodels:tiny_net")
    check_trusted(f"python:{ref}", "model")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"arch 'python:{ref}': cannot import '{module_name}' ({e}); is it on PYTHONPATH?") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise ConfigError(f"arch 'python:{ref}': '{module_name}' has no function '{function}'")
    params = inspect.signature(fn).parameters
    extra = {"in_channels": in_channels} if "in_channels" in params else {}
    model = fn(num_classes=num_classes, **extra, **kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"arch 'python:{ref}' returned a {type(model).__name__}, not a torch nn.Module")
    return model


def build(preset: ModelPreset, num_classes: int, in_channels: int, pretrained: bool = True,
          seed: int | None = None) -> tuple[nn.Module, str]:
    """The model for a preset with a head for num_classes. Returns (model, head module path).
    pretrained=False builds the same structure without loading weights (to load a trained state).
    seed: initialize every new parameter (a new head, a model from scratch) from this seed, without
    touching the global random state; None draws from the global state."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build(preset, num_classes, in_channels, pretrained)
    family, sep, name = preset.arch.partition(":")
    if not sep or family not in FAMILIES:
        raise ConfigError(f"arch '{preset.arch}' must be '<family>:<name>' with a family of {', '.join(FAMILIES.names())}"
                          f"{did_you_mean(family, FAMILIES.names())}")
    weights = preset.weights
    if family == "transformers":  # loads its own weights and config, and builds its own head
        model = build_transformer(name, dict(preset.kwargs), num_classes, in_channels, weights, pretrained)
        return model, preset.head or last_head(model)
    if weights is not None and weights.hf is not None:
        raise ConfigError(f"weights.hf names Hugging Face transformers weights; '{preset.arch}' is not a transformers: model")
    if weights is not None and weights.torchvision is not None and family != "torchvision":
        raise ConfigError(f"weights.torchvision names torchvision weights; '{preset.arch}' is not a torchvision model")
    if weights is not None and weights.timm is not None and family != "timm":
        raise ConfigError(f"weights.timm names timm weights; '{preset.arch}' is not a timm model")
    if weights is not None and weights.timm is not None:
        # timm loads its weights and puts the new head on itself; to rebuild a trained model, the
        # same structure without downloading
        model = FAMILIES.get(family)(name, dict(preset.kwargs), num_classes, in_channels, weights if pretrained else None)
        return model, preset.head or _timm_head(model)
    try:
        model = FAMILIES.get(family)(name, dict(preset.kwargs), num_classes, in_channels, weights)
    except (TypeError, ValueError) as e:  # a keyword the constructor does not take, or a value it refuses
        message = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        names = sorted(parameter_names(builder_module(family, name)))
        hint = "".join(did_you_mean(k, names) for k in preset.kwargs if k not in names)  # the keys nothing takes
        raise ConfigError(f"arch '{preset.arch}' cannot be built with kwargs {dict(preset.kwargs)}: {message}{hint}") from None
    if weights is None:
        return model, preset.head or (_timm_head(model) if family == "timm" else last_head(model))
    if pretrained:
        load_weights(model, _state_dict(name, weights), preset.arch)
    head = preset.head or last_head(model)
    swap_head(model, head, num_classes, preset.arch)
    return model, head


AUX_HEADS = ("aux1.", "aux2.", "AuxLogits.")
"""Auxiliary classifiers of torchvision's GoogLeNet (aux1, aux2) and Inception v3 (AuxLogits): their
pretrained weights exist, but edgedistill builds these models without them (see _torchvision)."""


def load_weights(model: nn.Module, state: dict, arch: str) -> None:
    """Load a pretrained state_dict; the weights of auxiliary classifiers the model is built without
    are left out, as torchvision's own builders drop them. ConfigError when the weights do not fit."""
    own = model.state_dict()
    for key in [k for k in state if k not in own and k.startswith(AUX_HEADS)]:
        del state[key]  # in place: the state_dict's _metadata (versions some modules check, MNASNet's) stays
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ConfigError(f"weights do not fit {arch}: {str(e).splitlines()[0]}") from None


def _timm_head(model: nn.Module) -> str:
    """timm names its classifier in the model's pretrained_cfg."""
    name = getattr(model, "pretrained_cfg", {}).get("classifier")
    return name if name and isinstance(model.get_submodule(name), nn.Linear) else last_head(model)
