"""TrainConfig: what every training stage shares (epochs, optimizer, schedule, augmentation, precision,
loader workers, checkpoints)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgedistill.core.config import Strict


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
