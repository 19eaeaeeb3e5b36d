"""NNCF's post-training algorithm carried into ONNX Runtime's layout (issue 18): ranges and corrected
biases read from NNCF's graph by hand-worked examples, then the whole hand-over on a small CNN with
ReLU6 activations: the model ONNX Runtime writes has its own fast layout (activations folded, integer
operators) and NNCF's numbers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgedistill.quantization import nncf_ptq, ort_quantize
from edgedistill.quantization.recipes import QuantizeConfig
from edgedistill.runtime.benchmark import BenchmarkConfig
from edgedistill.stages import quantize

RNG = np.random.default_rng(0)


def make(nodes, inits: dict, inputs=("input",), outputs=("logits",)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_activation_ranges_are_what_scale_and_zero_point_cover():
    q = lambda x, s, z, name: helper.make_node("QuantizeLinear", [x, s, z], [f"{name}_q"], name=name)
    model = make([q("a", "s_a", "z_a", "qa"), q("b", "s_b", "z_b", "qb"), q("c", "s_c", "z_c", "qc"),
                  q("w", "s_w", "z_w", "qw")],
                 {"s_a": np.float32(0.1), "z_a": np.uint8(128),  # asymmetric uint8
                  "s_b": np.float32(0.05), "z_b": np.int8(0),  # symmetric int8
                  "s_c": np.array([0.1, 0.2], np.float32), "z_c": np.array([0, 0], np.uint8),  # per channel: the union
                  "w": np.ones((2, 2), np.float32), "s_w": np.float32(0.01), "z_w": np.int8(0)},  # a weight: not carried
                 inputs=("a", "b", "c"), outputs=("qa_q",))
    ranges = nncf_ptq.activation_ranges(model)
    assert set(ranges) == {"a", "b", "c"}
    assert ranges["a"] == pytest.approx((-12.8, 12.7))
    assert ranges["b"] == pytest.approx((-6.4, 6.35))
    assert ranges["c"] == pytest.approx((0.0, 51.0))


def test_a_folded_activation_gives_its_range_to_the_tensor_before_it():
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c1"], name="conv1"),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6"),
             helper.make_node("Conv", ["r1", "w", "b"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu"),
             helper.make_node("Add", ["c2", "r2"], ["logits"], name="add")]  # c2 has two consumers
    model = make(nodes, {"w": np.ones((1, 1, 1, 1), np.float32), "b": np.zeros(1, np.float32),
                         "lo": np.float32(0), "hi": np.float32(6)})
    out = nncf_ptq.with_folded_inputs(model.graph, {"r1": (0.0, 6.0), "r2": (0.0, 3.0)})
    assert out == {"r1": (0.0, 6.0), "c1": (0.0, 6.0), "r2": (0.0, 3.0)}  # c2 feeds the Add too: not folded


def test_corrected_biases_are_carried_by_node_name():
    w, b = np.ones((2, 1, 1, 1), np.float32), np.array([0.5, -0.5], np.float32)
    source = make([helper.make_node("Conv", ["input", "w", "b"], ["c1"], name="conv1"),
                   helper.make_node("Conv", ["c1", "w2", "b"], ["logits"], name="conv2")],  # b shared by two convs
                  {"w": w, "w2": np.ones((2, 2, 1, 1), np.float32), "b": b})
    theirs = make([helper.make_node("Conv", ["input", "w_dq", "b_new"], ["c1"], name="conv1"),  # weights through DQ
                   helper.make_node("Conv", ["c1", "w2_dq", "b"], ["logits"], name="conv2")],
                  {"b_new": np.array([0.25, -0.5], np.float32), "b": b})
    changed = nncf_ptq.corrected_constants(source, theirs)
    assert list(changed) == [("conv1", 2)] and changed[("conv1", 2)].tolist() == [0.25, -0.5]
    fixed = nncf_ptq.apply_constants(source, changed)
    inits = {i.name: numpy_helper.to_array(i) for i in fixed.graph.initializer}
    conv1, conv2 = fixed.graph.node
    assert inits[conv1.input[2]].tolist() == [0.25, -0.5] and conv2.input[2] == "b" and "b" in inits  # shared: kept
    alone = nncf_ptq.apply_constants(make([source.graph.node[0]], {"w": w, "b": b}, outputs=("c1",)), changed)
    assert "b" not in {i.name for i in alone.graph.initializer}  # nothing uses it any more: removed


def relu6_cnn(path: Path) -> Path:
    """conv, ReLU6 (Clip), conv, ReLU6, global pool, linear: 4 classes, 3x16x16 input."""
    w = {"w1": RNG.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "b1": RNG.standard_normal(8).astype(np.float32) * 0.1,
         "w2": RNG.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2, "b2": RNG.standard_normal(8).astype(np.float32) * 0.1,
         "wf": RNG.standard_normal((4, 8)).astype(np.float32) * 0.5, "bf": RNG.standard_normal(4).astype(np.float32) * 0.1,
         "lo": np.float32(0), "hi": np.float32(6)}
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6_1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="relu6_2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], axis=1, name="flatten"),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def case(tmp_path):
    """The ReLU6 CNN, 64 calibration inputs, 96 validation inputs labeled by the FP32 model itself."""
    model = relu6_cnn(tmp_path / "fp32.onnx")
    x = RNG.random((160, 3, 16, 16), dtype=np.float32)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": x[64:]})[0].argmax(1)
    reader = lambda: ort_quantize.BatchReader(64, lambda rows: {"input": x[:64][rows]}, ort_quantize.model_inputs(model))
    return model, reader, (x[64:], y)


def test_nncf_numbers_in_onnx_runtime_layout(case, tmp_path):
    pytest.importorskip("nncf")
    model, reader, _ = case
    r = reader()
    carried = nncf_ptq.carry(model, iter(r.get_next, None), tmp_path / "corrected.onnx")
    ranges = carried["overrides"]
    assert {"r1", "r2", "c1", "c2"} <= set(ranges)  # NNCF quantizes the ReLU6 outputs; their inputs get them too
    for fmt, folded in (("qdq", "r1"), ("qoperator", "c1")):
        out = tmp_path / f"{fmt}.onnx"
        ort_quantize.quantize_model(tmp_path / "corrected.onnx", out, QuantizeConfig(format=fmt), reader, overrides=ranges)
        graph = onnx.load(str(out)).graph
        ops = [n.op_type for n in graph.node]
        assert "Clip" not in ops  # ONNX Runtime's layout: the activations folded into the convolutions
        if fmt == "qoperator":
            assert ops.count("QLinearConv") == 2
        scales = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        # the activation's scale is NNCF's range over 255 levels (uint8; ranges that start at 0)
        rmax = float(ranges[folded][0]["rmax"])
        assert float(scales[f"{folded}_scale"]) == pytest.approx(rmax / 255, rel=1e-5)
        assert all(v.size == 1 for k, v in scales.items() if k.startswith(("r", "c")) and k.endswith("_scale"))


def test_auto_mode_tries_nncf_recipes_and_says_where_each_graph_came_from(case, tmp_path):
    pytest.importorskip("nncf")
    model, reader, val = case
    q = QuantizeConfig(recipes=["qdq_u8s8", "qdq_u8s8_nncf"], max_excluded_nodes=0, latency_runs=20, latency_min_duration_s=0.05)
    lines = []
    sel = quantize.select(model, q, quantize.latency_settings(BenchmarkConfig(), q), reader, reader, val, tmp_path,
                          log=lines.append)
    by_name = {c.name: c for c in sel.tried}
    bits = ", 7-bit weights" if ort_quantize.resolve_reduce_range(q).reduce_range else ""  # said where this CPU needs them
    assert by_name["qdq_u8s8"].graph_from == f"ONNX Runtime quantize_static, minmax calibration{bits}"
    assert by_name["qdq_u8s8_nncf"].graph_from.startswith(nncf_ptq.PROVENANCE) and by_name["qdq_u8s8_nncf"].error is None
    assert any(line.startswith("NNCF ") and "activation ranges" in line for line in lines)
    assert sel.metrics("auto", 64, 1.0)["candidates"][2]["graph_from"].startswith("NNCF")


def test_without_nncf_auto_skips_its_recipes_with_one_line(case, tmp_path, monkeypatch):
    monkeypatch.setattr(nncf_ptq, "available", lambda: False)
    model, reader, val = case
    q = QuantizeConfig(recipes=["qdq_u8s8", "qdq_u8s8_nncf"], max_excluded_nodes=0, latency_runs=20, latency_min_duration_s=0.05)
    lines = []
    sel = quantize.select(model, q, quantize.latency_settings(BenchmarkConfig(), q), reader, reader, val, tmp_path,
                          log=lines.append)
    assert [c.name for c in sel.tried] == ["qdq_u8s8"]
    assert "skipped qdq_u8s8_nncf: nncf is not installed (pip install 'edgedistill[nncf]')" in lines


def test_model_ort_of_a_quantized_model_is_checked_by_agreement_and_measured(case, tmp_path):
    """The bundle's check: a quantized model.ort passes on top-1 agreement whatever its logits' steps,
    both files' accuracy comes back, and a model.ort that answers differently is refused by name."""
    from edgedistill.core.errors import StageError
    from edgedistill.data.inputs import InputSet
    from edgedistill.stages.bundle import check_ort_format, to_ort_format

    model, reader, (x, y) = case
    out = tmp_path / "bundle"
    out.mkdir()
    ort_quantize.quantize_model(model, out / "model.onnx", QuantizeConfig(), reader)
    to_ort_format(out / "model.onnx", out, "arm", tmp_path / "work")
    test = InputSet(x, np.asarray, y)
    got = check_ort_format(out, test, 1e-4, True, 0.99)
    assert got["rule"] == "top-1 agreement" and got["samples"] == len(y) and got["top1_agreement"] >= 0.99
    assert got["max_abs_diff_steps"] is not None and 0 <= got["accuracy"] <= 100 and 0 <= got["onnx_accuracy"] <= 100

    other = tmp_path / "other"  # a model.ort whose classes are rolled by one: it disagrees everywhere
    other.mkdir()
    rolled = onnx.load(str(model))
    for init in rolled.graph.initializer:
        if init.name in ("wf", "bf"):
            init.CopyFrom(numpy_helper.from_array(np.roll(numpy_helper.to_array(init), 1, axis=0), init.name))
    onnx.save(rolled, str(other / "model.onnx"))
    to_ort_format(other / "model.onnx", other, "arm", tmp_path / "work2")
    (out / "model.ort").write_bytes((other / "model.ort").read_bytes())
    with pytest.raises(StageError, match=r"top-1 agreement .* \(limit 99%, bundle.ort_min_top1_agreement\)"):
        check_ort_format(out, test, 1e-4, True, 0.99)


