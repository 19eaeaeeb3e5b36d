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
import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .config import ModelPreset, WeightsSpec, check_trusted
from .errors import ConfigError, IntegrityError
from .packages import package_file
from .registry import Registry, did_you_mean
from .store import sha256_file

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


# The transformers model types transformers:auto takes: where each keeps its layers (below the base
# model; None: one layer's weights shared by every layer, ALBERT) and its self-attention (below a layer),
# with that module's query, key and value projections. Each is tested (tests/test_architectures.py, a
# tiny random config each): a training step, the head, a layer-subset student, and optimum's export
# with ONNX Runtime's transformer optimizer fusing Attention, SkipLayerNormalization and Gelu.
BERT_LAYOUT = ("encoder.layer", "attention.self", ("query", "key", "value"))
TRANSFORMER_LAYOUTS = {
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "camembert", "electra", "data2vec-text", "megatron-bert",
                     "rembert", "ibert", "big_bird"), BERT_LAYOUT),
    "distilbert": ("transformer.layer", "attention", ("q_lin", "k_lin", "v_lin")),
    "albert": (None, "encoder.albert_layer_groups.0.albert_layers.0.attention", ("query", "key", "value")),
}
# Model types refused up front, with the reason measured (tests/test_architectures.py keeps it true).
NO_FUSED_ATTENTION = "ONNX Runtime's transformer optimizer does not fuse its attention, so INT8 kernels would not apply"
NO_OPTIMUM_EXPORT = "optimum 2.1 has no ONNX export for it"
TRANSFORMER_REFUSED = {
    **dict.fromkeys(("deberta", "deberta-v2", "mpnet", "convbert", "mobilebert", "nystromformer", "layoutlm", "markuplm",
                     "xlm", "flaubert"), NO_FUSED_ATTENTION),
    **dict.fromkeys(("ernie", "roberta-prelayernorm", "xlm-roberta-xl", "luke", "roc_bert", "canine", "mra", "yoso",
                     "fnet", "nezha", "mega", "esm"), NO_OPTIMUM_EXPORT),
}


def transformer_layout(model_type: str) -> tuple:
    """(layers path, attention path, query/key/value names) of a supported model type; ConfigError
    naming why for the others."""
    if model_type in TRANSFORMER_LAYOUTS:
        return TRANSFORMER_LAYOUTS[model_type]
    why = TRANSFORMER_REFUSED.get(model_type, "it is not among the model types edgedistill is tested with")
    raise ConfigError(f"transformers model type '{model_type}' cannot be used: {why}; supported: "
                      f"{', '.join(TRANSFORMER_LAYOUTS)} (BERT-family encoders)")


class HFClassifier(nn.Module):
    """A transformers sequence classifier that takes token ids alone, (N, L) int64 right-padded: its
    attention mask is ids != pad id, which is what the tokenizer's mask is for such input. One input
    keeps the training loop, predict and the taps the same for every model. Export goes through
    optimum on the inner model (self.hf), whose graph takes input_ids, attention_mask and
    token_type_ids as a device sends them. Its model type must be one of TRANSFORMER_LAYOUTS."""

    def __init__(self, hf: nn.Module):
        super().__init__()
        self.hf = hf
        self.pad_id = hf.config.pad_token_id if hf.config.pad_token_id is not None else 0
        self.layout = transformer_layout(hf.config.model_type)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=input_ids, attention_mask=(input_ids != self.pad_id).long()).logits

    @property
    def base(self) -> nn.Module:
        return getattr(self.hf, self.hf.base_model_prefix)

    def layers(self) -> nn.ModuleList | None:
        """The transformer layers, in order (None: one layer's weights shared by all, as in ALBERT)."""
        return None if self.layout[0] is None else self.base.get_submodule(self.layout[0])

    def backbone_blocks(self) -> list[nn.Module]:
        """The embeddings, then every transformer layer (ALBERT: its shared encoder): what partial and
        gradual fine-tuning unfreeze."""
        layers = self.layers()
        return [self.base.embeddings, *(layers if layers is not None else [self.base.encoder])]

    def last_attention(self) -> str:
        """Module path of the last layer's self-attention (its query, key and value projections)."""
        layers, (where, attention, _) = self.layers(), self.layout
        prefix = f"hf.{self.hf.base_model_prefix}"
        return f"{prefix}.{attention}" if layers is None else f"{prefix}.{where}.{len(layers) - 1}.{attention}"

    def attention_projections(self) -> tuple[str, str, str]:
        """Names of the query, key and value projections inside a self-attention module."""
        return self.layout[2]


