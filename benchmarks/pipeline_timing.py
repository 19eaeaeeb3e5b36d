"""Wall time of the quickstart pipeline: a first run into a fresh store, then a second run with nothing
changed (target: every stage cached, under 5 s), then one with quantize.calibration_samples changed
(target: only quantize, benchmark and bundle rerun). Each run is a separate `edgedistill run` process,
as a user would start it, so interpreter and import time are included.

    .venv/bin/python benchmarks/pipeline_timing.py [--pipeline pipelines/quickstart.yaml]

Prints a Markdown table to paste into benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edgedistill.stages import STAGES as _STAGES

STAGES = tuple(dict.fromkeys(s.name for s in _STAGES))  # distill has two forms (offline, online), one name


def run(pipeline: str, store: Path, *extra: str) -> tuple[float, dict[str, str], str]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgedistill", "run", pipeline, "--store", str(store), *extra],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"edgedistill run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    status = {m.group(1): m.group(2) for m in re.finditer(rf"^({'|'.join(STAGES)})\s+(\w+)", proc.stdout, re.M)}
    return seconds, status, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", default="pipelines/quickstart.yaml")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        first, s1, out = run(a.pipeline, store)
        second, s2, _ = run(a.pipeline, store)
        third, s3, _ = run(a.pipeline, store, "--set", "quantize.calibration_samples=128")
    rows = [("first run, fresh store", first, s1), ("second run, nothing changed", second, s2),
            ("--set quantize.calibration_samples=128", third, s3)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}\n")
    print("| run | wall s | stages that ran |")
    print("|---|---|---|")
    for name, seconds, status in rows:
        ran = [s for s in STAGES if status.get(s) == "ran"] or ["none (all cached)"]
        print(f"| {name} | {seconds:.1f} | {', '.join(ran)} |")
    print("\nfirst run summary:\n")
    print("\n".join("    " + line for line in out.strip().splitlines()))


if __name__ == "__main__":
    main()