def test_the_quantize_command_takes_nncf_numbers_in_fixed_mode(tmp_path, capsys, monkeypatch):
    """`edgedistill quantize --mode fixed --set ranges=nncf`: NNCF's range of the first ReLU6 is in the
    model written; without nncf it is one clear line and exit 2."""
    pytest.importorskip("nncf")
    from edgedistill.cli import main

    model = relu6_cnn(tmp_path / "fp32.onnx")
    np.save(tmp_path / "calib.npy", RNG.random((48, 3, 16, 16), dtype=np.float32))
    fixed = ["quantize", str(model), "--calib", str(tmp_path / "calib.npy"), "--mode", "fixed", "--set", "reduce_range=false"]
    args = [*fixed, "--set", "ranges=nncf", "--out", str(tmp_path / "q.onnx")]
    assert main(args) == 0
    assert "NNCF " in capsys.readouterr().err
    plain = tmp_path / "plain.onnx"
    assert main([*fixed, "--out", str(plain)]) == 0
    scale = lambda p: float(next(numpy_helper.to_array(i) for i in onnx.load(str(p)).graph.initializer if i.name == "r1_scale"))
    assert scale(tmp_path / "q.onnx") != scale(plain)  # NNCF's range, not ONNX Runtime's MinMax

    monkeypatch.setattr(nncf_ptq, "available", lambda: False)
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        "ranges=nncf needs the nncf package: pip install 'edgedistill[nncf]', or --set ranges=onnxruntime")
