"""ONNX Runtime quantization of the exported student, each method and format."""
from pathlib import Path

import onnx
import pytest

from edgedistill.config import QuantizeConfig
from edgedistill.runner import Context
from edgedistill.stages import quantize


def stage_inputs(store: Path) -> dict:
    first = lambda stage: next((store / "results" / stage).iterdir())
    return {"dataset": first("prepare"), "onnx": first("export")}


@pytest.mark.parametrize("options, expect_ops", [
    ({}, {"QuantizeLinear", "DequantizeLinear"}),
    ({"format": "qoperator"}, {"QLinearConv"}),
    ({"calibrate_method": "entropy", "per_channel": False}, {"QuantizeLinear"}),
    ({"method": "dynamic"}, {"DynamicQuantizeLinear"}),
])
def test_quantize_methods(tiny_run, tmp_path, options, expect_ops):
    _, store = tiny_run
    out = tmp_path / "out"
    out.mkdir()
    cfg = quantize.QuantizeStageConfig(quantize=QuantizeConfig(calibration_samples=32, **options), seed=0)
    metrics = quantize.run(cfg, stage_inputs(store), out, Context(work=tmp_path, progress=False))
    ops = {n.op_type for n in onnx.load(str(out / "student_int8.onnx")).graph.node}
    assert expect_ops <= ops, ops
    assert metrics["calibration_samples"] == (0 if options.get("method") == "dynamic" else 32)
    assert 0 <= metrics["val_accuracy_int8"] <= 100
    if options.get("method") != "dynamic":
        # static INT8 keeps the tiny student's accuracy within a few points of FP32
        assert metrics["val_accuracy_int8"] > metrics["val_accuracy_fp32"] - 10


def test_calibration_reader_streams_batches(tiny_run):
    import numpy as np

    from edgedistill.data import Dataset

    _, store = tiny_run
    ds = Dataset.load(stage_inputs(store)["dataset"])
    images = ds.splits["train"][0][:70]
    reader = quantize.BatchReader(images, ds.spec, batch=32, progress=False)
    shapes = []
    while (item := reader.get_next()) is not None:
        shapes.append(item["input"].shape[0])
    assert shapes == [32, 32, 6]
    reader.rewind()
    assert reader.get_next()["input"].dtype == np.float32
