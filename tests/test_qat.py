"""Quantization-aware training: the emulation against ONNX Runtime's own numbers, the qat stage in the
pipeline (never, always, resume after SIGKILL)."""
import json
import os
import shutil
import signal
import time

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from conftest import write_pipeline
from edgedistill import fakequant
from edgedistill.config import QuantizeConfig
from edgedistill.onnx_utils import export_onnx
from edgedistill.stages import quantize
from test_resume import ENV, cli


def result(store, stage):
    [folder] = (store / "results" / stage).iterdir()
    return folder, json.loads((folder / "metrics.json").read_text())


@pytest.mark.parametrize("recipe, reduce_range", [("qdq_u8s8", False), ("qdq_s8s8", True)])
def test_fake_quantization_is_onnxruntime_grid(tmp_path, recipe, reduce_range):
    """The emulated weights are ONNX Runtime's dequantized weights, and the emulated input ranges its
    calibrated scales and zero points, for the same model and calibration images."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    x = torch.randn(64, 3, 8, 8) * torch.tensor([1.0, 3.0, 0.2]).view(1, 3, 1, 1) + 0.5
    path = tmp_path / "m.onnx"
    export_onnx(model, x[:2].numpy(), path, 17, input_name="input")
    q = QuantizeConfig().with_recipe(recipe).model_copy(update={"reduce_range": reduce_range, "pre_process": False})
    inputs = quantize.model_inputs(path)
    reader = lambda: quantize.BatchReader(len(x), lambda rows: {"input": x[rows].numpy()}, inputs, batch=32)
    quantize.quantize_model(path, tmp_path / "q.onnx", q, reader)

    fakequant.attach(model, fakequant.Emulation.of(q))
    fakequant.calibrate(model, [x[:32], x[32:]])
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    dq = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    layers = [m for m in model.modules() if isinstance(m, fakequant.LAYERS)]
    weight_ops = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(weight_ops) == len(layers) == 3
    for layer, node in zip(layers, weight_ops):
        w = dq[node.input[1]]
        axis = next((a.i for a in w.attribute if a.name == "axis"), 1)
        scale = init[w.input[1]]
        scale = scale.reshape([-1 if d == axis else 1 for d in range(init[w.input[0]].ndim)]) if scale.ndim else scale
        onnxruntime_weight = init[w.input[0]].astype(np.float32) * scale
        if node.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in node.attribute):
            onnxruntime_weight = onnxruntime_weight.T
        np.testing.assert_allclose(layer.weight.detach().numpy(), onnxruntime_weight, rtol=1e-5, atol=1e-7)
        a = dq[node.input[0]]  # the layer's input as ONNX Runtime quantized it
        assert float(layer.input_fake_quant.scale) == pytest.approx(float(init[a.input[1]]), rel=1e-5)
        assert int(layer.input_fake_quant.zero_point) == int(init[a.input[2]])


def test_detach_leaves_the_trained_float_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    before = model[0].weight.detach().clone()
    fakequant.attach(model, fakequant.Emulation())
    assert not torch.equal(model[0].weight, before)  # quantized on the grid
    fakequant.detach(model)
    assert torch.equal(model[0].weight, before) and set(dict(model.named_parameters())) == {"0.weight", "0.bias"}


def test_emulation_refuses_what_it_cannot_emulate():
    with pytest.raises(ValueError, match="dynamic"):
        fakequant.Emulation.of(QuantizeConfig().with_recipe("dynamic_s8"))


QAT_TINY = {"quantize": {"mode": "fixed", "calibration_samples": 64, "qat": "always"},
            "qat": {"epochs": 2, "batch_size": 32, "lr": 0.001}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A store with the tiny pipeline run up to quantize (the qat settings are not in its keys)."""
    root = tmp_path_factory.mktemp("qat")
    pipeline = write_pipeline(root / "p", **QAT_TINY)
    assert cli("run", pipeline, "--store", root / "store", "--until", "quantize", env=ENV).wait() == 0
    return root / "store"


def test_qat_never_passes_post_training_through(tmp_path, exported):
    store = tmp_path / "store"
    shutil.copytree(exported, store)
    pipeline = write_pipeline(tmp_path / "p", quantize={**QAT_TINY["quantize"], "qat": "never"})
    proc = cli("run", pipeline, "--store", store, "--until", "qat", env=ENV)
    assert proc.wait() == 0, proc.stdout.read()
    folder, metrics = result(store, "qat")
    ptq_folder, ptq = result(store, "quantize")
    assert metrics.pop("qat") == {"ran": False, "reason": "quantize.qat is never"} and metrics == ptq
    assert (folder / "student_quantized.onnx").read_bytes() == (ptq_folder / "student_quantized.onnx").read_bytes()


def test_sigkill_during_qat_then_resume_matches_uninterrupted(tmp_path, exported):
    pipeline = write_pipeline(tmp_path / "p", **{**QAT_TINY, "qat": {**QAT_TINY["qat"], "epochs": 4}})
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    shutil.copytree(exported, killed)
    shutil.copytree(exported, clean)
    proc = cli("run", pipeline, "--store", killed, "--until", "qat", env=ENV)
    work = killed / "work" / "qat"
    deadline = time.time() + 120
    while not list(work.glob("*/checkpoint.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "results" / "qat").exists(), "the run finished before it could be killed"

    resumed = cli("run", pipeline, "--store", killed, "--until", "qat", env=ENV)
    log = resumed.communicate()[0]
    assert resumed.returncode == 0, log
    assert "qat: resuming after epoch" in log
    assert cli("run", pipeline, "--store", clean, "--until", "qat", env=ENV).wait() == 0
    (a, ma), (b, mb) = result(killed, "qat"), result(clean, "qat")
    assert a.name == b.name and ma["qat"] == mb["qat"]  # the history: every epoch's loss and accuracy
    accuracy = lambda m: [(c["name"], c["val_accuracy"]) for c in m["candidates"]]  # latencies differ run to run
    assert accuracy(ma) == accuracy(mb)
    assert (a / "qat_candidate.onnx").read_bytes() == (b / "qat_candidate.onnx").read_bytes()
    # what the stage recorded: the QAT candidate measured beside the post-training one, under the same rule
    assert ma["qat"]["ran"] and ma["qat"]["recipe"] == "fixed" and len(ma["qat"]["history"]) == 4
    names = [c["name"] for c in ma["candidates"]]
    assert names == ["fp32", "fixed", "qat_fixed"]
    qat = ma["candidates"][2]
    assert "QAT-trained" in qat["graph_from"] and qat["error"] is None and qat["val_drop"]["images"] > 0
    assert ma["qat"]["export_parity"]["max_abs_diff"] < 1e-3
