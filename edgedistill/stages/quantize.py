"""quantize: ONNX Runtime post-training quantization of the student.

Static (default): QDQ, per-channel weights, activation ranges calibrated on training-split images
streamed in batches. Dynamic: weights only. FP32 and INT8 validation accuracy are recorded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quant_pre_process, quantize_dynamic, quantize_static)
from tqdm.auto import tqdm

from ..config import Pipeline, QuantizeConfig, Strict
from ..data import Dataset, to_model_input
from ..onnx_utils import ort_predict
from ..runner import Context, Stage
from ..train import accuracy

QUANT_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
CALIBRATION = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}


class QuantizeStageConfig(Strict):
    quantize: QuantizeConfig
    seed: int
    """Chooses which training images calibrate."""


class BatchReader(CalibrationDataReader):
    """Feeds calibration images to ONNX Runtime batch by batch; only one batch is in memory as float."""

    def __init__(self, images: np.ndarray, spec: dict, batch: int, progress: bool):
        self.images, self.spec, self.batch = images, spec, batch
        self.bar = tqdm(total=len(images), desc="calibrate", unit="img", disable=not progress, leave=False)
        self._it = self._batches()

    def _batches(self) -> Iterator[dict]:
        for i in range(0, len(self.images), self.batch):
            chunk = self.images[i:i + self.batch]
            self.bar.update(len(chunk))
            yield {self.spec["input_name"]: to_model_input(chunk, self.spec)}
        self.bar.close()

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._batches()


def run(cfg: QuantizeStageConfig, inputs: dict[str, Path], out: Path, ctx: Context) -> dict:
    q = cfg.quantize
    ds = Dataset.load(inputs["dataset"])
    fp32 = inputs["onnx"] / "student.onnx"
    source = fp32
    if q.pre_process:
        source = ctx.work / "student_preprocessed.onnx"
        quant_pre_process(str(fp32), str(source))
    int8 = out / "student_int8.onnx"
    if q.method == "static":
        x_train, _ = ds.splits["train"]
        pick = np.random.default_rng(cfg.seed).permutation(len(x_train))[: q.calibration_samples]
        reader = BatchReader(x_train[np.sort(pick)], ds.spec, batch=32, progress=ctx.progress)
        quantize_static(str(source), str(int8), reader, quant_format=FORMATS[q.format], per_channel=q.per_channel,
                        activation_type=QUANT_TYPES[q.activation_type], weight_type=QUANT_TYPES[q.weight_type],
                        calibrate_method=CALIBRATION[q.calibrate_method])
        calibrated = int(len(pick))
    else:
        quantize_dynamic(str(source), str(int8), per_channel=q.per_channel, weight_type=QUANT_TYPES[q.weight_type])
        calibrated = 0
    x_val, y_val = ds.inputs("val")
    acc_fp32 = accuracy(ort_predict(fp32, x_val), y_val)
    acc_int8 = accuracy(ort_predict(int8, x_val), y_val)
    ctx.log(f"val accuracy: FP32 {acc_fp32:.2f}%, INT8 {acc_int8:.2f}% ({q.method}, {q.format}, {calibrated} calibration images)")
    return {"val_accuracy_fp32": acc_fp32, "val_accuracy_int8": acc_int8, "calibration_samples": calibrated,
            "size_bytes_fp32": fp32.stat().st_size, "size_bytes_int8": int8.stat().st_size}


STAGE = Stage(
    name="quantize", version=1, inputs=("dataset", "onnx"), output="quantized",
    configure=lambda p: QuantizeStageConfig(quantize=p.quantize, seed=p.seed), run=run,
    headline=lambda m: f"val acc FP32 {m['val_accuracy_fp32']:.2f}% -> INT8 {m['val_accuracy_int8']:.2f}%, "
                       f"{m['size_bytes_fp32'] / 1024:.0f} -> {m['size_bytes_int8'] / 1024:.0f} KiB",
)