def hf_ref(spec: WeightsSpec) -> str | None:
    """Where a transformers model (and its tokenizer) comes from, written so that it does not depend on
    where packages are installed: a hub id, a folder, or package:<name>:<folder>. None if spec names none."""
    if spec.package is not None:
        return f"package:{spec.package}"
    if spec.hf is not None or (spec.file is not None and Path(spec.file).is_dir()):
        return spec.hf or str(spec.file)
    return None


def resolve_hf_ref(ref: str) -> str:
    """An hf_ref as transformers loads it: package:<name>:<folder> becomes that folder."""
    if not ref.startswith("package:"):
        return ref
    package, _, rel = ref.removeprefix("package:").partition(":")
    return str(package_file(package, rel, f"--no-deps {package.replace('_', '-')}", ConfigError, folder=True))


def hf_source(spec: WeightsSpec) -> str | None:
    """The folder or hub id a transformers model (and its tokenizer) loads from; None if spec names none."""
    ref = hf_ref(spec)
    return None if ref is None else resolve_hf_ref(ref)


def layer_subset(total: int, keep: int | str) -> list[int]:
    """Which of a transformer's `total` layers a student keeps: an explicit list ("0,2,4"), or a
    count spread evenly from the first layer (round(i * total / keep)): 3 of 6 -> 0, 2, 4 and
    6 of 12 -> 0, 2, ..., 10, DistilBERT's every other layer."""
    if isinstance(keep, str):
        try:
            layers = [int(v) for v in keep.split(",")]
        except ValueError:
            raise ConfigError(f"layers '{keep}' must be comma-separated layer numbers, e.g. 0,2,4") from None
    else:
        if not 1 <= keep <= total:
            raise ConfigError(f"num_layers {keep}: the model has {total} layers; keep 1 to {total}")
        layers = [round(i * total / keep) for i in range(keep)]
    if not layers or any(not 0 <= i < total for i in layers) or len(set(layers)) != len(layers):
        raise ConfigError(f"layers {layers}: give distinct layer numbers from 0 to {total - 1}")
    return layers


def transformer_config(name: str, kwargs: dict, weights: WeightsSpec | None, num_classes: int | None = None):
    """(source, config, kept layer numbers or None) of a transformers:auto preset, everything checked:
    the name, the weights source, the kwargs, a supported model type (transformer_layout) and the
    layer subset. Reads only config.json. ConfigError naming the problem."""
    _import("transformers", "'transformers==4.57.6' 'optimum-onnx==0.1.0' (or pip install -e '.[text]')")
    import transformers
    from transformers import AutoConfig

    if name != "auto":
        raise ConfigError(f"arch 'transformers:{name}': the only name is 'auto' (the model comes from the weights)")
    source = hf_source(weights) if weights is not None else None
    if source is None:
        raise ConfigError("arch 'transformers:auto' needs weights: hf (a hub id), package (a folder in a package) or "
                          "file (a local model folder)")
    unknown = set(kwargs) - {"num_layers", "layers"}
    if unknown:
        raise ConfigError(f"arch 'transformers:auto' takes kwargs num_layers or layers, not {', '.join(sorted(unknown))}")
    transformers.logging.set_verbosity_error()  # "newly initialized classifier": that is the point
    try:
        config = AutoConfig.from_pretrained(source, **({} if num_classes is None else {"num_labels": num_classes}))
    except OSError as e:  # offline and not in the cache, or not a model folder
        raise ConfigError(f"cannot load transformers model '{source}' ({str(e).splitlines()[0][:120]}); give a local "
                          f"model folder or a hub id in the Hugging Face cache") from None
    keep = kwargs.get("layers", kwargs.get("num_layers"))
    if keep is not None and transformer_layout(config.model_type)[0] is None:  # refuses unsupported types too
        raise ConfigError(f"'{config.model_type}' shares one layer's weights across all its layers: a layer subset "
                          f"(kwargs num_layers, layers) keeps nothing of it; use the whole model")
    if keep is None:
        transformer_layout(config.model_type)  # refuses unsupported types
    return source, config, layer_subset(config.num_hidden_layers, keep) if keep is not None else None


