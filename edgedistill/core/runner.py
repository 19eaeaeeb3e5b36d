"""The runner: orders stages by their declared inputs/outputs, computes cache keys, reuses finished
results, runs the rest, and publishes the bundle. Stages know nothing of caching or versions.

Why one module: the Runner's methods share one protocol (keys, reuse, checks, commit, resume under
torchrun); split, a reader would follow it across files."""
from __future__ import annotations

import contextlib
import errno
import getpass
import importlib.metadata
import math
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from edgedistill.core.distributed import agree, barrier, world
from edgedistill.core.errors import ConfigError, EdgeDistillError, IntegrityError, StageError
from edgedistill.core.files import hash_obj, write_json
from edgedistill.core.registry import did_you_mean
from edgedistill.core.statcache import StatCache
from edgedistill.core.stage import Context, Pipeline, Stage, active, upstream
from edgedistill.core.store import METRICS, Result, Store


KEY_LIBRARIES = ("torch", "torchvision", "onnx", "onnxruntime")


def library_versions() -> dict[str, str]:
    out = {}
    for name in KEY_LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


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
    bundle: tuple[int, Path, str] | None = None
    """(version, folder, new | unchanged | restored) of the published bundle."""

    def result(self, stage: str) -> Result | None:
        return next((s.result for s in self.statuses if s.stage == stage), None)


@dataclass
class Selection:
    """The stages one run or plan walks."""

    stages: list[Stage]
    """Those that run, in order."""
    steps: list[Stage | StageStatus]
    """The same with the skipped stages' statuses among them, in the order they are shown."""
    where: dict[str, str]
    """{artifact: the subfolder of its producer's result that holds it} for artifacts that are parts."""


class DiskFull(EdgeDistillError):
    """The disk filled up while a stage wrote its result (nothing half-written is kept)."""


class _DamagedInput(Exception):
    """A stage's input failed its full check and was set aside: the run starts over to recompute it."""


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


