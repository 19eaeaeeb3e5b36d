"""How long keying `prepare` takes on an image folder: every file read and hashed (core.files.hash_tree,
what every run did before the stat cache) against the stat cache (core.statcache: unchanged files are
only stat'ed), each in a fresh process with the page cache dropped first when this user may drop it
(root: /proc/sys/vm/drop_caches), so the full read comes from the disk as on a first run of the day.

    python benchmarks/source_hashing.py --images 6000 --repeats 3 --folder /tmp/source_hashing

Prints one line per run and the median of each.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ONE = """
import sys, time
from pathlib import Path
from edgedistill.core.files import hash_tree
from edgedistill.core.statcache import StatCache
folder, db, how = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
t = time.perf_counter()
if how == "full":
    hash_tree(folder)
else:
    cache = StatCache(db)
    cache.hash_tree(folder)
    assert how == "fill" or cache.hashed == 0, cache.hashed
print(f"{time.perf_counter() - t:.3f}")
"""


def make_folder(folder: Path, images: int, classes: int = 10) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(images):
        d = folder / f"c{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        if not (d / f"{i}.jpg").exists():
            noise = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
            Image.fromarray(noise).resize((320, 240)).save(d / f"{i}.jpg", quality=90)


def drop_page_cache() -> bool:
    subprocess.run(["sync"], check=False)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(folder: Path, db: Path, how: str) -> float:
    out = subprocess.run([sys.executable, "-c", ONE, str(folder), str(db), how], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--folder", type=Path, default=Path("/tmp/source_hashing"))
    a = ap.parse_args()
    data, db = a.folder / "images", a.folder / "stat.sqlite"
    make_folder(data, a.images)
    size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    timed(data, db, "fill")
    cold = drop_page_cache()
    print(f"{a.images} files, {size / 2**20:.0f} MiB; page cache {'dropped before each run' if cold else 'NOT dropped (not root)'}")
    runs: dict[str, list[float]] = {"full": [], "cache": []}
    for _ in range(a.repeats):
        for how in runs:  # alternating
            drop_page_cache()
            runs[how].append(timed(data, db, how))
            print(f"  {how:<5} {runs[how][-1]:.2f} s")
    for how, times in runs.items():
        print(f"{how}: median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()
