"""The one training loop, shared by fine-tuning and distillation.

Resumable and reproducible: the data order and every random draw of epoch e come from a generator
seeded with (seed, e), and a checkpoint (model, optimizer, scheduler, history) is written atomically
after every epoch. A run killed at any moment and started again continues from the last finished
epoch and ends with the same weights as a run that was never interrupted (CPU, same thread count).

Under torchrun (torch.distributed initialized by the CLI) the same loop is data-parallel: the model
is wrapped in DistributedDataParallel, a DistributedSampler gives each process its share of every
global batch (batch_size is the global batch), and rank 0 alone writes checkpoints and prints.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from edgedistill.core.distributed import world
from edgedistill.core.errors import ConfigError, StageError
from edgedistill.data.splits import MapsByName, input_batches
from edgedistill.training.config import TrainConfig
from edgedistill.training.loader import loader

LossFn = Callable[[Any, torch.Tensor, torch.Tensor, torch.Tensor], "torch.Tensor | dict[str, torch.Tensor]"]
"""loss(output, teacher_inputs, labels, indices) -> a scalar, or {term: scalar} whose sum is the loss
(each term's epoch mean goes into the history as train_<term>_loss). output: what `forward` returned
(the model's logits by default); teacher_inputs: the batch as a teacher sees it (the same augmented
images at the teacher's size; the model's inputs without a teacher size); indices: the batch's rows in
the training split."""

Forward = Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]
"""forward(net, inputs, teacher_inputs) -> the output loss_fn takes; the default calls net(inputs)."""


def model_only(net: nn.Module, x: torch.Tensor, teacher_x: torch.Tensor) -> torch.Tensor:
    """fit's default forward: the model on its own input."""
    return net(x)


def resolve_device(name: str) -> torch.device:
    """auto: CUDA when present, else the CPU. Under torchrun each process takes the GPU of its LOCAL_RANK."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but no CUDA device is available; use device: auto or cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


EVAL_BATCH = 64
"""Examples a forward pass in eval mode takes where no training batch size applies (export's parity
and student comparison): no more than a training step holds, so memory stays flat from the
smallest data set up (one MobileNetV2 activation at 224 px and batch 256 is 1.2 GB)."""


def optimizer_stepped(scaler: torch.amp.GradScaler, scale_before: float | None) -> tuple[bool, float | None]:
    """Whether the last scaler.step() stepped the optimizer, and the loss scale now (call after
    scaler.update()). fp16's scaler skips the step when gradients overflowed and lowers its scale;
    the learning-rate schedule then waits too, as Hugging Face Accelerate does
    (optimizer_step_was_skipped). A disabled scaler (fp32, bf16) always steps: (True, None)."""
    if scale_before is None or not scaler.is_enabled():
        return True, None
    scale = scaler.get_scale()  # one host sync per fp16 step
    return scale >= scale_before, scale


@torch.no_grad()
def predict(model: nn.Module, x: Any, device: torch.device | str = "cpu", batch: int = EVAL_BATCH) -> torch.Tensor:
    """Logits for all of x, in eval mode, on the CPU, `batch` examples a pass (callers that train pass
    their training batch size). x: a split (data.image.Split, data.text.TextSplit; converted to float one
    batch at a time), or an array or tensor of model inputs."""
    model.eval()
    return torch.cat([model(torch.as_tensor(chunk).to(device)).float().cpu() for chunk in input_batches(x, batch)])


def test_and_save(model: nn.Module, preset: Any, ds: Any, image_size: int, out: Path, batch: int = EVAL_BATCH) -> float:
    """A trained model's test accuracy (%) at its input size (`batch` examples a pass: the training
    batch size); then model.pt and model.json into out. preset: its models.presets.ModelPreset; ds: the data.dataset.Dataset."""
    from edgedistill import models

    test = ds.split("test", image_size)
    test_acc = accuracy(predict(model, test, batch=batch), test.labels)
    models.save_trained(model, preset, len(ds.classes), ds.channels, out, image_size=image_size)
    return test_acc


def accuracy(logits: torch.Tensor | np.ndarray, labels: np.ndarray | torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    pred = np.asarray(logits).argmax(axis=1)
    return float((pred == np.asarray(labels)).mean() * 100.0)


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, forward: Callable[[torch.Tensor], Any], order: torch.Tensor,
                       batch_size: int, batches: int) -> None:
    """Precise BN (as in pycls and timm): reset the running statistics of BatchNorm layers that are
    training and re-estimate them as a plain average over `batches` training batches. forward(rows)
    runs the model on the clean inputs of these training rows. Written here because torch has no such
    helper for classification models; it is deterministic, so resuming from a checkpoint gives the same
    statistics."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not norms or batches == 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    for i in range(min(batches, len(order) // batch_size)):
        forward(order[i * batch_size:(i + 1) * batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def _save_atomic(state: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class FitResult:
    history: list[dict]
    """Per epoch: train loss, validation accuracy."""
    best_epoch: int
    """Epoch (1-based) with the best validation accuracy."""
    final_epoch: int
    """Epoch whose weights the model ends with: best_epoch with keep_best, else the last one trained."""

    @property
    def val_accuracy(self) -> float:
        return self.history[self.final_epoch - 1]["val_accuracy"]


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 to 0 over the rest."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def fit(model: nn.Module, train: MapsByName, val: tuple[Any, np.ndarray] | None, *,
        cfg: TrainConfig, param_groups: list[dict], loss_fn: LossFn, seed: int, checkpoint: Path,
        desc: str, epoch_start: Callable[[int], tuple[nn.Module, ...]] = lambda epoch: (),
        progress: bool = True, forward: Forward = model_only,
        validate: Callable[[nn.Module, torch.device, int], dict[str, float]] | None = None) -> FitResult:
    """Train model in place; returns the per-epoch history and which epoch's weights it ends with.

    val: (inputs, labels); inputs a split (converted per batch) or an array of model inputs.
    param_groups: torch optimizer groups, each with its own "lr" (the peak learning rate) and optionally
    its own "weight_decay".
    epoch_start(epoch): called before each epoch (0-based, also when resuming); may change which
    parameters train (requires_grad) and returns the modules kept in eval mode during it (frozen
    backbones keep their BatchNorm statistics).
    forward: how a batch goes through the model (several models trained in one loop take both views).
    validate(model, device, batch) -> {"val_accuracy": %, other numbers}: the end-of-epoch evaluation
    that goes into the history (val_accuracy picks the best epoch); default: the accuracy on val.
    """
    from torch.nn.parallel import DistributedDataParallel

    rank, world_size = world()
    device = resolve_device(cfg.device)
    amp_dtype = AMP_DTYPES[cfg.precision]
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"{desc}: precision fp16 needs CUDA (device is {device}); use bf16 or fp32 on the CPU")
    if cfg.batch_size % world_size:
        raise ConfigError(f"{desc}: batch_size {cfg.batch_size} (the global batch) must divide by the {world_size} processes")
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    n = len(train)
    # drop the last incomplete batch: BatchNorm cannot train on a batch of one
    steps_per_epoch = max(1, n // cfg.batch_size)
    local_batch = cfg.batch_size // world_size
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(param_groups, weight_decay=cfg.weight_decay)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    say = (lambda msg: print(f"    {msg}", flush=True)) if rank == 0 else (lambda msg: None)
    if validate is None:
        assert val is not None
        validate = lambda m, dev, batch: {"val_accuracy": accuracy(predict(m, val[0], dev, batch=batch), val[1])}

    def clean_forward(rows: torch.Tensor) -> Any:  # precise BN: every model trained sees its own clean view
        if forward is model_only:
            return model(train.clean(rows).to(device, memory_format=fmt))
        x, teacher_x = train.clean_views(rows)
        x = x.to(device, memory_format=fmt)
        return forward(model, x, x if teacher_x is None else teacher_x.to(device, memory_format=fmt))

    history: list[dict] = []
    start_epoch, best_epoch, best_state = 0, 0, None
    if checkpoint.is_file():
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        try:
            state = torch.load(checkpoint, map_location=device, weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            history, start_epoch = state["history"], state["epoch"]
            best_epoch, best_state = state["best_epoch"], state["best_model"]
            say(f"{desc}: resuming after epoch {start_epoch}/{cfg.epochs} from {checkpoint}")
        except Exception as e:  # damaged, or not ours: never trusted, never fatal
            model.load_state_dict(initial)  # a half-applied state must not leak into the fresh start
            optimizer = torch.optim.AdamW(param_groups, weight_decay=cfg.weight_decay)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup))
            scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
            history, start_epoch, best_epoch, best_state = [], 0, 0, None
            if rank == 0:
                aside = checkpoint.with_name(f"{checkpoint.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
                os.replace(checkpoint, aside)
                say(f"{desc}: checkpoint {checkpoint} cannot be read ({type(e).__name__}); set aside as {aside.name}, "
                    f"training from the start")

    net, net_params = model, None
    # batches are read, augmented and mixed by cfg.workers processes (their draws are keyed by image
    # and epoch, so the number of workers changes nothing but speed)
    feed = loader(train, cfg.workers, pin_memory=device.type == "cuda", rank=rank)
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.early_stopping_patience and history and len(history) - best_epoch >= cfg.early_stopping_patience:
            say(f"{desc}: stopping early, no better validation accuracy since epoch {best_epoch}")
            break
        started = time.time()
        frozen = epoch_start(epoch)
        trainable = tuple(p.requires_grad for p in model.parameters())
        if net_params != trainable:  # DDP and torch.compile track the trainable set: rewrap when it changes
            net_params, net = trainable, model
            if world_size > 1:
                net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
            if cfg.compile:
                net = torch.compile(net)
        # the sampler's permutation is the same in every process; each takes every world_size-th index,
        # so step s of all processes together covers the same global batch as one process would
        sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True,
                                                      seed=seed * 100_003, drop_last=True)
        sampler.set_epoch(epoch)
        local = torch.tensor(list(sampler), dtype=torch.long)
        feed.sampler.items = [(epoch, step, local[step * local_batch:(step + 1) * local_batch])
                              for step in range(steps_per_epoch)]
        torch.manual_seed(seed * 100_003 + epoch + 7919 * rank)  # dropout and the like: this epoch's draws
        model.train()
        for m in frozen:
            m.eval()
        totals, terms = None, ()
        bar = tqdm(feed, total=steps_per_epoch, desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress or rank != 0, leave=False, unit="step")
        scale = scaler.get_scale() if scaler.is_enabled() else None  # fp16: the loss scale before the next step
        for step, (x, y, idx, teacher_x) in enumerate(bar):
            x, y = x.to(device, memory_format=fmt, non_blocking=True), y.to(device, non_blocking=True)
            teacher_x = x if teacher_x is None else teacher_x.to(device, memory_format=fmt, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_fn(forward(net, x, teacher_x), teacher_x, y, idx)
            parts = loss if isinstance(loss, dict) else {}
            if parts:
                terms, loss = tuple(parts), sum(parts.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            stepped, scale = optimizer_stepped(scaler, scale)
            if stepped:
                scheduler.step()
            # one device sync per step (fp16: two, with the loss scale)
            values = torch.stack([loss.detach(), *(t.detach() for t in parts.values())]).double().cpu()
            value = float(values[0])
            if not math.isfinite(value):
                raise StageError(f"{desc}: the training loss became {value} in epoch {epoch + 1}, step {step + 1}; "
                                 f"lower the learning rate (lr {cfg.lr:g}) or check the data (for images: data.mean/std); "
                                 f"nothing was cached")
            totals = values if totals is None else totals + values
            if progress and rank == 0:
                bar.set_postfix(loss=f"{value:.3f}")
        if world_size > 1:  # the history reports the loss of the global batch
            torch.distributed.all_reduce(totals)
            totals /= world_size
        # every process recomputes BN statistics on the same clean batches and evaluates the whole
        # validation split, so all keep identical weights, buffers and early-stopping decisions
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        recompute_bn_stats(model, clean_forward, order, cfg.batch_size, cfg.precise_bn_batches)
        evaluation = validate(model, device, cfg.batch_size)
        val_acc = evaluation["val_accuracy"]
        means = (totals / steps_per_epoch).tolist()
        # no timings in the history: it is part of the result's content, which must depend only on
        # the inputs (the runner records the stage's wall time in meta.json)
        history.append({"epoch": epoch + 1, "train_loss": means[0],
                        **{f"train_{t}_loss": v for t, v in zip(terms, means[1:])}, **evaluation})
        shown = "".join(f", {k.replace('_', ' ')} {v:.2f}%" for k, v in evaluation.items() if k != "val_accuracy")
        say(f"{desc} epoch {epoch + 1}/{cfg.epochs}: loss {means[0]:.4f}, val accuracy {val_acc:.2f}%{shown} "
            f"({time.time() - started:.1f} s)")
        if best_epoch == 0 or val_acc > history[best_epoch - 1]["val_accuracy"]:
            best_epoch = epoch + 1
            # kept in host memory: a copy of the model on the GPU would cost as much memory as the model
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()} if cfg.keep_best else None
        if rank == 0:
            _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "history": history,
                          "epoch": epoch + 1, "best_epoch": best_epoch, "best_model": best_state}, checkpoint)
    if cfg.keep_best and best_state is not None:
        model.load_state_dict(best_state)
    model.to("cpu", memory_format=torch.contiguous_format).eval()
    return FitResult(history, best_epoch, best_epoch if cfg.keep_best else len(history))
