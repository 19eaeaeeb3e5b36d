"""Hugging Face transformers classifiers: building (AutoModelForSequenceClassification, optionally a
subset of its layers), where their weights come from (hub id, local folder, offline cache), and
export through optimum's ONNX exporter and ONNX Runtime's transformer optimizer."""
from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from edgedistill.core.errors import ConfigError, StageError
from edgedistill.core.packages import import_optional, package_file
from edgedistill.models.presets import WeightsSpec

# ---- the modality -------------------------------------------------------------------------------


FUSED = {"Attention": ("Attention", "MultiHeadAttention"), "SkipLayerNormalization": ("SkipLayerNormalization",),
         "Gelu": ("Gelu", "FastGelu", "BiasGelu", "GemmFastGelu")}
"""What ONNX Runtime's transformer optimizer must have fused in a BERT-family graph, and the
operators that count as each."""


def missing_fusions(stats: dict) -> list[str]:
    return [name for name, ops in FUSED.items() if not any(stats.get(op, 0) for op in ops)]


def export_transformer(hf_model, path: Path, opset: int, log=print) -> dict:
    """A transformers sequence classifier to ONNX with optimum's exporter (task text-classification:
    dynamic batch and sequence axes, the inputs a tokenizer gives), then ONNX Runtime's transformer
    optimizer (model_type bert). Its fused-operator statistics must show Attention,
    SkipLayerNormalization and Gelu; when they do not, the model is exported again with eager
    attention (newer attention code paths export in forms older fusion patterns miss)."""
    import contextlib
    import logging
    import tempfile
    import warnings

    from onnxruntime.transformers.optimizer import optimize_model
    from optimum.exporters.onnx import onnx_export_from_model

    config = hf_model.config
    stats: dict = {}
    for attention in dict.fromkeys([config._attn_implementation, "eager"]):
        config._attn_implementation = attention
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), \
                contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            for name in ("optimum", "transformers", "onnxruntime"):
                logging.getLogger(name).setLevel(logging.ERROR)
            try:
                onnx_export_from_model(hf_model.eval(), output=tmp, task="text-classification", opset=opset,
                                       do_validation=False)
            except Exception as e:  # the exporter raises many types; all mean the same to the user
                raise StageError(f"optimum's ONNX export failed for {type(hf_model).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
            optimized = optimize_model(str(Path(tmp) / "model.onnx"), model_type="bert",
                                       num_heads=config.num_attention_heads, hidden_size=config.hidden_size)
            stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
            if not missing_fusions(stats):
                optimized.save_model_to_file(str(path))
                return {"exporter": "optimum", "attention": attention, "fused_operators": stats}
        log(f"the transformer optimizer did not fuse {', '.join(missing_fusions(stats))} with {attention} attention"
            + ("; exporting again with eager attention" if attention != "eager" else ""))
    raise StageError(f"ONNX Runtime's transformer optimizer did not fuse {', '.join(missing_fusions(stats))} "
                     f"(fused: {stats}); INT8 kernels would not apply. Is the model BERT-like (model_type bert)?")


# The transformers model types transformers:auto takes: where each keeps its layers (below the base
# model; None: one layer's weights shared by every layer, ALBERT) and its self-attention (below a layer),
# with that module's query, key and value projections. Each is tested (tests/models/test_architectures.py, a
# tiny random config each): a training step, the head, a layer-subset student, and optimum's export
# with ONNX Runtime's transformer optimizer fusing Attention, SkipLayerNormalization and Gelu.
BERT_LAYOUT = ("encoder.layer", "attention.self", ("query", "key", "value"))
TRANSFORMER_LAYOUTS = {
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "camembert", "electra", "data2vec-text", "megatron-bert",
                     "rembert", "ibert", "big_bird"), BERT_LAYOUT),
    "distilbert": ("transformer.layer", "attention", ("q_lin", "k_lin", "v_lin")),
    "albert": (None, "encoder.albert_layer_groups.0.albert_layers.0.attention", ("query", "key", "value")),
}
# Model types refused up front, with the reason measured (tests/models/test_architectures.py keeps it true).
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
    import_optional("transformers", "'transformers==4.57.6' 'optimum-onnx==0.1.0' (or pip install -e '.[text]')")
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


def build_transformer(name: str, kwargs: dict, num_classes: int, in_channels: int, weights: WeightsSpec | None,
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
