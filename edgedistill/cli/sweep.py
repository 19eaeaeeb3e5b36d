"""`edgedistill sweep SWEEP.yaml`: search student size, distillation and quantization settings on Ray Tune
against the budgets; the Pareto page in <store>/sweeps/<name>/; --publish ships the chosen trial."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edgedistill.cli.args import seconds, show_progress
from edgedistill.cli.pipeline import status_line


def cmd_sweep(a: argparse.Namespace) -> int:
    from edgedistill.core.errors import StoreBusy
    from edgedistill.core.locks import FileLock
    from edgedistill.core.store import Store

    store = Store(a.store)
    sweep, base, corners, budgets_file, budgets, devices = check(a, store)
    from edgedistill.sweep import engine

    # one command per sweep at a time (its lock beside the folder, which --restart removes)
    lock = FileLock(store.root / "sweeps" / f".{sweep.name}.lock", exclusive=True)
    if not lock.acquire(0):
        raise StoreBusy(f"sweep '{sweep.name}' is already running on store '{store.root}'; wait for it, or give this "
                        f"sweep another name")
    try:
        folder = store.root.resolve() / "sweeps" / sweep.name
        with store.lock(wait_s=a.wait, what=f"sweep {sweep.name}"):  # set up while gc cannot run
            resume = engine.prepare_folder(folder, engine.spec(sweep, base, budgets), a.restart)
        return run(a, store, sweep, base, corners, budgets_file, budgets, devices, folder, resume)
    finally:
        lock.release()


def check(a: argparse.Namespace, store):
    """Everything that can be wrong with the sweep, found before Ray starts: the file, every value that
    bounds the space (validated, and each corner of the space planned: models built on the meta device,
    data found), the budgets, where latency is measured, Ray and Optuna installed."""
    from edgedistill.core.errors import ConfigError
    from edgedistill.core.packages import import_optional
    from edgedistill.core.runner import Runner
    from edgedistill.pipeline import load_pipeline
    from edgedistill.release.gate import load_budgets
    from edgedistill.stages import STAGES
    from edgedistill.sweep.config import check_space, corner_points, load_sweep

    sweep = load_sweep(Path(a.sweep))
    values_base = Path(a.sweep).resolve().parent

    def load(values: dict):
        return load_pipeline(Path(sweep.pipeline), values={**sweep.set, **values}, values_base=values_base)

    base = load({})
    check_space(sweep, load)
    budgets_file = sweep.budgets or base.budgets
    budgets = load_budgets(Path(budgets_file)) if budgets_file else None
    devices = a.devices or base.devices
    try:
        if sweep.latency_on.startswith("ssh://"):
            from edgedistill.runtime.remote import parse_target

            parse_target(sweep.latency_on)
        elif sweep.latency_on != "host":
            from edgedistill.runtime.devices import devices_file, find_device

            if find_device(sweep.latency_on, devices or devices_file()).emulated:
                raise ConfigError(f"'{sweep.latency_on}' is an emulated device: latency under emulation means nothing; "
                                  f"name a real device (ssh://) or host")
    except ConfigError as e:
        raise ConfigError(f"{a.sweep}: latency_on: {e}") from None
    points = corner_points(sweep)
    corners = [load(p) for p in points]
    runner = Runner(store, STAGES, progress=False)
    for values, pipeline in zip(points, corners):
        try:
            runner.plan(pipeline)
        except ConfigError as e:
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
            raise ConfigError(f"sweep '{sweep.name}' at {shown}: {e}") from None
    import_optional("ray.tune", "'edgedistill[sweep]'", needed_by="edgedistill sweep")
    import_optional("optuna", "'edgedistill[sweep]'", needed_by="edgedistill sweep")
    return sweep, base, corners, budgets_file, budgets, devices


def run_shared(store, sweep, corners: list, wait_s: float) -> None:
    """What every trial shares (prepared data, the teacher) runs first, here, with all the machine's cores,
    rather than in the first trial with its share of them while the others wait for it."""
    from edgedistill.core.runner import Runner
    from edgedistill.core.stage import active
    from edgedistill.stages import STAGES
    from edgedistill.sweep.trial import shared_stages

    shared = shared_stages(STAGES, corners)
    if not shared:
        return
    print(f"  stages every trial shares, first: {', '.join(shared)}", file=sys.stderr, flush=True)
    runner = Runner(store, STAGES, progress=show_progress())
    stages = [s for s in active(STAGES, corners[0])[0] if s.name in shared]
    needed = {i for s in stages for i in s.inputs}
    with store.lock(wait_s=wait_s, what=f"sweep {sweep.name}"):
        for leaf in [s.name for s in stages if not set(s.artifacts) & needed]:
            runner.run(corners[0], until=leaf, publish=False, on_status=status_line, record_as=f"sweep@{sweep.name}@shared")


def run(a, store, sweep, base, corners, budgets_file, budgets, devices, folder: Path, resume: bool) -> int:
    from edgedistill.core.errors import ConfigError, GateFailed
    from edgedistill.core.runner import Runner
    from edgedistill.stages import STAGES
    from edgedistill.sweep import engine, results
    from edgedistill.sweep.trial import TrialSetup

    setup = TrialSetup(sweep=sweep.name, folder=str(folder), pipeline=str(sweep.pipeline), fixed=dict(sweep.set),
                       values_base=str(Path(a.sweep).resolve().parent), store=str(store.root.resolve()),
                       latency_on=sweep.latency_on, budgets=str(budgets_file) if budgets_file else None,
                       devices=str(devices) if devices else None, threads=max(1, int(sweep.resources.cpu)),
                       trust_code=list(a.trust_code or []), encoded=engine.encoded_keys(sweep), wait_s=max(a.wait, 3600.0))
    meta = {"name": sweep.name, "pipeline": str(sweep.pipeline), "search": sweep.search, "space": list(sweep.space),
            "objectives": list(sweep.objectives), "budgets": str(budgets_file) if budgets_file else None,
            "latency_on": sweep.latency_on, "trials": sweep.trial_count(),
            "timing": "Timings took turns: one model timed at a time on this machine (a host-wide lock), "
                      f"each trial's training in {setup.threads} thread(s) beside it."}
    print(f"sweep {sweep.name}: {meta['trials']} trials, {sweep.concurrent} at once, search {sweep.search}, "
          f"objectives {', '.join(sweep.objectives)}; results in {folder}", file=sys.stderr, flush=True)
    started = time.time()
    run_shared(store, sweep, corners, a.wait)
    if not engine.run(sweep, setup, meta, resume, a.address):
        results.write(folder, results.collect(folder), list(sweep.objectives), dict(meta, state="stopped"))
        raise KeyboardInterrupt  # Ray caught Ctrl-C: the same command resumes
    trials = results.collect(folder)
    objectives = list(sweep.objectives)
    verdict = results.assess(trials, objectives)
    # the test split, once, at the end: the trials of the front, the chosen one and the knee
    read = [t for t in trials if verdict["status"].get(t["trial"]) == "front" or t["trial"] in (verdict["chosen"], verdict["knee"])]
    with store.lock(wait_s=a.wait, what=f"sweep {sweep.name}"):
        test = {t["trial"]: results.test_numbers(store, t, budgets) for t in read}
        results.write(folder, trials, objectives, dict(meta, state="finished"), test)
        print_summary(trials, verdict, test, folder, time.time() - started)
        failed = sum(t.get("error") is not None for t in trials)
        if verdict["chosen"] is None:
            why = f"meets the budgets ({budgets_file})" if failed < len(trials) else "finished without an error"
            raise GateFailed(f"gate failed: none of the {len(trials)} trials {why}; see {folder / results.PAGE}")
        if a.publish:
            chosen = next(t for t in trials if t["trial"] == verdict["chosen"])
            gate = test[chosen["trial"]].get("gate", "")
            if gate.startswith("fail"):  # a release that fails its budgets is not published
                raise GateFailed(f"gate failed: the chosen trial {chosen['number']} fails the budgets on the test split "
                                 f"({gate.removeprefix('fail: ')}), so nothing was published; see {folder / results.PAGE}")
            bundle = store.get("bundle", chosen["bundle_key"])
            if bundle is None or bundle.problem:
                raise ConfigError(f"the chosen trial's bundle result {chosen['bundle_key']} is no longer in the store; "
                                  f"rerun the sweep (its trials are cached) with --publish")
            version, path, status = Runner(store, STAGES).publish(base.name, bundle, chosen["keys"])
            print(f"\npublished trial {chosen['number']} as {path} (v{version}, {status})")
    return 0


def print_summary(trials: list[dict], verdict: dict, test: dict, folder: Path, wall_s: float) -> None:
    from edgedistill.core.table import text_table
    from edgedistill.sweep.results import show_value
    keys = list(dict.fromkeys(k for t in trials for k in t.get("params", {})))
    rows = []
    for t in trials:
        done = t.get("accuracy") is not None
        role = " chosen" if t["trial"] == verdict["chosen"] else " knee" if t["trial"] == verdict["knee"] else ""
        tst = test.get(t["trial"]) or {}
        rows.append((f"{t['number']}{role}", verdict["status"].get(t["trial"], "running"),
                     *[show_value(t.get("params", {}).get(k)) for k in keys],
                     f"{t['accuracy']:.2f}" if done else "-", f"{t['latency']:.3f}" if done else "-",
                     f"{t['size'] / 1024:.1f}" if done else "-",
                     f"{tst['accuracy']:.2f}" if "accuracy" in tst else "-", tst.get("gate", "-")))
    print()
    print(text_table(("trial", "status", *keys, "val acc %", "p90 ms", "KiB", "test acc %", "test gate"), rows))
    print(f"\n{len(trials)} trials in {wall_s / 60:.1f} min; page: {folder / 'index.html'}")
    for role, what in (("chosen", "chosen (most accurate feasible, validation)"), ("knee", "knee of the front")):
        t = next((t for t in trials if t["trial"] == verdict[role]), None)
        if t is not None:
            print(f"{what}: trial {t['number']}: " + ", ".join(f"{k}={show_value(v)}" for k, v in t["params"].items()))
            gate = (test.get(t["trial"]) or {}).get("gate", "")
            if gate.startswith("fail"):
                print(f"  warning: on the test split it fails the budgets ({gate.removeprefix('fail: ')}): validation "
                      f"and test disagree by more than the margin the budgets leave")


def add_parsers(sub, common: argparse.ArgumentParser) -> None:
    """This group's sub-commands on the parser's sub-parsers (common: the global options)."""
    p = sub.add_parser("sweep", parents=[common], help="search student size, distillation and quantization settings "
                       "on Ray Tune; the Pareto page in <store>/sweeps/<name>/")
    p.add_argument("sweep", help="sweep YAML (docs/sweep.md)")
    p.add_argument("--address", metavar="ADDR", help="a Ray cluster to run the trials on (default: $RAY_ADDRESS, or "
                   "an embedded Ray on this machine); the store must be on storage every node sees")
    p.add_argument("--restart", action="store_true", help="start the sweep over (its trials' stage results stay "
                   "cached); without it, a sweep that was stopped resumes")
    p.add_argument("--publish", action="store_true", help="publish the chosen trial's bundle as the pipeline's next "
                   "version (exit 1 if it fails the budgets on the test split)")
    p.add_argument("--wait", type=seconds, default=0.0, metavar="SECONDS",
                   help="wait this long for the store when gc holds it (default: refuse at once)")
    p.set_defaults(fn=cmd_sweep)