class Runner:
    def __init__(self, store: Store, stages: list[Stage], progress: bool = True,
                 warn: Callable[[str], None] = _warn):
        self.store = store
        self.stages = list(stages)
        """Every stage; those of one pipeline are chosen by their skip rule and ordered by toposort."""
        self.progress = progress
        self.warn = warn
        self._verified: set[Path] = set()
        """Results whose every file was hashed against meta.json during this runner's life."""
        self.stat_cache = StatCache(store.root / "cache" / "stat.sqlite")
        """Hashes of the source files stages read (data, weights), not read again while unchanged."""

    def _select(self, pipeline: Pipeline, until: str | None, force: list[str]) -> Selection:
        names = list(dict.fromkeys(s.name for s in self.stages))
        for n in [until, *force]:
            if n is not None and n not in names:
                raise ConfigError(f"unknown stage '{n}'{did_you_mean(n, names)}; stages: {', '.join(names)}")
        stages, skipped = active(self.stages, pipeline)
        # the skipped stages are shown where the stage list has them (finetune, teach before distill)
        rank = {s.name: i for i, s in enumerate(self.stages)}
        running = {s.name for s in stages}
        skipped = [(s, w) for s, w in skipped if s.name not in running]  # another form of a stage that runs
        why = {s.name: w for s, w in skipped}
        for n in [until, *force]:
            if n is not None and n not in running:
                raise ConfigError(f"stage '{n}' does not run in this pipeline: {why[n]}")
        if until is not None:
            need = upstream(stages, until)
            stages = [s for s in stages if s.name in need]
            last = max(rank[s.name] for s in stages)
            skipped = [(s, w) for s, w in skipped if rank[s.name] < last]  # those before the last stage that runs
        where = {a: sub for s in stages for a, sub in s.parts.items()}
        steps: list[Stage | StageStatus] = []
        for stage in stages:
            while skipped and rank[skipped[0][0].name] < rank[stage.name]:
                s, reason = skipped.pop(0)
                steps.append(StageStatus(s.name, "skipped", reason=reason))
            steps.append(stage)
        steps += [StageStatus(s.name, "skipped", reason=reason) for s, reason in skipped]
        return Selection(stages, steps, where)

    def _paths(self, inputs: dict[str, Result], where: dict[str, str]) -> dict[str, Path]:
        """The folders a stage reads: each input's result, or the subfolder of it that holds the artifact."""
        return {name: r.path / where.get(name, "") for name, r in inputs.items()}

    def _resolve(self, pipeline: Pipeline, selected: list[Stage]) -> dict[str, BaseModel]:
        """Every selected stage's config, with the presets, files and folders it names, and its cheap
        checks: all before anything is computed, so a wrong name fails in seconds, not after hours."""
        cfgs = {}
        for stage in selected:
            cfg = cfgs[stage.name] = stage.configure(pipeline)
            for name, path in stage.sources(cfg).items():
                if not Path(path).exists():
                    raise ConfigError(f"stage '{stage.name}' reads {name} from '{path}', which does not exist")
            stage.check(pipeline)
        return cfgs

    def _key(self, stage: Stage, cfg: BaseModel, inputs: dict[str, Result]) -> tuple[str, dict]:
        sources = {name: self.stat_cache.hash_tree(p) for name, p in stage.sources(cfg).items()}
        parts = {
            "stage": stage.name,
            "version": stage.version,
            "config": cfg.model_dump(mode="json", exclude=stage.key_exclude),
            "inputs": {name: r.content_hash for name, r in sorted(inputs.items())},
            "sources": sources,
            "libraries": library_versions(),
        }
        return hash_obj(parts)[:16], parts

    def _decide(self, stage: Stage, cfg: BaseModel, pipeline: Pipeline, inputs: dict[str, Result], force: list[str],
                writer: bool) -> "Decision":
        """Reuse a finished result, or run, and why: the one rule `plan` shows and `run` follows.
        A cached result that fails its cheap check is never reused; the writer (a run holding the
        store's lock) sets it aside."""
        key, parts = self._key(stage, cfg, inputs)
        existing = self.store.get(stage.name, key)
        if existing is not None and existing.problem:
            if not writer:
                return Decision(key, parts, cfg, None, reuse=False, why=f"its cached result is damaged ({existing.problem})")
            aside = self.store.set_aside(existing.path, existing.problem)
            self.warn(f"{stage.name} result {key} is damaged ({existing.problem}); set aside in {aside}, recomputing it")
            return Decision(key, parts, cfg, None, reuse=False, why=f"its cached result was damaged ({existing.problem})")
        if existing and stage.name not in force:
            return Decision(key, parts, cfg, existing, reuse=True)
        why = "--force" if existing else explain(parts, self.store.latest(stage.name, pipeline.name))
        return Decision(key, parts, cfg, existing, reuse=False, why=why)

    def plan(self, pipeline: Pipeline, until: str | None = None, force: list[str] = ()) -> list[StageStatus]:
        """What `run` would do, without computing or changing anything."""
        produced: dict[str, Result] = {}
        rerun: set[str] = set()
        out = []
        selection = self._select(pipeline, until, list(force))
        cfgs = self._resolve(pipeline, selection.stages)
        for stage in selection.steps:
            if isinstance(stage, StageStatus):
                out.append(stage)
                continue
            stale = [i for i in stage.inputs if i in rerun]
            if stale:
                rerun.update(stage.artifacts)
                out.append(StageStatus(stage.name, "will run", reason=f"input '{stale[0]}' will be recomputed"))
                continue
            d = self._decide(stage, cfgs[stage.name], pipeline, {i: produced[i] for i in stage.inputs}, list(force),
                             writer=False)
            if d.reuse:
                produced.update(dict.fromkeys(stage.artifacts, d.existing))
                out.append(StageStatus(stage.name, "cached", d.key, result=d.existing))
            else:
                rerun.update(stage.artifacts)
                out.append(StageStatus(stage.name, "will run", d.key, reason=d.why))
        return out

    def run(self, pipeline: Pipeline, until: str | None = None, force: list[str] = (),
            on_status: Callable[[StageStatus], None] = lambda s: None, publish: bool = True,
            record_as: str | None = None) -> RunReport:
        """Run the pipeline's stages, reusing finished results, and publish the bundle (unless publish is
        False: a sweep's trial leaves its bundle a result, and the sweep publishes the one it chooses).
        record_as: the name under which gc keeps this run's results (default: the pipeline's name; each
        trial of a sweep has its own, so concurrent trials of one pipeline do not replace each other's).

        Under torchrun (torch.distributed initialized) every process calls this. All of them walk the
        stages up to the last `distributed` one: rank 0 decides, runs and commits each stage, the
        others run the distributed stages with it (their own output is thrown away) and wait for the
        rest. After the last distributed stage only rank 0 goes on. Rank 0 alone writes to the store.

        Before a stage runs, every file of its inputs is checked against its recorded sha256. An input
        that fails is set aside and the run starts over, which recomputes it (once per input).
        """
        for attempt in range(len(self.stages) + 1):
            try:
                return self._run(pipeline, until, list(force), on_status, publish, record_as or pipeline.name)
            except _DamagedInput as e:
                if world()[1] > 1:
                    raise IntegrityError(f"{e}; run again to recompute it") from None
                self.warn(f"{e}; starting over to recompute it")
        raise IntegrityError("inputs keep failing their checks after being recomputed; is the disk failing?")

    def _run(self, pipeline: Pipeline, until: str | None, force: list[str],
             on_status: Callable[[StageStatus], None], publish: bool, record_as: str) -> RunReport:
        rank, size = world()
        report = RunReport(pipeline)
        produced: dict[str, Result] = {}
        selection = self._select(pipeline, until, force)
        selected = selection.stages
        cfgs = self._resolve(pipeline, selected)
        together = max((i for i, s in enumerate(selected) if s.distributed), default=-1) if size > 1 else -1
        for stage in selection.steps:
            if isinstance(stage, StageStatus):  # skipped in this pipeline
                report.statuses.append(stage)
                if rank == 0:
                    on_status(stage)
                continue
            i = selected.index(stage)
            if rank > 0 and i > together:
                break
            inputs = {name: produced[name] for name in stage.inputs}
            d = self._decide(stage, cfgs[stage.name], pipeline, inputs, force, writer=rank == 0)
            with contextlib.ExitStack() as computing:
                if rank == 0 and not d.reuse:  # before the processes agree: another run may be computing it
                    self._claim(computing, stage, d, stage.name in force, on_status)
                if i <= together:
                    d.reuse = agree(stage.name, d.key, d.reuse)
                    if d.reuse and d.existing is None:
                        d.existing = self._shared_result(stage.name, d.key, rank)
                if rank == 0:
                    self.store.record_run(record_as, stage.name, d.key)
                st = self._stage(stage, d, inputs, selection.where, pipeline, rank, on_status)
            if rank == 0 and i <= together and not d.reuse:
                barrier()
            produced.update(dict.fromkeys(stage.artifacts, st.result))
            report.statuses.append(st)
            if rank == 0:
                on_status(st)
        if rank > 0:
            return report
        bundle = report.result("bundle")
        if bundle is not None and publish:
            report.bundle = self.publish(pipeline.name, bundle, {s.stage: s.key for s in report.statuses if s.key})
        return report

    def publish(self, name: str, bundle: Result, results: dict[str, str]) -> tuple[int, Path, str]:
        """Publish a bundle result as bundles/<name>/v<N>/ (a new version unless the latest has the same
        content), its manifest naming the stage results it came from. Returns (version, folder, status)."""
        return self.store.publish_bundle(name, bundle.path, {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pipeline": name,
            "results": dict(results),
            "libraries": library_versions(),
            "edgedistill": importlib.metadata.version("edgedistill"),
        }, warn=self.warn)

    def _claim(self, stack: contextlib.ExitStack, stage: Stage, d: Decision, forced: bool,
               on_status: Callable[[StageStatus], None]) -> None:
        """Take the lock under which this run computes d's result (held until stack closes). Another run
        sharing the store may have been computing it: then this one waited, and reuses it unless forced;
        when forced, it replaces it."""
        waiting = lambda: on_status(StageStatus(stage.name, "waiting", d.key, reason="another run is computing it"))
        stack.enter_context(self.store.computing(stage.name, d.key, on_wait=waiting))
        done = self.store.get(stage.name, d.key) if d.existing is None else None
        if done is not None and not done.problem and not forced:
            d.reuse, d.existing = True, done
        elif done is not None:
            d.existing = done  # replaced when it is committed (a damaged one is set aside then)

    def _stage(self, stage: Stage, d: Decision, inputs: dict[str, Result], where: dict[str, str], pipeline: Pipeline,
               rank: int, on_status: Callable[[StageStatus], None]) -> StageStatus:
        """One stage's outcome: reused, computed (rank 0), or under torchrun helped with (the other ranks)."""
        if d.reuse:
            return StageStatus(stage.name, "cached", d.key, headline=stage.headline(d.existing.meta["metrics"]),
                               result=d.existing)
        if rank == 0:
            self._check_inputs(inputs)
            on_status(StageStatus(stage.name, "running", d.key, reason=d.why))
            result, seconds = self._execute(stage, d.cfg, d.key, d.parts, self._paths(inputs, where), pipeline,
                                            replace=d.existing is not None)
            return StageStatus(stage.name, "ran", d.key, d.why, seconds, stage.headline(result.meta["metrics"]), result)
        if stage.distributed:
            self._execute_helper(stage, d.cfg, d.key, self._paths(inputs, where))
        barrier()  # rank 0 has committed the result
        return StageStatus(stage.name, "ran", d.key, d.why, result=self._shared_result(stage.name, d.key, rank))

    def _check_inputs(self, inputs: dict[str, Result]) -> None:
        """Hash every file a stage is about to read against its record (once per result and runner)."""
        for name, r in inputs.items():
            if r.path in self._verified:
                continue
            problem = self.store.full_check(r)
            if problem:
                aside = self.store.set_aside(r.path, problem)
                raise _DamagedInput(f"{r.stage} result {r.key} is damaged ({problem}); set aside in {aside}")
            self._verified.add(r.path)

    def _shared_result(self, stage: str, key: str, rank: int) -> Result:
        """A result rank 0 has in the store, read by another process."""
        result = self.store.get(stage, key)
        if result is None:
            raise StageError(f"process {rank} does not see the {stage} result rank 0 has in {self.store.root}; "
                             f"under torchrun the store must be on a file system all processes share")
        return result

    def _execute_helper(self, stage: Stage, cfg: BaseModel, key: str, inputs: dict[str, Path]) -> None:
        """A distributed stage on a rank other than 0: same inputs and checkpoint folder, output discarded."""
        with tempfile.TemporaryDirectory(prefix=f"{stage.name}-rank") as scratch:
            ctx = Context(work=self.store.work_dir(stage.name, key), progress=False, quiet=True)
            stage.run(cfg, inputs, Path(scratch), ctx)

    def _execute(self, stage: Stage, cfg: BaseModel, key: str, parts: dict, inputs: dict[str, Path],
                 pipeline: Pipeline, replace: bool) -> tuple[Result, float]:
        tmp = self.store.new_tmp(stage.name)
        work = self.store.work_dir(stage.name, key)
        try:
            work.mkdir(parents=True, exist_ok=True)
            ctx = Context(work=work, progress=self.progress)
            started = time.time()
            metrics = stage.run(cfg, inputs, tmp, ctx)
            seconds = time.time() - started
            bad = non_finite(metrics)
            if bad:
                raise StageError(f"stage '{stage.name}' produced a non-finite metric {bad}; nothing was cached")
            # metrics.json is part of the result's content, so later stages may read it as an input
            write_json(tmp / METRICS, metrics)
            return self._commit(stage, cfg, key, parts, pipeline, tmp, metrics, seconds, replace), seconds
        except BaseException as e:
            # Failures are never cached: the partial output goes, the checkpoints in work/ stay.
            written = newest_file(tmp) or newest_file(work) or tmp
            shutil.rmtree(tmp, ignore_errors=True)
            if disk_full(e, self.store.root):
                raise DiskFull(f"no space left on device while writing {written} (stage {stage.name}); free some space "
                               f"(`edgedistill gc` removes what no bundle needs) and run again: finished stages are kept") from e
            raise

    def _commit(self, stage: Stage, cfg: BaseModel, key: str, parts: dict, pipeline: Pipeline, tmp: Path,
                metrics: dict, seconds: float, replace: bool) -> Result:
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
        return self.store.commit(stage.name, key, tmp, meta, replace=replace)


def non_finite(obj: Any, where: str = "") -> str | None:
    """The dotted path of the first NaN or infinity in a metrics tree, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"{where or 'value'} = {obj}"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        found = non_finite(v, f"{where}.{k}" if where else str(k))
        if found:
            return found
    return None


def newest_file(folder: Path) -> Path | None:
    """The most recently written file under folder: after a write failed, most likely the one being written."""
    try:
        files = [p for p in Path(folder).rglob("*") if p.is_file()]
        return max(files, key=lambda p: p.stat().st_mtime_ns, default=None)
    except OSError:
        return None


def disk_full(e: BaseException, folder: Path) -> bool:
    """Whether an exception from writing means the disk (or quota) is full. Writers word it differently:
    OSError ENOSPC, numpy's "N requested and M written", torch's "file write failed"; all but the
    first are told apart by the free space left."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(e, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(folder).free < 16 * 2**20
    except OSError:
        return False
