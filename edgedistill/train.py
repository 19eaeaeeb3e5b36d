"""The one training loop, shared by fine-tuning and distillation.

Resumable and reproducible: the data order and every random draw of epoch e come from a generator
seeded with (seed, e), and a checkpoint (model, optimizer, scheduler, history) is written atomically
after every epoch. A run killed at any moment and started again continues from the last finished
epoch and ends with the same weights as a run that was never interrupted (CPU, same thread count).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .config import TrainConfig

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""loss(logits, inputs, labels, indices) -> scalar; indices: the batch's rows in the training split."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from .errors import ConfigError

        raise ConfigError("device 'cuda' asked for but no CUDA device is available; use device: auto or cpu")
    return torch.device(name)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray | torch.Tensor, device: torch.device | str = "cpu", batch: int = 256) -> torch.Tensor:
    """Logits for all of x, in eval mode, on the CPU."""
    model.eval()
    x = torch.as_tensor(x)
    return torch.cat([model(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)])


def accuracy(logits: torch.Tensor | np.ndarray, labels: np.ndarray | torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    pred = np.asarray(logits).argmax(axis=1)
    return float((pred == np.asarray(labels)).mean() * 100.0)


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, x: torch.Tensor, order: torch.Tensor, batch_size: int, batches: int,
                       device: torch.device) -> None:
    """Precise BN (as in pycls and timm): reset the running statistics of BatchNorm layers that are
    training and re-estimate them as a plain average over `batches` training batches. Written here
    because torch has no such helper for classification models; it is deterministic, so resuming
    from a checkpoint gives the same statistics."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not norms or batches == 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    for i in range(min(batches, len(order) // batch_size)):
        model(x[order[i * batch_size:(i + 1) * batch_size]].to(device))
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


def fit(model: nn.Module, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], *,
        cfg: TrainConfig, param_groups: list[dict], loss_fn: LossFn, seed: int, checkpoint: Path,
        desc: str, frozen: tuple[nn.Module, ...] = (), progress: bool = True) -> FitResult:
    """Train model in place; returns the per-epoch history and which epoch's weights it ends with.

    param_groups: torch optimizer groups, each with its own "lr" (the peak learning rate).
    frozen: modules kept in eval mode while training (frozen backbones keep their BatchNorm statistics).
    """
    device = resolve_device(cfg.device)
    model.to(device)
    x_train, y_train = torch.as_tensor(train[0]), torch.as_tensor(train[1])
    n = len(y_train)
    # drop the last incomplete batch: BatchNorm cannot train on a batch of one
    steps_per_epoch = max(1, n // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(param_groups, weight_decay=cfg.weight_decay)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup))

    history: list[dict] = []
    start_epoch, best_epoch, best_state = 0, 0, None
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, start_epoch = state["history"], state["epoch"]
        best_epoch, best_state = state["best_epoch"], state["best_model"]
        print(f"    {desc}: resuming after epoch {start_epoch}/{cfg.epochs} from {checkpoint}", flush=True)

    for epoch in range(start_epoch, cfg.epochs):
        if cfg.early_stopping_patience and history and len(history) - best_epoch >= cfg.early_stopping_patience:
            print(f"    {desc}: stopping early, no better validation accuracy since epoch {best_epoch}", flush=True)
            break
        started = time.time()
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        torch.manual_seed(seed * 100_003 + epoch)  # dropout and any other draw in this epoch
        order = torch.randperm(n, generator=generator)
        model.train()
        for m in frozen:
            m.eval()
        total_loss = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False, unit="step")
        for step in bar:
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x, y = x_train[idx].to(device), y_train[idx].to(device)
            loss = loss_fn(model(x), x, y, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            value = loss.item()  # one device sync per step
            total_loss += value
            if progress:
                bar.set_postfix(loss=f"{value:.3f}")
        recompute_bn_stats(model, x_train, order, cfg.batch_size, cfg.precise_bn_batches, device)
        val_acc = accuracy(predict(model, val[0], device), val[1])
        # no timings in the history: it is part of the result's content, which must depend only on
        # the inputs (the runner records the stage's wall time in meta.json)
        history.append({"epoch": epoch + 1, "train_loss": total_loss / steps_per_epoch, "val_accuracy": val_acc})
        print(f"    {desc} epoch {epoch + 1}/{cfg.epochs}: loss {total_loss / steps_per_epoch:.4f}, "
              f"val accuracy {val_acc:.2f}% ({time.time() - started:.1f} s)", flush=True)
        if best_epoch == 0 or val_acc > history[best_epoch - 1]["val_accuracy"]:
            best_epoch = epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if cfg.keep_best else None
        _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "history": history, "epoch": epoch + 1,
                      "best_epoch": best_epoch, "best_model": best_state}, checkpoint)
    if cfg.keep_best and best_state is not None:
        model.load_state_dict(best_state)
    model.to("cpu").eval()
    return FitResult(history, best_epoch, best_epoch if cfg.keep_best else len(history))
