"""Every torchvision classification model family through the real path, one model of each class (the
smallest by parameter count) at the smallest input it takes: weights loaded from a file (the original
classifier, then the head swap), one training step of partial fine-tuning, the ONNX export
edgedistill's image modality does, and ONNX Runtime parity on a batch of 3 (the graph is exported at
batch 2). The test suite builds every one of the 80 models on the meta device (head, strategies), runs
the smallest of each kind (set of module types) there at its smallest input, and exports only two
classes (an export takes 4 to 54 s here); this is the rest of the evidence. Prints a markdown table.

    python benchmarks/architecture_coverage.py [--only googlenet,vit_b_32]

Parity is reported relative to the largest logit: randomly initialized models (BatchNorm statistics
never estimated) can have logits of 1e7, where float32 rounding alone is 1.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from edgedistill import models
from edgedistill.data.dataset import for_kind
from edgedistill.models.presets import ModelPreset
from edgedistill.runtime.onnx_utils import ort_predict
from edgedistill.stages.finetune import TeacherConfig, strategy


def representatives() -> dict[str, str]:
    """Architecture class -> its smallest torchvision model."""
    best: dict[str, tuple[str, int]] = {}
    for name in torchvision.models.list_models(module=torchvision.models):
        model = models.structure(ModelPreset(arch=f"torchvision:{name}"), 10, 3)
        n = sum(p.numel() for p in model.parameters())
        cls = type(model).__name__
        if cls not in best or n < best[cls][1]:
            best[cls] = (name, n)
    return {cls: name for cls, (name, _) in sorted(best.items())}


def run(name: str, work: Path) -> dict:
    structure = models.structure(ModelPreset(arch=f"torchvision:{name}"), 5, 3)
    size = next(s for s in models.CHECK_SIZES if models.run_problem(structure, 3, s, 5) is None)
    torch.manual_seed(0)
    kwargs = {"aux_logits": True, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    torch.save(torchvision.models.get_model(name, **kwargs).state_dict(), work / "w.pt")
    model, head = models.build(ModelPreset(arch=f"torchvision:{name}", weights={"file": str(work / "w.pt")}), 5, 3, seed=0)
    groups, epoch_start = strategy(model, head, TeacherConfig(strategy="partial"), pretrained=True)
    frozen = epoch_start(0)
    model.train()
    for m in frozen:
        m.eval()
    x = torch.randn(4, 3, size, size)
    started = time.perf_counter()
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    torch.optim.AdamW(groups).step()
    step_s = time.perf_counter() - started
    model.eval()
    started = time.perf_counter()
    for_kind("digits").export(model, x[:2].numpy(), work / "m.onnx", 18)
    export_s = time.perf_counter() - started
    check = torch.randn(3, 3, size, size)
    with torch.no_grad():
        ref = model(check).numpy()
    got = ort_predict(work / "m.onnx", check.numpy())
    return {"params": sum(p.numel() for p in model.parameters()), "size": size, "step_s": step_s, "export_s": export_s,
            "rel_diff": float(np.abs(got - ref).max() / max(1e-12, np.abs(ref).max())),
            "top1": float((got.argmax(1) == ref.argmax(1)).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated model names instead of one of each class")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    chosen = {n: n for n in a.only.split(",")} if a.only else representatives()
    print("| class | model | params | smallest input | train step s | export s | max rel diff | top-1 agreement |")
    print("|---|---|---|---|---|---|---|---|")
    for cls, name in chosen.items():
        with tempfile.TemporaryDirectory() as tmp:
            try:
                r = run(name, Path(tmp))
                print(f"| {cls} | {name} | {r['params'] / 1e6:.1f}M | {r['size']} px | {r['step_s']:.1f} | {r['export_s']:.1f} "
                      f"| {r['rel_diff']:.1e} | {r['top1']:.0%} |", flush=True)
            except Exception as e:  # a failure is a row of the table, not the end of the run
                print(f"| {cls} | {name} | | | | | FAILED: {type(e).__name__}: {str(e).splitlines()[0][:80]} | |", flush=True)


if __name__ == "__main__":
    main()
