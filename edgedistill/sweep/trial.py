"""One trial of a sweep: the base pipeline with the trial's values, run into the shared store like any
`edgedistill run` (without publishing its bundle), and the numbers it is ranked on, all from the
validation split: the test split's numbers stay in the trial's bundle result until the sweep ends.

A trial's files, in <store>/sweeps/<name>/trials/<trial id>/: params.json (its values), log.txt (what
the run printed), result.json (its metrics, or the error it failed with)."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from edgedistill.core.errors import ConfigError, EdgeDistillError, one_line
from edgedistill.core.files import read_json, write_json

RESULT, PARAMS, LOG = "result.json", "params.json", "log.txt"


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares (sent to Ray's workers, so plain values)."""

    sweep: str
    folder: str
    """<store>/sweeps/<name>/"""
    pipeline: str
    """The base pipeline file."""
    fixed: dict
    """The sweep's `set` values."""
    values_base: str
    """Folder that relative paths among the values are resolved against (the sweep file's)."""
    store: str
    latency_on: str = "host"
    budgets: str | None = None
    devices: str | None = None
    threads: int = 1
    """torch's threads in the trial (its CPUs)."""
    trust_code: list[str] = field(default_factory=list)
    encoded: tuple[str, ...] = ()
    """Searched keys whose choices travel as JSON text (lists and mappings: Optuna's categories must be
    plain values)."""
    wait_s: float = 3600.0
    """How long a trial waits for the store while gc holds it."""


class TrialFailed(EdgeDistillError):
    """A trial's pipeline refused its input or failed; the sweep goes on with the others."""


def shared_stages(stages: list, pipelines: list) -> list[str]:
    """The stages whose result is the same for every one of pipelines (a sweep's corner points): run in
    every one, with the same config, and inputs only from such stages. In the runner's order."""
    from edgedistill.core.files import hash_obj
    from edgedistill.core.stage import active

    runs = [active(stages, p)[0] for p in pipelines]
    producers = {a: s.name for s in runs[0] for a in s.artifacts}
    shared: list[str] = []
    for stage in runs[0]:
        if not all(stage in r for r in runs):
            continue
        configs = {hash_obj(stage.configure(p).model_dump(mode="json", exclude=stage.key_exclude)) for p in pipelines}
        if len(configs) == 1 and all(producers[i] in shared for i in stage.inputs):
            shared.append(stage.name)
    return shared


def decode(params: dict, setup: TrialSetup) -> dict[str, Any]:
    """The trial's config values as the search gave them, JSON-encoded choices decoded."""
    return {k: json.loads(v) if k in setup.encoded else v for k, v in params.items()}


def run_trial(params: dict, setup: TrialSetup) -> None:
    """Ray Tune's function trainable: evaluate the trial and report its metrics (once, at the end)."""
    from ray import tune

    result = evaluate(decode(params, setup), setup, tune.get_context().get_trial_id())
    tune.report(search_metrics(result))


