"""The runner: orders stages by their declared inputs/outputs, computes cache keys, reuses finished
results, runs the rest, and publishes the bundle. Stages know nothing of caching or versions."""
from __future__ import annotations

import getpass
import importlib.metadata
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from .config import Pipeline
from .errors import ConfigError
from .registry import did_you_mean
from .store import METRICS, Result, Store, hash_obj, hash_tree, write_json

KEY_LIBRARIES = ("torch", "torchvision", "onnx", "onnxruntime")


def library_versions() -> dict[str, str]:
    out = {}
    for name in KEY_LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@dataclass
class Context:
    """What the runner hands a stage besides its config and inputs."""

    work: Path
    """Folder that survives a crash until the stage finishes: checkpoints go here."""
    progress: bool = True
    """Show progress bars."""

    def log(self, msg: str) -> None:
        print(f"    {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Stage:
    """A pipeline step: a plain function plus what the runner needs to cache it."""

    name: str
    version: int
    """Bump when the stage's code changes what it produces: old results stop matching."""
    inputs: tuple[str, ...]
    """Artifact names this stage reads (outputs of other stages)."""
    output: str
    """Artifact name this stage writes."""
    configure: Callable[[Pipeline], BaseModel]
    """This stage's own typed config, taken from the pipeline (all of what it depends on)."""
    run: Callable[[Any, dict[str, Path], Path, Context], dict]
    """run(cfg, inputs, out, ctx) -> metrics. Writes its files into out."""
    sources: Callable[[Any], dict[str, Path]] = lambda cfg: {}
    """Files outside the store that it reads (data, weights); their content goes into the key."""
    key_exclude: dict | None = None
    """Config fields that do not change the result (model_dump's exclude syntax), e.g. device."""
    headline: Callable[[dict], str] = lambda m: ""
    """One short string of the metrics for the summary table."""


def toposort(stages: list[Stage]) -> list[Stage]:
    """Order by declared inputs and outputs, never by list order."""
    producers = {s.output: s for s in stages}
    for s in stages:
        for i in s.inputs:
            if i not in producers:
                raise ConfigError(f"stage '{s.name}' reads '{i}', which no stage writes")
    ordered: list[Stage] = []
    state: dict[str, int] = {}

    def visit(s: Stage) -> None:
        if state.get(s.name) == 2:
            return
        if state.get(s.name) == 1:
            raise ConfigError(f"stage dependency cycle through '{s.name}'")
        state[s.name] = 1
        for i in s.inputs:
            visit(producers[i])
        state[s.name] = 2
        ordered.append(s)

    for s in sorted(stages, key=lambda s: s.name):
        visit(s)
    return ordered


def upstream(stages: list[Stage], target: str) -> set[str]:
    producers = {s.output: s for s in stages}
    by_name = {s.name: s for s in stages}
    need, todo = set(), [by_name[target]]
    while todo:
        s = todo.pop()
        if s.name not in need:
            need.add(s.name)
            todo.extend(producers[i] for i in s.inputs)
    return need


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def explain(parts: dict, previous: Result | None) -> str:
    """Why a stage will run: which key part changed against its last finished result."""
    if previous is None:
        return "no earlier result"
    old, new = _flatten(previous.meta.get("key_parts", {})), _flatten(parts)
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if not changed:
        return "forced"

    def show(k: str) -> str:
        if k.startswith(("inputs.", "sources.")):
            return f"{k} content changed"
        return f"{k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}"

    more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
    return "; ".join(show(k) for k in changed[:3]) + more


@dataclass
class StageStatus:
    stage: str
    status: str  # cached | ran | will run | cached (plan) | skipped
    key: str | None = None
    reason: str = ""
    seconds: float = 0.0
    headline: str = ""
    result: Result | None = None


@dataclass
class Decision:
    key: str
    parts: dict
    cfg: BaseModel
    existing: Result | None
    """A finished result under this key, if any."""
    reuse: bool
    why: str = ""


@dataclass
class RunReport:
    pipeline: Pipeline
    statuses: list[StageStatus] = field(default_factory=list)
    bundle: tuple[int, Path, bool] | None = None

    def result(self, stage: str) -> Result | None:
        return next((s.result for s in self.statuses if s.stage == stage), None)


class Runner:
    def __init__(self, store: Store, stages: list[Stage], progress: bool = True):
        self.store = store
        self.stages = toposort(stages)
        self.progress = progress

    def _select(self, until: str | None, force: list[str]) -> list[Stage]:
        names = [s.name for s in self.stages]
        for n in [until, *force]:
            if n is not None and n not in names:
                raise ConfigError(f"unknown stage '{n}'{did_you_mean(n, names)}; stages: {', '.join(names)}")
        if until is None:
            return self.stages
        need = upstream(self.stages, until)
        return [s for s in self.stages if s.name in need]

    def _key(self, stage: Stage, pipeline: Pipeline, inputs: dict[str, Result]) -> tuple[str, dict, BaseModel]:
        cfg = stage.configure(pipeline)
        sources = {name: hash_tree(p) for name, p in stage.sources(cfg).items()}
        parts = {
            "stage": stage.name,
            "version": stage.version,
            "config": cfg.model_dump(mode="json", exclude=stage.key_exclude),
            "inputs": {name: r.content_hash for name, r in sorted(inputs.items())},
            "sources": sources,
            "libraries": library_versions(),
        }
        return hash_obj(parts)[:16], parts, cfg

    def _decide(self, stage: Stage, pipeline: Pipeline, inputs: dict[str, Result], force: list[str]) -> "Decision":
        """Reuse a finished result, or run, and why: the one rule `plan` shows and `run` follows."""
        key, parts, cfg = self._key(stage, pipeline, inputs)
        existing = self.store.get(stage.name, key)
        if existing and stage.name not in force:
            return Decision(key, parts, cfg, existing, reuse=True)
        why = "--force" if existing else explain(parts, self.store.latest(stage.name, pipeline.name))
        return Decision(key, parts, cfg, existing, reuse=False, why=why)

    def plan(self, pipeline: Pipeline, until: str | None = None, force: list[str] = ()) -> list[StageStatus]:
        """What `run` would do, without computing anything."""
        produced: dict[str, Result] = {}
        rerun: set[str] = set()
        out = []
        for stage in self._select(until, list(force)):
            stale = [i for i in stage.inputs if i in rerun]
            if stale:
                rerun.add(stage.output)
                out.append(StageStatus(stage.name, "will run", reason=f"input '{stale[0]}' will be recomputed"))
                continue
            d = self._decide(stage, pipeline, {i: produced[i] for i in stage.inputs}, list(force))
            if d.reuse:
                produced[stage.output] = d.existing
                out.append(StageStatus(stage.name, "cached", d.key, result=d.existing))
            else:
                rerun.add(stage.output)
                out.append(StageStatus(stage.name, "will run", d.key, reason=d.why))
        return out

    def run(self, pipeline: Pipeline, until: str | None = None, force: list[str] = (),
            on_status: Callable[[StageStatus], None] = lambda s: None) -> RunReport:
        report = RunReport(pipeline)
        produced: dict[str, Result] = {}
        for stage in self._select(until, list(force)):
            inputs = {i: produced[i] for i in stage.inputs}
            d = self._decide(stage, pipeline, inputs, list(force))
            if d.reuse:
                st = StageStatus(stage.name, "cached", d.key, headline=stage.headline(d.existing.meta["metrics"]),
                                 result=d.existing)
            else:
                on_status(StageStatus(stage.name, "running", d.key, reason=d.why))
                result, seconds = self._execute(stage, d.cfg, d.key, d.parts, inputs, pipeline, replace=d.existing is not None)
                st = StageStatus(stage.name, "ran", d.key, d.why, seconds, stage.headline(result.meta["metrics"]), result)
            produced[stage.output] = st.result
            report.statuses.append(st)
            on_status(st)
        bundle = report.result("bundle")
        if bundle is not None:
            report.bundle = self.store.publish_bundle(pipeline.name, bundle.path, {
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "pipeline": pipeline.name,
                "results": {s.stage: s.key for s in report.statuses},
                "libraries": library_versions(),
                "edgedistill": importlib.metadata.version("edgedistill"),
            })
        return report

    def _execute(self, stage: Stage, cfg: BaseModel, key: str, parts: dict, inputs: dict[str, Result],
                 pipeline: Pipeline, replace: bool) -> tuple[Result, float]:
        tmp = self.store.new_tmp(stage.name)
        work = self.store.work_dir(stage.name, key)
        work.mkdir(parents=True, exist_ok=True)
        ctx = Context(work=work, progress=self.progress)
        started = time.time()
        try:
            metrics = stage.run(cfg, {i: r.path for i, r in inputs.items()}, tmp, ctx)
        except BaseException:
            # Failures are never cached: the partial output goes, the checkpoints in work/ stay.
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        seconds = time.time() - started
        # metrics.json is part of the result's content, so later stages may read it as an input
        write_json(tmp / METRICS, metrics)
        meta = {
            "stage": stage.name,
            "key": key,
            "pipeline": pipeline.name,
            "key_parts": parts,
            "config": cfg.model_dump(mode="json"),
            "metrics": metrics,
            "seconds": round(seconds, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": {"python": platform.python_version(), "machine": platform.machine(), "user": getpass.getuser()},
        }
        return self.store.commit(stage.name, key, tmp, meta, replace=replace), seconds

