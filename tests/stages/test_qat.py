"""Quantization-aware training: the emulation against ONNX Runtime's own numbers, the qat stage in the
pipeline (never, always, resume after SIGKILL)."""
import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from edgedistill.quantization import fakequant, ort_quantize, placement
from edgedistill.quantization.recipes import QuantizeConfig
from edgedistill.runtime.onnx_utils import export_onnx
from edgedistill.stages import quantize

from conftest import ENV, cli, kill_at_first_checkpoint, one_torch_thread, run_uninterrupted, write_pipeline


def result(store, stage):
    """The stage's result in the pipeline's latest run (runs/tiny.json names its key)."""
    key = json.loads((store / "runs" / "tiny.json").read_text())[stage]
    folder = store / "results" / stage / key
    return folder, json.loads((folder / "metrics.json").read_text())


class Rows:
    """The two views of some inputs that placement.locate reads (a data Split's: PyTorch's, ONNX Runtime's)."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def inputs(self, rows):
        return self.x[rows].numpy()

    def feeds(self, rows):
        return {"input": self.x[rows].numpy()}


@pytest.mark.parametrize("recipe, reduce_range", [("qdq_u8s8", False), ("qdq_s8s8", True)])
def test_fake_quantization_is_onnxruntime_grid(tmp_path, recipe, reduce_range):
    """The emulated weights are ONNX Runtime's dequantized weights, and each emulated activation range
    its calibrated scale and zero point, for the same model and calibration images, on every tensor
    ONNX Runtime quantized (the model input, the Conv outputs after the Relu it folds, what MaxPool
    passes on with its input's scale, Flatten's output, the logits)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    x = torch.randn(64, 3, 8, 8) * torch.tensor([1.0, 3.0, 0.2]).view(1, 3, 1, 1) + 0.5
    path = tmp_path / "m.onnx"
    export_onnx(model, x[:2].numpy(), path, 17, input_name="input")
    q = QuantizeConfig().with_recipe(recipe).model_copy(update={"reduce_range": reduce_range, "pre_process": False})
    inputs = ort_quantize.model_inputs(path)
    reader = lambda: ort_quantize.BatchReader(len(x), lambda rows: {"input": x[rows].numpy()}, inputs, batch=32)
    ort_quantize.quantize_model(path, tmp_path / "q.onnx", q, reader)

    plan = placement.locate(model, path, tmp_path / "q.onnx", Rows(x))
    assert not plan.missed and set(plan.weights) == {"0", "3", "7"} and all(plan.weights.values())
    emulating = fakequant.attach(model, fakequant.Emulation.of(q), plan)
    fakequant.calibrate(emulating, [x[:32], x[32:]])
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    dq = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    layers = [model[int(path)] for path in plan.weights]
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
    scales = assert_ranges_are_onnxruntimes(plan, emulating, graph)
    # the input, the two Relu outputs (the first also after MaxPool, with its scale), Flatten's output, the logits
    assert len(scales) == 6 and len(plan.activations) == 5


def assert_ranges_are_onnxruntimes(plan, emulating, graph) -> dict:
    """Every tensor ONNX Runtime quantized in graph is emulated, with its scale and zero point. Returns
    the tensors' QuantizeLinear nodes by name."""
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    quantizers = dict(zip(plan.activations, fakequant.activation_quantizers(emulating)))
    scales = {n.input[0].removesuffix("_QuantizeLinear_Input"): n for n in graph.node
              if n.op_type == "QuantizeLinear" and n.input[0] not in init}
    assert sorted(t for ts in plan.tensors.values() for t in ts) == sorted(scales)
    for first, tensors in plan.tensors.items():
        for tensor in tensors:
            qnode = scales[tensor]
            assert float(quantizers[first].scale.detach()) == pytest.approx(float(init[qnode.input[1]]), rel=1e-5)
            assert int(quantizers[first].zero_point.detach()) == int(init[qnode.input[2]])
    return scales


