"""Commands on bundles and devices: verify (the manifest, and answers on emulated or SSH targets), target
(build the emulated ARM target), bench (here or over SSH), ingest (a device's bench.py result)."""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

from edgedistill.cli.args import count
from edgedistill.core.errors import ConfigError, IntegrityError


def cmd_verify(a: argparse.Namespace) -> int:
    """One bundle against its manifest, or (no bundle given) every result and bundle in the store,
    each file against its recorded sha256. Read-only: `run` sets damaged results and bundles aside."""
    from edgedistill.core.bundles import bundle_problem, verify_bundle
    from edgedistill.core.store import Store
    from edgedistill.core.table import text_table

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
    from edgedistill.core.table import text_table
    from edgedistill.release import ingest
    from edgedistill.runtime import devices

    devices.verifiable(Path(a.bundle))  # the bundle's own problems first, then the targets'
    chosen = devices.verify_targets(a.target, a.root, a.name, a.remote_python, a.device,
                                    devices.devices_file(a.devices))  # every --target and --device checked first
    entries = devices.verify_on_targets(Path(a.bundle), chosen, a.images, log=lambda m: print(m, file=sys.stderr))
    rows = [(name, "yes" if e["emulated"] else "no", e["images"], f"{e['top1_agreement']:.2f}", f"{e['max_abs_diff']:.2e}",
             f"{e['accuracy']:.2f}", f"{e['host_accuracy']:.2f}") for name, e in entries.items()]
    print(text_table(("target", "emulated", "images", "top-1 agreement %", "max |logit diff|", "accuracy %", "here %"), rows))
    if not a.no_record:
        for name, entry in entries.items():
            ingest.record(Path(a.bundle), name, entry)
        print(f"recorded {', '.join(entries)} in {Path(a.bundle) / 'report.json'}")
    return 0


def cmd_target(a: argparse.Namespace) -> int:
    from edgedistill.runtime import targets

    if a.action == "setup":
        targets.setup(a.root, log=lambda m: print(m, file=sys.stderr), force=a.force)
    print(json.dumps(targets.status(a.root), indent=2))
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from edgedistill.core.bundles import verify_bundle
    from edgedistill.core.config import validate
    from edgedistill.core.table import text_table
    from edgedistill.runtime.benchmark import BenchmarkConfig, bench_in_child
    from edgedistill.runtime.devices import check_device_name
    from edgedistill.runtime.ortbench import describe

    # every argument is checked before a benchmark (minutes, or hours on a device) starts
    if a.device:
        from edgedistill.runtime.devices import devices_file, find_device

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
        from edgedistill.runtime.remote import bench_over_ssh, parse_target

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
        from edgedistill.release.ingest import ingest

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


def cmd_ingest(a: argparse.Namespace) -> int:
    from edgedistill.release.ingest import ingest

    name, entry = ingest(Path(a.result), Path(a.bundle), a.name)
    print(f"recorded device '{name}' in {Path(a.bundle) / 'report.json'}: p90 {entry['latency_ms']['p90']:.3f} ms, "
          f"peak RSS {entry.get('peak_rss_mb', float('nan')):.1f} MiB")
    return 0


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    """This group's sub-commands on the parser's sub-parsers (common: the global options)."""
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
    p = sub.add_parser("ingest", parents=[common], help="record a device's bench.py result in a bundle's report")
    p.add_argument("result", help="JSON written by bench.py on the device")
    p.add_argument("bundle", help="the bundle folder it was measured from")
    p.add_argument("--name", help="device name (default: the name in the result)")
    p.set_defaults(fn=cmd_ingest)
