"""The command line: run, plan, ls, verify, gc, gate, bench, ingest, quantize. Heavy libraries (torch,
onnxruntime) are imported inside the commands that need them, so `ls`, `gate` and errors stay fast.

Exit codes: 0 success; 1 a gate failed (or an internal error); 2 a problem with the input (config,
data, files, a damaged bundle or result, a busy store, a full disk), printed as one line of at most
MAX_ERROR characters naming it, with the traceback only under --debug; 130 interrupted.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

import yaml

from .errors import ConfigError, EdgeDistillError, GateFailed, IntegrityError

DEFAULT_PIPELINE = "pipelines/quickstart.yaml"
MAX_ERROR = 300
"""Longest error line, in characters: longer messages are cut (a value quoted in one can be huge)."""


def default_store() -> Path:
    return Path(os.environ.get("EDGEDISTILL_STORE", "artifacts"))


def _progress() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def _status_line(st) -> None:
    if st.status == "running":
        print(f"> {st.stage:<10} running  ({st.reason})", file=sys.stderr, flush=True)
    elif st.status == "cached":
        print(f"> {st.stage:<10} cached   [{st.key}]", file=sys.stderr, flush=True)
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
    from .config import load_pipeline
    from .gate import check, enforce, format_table, load_budgets, load_report
    from .runner import Runner
    from .stages import STAGES
    from .store import Store
    from .table import text_table

    pipeline = load_pipeline(Path(a.pipeline), a.set)
    budgets = load_budgets(pipeline.budgets) if pipeline.budgets else None  # fail before compute
    store = Store(a.store)
    runner = Runner(store, STAGES, progress=_progress())
    # rank 0 alone writes to the store and holds its lock (the other torchrun processes only read)
    with store.lock(wait_s=a.wait) if rank == 0 else contextlib.nullcontext():
        report = runner.run(pipeline, until=a.until, force=a.force, on_status=_status_line)
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
    from .report import qat_text, shipped_text

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
    from .config import load_pipeline
    from .gate import load_budgets
    from .runner import Runner
    from .stages import STAGES
    from .store import Store
    from .table import text_table

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
    from .store import Store, read_manifest
    from .table import text_table

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


def cmd_verify(a: argparse.Namespace) -> int:
    """One bundle against its manifest, or (no bundle given) every result and bundle in the store,
    each file against its recorded sha256. Read-only: `run` sets damaged results and bundles aside."""
    from .store import Store, bundle_problem, verify_bundle
    from .table import text_table

    if (a.target or a.device) and not a.bundle:
        raise ConfigError("--target and --device need a bundle folder: edgedistill verify BUNDLE --target aarch64")
    if a.bundle:
        manifest = verify_bundle(Path(a.bundle))
        print(f"bundle {a.bundle}: all {len(manifest['files'])} files match manifest.json")
        if a.target or a.device:
            return verify_on_targets(a)
        return 0
    store = Store(a.store)
    if not store.root.is_dir():
        raise ConfigError(f"store '{store.root}' does not exist; give --store DIR")
    rows = [(f"results/{r.stage}/{r.key}", store.full_check(r)) for r in store.results()]
    rows += [(f"bundles/{n}/v{v}", bundle_problem(p)) for n, v, p in store.bundles(with_manifest=False)]
    print(text_table(("item", "check"), [(item, problem or "ok") for item, problem in rows]))
    damaged = [item for item, problem in rows if problem]
    if damaged:
        raise IntegrityError(f"{len(damaged)} of {len(rows)} items in store '{store.root}' are damaged ({', '.join(damaged[:3])}"
                             f"{' ...' if len(damaged) > 3 else ''}); `edgedistill run` sets them aside and recomputes them")
    print(f"\nstore '{store.root}': {len(rows)} results and bundles, every file matches its record")
    return 0


def verify_on_targets(a: argparse.Namespace) -> int:
    """verify BUNDLE --target aarch64[:CPU] | ssh://...: the bundle's answers there against this
    machine's, recorded in its report (devices.<name>) unless --no-record."""
    from . import devices
    from .table import text_table

    devices.verifiable(Path(a.bundle))  # the bundle's own problems first, then the targets'
    chosen = devices.verify_targets(a.target, a.root, a.name, a.remote_python, a.device,
                                    devices.devices_file(a.devices))  # every --target and --device checked first
    entries = devices.verify_on_targets(Path(a.bundle), chosen, a.images, log=lambda m: print(m, file=sys.stderr))
    rows = [(name, "yes" if e["emulated"] else "no", e["images"], f"{e['top1_agreement']:.2f}", f"{e['max_abs_diff']:.2e}",
             f"{e['accuracy']:.2f}", f"{e['host_accuracy']:.2f}") for name, e in entries.items()]
    print(text_table(("target", "emulated", "images", "top-1 agreement %", "max |logit diff|", "accuracy %", "here %"), rows))
    if not a.no_record:
        for name, entry in entries.items():
            devices.record(Path(a.bundle), name, entry)
        print(f"recorded {', '.join(entries)} in {Path(a.bundle) / 'report.json'}")
    return 0


