"""ONNX Runtime helpers: sessions, a model checked to load, predictions batch by batch, torch.onnx export,
and the tensor overrides that pin activation ranges in ONNX Runtime's quantizer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def range_overrides(ranges: dict) -> dict:
    """ONNX Runtime's TensorQuantOverrides (quantize_static's extra_options) that set these tensors'
    ranges: {tensor name: (rmin, rmax)} -> {tensor name: [{"rmin", "rmax"}]}, float32 as it wants them."""
    import numpy as np

    return {name: [{"rmin": np.array(lo, np.float32), "rmax": np.array(hi, np.float32)}] for name, (lo, hi) in ranges.items()}


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    from edgedistill.core.errors import DataError

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # 0: ONNX Runtime's default (all cores)
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ONNX Runtime's own exception types (InvalidProtobuf, Fail, ...)
        raise DataError(f"'{path}' is not a model ONNX Runtime can load: {str(e).splitlines()[0][:150]}") from None


def check_loads(path: Path, what: str) -> None:
    """StageError unless ONNX Runtime loads the model at path: every model edgedistill writes is
    checked before anything says it was written (a per-channel QDQ model of an old opset, say, is
    refused by ONNX Runtime while onnx itself saves it happily)."""
    from edgedistill.core.errors import DataError, StageError

    try:
        session(path)
    except DataError as e:
        raise StageError(f"{what} was written but ONNX Runtime cannot load it ({str(e).partition(': ')[2]}); "
                         f"nothing was kept") from None


def write_model(src: Path, dst: Path) -> None:
    """Copy a model file (one without external data, as edgedistill writes them) to dst, checked to
    load with ONNX Runtime first and renamed into place only then: a file already at dst is replaced
    by a good model or not touched (StageError)."""
    import os
    import shutil

    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.partial")
    shutil.copy2(src, tmp)
    try:
        check_loads(tmp, str(dst))
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def ort_predict(path: Path, x, batch: int = 64, what: str = "the data") -> np.ndarray:
    """Logits of an ONNX model for all of x: an array of model inputs (float32 NCHW for images), a dict
    of arrays by input name, or a split (data.image.Split, data.text.TextSplit, data.inputs.InputSet) converted one batch at
    a time to the model's feeds. A model whose batch is fixed gets exactly that many rows a run.
    DataError (naming `what` and both shapes) when x does not fit the model's inputs."""
    from edgedistill.core.errors import DataError
    from edgedistill.runtime.ortbench import InputMismatch, check_feed, run_rows, select

    sess = session(path)
    names = [m.name for m in sess.get_inputs()]
    out = []
    try:
        for chunk in feed_batches(x, batch):
            data = select(names, chunk)
            if not out:
                check_feed(sess.get_inputs(), data, what)
            out.append(run_rows(sess, data, batch))
    except InputMismatch as e:
        raise DataError(str(e)) from None
    return np.concatenate(out)


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

    from edgedistill.core.errors import StageError

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
    exported = onnx.load(str(path))
    if drop_stack_traces(exported):
        onnx.save(exported, str(path))
    onnx.checker.check_model(exported, full_check=True)


STACK_TRACE = "pkg.torch.onnx.stack_trace"
"""Node metadata the dynamo exporter writes: the Python stack of each node, with the absolute paths of
the build machine's torch install."""


def drop_stack_traces(model) -> int:
    """Remove the exporter's stack traces from every node (in place): the same model exported from two
    installs is then the same bytes, and a shipped model.onnx names no path of the build machine. The
    other metadata (module names, class hierarchy) stays. Returns how many were removed."""
    removed = 0
    for node in [*model.graph.node, *(n for f in model.functions for n in f.node)]:
        keep = [p for p in node.metadata_props if p.key != STACK_TRACE]
        if len(keep) != len(node.metadata_props):
            removed += len(node.metadata_props) - len(keep)
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
    return removed
