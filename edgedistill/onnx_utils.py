"""ONNX Runtime helpers shared by the export and quantize stages."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads  # 0: ONNX Runtime's default (all cores)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_predict(path: Path, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Logits of an ONNX model for all of x (float32 NCHW)."""
    sess = session(path)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: np.ascontiguousarray(x[i:i + batch])})[0] for i in range(0, len(x), batch)])
