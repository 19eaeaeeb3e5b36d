"""Memory and speed of `prepare` (and a one-epoch linear-probe fine-tune) as the data set grows.

Writes synthetic JPEG folders itself (10 classes of 256x256 images of random blobs, about as large
on disk as camera photos of that size; nothing goes into git), then runs `edgedistill run --until
STAGE` in a child process on each, with `data.image_size: 224`, and samples the memory of the whole
process tree (the run and its decoding workers) every 0.1 s: the summed Pss_Anon + Pss_Shmem of
/proc/PID/smaps_rollup, so pages shared by workers count once and the page cache of memory-mapped
files (which the kernel can drop) does not count. Wall time and images/s come from the stage
results' own timings.

    python benchmarks/data_scale.py --sizes 1000 8000 32000 --until prepare --workers 1 2
    python benchmarks/data_scale.py --sizes 1000 5000 --until finetune

Run it alone: another heavy process on the machine slows both ~10x.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def make_folder(root: Path, n: int, classes: int = 10, size: int = 256, seed: int = 0) -> Path:
    """n JPEGs in `classes` sub-folders (made once per n and reused)."""
    from PIL import Image, ImageDraw, ImageFilter

    folder = root / f"jpeg{n}"
    if (folder / ".complete").is_file():
        return folder
    g = np.random.default_rng(seed)
    for i in range(n):
        c = i % classes
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
        im = Image.new("RGB", (size, size), tuple(int(v) for v in g.integers(0, 255, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(12):  # a class-tinted scene of blobs, then noise: JPEGs of realistic size
            x0, y0 = g.integers(0, size, 2)
            r = int(g.integers(8, 60))
            colour = tuple(int(v) for v in (g.integers(0, 255, 3) + 25 * c) % 256)
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
        noise = g.integers(-40, 40, (size, size, 3))
        pixels = np.clip(np.asarray(im.filter(ImageFilter.GaussianBlur(2)), dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"class{c}" / f"{i:06d}.jpg", quality=90)
    (folder / ".complete").write_text("")
    return folder


def tree_pss_mb(pid: int) -> float:
    """Pss_Anon + Pss_Shmem of pid and all its descendants, MiB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith(("Pss_Anon:", "Pss_Shmem:")):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def run(folder: Path, until: str, workers: int, store: Path, code: Path, env: dict) -> dict:
    pipeline = store.parent / f"{store.name}.yaml"
    data = {"kind": "imagefolder", "train_dir": str(folder), "image_size": 224, "channels": 3}
    pipeline.write_text(json.dumps({  # JSON is YAML
        "name": "data_scale", "seed": 0,
        "data": dict(data, workers=workers) if workers else data,  # 0: not set (code before data.workers)
        "teacher": {"preset": "mobilenet_v2_imagenet", "strategy": "linear_probe", "epochs": 1, "batch_size": 64,
                    "precise_bn_batches": 0},
    }))
    proc = subprocess.Popen([sys.executable, "-m", "edgedistill", "run", str(pipeline), "--store", str(store), "--until", until],
                            cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0.0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss_mb(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    started = time.time()
    sampler.start()
    out = proc.communicate()[0]
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"run failed:\n{out[-3000:]}")
    seconds = {}
    for stage in ("prepare", "finetune"):
        for meta in (store / "results" / stage).glob("*/meta.json"):
            seconds[stage] = json.loads(meta.read_text())["seconds"]
    return {"wall_s": time.time() - started, "peak_mb": peak[0], "stage_s": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000, 32000])
    ap.add_argument("--until", choices=["prepare", "finetune"], default="prepare")
    ap.add_argument("--workers", type=int, nargs="+", default=[2], help="data.workers values (0: leave it unset)")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "edgedistill_data_scale",
                    help="where the JPEG folders are made (kept between runs)")
    ap.add_argument("--code", type=Path, default=ROOT, help="edgedistill checkout to measure (another commit: before/after)")
    a = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(a.code), CI="1")
    rows = []
    for n in a.sizes:
        folder = make_folder(a.data, n)
        mb = sum(p.stat().st_size for p in folder.rglob("*.jpg")) / 2**20
        for workers in a.workers:
            with tempfile.TemporaryDirectory(dir=a.data) as tmp:
                r = run(folder, a.until, workers, Path(tmp) / "store", a.code, env)
            # prepare holds out 15% + 15% of the images; fine-tuning reads the other 70% once
            rate = {s: (n if s == "prepare" else 0.7 * n) / t for s, t in r["stage_s"].items() if t}
            rows.append((n, mb, workers, r))
            print(f"{n:>6} images ({mb:,.0f} MiB of JPEG), workers {workers}: peak {r['peak_mb']:,.0f} MiB, wall {r['wall_s']:.1f} s, "
                  + ", ".join(f"{s} {t:.1f} s ({rate[s]:.0f} img/s)" for s, t in r["stage_s"].items()), flush=True)
    if len(rows) > 1:
        print(f"peak growth {rows[0][0]} -> {rows[-1][0]} images: {rows[-1][3]['peak_mb'] - rows[0][3]['peak_mb']:+,.0f} MiB")


if __name__ == "__main__":
    main()
