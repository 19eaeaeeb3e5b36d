"""ONNX Runtime helpers shared by the export, quantize and benchmark stages and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

if TYPE_CHECKING:
    from .config import BenchmarkConfig


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    from .errors import DataError

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # 0: ONNX Runtime's default (all cores)
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ONNX Runtime's own exception types (InvalidProtobuf, Fail, ...)
        raise DataError(f"'{path}' is not a model ONNX Runtime can load: {str(e).splitlines()[0][:150]}") from None


def ort_predict(path: Path, x, batch: int = 64) -> np.ndarray:
    """Logits of an ONNX model for all of x: float32 NCHW inputs, or a data.Split / InputSet
    (converted to float one batch at a time)."""
    from .data import input_batches

    sess = session(path)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: np.ascontiguousarray(chunk, dtype=np.float32)})[0]
                           for chunk in input_batches(x, batch)])


def bench_in_child(model: Path, settings: "BenchmarkConfig", inputs: Path | None = None, labels: Path | None = None,
                   name: str | None = None) -> dict:
    """ortbench.py in a child process that imports only numpy and ONNX Runtime (so torch's memory
    and threads do not count). Returns its JSON result."""
    from . import ortbench
    from .errors import StageError

    cmd = [sys.executable, ortbench.__file__, str(model), *settings.ortbench_args()]
    if inputs is not None and labels is not None:
        cmd += ["--inputs", str(inputs), "--labels", str(labels)]
    if name:
        cmd += ["--name", name]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        raise StageError(f"benchmark of {Path(model).name} failed: {last}")
    return json.loads(proc.stdout)