@pytest.mark.parametrize("activation, splits_into", [(lambda: nn.Hardswish(inplace=True), "HardSigmoid"), (nn.SiLU, "Sigmoid")],
                         ids=["hardswish", "silu"])
def test_an_activation_gate_is_quantized_where_onnxruntime_quantizes_it(tmp_path, activation, splits_into):
    """x * gate(x) activations (Hardswish, SiLU) reach ONNX Runtime as gate and Mul, and it quantizes the
    gate as the Mul's input: MobileNetV3-Small's 19 Hardswish gates were left in float in QAT before the
    "gate" point. Found in the module (in-place or not), emulated with ONNX Runtime's scale, and the
    fake-quantized model computes what ONNX Runtime's QDQ graph computes, run as written."""
    import onnxruntime as ort

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), activation(), nn.Conv2d(8, 8, 3, padding=1),
                          activation(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    x = torch.randn(64, 3, 8, 8)
    path = tmp_path / "m.onnx"
    export_onnx(model, x[:2].numpy(), path, 18, input_name="input")
    q = QuantizeConfig().with_recipe("qdq_u8s8").model_copy(update={"reduce_range": False})
    reader = lambda: ort_quantize.BatchReader(len(x), lambda rows: {"input": x[rows].numpy()},
                                              ort_quantize.model_inputs(path), batch=32)
    source = ort_quantize.prepare_source(path, q, reader, tmp_path, log=lambda m: None)
    assert [n.op_type for n in onnx.load(str(source)).graph.node].count(splits_into) == 2
    ort_quantize.quantize_model(source, tmp_path / "q.onnx", q, reader)
    plan = placement.locate(model, source, tmp_path / "q.onnx", Rows(x))
    assert not plan.missed and not plan.missed_weights
    gates = [p for ps in plan.activations.values() for p in ps if p.where == "gate"]
    assert gates == [placement.Point("1", "gate"), placement.Point("3", "gate")]
    was_inplace = model[1].inplace
    emulating = fakequant.attach(model, fakequant.Emulation.of(q), plan)
    fakequant.calibrate(emulating, [x[:32], x[32:]])
    assert len(assert_ranges_are_onnxruntimes(plan, emulating, onnx.load(str(tmp_path / "q.onnx")).graph)) == 9
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the QDQ graph as written
    reference = ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        emulated = emulating.eval()(x).numpy()
    # one output step of the logits is about 1e-3 here: a gate computed but not used in the forward is off by that
    assert np.abs(emulated - reference.run(None, {"input": x.numpy()})[0]).max() < 1e-4
    assert fakequant.detach(emulating)[1].inplace == was_inplace

class Branches(nn.Module):
    """Functional pooling, three projections of one tensor (an unfused attention's query, key and value)
    and a Dropout before the last Linear (torchvision MobileNetV2's head)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(8, 5))

    def forward(self, x):
        h = torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)
        return self.classifier(self.q(h) + self.k(h) * self.v(h))


def test_placement_tells_projections_apart_and_quantizes_before_dropout(tmp_path):
    """Three Linear layers reading one tensor get their own weights (by value: the shapes are the same)
    and share that tensor's quantizer; a tensor Dropout passes on is quantized where it is read, before
    the Dropout (in training Dropout's output is another tensor)."""
    torch.manual_seed(0)
    model = Branches().eval()
    x = torch.randn(16, 3, 8, 8)
    path = tmp_path / "m.onnx"
    export_onnx(model, x[:2].numpy(), path, 17, input_name="input")
    q = QuantizeConfig().with_recipe("qdq_u8s8").model_copy(update={"reduce_range": False, "pre_process": False})
    reader = lambda: ort_quantize.BatchReader(len(x), lambda rows: {"input": x[rows].numpy()},
                                              ort_quantize.model_inputs(path), batch=16)
    ort_quantize.quantize_model(path, tmp_path / "q.onnx", q, reader)
    plan = placement.locate(model, path, tmp_path / "q.onnx", Rows(x))
    assert set(plan.weights) == {"features.0", "q", "k", "v", "classifier.1"} and not plan.missed_weights
    groups = [set(ps) for ps in plan.activations.values()]
    assert {placement.Point(m, "input") for m in "qkv"} in groups
    assert {placement.Point("classifier", "input")} in groups
    assert not any(p.module == "classifier.0" for g in groups for p in g)


def test_detach_leaves_the_trained_float_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    before = model[0].weight.detach().clone()
    plan = placement.Placement({"x": [placement.Point("0", "input")]}, {"x": ["x"]}, {"0": True})
    emulating = fakequant.attach(model, fakequant.Emulation(), plan)
    assert not torch.equal(model[0].weight, before)  # quantized on the grid
    assert fakequant.detach(emulating) is model
    assert torch.equal(model[0].weight, before) and set(dict(model.named_parameters())) == {"0.weight", "0.bias"}
    assert not model[0]._forward_pre_hooks and not model._forward_pre_hooks


def test_emulation_refuses_what_it_cannot_emulate(tmp_path):
    from edgedistill.core.errors import ConfigError
    from edgedistill.pipeline import load_pipeline
    from edgedistill.stages import qat

    with pytest.raises(ValueError, match="dynamic"):
        fakequant.Emulation.of(QuantizeConfig().with_recipe("dynamic_s8"))
    # one per-tensor weight scale does not commute with folding BatchNorm: the trained grid would not ship
    with pytest.raises(ValueError, match="per-tensor"):
        fakequant.Emulation.of(QuantizeConfig().with_recipe("qdq_s8s8_per_tensor"))
    with pytest.raises(ConfigError, match="qat.recipe 'dynamic_s8'"):
        qat.configure(load_pipeline(write_pipeline(tmp_path), ["qat.recipe=dynamic_s8"]))


QAT_TINY = {"quantize": {"mode": "fixed", "calibration_samples": 64, "qat": "always"},
            "qat": {"epochs": 2, "batch_size": 32, "lr": 0.001}}


@pytest.fixture
def exported(tiny_store_copy):
    """A copy of the tiny run's store (quantize.qat is not in the quantize stage's key: it stays cached)."""
    return tiny_store_copy[1]


def test_qat_never_passes_post_training_through(tmp_path, exported):
    store = exported
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
    assert kill_at_first_checkpoint(proc, work) and list(work.glob("*/checkpoint.pt")), \
        "the run finished before it could be killed"

    resumed = cli("run", pipeline, "--store", killed, "--until", "qat", env=ENV)
    log = resumed.communicate()[0]
    assert resumed.returncode == 0, log
    assert "qat: resuming after epoch" in log
    assert run_uninterrupted("run", pipeline, "--store", clean, "--until", "qat") == 0
    (a, ma), (b, mb) = result(killed, "qat"), result(clean, "qat")
    assert a.name == b.name
    # what training made (latencies, and what they decide, differ run to run)
    trained = ("history", "final_epoch", "val_accuracy_fake_quant", "emulated", "export_parity", "pinned_tensors", "candidate")
    assert {k: ma["qat"][k] for k in trained} == {k: mb["qat"][k] for k in trained}
    accuracy = lambda m: [(c["name"], c["val_accuracy"]) for c in m["candidates"]]
    assert accuracy(ma) == accuracy(mb)
    assert (a / "qat_candidate.onnx").read_bytes() == (b / "qat_candidate.onnx").read_bytes()
    # what the stage recorded: the QAT candidate measured beside the post-training one, under the same rule
    assert ma["qat"]["ran"] and ma["qat"]["recipe"] == "fixed" and len(ma["qat"]["history"]) == 4
    names = [c["name"] for c in ma["candidates"]]
    assert names == ["fp32", "fixed", "qat_fixed", "qat_fixed_pinned"]
    for qat in ma["candidates"][2:]:
        assert "QAT-trained" in qat["graph_from"] and qat["error"] is None and qat["val_drop"]["images"] > 0
    assert ma["qat"]["export_parity"]["max_abs_diff"] < 1e-3 and not ma["qat"]["emulated"]["missed"]
    assert ma["qat"]["pinned_tensors"] == ma["qat"]["emulated"]["tensors"] > ma["qat"]["emulated"]["weights"] == 4


@pytest.fixture
def one_thread():
    with one_torch_thread():
        yield


def test_qat_brings_an_outlier_channel_back_where_post_training_cannot(tmp_path, tiny_run, one_thread):
    """A small CNN made hard to quantize on purpose: channel 0 of its first block K times larger and the
    second block reading it K times smaller (the same function: ReLU and max pooling commute with a
    positive scale). ONNX Runtime's one range for the second block's input then leaves the other channels
    a few levels: post-training loses points. QAT, with the ranges learned and pinned, gets them back."""
    from edgedistill import models
    from edgedistill.data.dataset import Dataset
    from edgedistill.runtime.onnx_utils import ort_predict
    from edgedistill.runtime.stats import paired_drop
    from edgedistill.stages import qat
    from edgedistill.stages.qat import QATConfig
    from edgedistill.training.config import TrainConfig
    from edgedistill.training.loop import fit
    from edgedistill.training.losses import cross_entropy

    _, store = tiny_run
    ds = Dataset.load(next(iter((store / "results" / "prepare").iterdir())))
    torch.manual_seed(0)
    model = models.ARCHS.get("small_cnn")(10, 1, width=8, grid=1)
    t = TrainConfig(epochs=8, batch_size=32, lr=0.01, precise_bn_batches=0)
    rows = np.arange(len(ds.splits["train"][1]))
    val, test, train = ds.split("val", 8), ds.split("test", 8), ds.split("train", 8)
    fit(model, ds.modality.batches(ds, t, rows=rows, seed=0, size=8, teacher_size=None, horizontal_flip=False),
        (val, val.labels), cfg=t, param_groups=[{"params": list(model.parameters()), "lr": t.lr}],
        loss_fn=lambda logits, x, y, idx: cross_entropy(logits, y), seed=0, checkpoint=tmp_path / "train.pt",
        desc="train", progress=False)
    with torch.no_grad():
        model[1].weight[0] *= OUTLIER
        model[1].bias[0] *= OUTLIER
        model[4].weight[:, 0] /= OUTLIER
    model.eval()
    export_onnx(model, val.inputs(slice(0, 2)), tmp_path / "fp32.onnx", 18)
    q = ort_quantize.resolve_reduce_range(QuantizeConfig().with_recipe("qdq_u8s8"))
    calibration = train.subset(ort_quantize.calibration_rows(len(train), 256, 0))
    names = ort_quantize.model_inputs(tmp_path / "fp32.onnx")
    ort_quantize.quantize_model(tmp_path / "fp32.onnx", tmp_path / "ptq.onnx", q, lambda: ort_quantize.split_reader(calibration, names))
    predict = lambda name: ort_predict(tmp_path / name, val).argmax(1)
    fp32 = predict("fp32.onnx")
    ptq = paired_drop(val.labels, fp32, predict("ptq.onnx"))

    # 20 epochs: with 10, one thread left 1.85 points (two threads: 0.74)
    tq = QATConfig(epochs=20, batch_size=32, lr=1e-3, range_lr=1e-3)
    result = qat.train_qat(model, ds, 8, calibration, q, tq, fp32=tmp_path / "fp32.onnx", seed=0,
                           checkpoint=tmp_path / "qat.pt", log=lambda m: None)
    qat.quantize_trained(model, ds, calibration, test, q, 18, tmp_path / "recalibrated.onnx", tmp_path / "pinned.onnx",
                         result.ranges, tmp_path, log=lambda m: None)
    pinned = paired_drop(val.labels, fp32, predict("pinned.onnx"))
    assert ptq["drop"] >= 2.0, ptq  # post-training cannot (one thread: 3.33 points, 9 of 270 images)
    assert pinned["drop"] <= 1.0 and pinned["lost"] <= ptq["lost"] / 2, (ptq, pinned)
    # what PyTorch's fake quantization measured is what ONNX Runtime's integer model gives
    assert result.val_accuracy == pytest.approx(float((predict("pinned.onnx") == val.labels).mean() * 100), abs=0.8)


OUTLIER = 100.0


def ptq_metrics(choice: str, candidates: list[tuple[str, float, float]]) -> dict:
    """The quantize stage's metrics as plan() reads them: (name, val accuracy %, p90 ms), FP32 first."""
    return {"choice": choice, "recipe": candidates[-1][0],
            "candidates": [{"name": n, "val_accuracy": a, "latency_ms_p90": ms, "error": None} for n, a, ms in candidates]}


@pytest.mark.parametrize("mode, choice, candidates, recipe, why", [
    ("never", "fp32", [("fp32", 90, 10), ("qdq_u8s8", 80, 5)], None, "never"),
    ("auto", "quantized", [("fp32", 90, 10), ("qdq_u8s8", 90, 5)], None, "post-training quantization is enough"),
    # the accurate one leaves nodes in float and is slow; the fast ones are not accurate: QAT can pay
    ("auto", "fp32", [("fp32", 90, 10), ("qdq_s8s8", 84, 9), ("qdq_u8s8", 86, 6), ("qdq_u8s8+float8", 90, 11)],
     "qdq_u8s8", None),
    # QAT changes accuracy, not speed: the more accurate graph that is 1.7x slower than the fastest is not
    # emulated (x86's S8S8 against U8S8: the 224-px MobileNetV2, seed 1), one within NEAR_FASTEST is
    ("auto", "fp32", [("fp32", 88.93, 4.07), ("qdq_u8s8", 85.73, 1.77), ("qdq_s8s8", 87.47, 3.07), ("qoperator_u8s8", 85.73, 1.74)],
     "qdq_u8s8", None),
    ("auto", "fp32", [("fp32", 90, 4), ("qdq_u8s8", 85, 2.0), ("qoperator_u8s8", 86, 2.4), ("qdq_s8s8", 87, 2.6)],
     "qoperator_u8s8", None),
    ("auto", "fp32", [("fp32", 90, 10), ("qdq_u8s8", 86, 11), ("dynamic_s8", 89, 50)], None, "changes accuracy, not speed"),
    ("always", "fp32", [("fp32", 90, 10), ("qdq_u8s8", 86, 11), ("dynamic_s8", 89, 50)], "qdq_u8s8", None),
    ("auto", "fp32", [("fp32", 90, 10), ("dynamic_s8", 80, 5)], None, "no static INT8 recipe"),
])
def test_qat_runs_only_where_it_can_pay(mode, choice, candidates, recipe, why):
    from edgedistill.runtime.benchmark import BenchmarkConfig
    from edgedistill.stages import qat
    from edgedistill.stages.qat import QATConfig

    cfg = qat.QATStageConfig(mode=mode, qat=QATConfig(), quantize=QuantizeConfig(reduce_range=False), latency=BenchmarkConfig(),
                             seed=0)
    got_why, got_recipe = qat.plan(cfg, ptq_metrics(choice, candidates))
    assert got_recipe == recipe and (why is None) == (got_why is None) and (why is None or why in got_why)


@pytest.mark.parametrize("rule_ships, role, recipe, says", [
    (True, None, "qat_qdq_u8s8", "it ships."),
    (True, "student_int8", "qat_qdq_u8s8", "it ships."),
    (True, "student_fp32", "qat_qdq_u8s8", "the rule chose it, but bundle.ship: fp32 ships FP32."),
    (False, "student_fp32", "qat_qdq_u8s8", "not shipped: too slow."),
    (False, "student_int8", "qdq_u8s8", "not shipped: too slow."),  # the post-training model was forced
    (False, "student_int8", "qat_qdq_u8s8", "bundle.ship: quantized ships it (the rule would not: too slow)."),
])
def test_qat_sentence_follows_what_the_bundle_ships(rule_ships, role, recipe, says):
    """bundle.ship can force a model against the rule: the card's sentence on QAT says what shipped."""
    from edgedistill.release.report import qat_text

    drop = {"drop": 0.1, "ci_low": -0.5, "ci_high": 0.7}
    q = {"recipe": recipe, "qat": {"ran": True, "recipe": "qdq_u8s8", "candidate": "qat_qdq_u8s8", "shipped": rule_ships,
                                   "reason": "too slow", "history": [{}, {}], "val_accuracy_fake_quant": 97.0,
                                   "emulated": {"activations": 20, "tensors": 22, "weights": 11, "missed": []}},
         "candidates": [{"name": "qat_qdq_u8s8", "val_accuracy": 97.0, "val_drop": drop}]}
    assert qat_text(q, role).endswith(says)
    assert "(2 epochs, emulating qdq_u8s8 on the 22 tensors and 11 weights ONNX Runtime quantizes)" in qat_text(q, role)


def test_the_shipped_line_names_the_rules_choice_when_bundle_ship_overrides_it():
    from edgedistill.release.report import shipped_text

    q = {"choice": "fp32", "recipe": "qdq_u8s8", "reason": "too slow"}
    assert shipped_text(q, "student_fp32") == "Ships FP32: too slow"
    assert shipped_text(q, "student_int8") == "Ships qdq_u8s8, as bundle.ship says; the quantize rule chose FP32: too slow"
    assert shipped_text(dict(q, choice="quantized"), "student_int8", lambda m: f"**{m}**") == "Ships **qdq_u8s8**: too slow"
    assert shipped_text(dict(q, choice="quantized", reason="qdq_u8s8: 0.2 pt"), "student_int8") == "Ships qdq_u8s8: 0.2 pt"


def candidate(name: str, acc: float, ms: float, upper: float) -> quantize.Candidate:
    return quantize.Candidate(name, val_accuracy=acc, latency_ms_p90=ms,
                              val_drop={"drop": 0.0, "ci_low": -1.0, "ci_high": upper, "level": 0.95, "images": 360,
                                        "agreement": 99.0})


@pytest.mark.parametrize("ptq, same, ships, why", [
    (None, False, True, "1.33x faster"),  # post-training kept FP32: the rule alone
    (candidate("qdq_u8s8", 80.0, 7.0, 0.5), True, True, "more accurate"),  # same graph: accuracy decides
    (candidate("qdq_u8s8", 82.0, 7.0, 0.5), True, False, "not more accurate"),
    # qat: always beside another graph: a more accurate QAT model that is slower does not replace it
    (candidate("dynamic_s8", 80.0, 6.0, 0.5), False, False, "is not 1.05x faster than dynamic_s8"),
    (candidate("dynamic_s8", 80.0, 9.0, 0.5), False, True, "faster than dynamic_s8"),
    # 2% faster is within noise: the post-training choice stays
    (candidate("dynamic_s8", 80.0, 7.65, 0.5), False, False, "is not 1.05x faster than dynamic_s8"),
])
def test_qat_replaces_the_post_training_model_by_the_quantize_rule(ptq, same, ships, why):
    """The text quickstart with qat: always once shipped a static QAT model (55.9 MB, p90 10.6 ms) over
    dynamic INT8 (17 MB, 8.4 ms) for 2 more validation snippets of 360: no longer."""
    from edgedistill.stages.qat import decide

    fp32 = candidate("fp32", 81.0, 10.0, 0.0)
    qat = candidate("qat_qdq_u8s8", 81.0, 7.5, 0.8)
    ok, reason = decide(QuantizeConfig(max_accuracy_drop=1.0, min_speedup=1.05), fp32, qat, ptq, same)
    assert ok is ships and why in reason, reason
