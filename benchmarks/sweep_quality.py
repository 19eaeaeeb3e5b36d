"""What `edgedistill sweep` finds, and what it costs.

quality: on the quickstart (MNIST-5k, MobileNetV2 teacher, small CNN student, the quickstart's budgets),
the hand-picked default (width 32, T 4, alpha 0.7, lr 0.003) as a one-trial sweep, then
pipelines/sweeps/quickstart.yaml (student width x temperature x alpha x learning rate, Optuna) in the
same store. The trials' latencies were taken while another trial trained on the other core (timings take
turns, training does not stop): the default and the sweep's front are timed again at the end, alone,
in alternating rounds (ortbench in a child process, 1 thread, batch 1), and those are the latencies
compared. Test accuracy of the default and the front from their bundles (read once, here).

    python benchmarks/sweep_quality.py quality --store /tmp/sweep_quality [--trials 16] [--concurrent 2]

overhead: 4 trials (a grid over the student's width and the temperature) of a small digits pipeline with
the teacher already cached, three ways on copies of one warmed store: `edgedistill run --set ...` four
times one after another, `edgedistill sweep` with 1 trial at a time (2 cores for it, as a run has), and
with 2 at a time (1 core each); in alternating rounds, the wall time of each.

    python benchmarks/sweep_quality.py overhead --folder /tmp/sweep_overhead [--rounds 2]

Both print their JSON and write it to --out (default /tmp/sweep_<command>_<time>.json).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EDGEDISTILL = [sys.executable, "-m", "edgedistill"]
DEFAULT = {"student.kwargs.width": 32, "distill.temperature": 4.0, "distill.alpha": 0.7, "distill.lr": 0.003}


def sh(cmd: list, env: dict | None = None, log: Path | None = None) -> float:
    """Run a command, its output to log; the wall time in seconds. Exits on failure (1 is a gate)."""
    started = time.perf_counter()
    with open(log or os.devnull, "a") as out:
        code = subprocess.run([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if code not in (0, 1):
        sys.exit(f"{' '.join(map(str, cmd))} failed (exit {code}); see {log}")
    return time.perf_counter() - started


def write_sweep(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def alone_p90(models: dict[str, Path], rounds: int) -> dict[str, dict]:
    """p90 latency of each model at batch 1, 1 thread, timed alone: `rounds` alternating rounds of
    ortbench in a child process (300 runs, at least 2 s each); the median of the rounds and their range."""
    from edgedistill.runtime.benchmark import BenchmarkConfig, bench_in_child

    settings = BenchmarkConfig(threads=1, warmup=50, runs=300, min_duration_s=2.0, throughput_batch=0, profile_runs=0)
    seen: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for name, model in models.items():
            seen[name].append(bench_in_child(model, settings)["latency_ms"]["p90"])
    return {k: {"p90_ms": statistics.median(v), "min": min(v), "max": max(v), "rounds": v} for k, v in seen.items()}


def quality(a: argparse.Namespace) -> dict:
    store, folder = Path(a.store), Path(a.store).parent / (Path(a.store).name + "-files")
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    spec = yaml.safe_load((ROOT / "pipelines/sweeps/quickstart.yaml").read_text())
    pipeline = str(ROOT / "pipelines/quickstart.yaml")
    default = write_sweep(folder / "default.yaml", {
        "name": "quickstart-default", "pipeline": pipeline, "search": "grid",
        "space": {k: {"choice": [v]} for k, v in DEFAULT.items()}, "objectives": spec["objectives"]})
    searched = write_sweep(folder / "sweep.yaml", dict(spec, pipeline=pipeline, trials=a.trials, concurrent=a.concurrent))
    env = dict(os.environ, CI="1")
    t_default = sh([*EDGEDISTILL, "sweep", default, "--store", store], env, log)
    t_sweep = sh([*EDGEDISTILL, "sweep", searched, "--store", store], env, log)
    base = json.loads((store / "sweeps/quickstart-default/trials.json").read_text())["trials"][0]
    summary = json.loads((store / "sweeps" / spec["name"] / "trials.json").read_text())
    trials = summary["trials"]
    front = [t for t in trials if t["status"] == "front"]

    def shipped(t: dict) -> Path:
        return store / "results/bundle" / t["bundle_key"] / "model.onnx"

    timed = alone_p90({"default": shipped(base), **{str(t["number"]): shipped(t) for t in front}}, a.rounds)
    # stage results in the store after both sweeps (the shared ones ran before the trials, in the command)
    runs = {s: len(list((store / "results" / s).iterdir())) for s in ("prepare", "finetune", "teach", "distill", "bundle")}

    def test_accuracy(t: dict) -> float:
        from edgedistill.release.gate import shipped_accuracy

        return shipped_accuracy(json.loads((store / "results/bundle" / t["bundle_key"] / "report.json").read_text()))

    rows = [{"trial": "default", **{k: base["params"][k] for k in DEFAULT}, "val_accuracy": base["accuracy"],
             "p90_in_sweep": base["latency"], "p90_alone": timed["default"], "size": base["size"], "shipped": base["recipe"],
             "test_accuracy": test_accuracy(base), "feasible": base["feasible"]}]
    for t in front:
        rows.append({"trial": t["number"], **t["params"], "val_accuracy": t["accuracy"], "p90_in_sweep": t["latency"],
                     "p90_alone": timed[str(t["number"])], "size": t["size"], "shipped": t["recipe"],
                     "test_accuracy": test_accuracy(t), "feasible": t["feasible"],
                     "role": "chosen" if t["trial"] == summary["chosen"] else "knee" if t["trial"] == summary["knee"] else ""})
    return {"command": "quality", "trials": len(trials), "concurrent": a.concurrent, "wall_s": {"default": t_default, "sweep": t_sweep},
            "statuses": {s: sum(t["status"] == s for t in trials) for s in ("front", "dominated", "infeasible", "failed")},
            "stage_results": runs, "trial_seconds": [t.get("seconds") for t in trials],
            "rows": rows, "all_trials": [{k: t.get(k) for k in ("number", "params", "accuracy", "latency", "size", "status",
                                                                "recipe", "seconds", "error")} for t in trials]}


TINY_SPACE = {"student.kwargs.width": {"choice": [6, 12]}, "distill.temperature": {"choice": [2.0, 4.0]}}


def overhead(a: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_pipeline  # the tests' small digits pipeline (tests/fixtures/models presets)

    folder = Path(a.folder)
    shutil.rmtree(folder, ignore_errors=True)
    pipeline = write_pipeline(folder / "p", benchmark={"threads": 1, "warmup": 5, "runs": 100, "min_duration_s": 0.2,
                                                        "profile_runs": 0, "throughput_batch": 0})
    env = dict(os.environ, CI="1", EDGEDISTILL_MODELS=str(ROOT / "tests/fixtures/models"))
    log = folder / "log.txt"
    warm = folder / "warm"
    sh([*EDGEDISTILL, "run", pipeline, "--store", warm, "--until", "teach"], env, log)  # the shared teacher, cached
    points = [{"student.kwargs.width": w, "distill.temperature": t} for w in (6, 12) for t in (2.0, 4.0)]
    # 1 at a time: the trial gets the machine's 2 cores, as `edgedistill run` does; 2 at a time: 1 core each
    sweeps = {n: write_sweep(folder / f"sweep{n}.yaml", {"name": f"c{n}", "pipeline": str(pipeline), "search": "grid",
                                                         "space": TINY_SPACE, "concurrent": n, "resources": {"cpu": 2 // n}})
              for n in (1, 2)}

    def fresh() -> Path:
        store = folder / "store"
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(warm, store)
        return store

    times: dict[str, list[float]] = {"sequential runs": [], "sweep, 1 at a time": [], "sweep, 2 at a time": []}
    for _ in range(a.rounds):
        store = fresh()
        times["sequential runs"].append(sum(
            sh([*EDGEDISTILL, "run", pipeline, "--store", store, *[f"--set={k}={v}" for k, v in p.items()]], env, log)
            for p in points))
        store = fresh()
        times["sweep, 1 at a time"].append(sh([*EDGEDISTILL, "sweep", sweeps[1], "--store", store], env, log))
        store = fresh()
        times["sweep, 2 at a time"].append(sh([*EDGEDISTILL, "sweep", sweeps[2], "--store", store], env, log))
    seq = statistics.median(times["sequential runs"])
    return {"command": "overhead", "trials": len(points), "rounds": a.rounds,
            "wall_s": {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v} for k, v in times.items()},
            "vs_sequential": {k: statistics.median(v) / seq for k, v in times.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--store", default="/tmp/sweep_quality")
    q.add_argument("--trials", type=int, default=16)
    q.add_argument("--concurrent", type=int, default=2)
    q.add_argument("--rounds", type=int, default=5, help="alternating rounds of the final, alone timing")
    o = sub.add_parser("overhead")
    o.add_argument("--folder", default="/tmp/sweep_overhead")
    o.add_argument("--rounds", type=int, default=2)
    for p in (q, o):
        p.add_argument("--out", type=Path, help="JSON file to write (default /tmp/sweep_<command>_<time>.json)")
    a = ap.parse_args()
    out = quality(a) if a.command == "quality" else overhead(a)
    out["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    path = a.out or Path(f"/tmp/sweep_{a.command}_{time.strftime('%Y%m%dT%H%M%S')}.json")
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k not in ("all_trials",)}, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