def cmd_target(a: argparse.Namespace) -> int:
    from . import targets

    if a.action == "setup":
        targets.setup(a.root, log=lambda m: print(m, file=sys.stderr), force=a.force)
    print(json.dumps(targets.status(a.root), indent=2))
    return 0


def cmd_gc(a: argparse.Namespace) -> int:
    """Remove what no published bundle and no latest pipeline run needs (under the store's lock)."""
    from .store import Store

    store = Store(a.store)
    if not store.root.is_dir():
        raise ConfigError(f"store '{store.root}' does not exist; give --store DIR")

    def size(path: Path) -> int:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
        return sum(p.lstat().st_size for p in files)

    with store.lock(wait_s=a.wait):
        garbage = store.garbage(keep=a.keep)
        freed = 0
        for path in garbage:
            n = size(path)
            freed += n
            print(f"{'would remove' if a.dry_run else 'removed'} {path.relative_to(store.root)} ({n / 2**20:.1f} MiB)")
            if not a.dry_run:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    print(f"{'would free' if a.dry_run else 'freed'} {freed / 2**20:.1f} MiB in {len(garbage)} item(s) of '{store.root}'")
    return 0


def cmd_gate(a: argparse.Namespace) -> int:
    from .devices import devices_file
    from .gate import check, check_device_names, enforce, format_table, load_budgets, load_report, to_json, write_junit

    budgets = load_budgets(Path(a.budgets))
    report = load_report(Path(a.bundle))
    check_device_names(budgets, report, devices_file(a.devices))
    rows = check(report, budgets, load_report(Path(a.baseline)) if a.baseline else None, bundle=a.bundle)
    print(json.dumps(to_json(rows, a.bundle, a.budgets), indent=2) if a.json else format_table(rows))
    if a.junit:
        write_junit(rows, Path(a.bundle), Path(a.junit))
    enforce(rows)
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from .config import BenchmarkConfig, validate
    from .devices import check_device_name
    from .onnx_utils import bench_in_child
    from .ortbench import describe
    from .store import verify_bundle
    from .table import text_table

    # every argument is checked before a benchmark (minutes, or hours on a device) starts
    if a.device:
        from .devices import devices_file, find_device

        if a.remote:
            raise ConfigError("give --device NAME or --target ssh://..., not both")
        d = find_device(a.device, devices_file(a.devices))
        if d.emulated:
            raise ConfigError(f"device '{a.device}' is emulated ({d.target}): latency under emulation means nothing; "
                              f"check its answers with `edgedistill verify BUNDLE --device {a.device}`")
        a.remote, a.name, a.remote_python = d.target, a.name or a.device, d.python
        a.threads = d.threads if a.threads is None else a.threads
    a.threads = 1 if a.threads is None else a.threads
    target = Path(a.target)
    model = target / "model.onnx" if target.is_dir() else target
    if not model.is_file():
        raise ConfigError(f"'{target}' is neither an .onnx file nor a bundle folder with model.onnx")
    settings = validate(BenchmarkConfig, {"threads": a.threads, "runs": a.runs, "warmup": a.warmup,
                                          "min_duration_s": a.min_seconds, "protocol": "mlperf" if a.mlperf else "ci"},
                        "edgedistill bench")
    if (a.remote or a.ingest) and not target.is_dir():
        raise ConfigError(f"{'--target' if a.remote else '--ingest'} needs a bundle folder, not a model file")
    if a.remote:
        from .remote import bench_over_ssh, parse_target

        default_name = parse_target(a.remote)[0].rpartition("@")[2]
    else:
        default_name = platform.node()
    if a.name is not None or a.ingest:  # the name the result will be recorded under
        check_device_name(a.name or default_name)
    if a.out and not Path(a.out).resolve().parent.is_dir():
        raise ConfigError(f"--out '{a.out}': folder '{Path(a.out).parent}' does not exist")
    if target.is_dir():
        verify_bundle(target)
    if a.inputs is not None and not Path(a.inputs).is_file():
        raise ConfigError(f"--inputs '{a.inputs}' does not exist")
    if a.remote:
        if a.inputs or a.shape:
            raise ConfigError("--inputs and --shape time on this machine; with --target the bundle's model is timed as "
                              "its preprocess.json says")
        result = bench_over_ssh(target, a.remote, settings, name=a.name, remote_python=a.remote_python)
    else:
        result = bench_in_child(model, settings, inputs=a.inputs, name=a.name, shapes=a.shape)
    if a.ingest:
        from .devices import ingest

        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(result, f)
            f.flush()
            device, _ = ingest(Path(f.name), target, a.name)
        print(f"recorded device '{device}' in {target / 'report.json'}", file=sys.stderr)
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    lat = result["latency_ms"]
    print(text_table(("metric", "value"), [
        ("model", f"{model} ({result['size_bytes'] / 1024:.1f} KiB)"),
        ("device", f"{result['device']['cpu']}, {result['device']['threads']} thread(s), onnxruntime {result['device']['onnxruntime']}"),
        ("input timed", ", ".join(f"{k} {describe(v)}" for k, v in result.get("input_shapes", {}).items())
         + f" ({result.get('inputs', 'made up')})"),
        ("latency ms p50 / p90 / p99", f"{lat['p50']:.3f} / {lat['p90']:.3f} / {lat['p99']:.3f} ({result['runs']} runs, {result['duration_s']:.1f} s)"),
        ("cold start ms (load + first)", f"{result['cold_start_ms']:.1f}"),
        ("peak RSS MiB", f"{result['peak_rss_mb']:.1f}"),
        ("top operators", ", ".join(f"{o['op_type']} {o['share']:.0%}" for o in result.get("top_ops", [])[:4])),
    ]))
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    from .config import QUANT_RECIPES, BenchmarkConfig, QuantizeConfig, parse_overrides, validate
    from .data import open_inputs, read_preprocess
    import numpy as np

    from .errors import DataError
    from .onnx_utils import write_model
    from .ortbench import InputMismatch, check_feed, describe, fixed_batch, model_size, select
    from .stages import quantize
    from .table import text_table

    model = Path(a.model)
    if not model.is_file():
        raise ConfigError(f"model '{model}' does not exist")
    overrides = dict(parse_overrides(a.set), mode=a.mode)
    if a.recipe is not None and a.mode != "fixed":
        raise ConfigError("--recipe picks the one recipe of --mode fixed; in auto mode list the recipes to try with "
                          "--set recipes=[...]")
    if a.mode == "fixed" and "recipes" in overrides:
        raise ConfigError("recipes are what --mode auto tries; in fixed mode pick one with --recipe NAME")
    if a.recipe is not None:  # the recipe's settings first, then what --set changes of them
        overrides = {"ranges": "onnxruntime", **QUANT_RECIPES.get(a.recipe), **overrides}
    q = validate(QuantizeConfig, overrides, "edgedistill quantize --set")
    from . import nncf_ptq

    if q.mode == "fixed" and q.method == "static" and q.ranges == "nncf" and not nncf_ptq.available():
        raise ConfigError("ranges=nncf needs the nncf package: pip install 'edgedistill[nncf]', or --set ranges=onnxruntime")
    spec = read_preprocess(Path(a.preprocess)) if a.preprocess else None
    if q.mode == "auto" and a.val is None:
        raise ConfigError("--mode auto measures accuracy: give --val (an .npz with x and y, or an image folder), "
                          "or use --mode fixed")
    calib = open_inputs(Path(a.calib), spec)
    val = open_inputs(Path(a.val), spec) if a.val is not None else None
    if val is not None and val.labels is None:
        raise ConfigError(f"--val '{a.val}' has no labels (an .npz needs an array y)")
    inputs = quantize.model_inputs(model)
    for given, option in ((calib, "--calib"), (val, "--val")):  # arrays are checked whole (read lazily): their shapes named
        if given is not None and isinstance(given.items, np.ndarray):
            try:
                check_feed(inputs, select([m.name for m in inputs], given.items), f"{option} '{getattr(a, option[2:])}'")
            except InputMismatch as e:
                raise DataError(str(e)) from None
    n = min(len(calib.items), q.calibration_samples)
    what = f"--calib '{a.calib}'"
    reader = lambda: quantize.BatchReader(n, calib.inputs, inputs, progress=_progress(), what=what)
    out = Path(a.out) if a.out else model.with_name(f"{model.stem}_quantized.onnx")
    log = lambda m: print(f"    {m}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if val is None:
            reader().get_next()  # calibration data that does not fit the model is named before anything runs
            source, overrides = quantize.prepare_source(model, q, reader, work, log), None
            if q.method == "static" and q.ranges == "nncf":
                source, overrides = quantize.carry_nncf(source, reader, work, log, _progress())
            quantize.quantize_model(source, work / "quantized.onnx", q, reader, overrides=overrides)
            write_model(work / "quantized.onnx", out)
            print(f"wrote {out} ({model_size(str(out)) / 1024:.1f} KiB; fixed mode, accuracy not measured)")
            return 0
        timing = work / "timing_input.npy"  # candidates are timed on a real input: its shape is the data's
        np.save(timing, val.inputs(slice(0, 1)))
        latency = quantize.latency_settings(BenchmarkConfig(threads=a.threads), q)
        sel = quantize.select(model, q, latency, calibration=reader,
                              rank_calibration=lambda: quantize.BatchReader(min(n, 64), calib.inputs, inputs, what=what),
                              val=(val, val.labels), work=work, log=log, timing_inputs=timing)
        num = lambda v, f: "-" if v is None else format(v, f)
        interval = lambda d: "-" if d is None else f"{d['drop']:.2f} [{d['ci_low']:.2f}, {d['ci_high']:.2f}]"
        print(text_table(("configuration", "val acc %", "drop pt [95% CI]", "agree %", "p90 ms", "size KiB", "in float",
                          "graph from", "error"), [
            (c.name, num(c.val_accuracy, ".2f"), interval(c.val_drop), num(c.val_drop and c.val_drop["agreement"], ".1f"),
             num(c.latency_ms_p90, ".3f"), num(c.size_bytes and c.size_bytes / 1024, ".1f"),
             str(len(c.excluded_nodes)), c.graph_from, c.error or "") for c in [sel.fp32, *sel.tried]]))
        fixed = fixed_batch(inputs)
        print(f"latency: p90 over runs of one validation input, shape {describe([fixed or 1, *np.load(timing).shape[1:]])}"
              f"{' (the batch the model is fixed to)' if fixed else ''}")
        res = sel.metrics(q.mode, n, q.max_accuracy_drop)["val_resolution"]
        if res["note"]:
            print(f"warning: {res['note']}", file=sys.stderr)
        if a.report:
            Path(a.report).write_text(json.dumps(sel.metrics(q.mode, n, q.max_accuracy_drop), indent=2) + "\n")
        if sel.chosen is None:
            print(f"\nkept FP32: {sel.reason}; nothing written (the FP32 model is the better one to ship)")
            return 0
        write_model(sel.chosen.path, out)
    print(f"\nwrote {out}: {sel.reason}")
    return 0


def cmd_ingest(a: argparse.Namespace) -> int:
    from .devices import ingest

    name, entry = ingest(Path(a.result), Path(a.bundle), a.name)
    print(f"recorded device '{name}' in {Path(a.bundle) / 'report.json'}: p90 {entry['latency_ms']['p90']:.3f} ms, "
          f"peak RSS {entry.get('peak_rss_mb', float('nan')):.1f} MiB")
    return 0


class UsageError(EdgeDistillError):
    """A command line argparse refuses."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line and exit code 2 like every other bad input."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def seconds(text: str) -> float:
    """A --wait value: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text[:40]}' is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"'{text[:40]}' must be a finite number of seconds, 0 or more")
    return value