def search_metrics(result: dict) -> dict:
    """What the search algorithm sees of a trial: validation accuracy, latency, size, and how many budgets
    it misses (Optuna's constraint: feasible at 0 or less)."""
    return {"accuracy": result["accuracy"], "latency": result["latency"], "size": result["size"],
            "budgets_missed": float(sum(not c["passed"] for c in result["checks"]))}


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (its children's too) to a file for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def evaluate(values: dict[str, Any], setup: TrialSetup, trial_id: str) -> dict:
    """Run the trial's pipeline and measure it; the result is also written to its folder. A trial that
    finished before (a sweep resumed after its driver was killed before Ray recorded the finish) is
    read back, not run again. TrialFailed (after writing the error) when the pipeline fails."""
    folder = Path(setup.folder) / "trials" / trial_id
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / RESULT
    if done.is_file():
        try:
            previous = read_json(done)
            if previous.get("params") == values and previous.get("error") is None:
                return previous
        except (EdgeDistillError, AttributeError):
            pass
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(folder / PARAMS, {"trial": trial_id, "params": values, "started": started_at})
    started = time.time()
    with output_to(folder / LOG):
        try:
            result = _evaluate(values, setup, trial_id)
        except Exception as e:  # noqa: BLE001 (recorded, then Ray is told the trial failed)
            error = one_line(str(e) if isinstance(e, EdgeDistillError) else f"{type(e).__name__}: {e}")
            print(f"trial failed: {error}", file=sys.stderr)
            write_json(done, {"trial": trial_id, "params": values, "started": started_at, "error": error,
                              "seconds": round(time.time() - started, 1)})
            raise TrialFailed(error) from None
    result.update(trial=trial_id, params=values, started=started_at, error=None, seconds=round(time.time() - started, 1),
                  finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    write_json(done, result)
    return result


def _evaluate(values: dict[str, Any], setup: TrialSetup, trial_id: str) -> dict:
    import torch

    from edgedistill.core import config
    from edgedistill.core.runner import Runner
    from edgedistill.core.store import Store
    from edgedistill.pipeline import load_pipeline
    from edgedistill.release.gate import load_budgets
    from edgedistill.stages import STAGES

    torch.set_num_threads(setup.threads)  # Ray set OMP_NUM_THREADS to the trial's CPUs; torch follows it
    config.TRUSTED_CODE[:] = setup.trust_code
    pipeline = load_pipeline(Path(setup.pipeline), values={**setup.fixed, **values}, values_base=Path(setup.values_base))
    budgets_file = setup.budgets or pipeline.budgets
    budgets = load_budgets(Path(budgets_file)) if budgets_file else None
    store = Store(Path(setup.store))

    def status(st) -> None:
        if st.status in ("cached", "ran"):
            print(f"> {st.stage:<10} {st.status:<7} [{st.key}] {st.seconds:.1f} s {st.headline}", file=sys.stderr, flush=True)

    devices = Path(setup.devices) if setup.devices else pipeline.devices
    with store.lock(wait_s=setup.wait_s, what=f"sweep {setup.sweep}, trial {trial_id}"):
        report = Runner(store, STAGES, progress=False).run(pipeline, on_status=status, publish=False,
                                                           record_as=f"sweep@{setup.sweep}@{trial_id}")
        out = measure(report, setup.latency_on, pipeline.benchmark, budgets, devices)
    out["ran"] = [s.stage for s in report.statuses if s.status == "ran"]
    out["stage_seconds"] = round(sum(s.seconds for s in report.statuses), 1)
    return out


def measure(report, latency_on: str, benchmark, budgets, devices: Path | None) -> dict:
    """A finished trial's metrics from its run report: validation accuracy of the model its bundle ships,
    p90 latency where latency_on says, size of model.onnx, and its budgets checked with validation
    accuracy in place of test accuracy (validation_view)."""
    from edgedistill.release.gate import check

    bundle = report.result("bundle")
    quant = report.result("qat").meta["metrics"]
    rep = read_json(bundle.path / "report.json")
    latency, latency_from, device_result = rep["latency_ms"]["p90"], "this machine (the benchmark stage)", None
    if latency_on != "host":
        device_result, latency_from = on_device(bundle.path, latency_on, benchmark, devices)
        latency = device_result["latency_ms"]["p90"]
    view = validation_view(rep, quant, latency_on, device_result)
    budgets, notes = search_budgets(budgets, latency_on)
    rows = []
    if budgets is not None:
        try:
            rows = check(view, budgets)
        except ConfigError:  # no budget applies during the search (only device budgets of other devices)
            rows = []
    accuracy = view["accuracy"][rep["shipped"]]
    return {
        "accuracy": accuracy, "latency": latency, "size": rep["size_bytes"],
        "feasible": all(r.passed for r in rows),
        "checks": [{"metric": r.metric, "budget": r.budget, "actual": r.actual, "passed": r.passed} for r in rows],
        "budget_notes": notes,
        "val_examples": quant["val_resolution"]["images"],
        "shipped": rep["shipped"], "recipe": quant["recipe"] if rep["shipped"] == "student_int8" else "fp32",
        "student": rep["distillation"]["shipped"], "student_params": rep["params"]["student"],
        "latency_from": latency_from, "isolation": rep.get("benchmark", {}).get("isolation"),
        "keys": {s.stage: s.key for s in report.statuses if s.key}, "bundle_key": bundle.key,
    }


def validation_view(rep: dict, quant: dict, latency_on: str, device_result: dict | None) -> dict:
    """The bundle's report.json with every accuracy the gate reads taken from the validation split (the
    shipped model's, the teacher's, the loss to quantization) and the device's latency where it was
    measured there, so the release gate's own checks decide feasibility without a look at the test split."""
    view = json.loads(json.dumps(rep))
    shipped = rep["shipped"]
    view["accuracy"] = {shipped: quant["val_accuracy_int8"] if shipped == "student_int8" else quant["val_accuracy_fp32"],
                        "teacher": rep["distillation"]["teacher_val_accuracy"]}
    view["quantization"]["test_drop"] = quant["val_drop"] if shipped == "student_int8" else None
    view["devices"] = {latency_on: device_result} if device_result is not None else {}
    return view


def search_budgets(budgets, latency_on: str):
    """The budgets a trial can be checked on during the search, and notes on the rest: of the device
    budgets, only the latency, memory and cold start of the device latency is measured on (top-1
    agreement and device accuracy need `verify`, which the chosen bundle gets afterwards)."""
    if budgets is None or not budgets.devices:
        return budgets, []
    notes, kept = [], {}
    for name, db in budgets.devices.items():
        later = [k for k, v in db.model_dump().items() if v is not None
                 and (name != latency_on or k in ("min_top1_agreement", "min_accuracy"))]
        if later:
            notes.append(f"{name}: {', '.join(later)} not checked during the search (verify or ingest the chosen bundle)")
        if name == latency_on:
            kept[name] = db.model_copy(update={"min_top1_agreement": None, "min_accuracy": None})
    return budgets.model_copy(update={"devices": kept}), notes


def on_device(bundle: Path, latency_on: str, benchmark, devices: Path | None) -> tuple[dict, str]:
    """bench.py over SSH on the trial's bundle: latency_on is a devices-file name or an ssh:// target."""
    from edgedistill.runtime.remote import bench_over_ssh

    target, python, threads, name = latency_on, "python3", benchmark.threads, None
    if not latency_on.startswith("ssh://"):
        from edgedistill.runtime.devices import devices_file, find_device

        d = find_device(latency_on, devices or devices_file())
        if d.emulated:
            raise ConfigError(f"latency_on '{latency_on}' is emulated ({d.target}): latency under emulation means nothing; "
                              f"name a real device (ssh://) or host")
        target, python, threads, name = d.target, d.python, d.threads, latency_on
    settings = benchmark.model_copy(update={"threads": threads})
    return bench_over_ssh(bundle, target, settings, name=name, remote_python=python), f"{name or target} (bench.py over SSH)"
