"""Benchmark settings (the benchmark stage's config; quantize times candidates with them too),
ortbench.py run in a child process that imports only numpy and ONNX Runtime, and the host-wide lock
that makes timings take turns."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Literal, TypeVar

import numpy as np
from pydantic import Field

from edgedistill.core.config import Strict
from edgedistill.core.errors import DataError, StageError
from edgedistill.core.locks import FileLock

K = TypeVar("K")
T = TypeVar("T")


class BenchmarkConfig(Strict):
    threads: int = Field(1, ge=1)
    """ONNX Runtime intra-op threads. 1 is what most phone apps get for a model."""
    inter_op_threads: int = Field(1, ge=1)
    """ONNX Runtime inter-op threads (parallel branches of the graph)."""
    graph_optimization: Literal["all", "extended", "basic", "disabled"] = "all"
    """ONNX Runtime graph optimization level of the benchmark session."""
    warmup: int = Field(20, ge=0)
    """Untimed runs before timing (caches, allocator, lazy initialization)."""
    runs: int = Field(300, ge=1)
    """Minimum timed runs at batch 1; percentiles are taken over all timed runs."""
    min_duration_s: float = Field(1.0, ge=0)
    """Minimum timed duration in seconds: timing goes on until both runs and this are reached."""
    protocol: Literal["ci", "mlperf"] = "ci"
    """ci: runs and min_duration_s as given. mlperf: at least MLPerf Inference's single-stream
    minimums (1024 runs and 600 s per model), for release numbers."""
    sequence_length: int | None = Field(None, ge=1, le=4096)
    """Text models: the token length of made-up inputs where no test inputs are fed (quantize's
    candidate timing, bench.py over SSH). None: data.max_length, the length of the test inputs."""
    sequence_lengths: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=lambda: [32, 128])
    """Text models: their latency is also timed on made-up token ids of each of these lengths (the
    main figures use the test inputs at data.max_length). Phones see short messages and long ones;
    attention's cost grows with the square of the length."""
    throughput_batch: int = Field(8, ge=0)
    """Batch size of the throughput figure (images per second). 0: skip."""
    profile_runs: int = Field(50, ge=0)
    """Runs under ONNX Runtime's profiler for the top operators by time (separate session). 0: skip."""
    rounds: int = Field(3, ge=1)
    """The benchmark stage times each model's latency this many times, the models alternating (teacher,
    student FP32, student INT8, teacher, ...); each latency figure is the median over the rounds and
    latency_rounds_ms lists every round's p90. One timing of a sub-millisecond model says more about the
    machine's state in that second than about the model: the quickstart's card once said INT8 p90 0.089
    ms against FP32's 0.070 where the quantize stage's alternated medians were 0.055 and 0.071.
    protocol mlperf: one round (its minimum runs and duration are the protocol)."""

    def ortbench_args(self) -> list[str]:
        """The same settings as ortbench.py / bench.py command-line flags."""
        args = ["--threads", str(self.threads), "--inter-threads", str(self.inter_op_threads),
                "--opt-level", self.graph_optimization, "--warmup", str(self.warmup), "--runs", str(self.runs),
                "--min-seconds", str(self.min_duration_s), "--throughput-batch", str(self.throughput_batch),
                "--profile-runs", str(self.profile_runs)]
        if self.sequence_length is not None:
            args += ["--sequence-length", str(self.sequence_length)]
        return args + (["--mlperf"] if self.protocol == "mlperf" else [])


def timing_lock_path(target: str = "host") -> Path:
    """The lock file timings on target take turns under: one per machine for this machine's CPU (in
    $EDGEDISTILL_TIMING_LOCK_DIR, default the system's temporary folder, which every process of the
    machine sees), one per device for an SSH target."""
    folder = Path(os.environ.get("EDGEDISTILL_TIMING_LOCK_DIR") or tempfile.gettempdir())
    name = "host" if target == "host" else hashlib.sha256(target.encode()).hexdigest()[:16]
    return folder / f"edgedistill-timing-{name}.lock"


@contextlib.contextmanager
def timing_turn(target: str = "host") -> Iterator[dict]:
    """Hold target's timing lock while timing: runs that share a machine (a sweep's concurrent trials,
    two people) time one model at a time, so no timing runs beside another. Training of other runs may
    still go on beside it, each in the threads it was given. Yields how the timing was isolated (the
    lock, seconds waited for it, OMP_NUM_THREADS), for the report."""
    path = timing_lock_path(target)
    lock = FileLock(path, exclusive=True)
    started = time.monotonic()
    lock.acquire(None)
    try:
        yield {"lock": str(path), "scope": "this machine" if target == "host" else "this device, from this machine",
               "waited_s": round(time.monotonic() - started, 3), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    finally:
        lock.release()


def bench_in_child(model: Path, settings: BenchmarkConfig, inputs: Path | None = None, labels: Path | None = None,
                   name: str | None = None, sequence_length: int | None = None, shapes: list[str] = ()) -> dict:
    """ortbench.py in a child process that imports only numpy and ONNX Runtime (so torch's memory
    and threads do not count). Returns its JSON result. inputs: timed on (and, with labels, accuracy
    measured on) these instead of made-up ones; shapes: --shape values for made-up inputs of a model
    with dynamic dimensions. Timed under this machine's timing lock (timing_turn), whose record the
    result carries as "isolation". DataError when the inputs do not fit the model (bench.py's exit 2)."""
    from edgedistill.runtime import ortbench

    cmd = [sys.executable, ortbench.__file__, str(model), *settings.ortbench_args()]
    if inputs is not None:
        cmd += ["--inputs", str(inputs)]
    if labels is not None:
        cmd += ["--labels", str(labels)]
    if name:
        cmd += ["--name", name]
    if sequence_length:
        cmd += ["--sequence-length", str(sequence_length)]
    for shape in shapes:
        cmd += ["--shape", shape]
    with timing_turn() as isolation:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        if proc.returncode == 2:
            raise DataError(f"{Path(model).name}: {last.removeprefix('bench.py: error: ')}")
        raise StageError(f"benchmark of {Path(model).name} failed: {last}")
    return dict(json.loads(proc.stdout), isolation=isolation)


def alternating_timings(models: dict[K, Any], time_one: Callable[[Any], T], rounds: int,
                        taken: dict[K, list[T]] | None = None) -> dict[K, list[T]]:
    """time_one(model) (a p90 in ms, or ortbench's latency_ms record) of each of `models` ({key: model})
    until it has `rounds` timings (those already in `taken` count), the models alternating (A B C A B C
    ...) so that a slow minute of the machine hits all of them alike, as farm-bench does for A/B claims.
    Returns {key: timings}, in the order taken."""
    timed = {k: list((taken or {}).get(k, ())) for k in models}
    for _ in range(rounds):
        for k, model in models.items():
            if len(timed[k]) < rounds:
                timed[k].append(time_one(model))
    return timed


def rounds_line(timings: dict[str, list[float]]) -> str:
    """"name median ms (min-max), ..." of each model's p90s over its rounds, for the log."""
    return ", ".join(f"{k} {float(np.median(v)):.3f} ms ({min(v):.3f}-{max(v):.3f})" for k, v in timings.items())
