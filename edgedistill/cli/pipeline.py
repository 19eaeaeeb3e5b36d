"""Commands on pipelines and the store: run (under torchrun too), plan, ls, gc."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

import yaml

from edgedistill.cli.args import DEFAULT_PIPELINE, count, seconds, show_progress
from edgedistill.core.errors import ConfigError, IntegrityError


def status_line(st) -> None:
    """A stage's progress as `run` prints it (stderr)."""
    if st.status == "waiting":
        print(f"> {st.stage:<10} waiting  ({st.reason})", file=sys.stderr, flush=True)
    elif st.status == "running":
        print(f"> {st.stage:<10} running  ({st.reason})", file=sys.stderr, flush=True)
    elif st.status == "cached":
        print(f"> {st.stage:<10} cached   [{st.key}]", file=sys.stderr, flush=True)
    elif st.status == "skipped":
        print(f"> {st.stage:<10} skipped  ({st.reason})", file=sys.stderr, flush=True)
    else:
        print(f"> {st.stage:<10} done     [{st.key}] {st.seconds:.1f} s", file=sys.stderr, flush=True)


@contextlib.contextmanager
def torchrun_group():
    """Under torchrun (WORLD_SIZE > 1 in the environment): the process group, gloo for CPU tensors and
    NCCL for CUDA ones, each process on the GPU of its LOCAL_RANK. Yields this process's rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield 0
        return
    import datetime

    import torch
    import torch.distributed as dist

    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    # the other processes wait while rank 0 alone runs the stages before a training stage (prepare, teach)
    dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
    try:
        yield dist.get_rank()
    finally:
        dist.destroy_process_group()


def cmd_run(a: argparse.Namespace) -> int:
    with torchrun_group() as rank:
        return _run(a, rank)


def _run(a: argparse.Namespace, rank: int) -> int:
    from edgedistill.core.runner import Runner
    from edgedistill.core.store import Store
    from edgedistill.core.table import text_table
    from edgedistill.pipeline import load_pipeline
    from edgedistill.release.gate import check, enforce, format_table, load_budgets, load_report
    from edgedistill.stages import STAGES

    pipeline = load_pipeline(Path(a.pipeline), a.set)
    budgets = load_budgets(pipeline.budgets) if pipeline.budgets else None  # fail before compute
    store = Store(a.store)
    runner = Runner(store, STAGES, progress=show_progress())
    # rank 0 alone writes results and holds the store's lock, shared with other runs (the other torchrun
    # processes read results and write nothing but the stat cache)
    # --force replaces results in place: it takes the store alone (no other run reads them meanwhile)
    exclusive = bool(a.force)
    with store.lock(wait_s=a.wait, exclusive=exclusive, what="a --force run") if rank == 0 else contextlib.nullcontext():
        report = runner.run(pipeline, until=a.until, force=a.force, on_status=status_line)
    if rank > 0:
        return 0
    print()
    print(text_table(("stage", "status", "key", "seconds", "result"),
                     [(s.stage, s.status, s.key or "", f"{s.seconds:.1f}" if s.status == "ran" else "-", s.headline)
                      for s in report.statuses]))
    if report.bundle is None:
        return 0
    version, path, status = report.bundle
    bundle_report = load_report(path)
    acc, lat = bundle_report["accuracy"], bundle_report["latency_ms"]
    print(f"\nbundle: {path} (v{version}, {status})")
    alone = f"  (student alone {acc['student_alone']:.2f}%)" if "student_alone" in acc else ""
    print(f"  accuracy: teacher {acc['teacher']:.2f}%  student FP32 {acc['student_fp32']:.2f}%  "
          f"student INT8 {acc['student_int8']:.2f}%  (test split){alone}")
    students = bundle_report["distillation"]
    if students["shipped"] == "alone":
        print("  student: the one trained alone is shipped: it was better on validation than the distilled one, "
              "beyond the split's noise")
    elif students["alone"] is not None:
        v = students["val_drop_vs_alone"]
        print(f"  student: the distilled one is shipped (validation: distilled minus alone {-v['drop']:+.2f} points, "
              f"95% interval {-v['ci_high']:+.2f} to {-v['ci_low']:+.2f})")
    if students["warning"]:
        print(f"  warning: {students['warning']}")
    quant = bundle_report["quantization"]
    from edgedistill.release.report import qat_text, shipped_text

    print(f"  quantization: {shipped_text(quant, bundle_report['shipped'])}")
    if quant.get("qat"):
        print(f"  {qat_text(quant, bundle_report['shipped'])}")
    if quant["test_drop"] is not None:
        t = quant["test_drop"]
        print(f"  quantization on test, measured once after the choice: {t['drop']:.2f} pt below FP32 "
              f"(95% interval {t['ci_low']:.2f} to {t['ci_high']:.2f}), top-1 agreement {t['agreement']:.1f}%")
    if quant["val_resolution"]["note"]:
        print(f"  warning: {quant['val_resolution']['note']}")
    print(f"  shipped {bundle_report['shipped']}: {bundle_report['size_bytes'] / 1024:.1f} KiB, latency p50 "
          f"{lat['p50']:.3f} ms / p90 {lat['p90']:.3f} ms ({bundle_report['device']['threads']} thread), "
          f"peak RSS {bundle_report['peak_rss_mb']:.1f} MiB")
    if budgets is None:
        return 0
    rows = check(bundle_report, budgets, bundle=path)
    print(f"\ngate ({pipeline.budgets}):\n{format_table(rows)}")
    enforce(rows)
    return 0


def cmd_plan(a: argparse.Namespace) -> int:
    from edgedistill.core.runner import Runner
    from edgedistill.core.store import Store
    from edgedistill.core.table import text_table
    from edgedistill.pipeline import load_pipeline
    from edgedistill.release.gate import load_budgets
    from edgedistill.stages import STAGES

    pipeline = load_pipeline(Path(a.pipeline), a.set)
    if pipeline.budgets:
        load_budgets(pipeline.budgets)
    # every preset, file and layer path is resolved before anything is said to be fine
    statuses = Runner(Store(a.store), STAGES, progress=False).plan(pipeline, until=a.until, force=a.force)
    print("# resolved pipeline")
    print(yaml.safe_dump(pipeline.model_dump(mode="json"), sort_keys=False).rstrip())
    print("\n# stages")
    print(text_table(("stage", "status", "key", "why"), [(s.stage, s.status, s.key or "?", s.reason) for s in statuses]))
    return 0


def cmd_ls(a: argparse.Namespace) -> int:
    from edgedistill.core.bundles import read_manifest
    from edgedistill.core.store import Store
    from edgedistill.core.table import text_table

    store = Store(a.store)
    results = [{"stage": r.stage, "key": r.key, "pipeline": r.meta.get("pipeline"), "finished": r.meta.get("finished"),
                "seconds": r.meta.get("seconds"), "path": str(r.path), "problem": r.problem} for r in store.results()]
    bundles = []
    for n, v, p in store.bundles():
        try:
            created = read_manifest(p).get("created")
        except IntegrityError:
            created = None
        bundles.append({"name": n, "version": v, "path": str(p), "created": created})
    if a.json:
        print(json.dumps({"results": results, "bundles": bundles}, indent=2))
        return 0
    if not results and not bundles:
        print(f"store '{store.root}' is empty")
        return 0
    print(text_table(("stage", "key", "pipeline", "finished", "path"),
                     [(r["stage"], r["key"], r["pipeline"] or "",
                       f"DAMAGED: {r['problem']}" if r["problem"] else r["finished"] or "", r["path"]) for r in results]))
    if bundles:
        print()
        print(text_table(("bundle", "version", "created", "path"),
                         [(b["name"], f"v{b['version']}", b["created"] or "", b["path"]) for b in bundles]))
    return 0


def cmd_gc(a: argparse.Namespace) -> int:
    """Remove what no published bundle and no latest pipeline run needs (the store's lock held exclusive:
    no run is under way while it deletes)."""
    from edgedistill.core.store import Store

    store = Store(a.store)
    if not store.root.is_dir():
        raise ConfigError(f"store '{store.root}' does not exist; give --store DIR")

    def size(path: Path) -> int:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
        return sum(p.lstat().st_size for p in files)

    with store.lock(wait_s=a.wait, exclusive=True, what="gc"):
        garbage = store.garbage(keep=a.keep)
        freed = 0
        for path in garbage:
            n = size(path)
            freed += n
            print(f"{'would remove' if a.dry_run else 'removed'} {path.relative_to(store.root)} ({n / 2**20:.1f} MiB)")
            if not a.dry_run:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        if not a.dry_run:
            store.tidy_locks()
    print(f"{'would free' if a.dry_run else 'freed'} {freed / 2**20:.1f} MiB in {len(garbage)} item(s) of '{store.root}'")
    return 0


def pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pipeline", nargs="?", default=DEFAULT_PIPELINE, help=f"pipeline YAML (default: {DEFAULT_PIPELINE})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set distill.temperature=2 (repeatable)")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage")
    p.add_argument("--force", action="append", default=[], metavar="STAGE", help="recompute this stage even if cached")


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    """This group's sub-commands on the parser's sub-parsers (common: the global options)."""
    p = sub.add_parser("run", parents=[common], help="run the pipeline's stages, reusing cached results")
    pipeline_args(p)
    p.add_argument("--wait", type=seconds, default=0.0, metavar="SECONDS",
                   help="wait this long for the store when gc (or, for a --force run, any run) holds it "
                        "(default: refuse at once)")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("plan", parents=[common], help="show the resolved config and what would run, without computing")
    pipeline_args(p)
    p.set_defaults(fn=cmd_plan)
    p = sub.add_parser("ls", parents=[common], help="list stage results and bundles in the store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_ls)
    p = sub.add_parser("gc", parents=[common], help="remove results and checkpoints that no published bundle and no "
                       "latest run of a pipeline needs; bundles are never removed")
    p.add_argument("--keep", type=count, default=1, metavar="N",
                   help="keep the results of the N newest versions of each bundle (default 1)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.add_argument("--wait", type=seconds, default=0.0, metavar="SECONDS", help="wait this long for a run to release the store")
    p.set_defaults(fn=cmd_gc)