def count(text: str) -> int:
    """A non-negative whole number."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"'{text[:40]}' is not a whole number, 0 or more")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    def global_args(p: argparse.ArgumentParser, default) -> argparse.ArgumentParser:
        # accepted before and after the sub-command; SUPPRESS keeps a sub-command from resetting them
        p.add_argument("--debug", action="store_true", default=default if default is argparse.SUPPRESS else False,
                       help="show tracebacks")
        p.add_argument("--store", type=Path, default=default,
                       help="artifact store folder (default: $EDGEDISTILL_STORE or ./artifacts)")
        p.add_argument("--devices", type=Path, default=default, metavar="FILE",
                       help="devices file: name -> target, threads, arch, python, notes (default: $EDGEDISTILL_DEVICES, "
                            "or ./devices.yaml)")
        p.add_argument("--trust-code", action="append", metavar="MODULE", default=default if default is argparse.SUPPRESS else [],
                       help="let python:<module>:<function> architectures import this module (or its sub-modules); "
                            "repeatable; also $EDGEDISTILL_TRUST_CODE=mod1,mod2. Configs never run code on their own")
        return p

    common = global_args(Parser(add_help=False), argparse.SUPPRESS)
    ap = global_args(Parser(
        prog="edgedistill", description="Fine-tune, distill, export, quantize, benchmark and bundle a model for the edge."), None)
    sub = ap.add_subparsers(dest="command", required=True, parser_class=Parser)

    def pipeline_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("pipeline", nargs="?", default=DEFAULT_PIPELINE, help=f"pipeline YAML (default: {DEFAULT_PIPELINE})")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set distill.temperature=2 (repeatable)")
        p.add_argument("--until", metavar="STAGE", help="stop after this stage")
        p.add_argument("--force", action="append", default=[], metavar="STAGE", help="recompute this stage even if cached")

    p = sub.add_parser("run", parents=[common], help="run the pipeline's stages, reusing cached results")
    pipeline_args(p)
    p.add_argument("--wait", type=seconds, default=0.0, metavar="SECONDS",
                   help="wait this long for another run to release the store (default: refuse at once)")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("plan", parents=[common], help="show the resolved config and what would run, without computing")
    pipeline_args(p)
    p.set_defaults(fn=cmd_plan)
    p = sub.add_parser("ls", parents=[common], help="list stage results and bundles in the store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_ls)
    p = sub.add_parser("verify", parents=[common], help="check a bundle against its manifest, or (no bundle) every "
                       "result and bundle in the store against their records; exit 2 naming what differs")
    p.add_argument("bundle", nargs="?", help="bundle folder (default: check the whole store)")
    p.add_argument("--target", action="append", default=[], metavar="aarch64[:CPU] | ssh://user@host[:port][/dir]",
                   help="also run the bundle there and compare its answers with this machine's: an emulated ARM CPU "
                        "(cortex-a53, cortex-a72, cortex-a76, neoverse-n1, max; plain aarch64: the first four) or a device "
                        "over SSH; repeatable")
    p.add_argument("--name", help="device name for an ssh:// target (default: its host)")
    p.add_argument("--remote-python", default="python3", help="interpreter on an ssh:// target (needs numpy and onnxruntime)")
    p.add_argument("--device", action="append", default=[], metavar="NAME",
                   help="a device of the devices file (its target, recorded under its name); repeatable")
    p.add_argument("--images", type=count, metavar="N", help="verify on the first N shipped test inputs (default: all)")
    p.add_argument("--root", type=Path, metavar="DIR", help="the aarch64 target folder (default: ~/.cache/edgedistill/targets/aarch64)")
    p.add_argument("--no-record", action="store_true", help="do not record the result in the bundle's report")
    p.set_defaults(fn=cmd_verify)
    p = sub.add_parser("target", parents=[common], help="build or show the emulated ARM target that verify --target runs on")
    p.add_argument("action", choices=["setup", "show"])
    p.add_argument("arch", choices=["aarch64"])
    p.add_argument("--root", type=Path, metavar="DIR", help="where to build it (default: ~/.cache/edgedistill/targets/aarch64)")
    p.add_argument("--force", action="store_true", help="rebuild even if it exists")
    p.set_defaults(fn=cmd_target)
    p = sub.add_parser("gc", parents=[common], help="remove results and checkpoints that no published bundle and no "
                       "latest run of a pipeline needs; bundles are never removed")
    p.add_argument("--keep", type=count, default=1, metavar="N",
                   help="keep the results of the N newest versions of each bundle (default 1)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.add_argument("--wait", type=seconds, default=0.0, metavar="SECONDS", help="wait this long for a run to release the store")
    p.set_defaults(fn=cmd_gc)
    p = sub.add_parser("gate", parents=[common], help="check a bundle against a budgets file (exit 1 if one fails)")
    p.add_argument("bundle", help="bundle folder, e.g. artifacts/bundles/quickstart/v1")
    p.add_argument("--budgets", required=True, help="budgets YAML")
    p.add_argument("--baseline", metavar="BUNDLE", help="also fail on regressions against this previous release "
                   "(thresholds: the budgets file's regression section)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON instead of a table")
    p.add_argument("--junit", metavar="FILE", help="also write the checks as JUnit XML (one test case per budget)")
    p.set_defaults(fn=cmd_gate)
    p = sub.add_parser("bench", parents=[common], help="benchmark an .onnx model or a bundle with ONNX Runtime on this CPU")
    p.add_argument("target", help="model.onnx or a bundle folder")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default 1, or the device's)")
    p.add_argument("--runs", type=int, default=300, help="minimum timed runs (default 300)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="minimum timed duration (default 1)")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs first (default 20)")
    p.add_argument("--mlperf", action="store_true", help="MLPerf single-stream minimums: 1024 runs and 600 s")
    p.add_argument("--inputs", metavar="FILE", help="time on the first of these inputs (.npy of preprocessed inputs, or "
                   ".npz with one array per input name) instead of made-up ones")
    p.add_argument("--shape", action="append", default=[], metavar="[NAME=]1x3x224x224",
                   help="made-up inputs: the shape to time an input with dynamic dimensions at, e.g. height and width "
                        "(repeatable); the batch is always 1, or the model's fixed batch")
    p.add_argument("--name", help="device name recorded in the result (default: host name)")
    p.add_argument("--json", action="store_true", help="print the full JSON result")
    p.add_argument("--out", metavar="FILE", help="also write the JSON result here (for edgedistill ingest)")
    p.add_argument("--target", dest="remote", metavar="ssh://user@host[:port][/dir]",
                   help="run the bundle's bench.py on this device over SSH (options: $EDGEDISTILL_SSH_OPTIONS)")
    p.add_argument("--remote-python", default="python3", help="interpreter on the target (needs numpy and onnxruntime)")
    p.add_argument("--ingest", action="store_true", help="record the result in the bundle's report.json")
    p.add_argument("--device", metavar="NAME", help="a device of the devices file: its ssh target, threads and python, "
                   "recorded under its name")
    p.set_defaults(fn=cmd_bench)
    p = sub.add_parser("quantize", parents=[common], help="quantize an existing ONNX model (auto: never worse than FP32)")
    p.add_argument("model", help="FP32 ONNX model")
    p.add_argument("--calib", required=True, metavar="DATA",
                   help="calibration inputs: .npy of preprocessed inputs (streamed), .npz with x, or an image folder")
    p.add_argument("--val", metavar="DATA", help="labeled validation data (.npz with x and y, or an image folder); needed by --mode auto")
    p.add_argument("--preprocess", metavar="JSON", help="preprocess.json for image folders (every bundle has one)")
    p.add_argument("--mode", choices=["auto", "fixed"], default="auto")
    from .config import QUANT_RECIPES

    p.add_argument("--recipe", choices=QUANT_RECIPES.names(), metavar="NAME",
                   help=f"fixed mode: quantize with this recipe ({', '.join(QUANT_RECIPES.names())})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a quantize option, e.g. --set max_accuracy_drop=0.5 --set recipes=[qdq_u8s8,dynamic_s8] "
                        "(auto: the recipes tried, or a named set: x86, arm, transformer)")
    p.add_argument("--threads", type=int, default=1, help="threads for the latency measurements (default 1)")
    p.add_argument("--out", metavar="FILE", help="output model (default: MODEL_quantized.onnx)")
    p.add_argument("--report", metavar="FILE", help="write what was tried and chosen as JSON")
    p.set_defaults(fn=cmd_quantize)
    p = sub.add_parser("ingest", parents=[common], help="record a device's bench.py result in a bundle's report")
    p.add_argument("result", help="JSON written by bench.py on the device")
    p.add_argument("bundle", help="the bundle folder it was measured from")
    p.add_argument("--name", help="device name (default: the name in the result)")
    p.set_defaults(fn=cmd_ingest)
    return ap


def one_line(msg: str) -> str:
    """An error message as one line of at most MAX_ERROR characters."""
    msg = " ".join(msg.split())
    return msg if len(msg) <= MAX_ERROR else msg[:MAX_ERROR - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    from . import config

    try:
        a = build_parser().parse_args(argv)
    except UsageError as e:
        print(f"edgedistill: error: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    a.store = a.store or default_store()
    config.TRUSTED_CODE[:] = a.trust_code or []
    try:
        return a.fn(a)
    except GateFailed as e:
        print(f"edgedistill: {e}", file=sys.stderr)
        return e.exit_code
    except (EdgeDistillError, OSError) as e:
        if a.debug:
            traceback.print_exc()
        if isinstance(e, EdgeDistillError):
            msg = str(e)
        elif e.errno in (errno.ENOSPC, errno.EDQUOT):
            msg = f"no space left on device while writing {e.filename or 'a file'}; free some space and run again"
        else:
            msg = f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")
        print(f"edgedistill: error: {one_line(msg)}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print("edgedistill: interrupted; finished stages are kept, a rerun resumes from the last checkpoint", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: say so in one line, the traceback under --debug
        if a.debug:
            raise
        print(f"edgedistill: internal error: {one_line(f'{type(e).__name__}: {e}')} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