def _transformers(name: str, kwargs: dict, num_classes: int, in_channels: int, weights: WeightsSpec | None,
                  pretrained: bool) -> nn.Module:
    """transformers:auto: AutoModelForSequenceClassification from the weights' folder or hub id, with a
    new num_classes head. kwargs: num_layers (keep that many layers, evenly spaced) or layers ("0,2,4"),
    each initialised from the pretrained layer of that number (DistilBERT's initialisation)."""
    from transformers import AutoModelForSequenceClassification

    source, config, layers = transformer_config(name, kwargs, weights, num_classes)
    if not pretrained:
        if layers is not None:
            config.num_hidden_layers = len(layers)
        return HFClassifier(AutoModelForSequenceClassification.from_config(config))
    try:
        # a checkpoint fine-tuned for another number of classes gets a new head (the point of fine-tuning)
        hf = AutoModelForSequenceClassification.from_pretrained(source, config=config, ignore_mismatched_sizes=True)
    except OSError as e:  # offline and not in the cache, or not a model folder
        raise ConfigError(f"cannot load transformers model '{source}' ({str(e).splitlines()[0][:120]}); give a local "
                          f"model folder or a hub id in the Hugging Face cache") from None
    if layers is not None:
        parent, _, attr = transformer_layout(config.model_type)[0].rpartition(".")
        holder = getattr(hf, hf.base_model_prefix).get_submodule(parent)
        setattr(holder, attr, nn.ModuleList([getattr(holder, attr)[i] for i in layers]))
        hf.config.num_hidden_layers = len(layers)
    return HFClassifier(hf)


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
FAMILIES.register("transformers")(_transformers)  # type: ignore[arg-type]  (build() calls it with `pretrained`)


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


def _import(module: str, install: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"this preset needs the Python package '{module}': pip install {install}") from None


@FAMILIES.register("timm")
def _timm(name: str, kwargs: dict, num_classes: int, in_channels: int, weights: WeightsSpec | None) -> nn.Module:
    timm = _import("timm", "timm")
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
    module = _import("efficientnet_lite_pytorch", "--no-deps efficientnet-lite-pytorch==0.1.0")
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
        model = _transformers(name, dict(preset.kwargs), num_classes, in_channels, weights, pretrained)
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
    except TypeError as e:  # a keyword the architecture's constructor does not take
        raise ConfigError(f"arch '{preset.arch}' cannot be built with kwargs {dict(preset.kwargs)}: "
                          f"{str(e).splitlines()[0][:120]}") from None
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
    problem = run_problem(model, in_channels, size, num_classes)
    if problem is None:
        return
    sizes = [s for s in CHECK_SIZES if run_problem(model, in_channels, s, num_classes) is None]
    fix = (f"it runs at {', '.join(map(str, sizes[:8]))}{' ...' if len(sizes) > 8 else ''} px: set {role}.image_size "
           f"(or data.image_size)" if sizes else "no size from 8 to 512 px works with these settings")
    raise ConfigError(f"the {role} ({preset.arch}) cannot train on {size}x{size} inputs ({problem}); {fix}")


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
