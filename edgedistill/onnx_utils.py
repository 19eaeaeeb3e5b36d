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


def feed(sess: ort.InferenceSession, inputs) -> dict:
    """{input name: array} for a session: inputs is a dict of arrays by name (a modality's feeds) or
    one array for a one-input model (ortbench.select), each contiguous in the model's dtype."""
    from .ortbench import feed_rows, select

    return feed_rows(sess, select([m.name for m in sess.get_inputs()], inputs), slice(None))


def ort_predict(path: Path, x, batch: int = 64) -> np.ndarray:
    """Logits of an ONNX model for all of x: an array of model inputs (float32 NCHW for images), or a
    split (data.Split, a text split, an InputSet) converted one batch at a time to the model's feeds."""
    sess = session(path)
    return np.concatenate([sess.run(None, feed(sess, chunk))[0] for chunk in feed_batches(x, batch)])


def feed_batches(x, batch: int):
    """Batches of x as ONNX feeds: a split's feeds(rows) (a dict by input name), rows of a dict of
    arrays by input name, or rows of an array."""
    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    for i in range(0, n, batch):
        rows = slice(i, i + batch)
        if isinstance(x, dict):
            yield {k: v[rows] for k, v in x.items()}
        else:
            yield x.feeds(rows) if hasattr(x, "feeds") else x.inputs(rows) if hasattr(x, "inputs") else x[rows]


def export_onnx(model, example, path: Path, opset: int, input_name: str = "input",
                dynamic: tuple[str, ...] = ("batch",)) -> None:
    """torch.export-based exporter (dynamo=True), weights inside the file, one input named input_name
    whose leading axes are dynamic as named (batch; batch and sequence for token ids), one output
    named logits. The ONNX checker runs on the result."""
    import contextlib
    import io
    import warnings

    import onnx
    import torch

    from .errors import StageError

    shapes = {i: torch.export.Dim(name, min=1, max=4096) for i, name in enumerate(dynamic)}
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), (torch.as_tensor(example),), str(path), input_names=[input_name],
                              output_names=["logits"], opset_version=opset, dynamic_shapes=(shapes,), dynamo=True,
                              external_data=False)
    except Exception as e:  # the exporter raises many types; all mean the same to the user
        raise StageError(f"torch.onnx.export failed for {type(model).__name__}: {str(e).splitlines()[0]}") from e
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def bench_in_child(model: Path, settings: "BenchmarkConfig", inputs: Path | None = None, labels: Path | None = None,
                   name: str | None = None, sequence_length: int | None = None) -> dict:
    """ortbench.py in a child process that imports only numpy and ONNX Runtime (so torch's memory
    and threads do not count). Returns its JSON result."""
    from . import ortbench
    from .errors import StageError

    cmd = [sys.executable, ortbench.__file__, str(model), *settings.ortbench_args()]
    if inputs is not None and labels is not None:
        cmd += ["--inputs", str(inputs), "--labels", str(labels)]
    if name:
        cmd += ["--name", name]
    if sequence_length:
        cmd += ["--sequence-length", str(sequence_length)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        raise StageError(f"benchmark of {Path(model).name} failed: {last}")
    return json.loads(proc.stdout)
