"""ONNX Runtime quantization of the exported student: each method and format, and auto mode."""
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgedistill.core.stage import Context
from edgedistill.quantization import ort_quantize
from edgedistill.quantization.recipes import QuantizeConfig
from edgedistill.runtime.benchmark import BenchmarkConfig
from edgedistill.stages import quantize
from edgedistill.stages.quantize import Candidate, choose, confirm_speed, first_unless_faster


def stage_inputs(store: Path) -> dict:
    first = lambda stage: next((store / "results" / stage).iterdir())
    return {"dataset": first("prepare"), "onnx": first("export")}


def run_stage(store: Path, tmp_path: Path, **options) -> tuple[dict, Path]:
    out = tmp_path / "out"
    out.mkdir()
    q = QuantizeConfig(calibration_samples=32, latency_runs=30, latency_min_duration_s=0.05, **options)
    cfg = quantize.QuantizeStageConfig(quantize=q, latency=quantize.latency_settings(BenchmarkConfig(), q), seed=0)
    return quantize.run(cfg, stage_inputs(store), out, Context(work=tmp_path, progress=False)), out / quantize.OUTPUT


@pytest.mark.parametrize("options, expect_ops", [
    ({}, {"QuantizeLinear", "DequantizeLinear"}),
    ({"format": "qoperator"}, {"QLinearConv"}),
    ({"calibrate_method": "entropy", "per_channel": False, "reduce_range": True}, {"QuantizeLinear"}),
    ({"activation_type": "int8", "calibrate_method": "percentile"}, {"QuantizeLinear"}),
    ({"method": "dynamic"}, {"DynamicQuantizeLinear"}),
    ({"method": "fp16"}, {"Cast"}),
])
def test_fixed_quantization_methods(tiny_run, tmp_path, options, expect_ops):
    _, store = tiny_run
    metrics, model = run_stage(store, tmp_path, mode="fixed", **options)
    ops = {n.op_type for n in onnx.load(str(model)).graph.node}
    assert expect_ops <= ops, ops
    assert metrics["choice"] == "quantized" and metrics["recipe"] == "fixed"
    assert metrics["calibration_samples"] == (32 if options.get("method", "static") == "static" else 0)
    if options.get("method", "static") == "static":
        # static INT8 keeps the tiny student's accuracy within a few points of FP32
        assert metrics["val_accuracy_int8"] > metrics["val_accuracy_fp32"] - 10


def test_op_types_and_nodes_to_exclude_are_applied(tiny_run, tmp_path):
    _, store = tiny_run
    graph = onnx.load(str(stage_inputs(store)["onnx"] / "student.onnx")).graph
    gemm = next(n.name for n in graph.node if n.op_type == "Gemm")
    _, model = run_stage(store, tmp_path, mode="fixed", format="qoperator", nodes_to_exclude=[gemm])
    ops = [n.op_type for n in onnx.load(str(model)).graph.node]
    assert "QLinearConv" in ops and "Gemm" in ops  # convolutions quantized, the excluded Gemm still float


def fp(name, acc, p90, error=None, half_width=0.3):
    """A measured candidate against an FP32 of 98%: its drop with an interval of +-half_width."""
    drop = None if acc is None or name == "fp32" else {"drop": 98.0 - acc, "ci_low": 98.0 - acc - half_width,
                                                       "ci_high": 98.0 - acc + half_width, "level": 0.95,
                                                       "agreement": 99.0, "images": 750}
    return Candidate(name, val_accuracy=acc, latency_ms_p90=p90, size_bytes=1, error=error, val_drop=drop)


def test_choose_the_fastest_within_tolerance():
    chosen, why = choose(fp("fp32", 98.0, 1.0), [fp("a", 97.5, 0.5), fp("b", 96.0, 0.3), fp("c", 98.0, 0.7)], 1.0, 1.05)
    assert chosen.name == "a" and "0.50 pt below FP32" in why and "2.00x faster" in why


def test_candidates_closer_than_the_speed_margin_are_taken_in_recipe_order():
    """Five equally good recipes within 5% of each other (the quickstart's student): which one ships must
    not follow the timing noise; a later one ships only when it is min_speedup faster."""
    fp32 = fp("fp32", 98.0, 1.0)
    for noise in ([0.60, 0.58], [0.58, 0.60]):
        chosen, _ = choose(fp32, [fp("qdq_u8s8", 98.0, noise[0]), fp("qdq_s8s8", 98.0, noise[1])], 1.0, 1.05)
        assert chosen.name == "qdq_u8s8"
    chosen, _ = choose(fp32, [fp("qdq_u8s8", 98.0, 0.60), fp("qdq_s8s8", 98.0, 0.55)], 1.0, 1.05)
    assert chosen.name == "qdq_s8s8"  # 9% faster
    # the inaccurate and the not-fast-enough do not take part
    chosen, _ = choose(fp32, [fp("slow", 98.0, 0.99), fp("off", 90.0, 0.3), fp("b", 98.0, 0.9)], 1.0, 1.05)
    assert chosen.name == "b"


def test_choose_fp32_when_nothing_is_faster_enough():
    chosen, why = choose(fp("fp32", 98.0, 1.0), [fp("a", 98.0, 0.97), fp("b", 98.0, 1.4)], 1.0, 1.05)
    assert chosen is None and "at least 1.05x faster" in why and "best: a" in why


def test_choose_fp32_when_nothing_is_accurate_enough():
    chosen, why = choose(fp("fp32", 98.0, 1.0), [fp("a", 90.0, 0.2), fp("b", None, None, error="boom")], 1.0, 1.05)
    assert chosen is None and "within 1 pt" in why and "best: a, 8.00 pt below FP32" in why


def test_within_tolerance_is_the_upper_end_of_the_interval():
    """0.5 points lost on the point estimate, but an interval reaching 1.3: not within a 1-point tolerance;
    the same drop measured on more images (+-0.3) is."""
    unsure, sure = fp("unsure", 97.5, 0.5, half_width=0.8), fp("sure", 97.5, 0.6, half_width=0.3)
    chosen, why = choose(fp("fp32", 98.0, 1.0), [unsure, sure], 1.0, 1.05)
    assert chosen.name == "sure" and "interval 0.20 to 0.80" in why
    chosen, why = choose(fp("fp32", 98.0, 1.0), [unsure], 1.0, 1.05)
    assert chosen is None and "upper end" in why


def timed(first: dict[str, float], later: dict[str, float], calls: list):
    """A stand-in for the child-process timer: each model's later timings are later[name]; calls records the order."""
    def p90(path: Path) -> float:
        calls.append(path.name)
        return later[path.name]
    cands = {n: fp(n, 98.0 if n != "inaccurate" else 90.0, v) for n, v in first.items()}
    for n, c in cands.items():
        c.path = Path(n)
    return cands, p90


@pytest.mark.parametrize("first, later, ships", [
    # a candidate 1.25x faster whose first timing hit a pause (1.2 ms): the medians ship it
    ({"fp32": 1.0, "a": 1.2}, {"fp32": 1.0, "a": 0.8}, "a"),
    # a lucky first timing (0.8 ms) of a candidate as fast as FP32: the medians keep FP32
    ({"fp32": 1.0, "a": 0.8}, {"fp32": 1.0, "a": 1.0}, None),
])
def test_the_speed_rule_decides_on_alternated_timings(first, later, ships):
    calls = []
    c, p90 = timed(dict(first, slow=1.6, inaccurate=0.5), dict(later, slow=1.6, inaccurate=0.5), calls)
    q = QuantizeConfig(latency_rounds=3)
    tried = [c["a"], c["slow"], c["inaccurate"]]
    chosen, reason = confirm_speed(c["fp32"], tried, q, p90, lambda m: None, *choose(c["fp32"], tried, 1.0, 1.05))
    assert (chosen and chosen.name) == ships
    # 2 more rounds of FP32 and the accurate candidate, alternating; the inaccurate one and the one 1.6x
    # slower than FP32 are not timed again
    assert calls == ["fp32", "a", "fp32", "a"]
    assert c["a"].latency_rounds_ms == [first["a"], later["a"], later["a"]] and c["a"].latency_ms_p90 == later["a"]
    assert c["slow"].latency_rounds_ms == [] and c["slow"].latency_ms_p90 == 1.6
    calls.clear()
    confirm_speed(c["fp32"], tried, QuantizeConfig(latency_rounds=1), p90, lambda m: None, None, "")
    assert calls == []


def test_the_report_says_medians_only_when_fp32_was_timed_again():
    from edgedistill.release.report import quantization_text

    def q(fp32_rounds, other_rounds):
        return {"rule": "r", "val_resolution": {"note": None}, "test_drop": None, "latency_from": "here",
                "candidates": [{"name": "fp32", "latency_rounds_ms": [1.0] * fp32_rounds},
                               {"name": "a", "latency_rounds_ms": [0.5] * other_rounds}]}
    assert "median of 3 timings" in quantization_text(q(3, 3))
    # the search retimed two tied candidates, nothing was within tolerance: FP32 timed once, no median claimed
    assert "median" not in quantization_text(q(1, 3)) and "measured on here." in quantization_text(q(1, 3))


def test_the_search_note_survives_the_retiming():
    calls = []
    c, p90 = timed({"fp32": 1.0, "a": 1.2}, {"fp32": 1.0, "a": 0.8}, calls)
    chosen, reason = confirm_speed(c["fp32"], [c["a"]], QuantizeConfig(), p90, lambda m: None, None,
                                   "no accurate-enough ...; the search stopped when its 1-s budget ran out")
    assert chosen.name == "a" and reason.endswith("; the search stopped when its 1-s budget ran out")


def test_equally_accurate_candidates_are_taken_in_recipe_order_unless_one_is_clearly_faster():
    by_first = lambda t: t[0].latency_ms_p90  # (candidate, recipe name), as the search passes them
    a, b, c = (fp("a", 97.0, 1.00), "a"), (fp("b", 97.0, 0.97), "b"), (fp("c", 97.0, 0.90), "c")
    assert first_unless_faster([a, b], 1.05, p90=by_first)[1] == "a"  # 3% faster in one timing: noise, the first listed
    assert first_unless_faster([a, b, c], 1.05, p90=by_first)[1] == "c"  # 10% faster
    assert first_unless_faster([b, a], 1.05, p90=by_first)[1] == "b"


def test_auto_mode_decision_holds_on_its_own_measurements(tiny_run, tmp_path):
    _, store = tiny_run
    metrics, model = run_stage(store, tmp_path, recipes=["qdq_u8s8", "qoperator_u8s8", "dynamic_s8"], max_accuracy_drop=1.0)
    names = [c["name"] for c in metrics["candidates"]]
    assert names[:4] == ["fp32", "qdq_u8s8", "qoperator_u8s8", "dynamic_s8"]
    fp32 = metrics["candidates"][0]
    by_name = {c["name"]: c for c in metrics["candidates"]}
    if metrics["choice"] == "quantized":
        c = by_name[metrics["recipe"]]
        assert c["val_drop"]["ci_high"] <= 1.0 and c["val_drop"]["drop"] == pytest.approx(fp32["val_accuracy"] - c["val_accuracy"])
        assert c["latency_ms_p90"] * 1.05 <= fp32["latency_ms_p90"]
    else:  # FP32 ships only when no candidate was both accurate and fast enough
        assert not any(c["val_drop"]["ci_high"] <= 1.0 and c["latency_ms_p90"] * 1.05 <= fp32["latency_ms_p90"]
                       for c in metrics["candidates"][1:] if c["error"] is None)
        assert metrics["reason"].startswith("no ")
    assert model.is_file()
    # measured once on test, after the choice; and whether 270 validation images resolve 1 point
    t = metrics["test_drop"]
    assert t["images"] > 0 and t["ci_low"] <= t["drop"] <= t["ci_high"] and 0 <= t["agreement"] <= 100
    res = metrics["val_resolution"]
    assert res["resolved"] or ("cannot resolve a 1-point tolerance" in res["note"] and res["images_needed"] > res["images"])


def test_rank_nodes_names_weight_nodes_of_the_graph(tiny_run, tmp_path):
    _, store = tiny_run
    inputs = stage_inputs(store)
    from edgedistill.data.dataset import Dataset

    ds = Dataset.load(inputs["dataset"])
    src = inputs["onnx"] / "student.onnx"
    reader = lambda: ort_quantize.split_reader(ds.split("train").subset(slice(0, 32)), ort_quantize.model_inputs(src), batch=16)
    qdq = tmp_path / "q.onnx"
    ort_quantize.quantize_model(src, qdq, QuantizeConfig(mode="fixed"), reader)
    ranking = ort_quantize.rank_nodes_by_error(src, qdq, reader, tmp_path)
    weight_nodes = {n.name for n in onnx.load(str(src)).graph.node if n.op_type in ("Conv", "Gemm")}
    assert ranking and {name for name, _ in ranking} <= weight_nodes
    assert all(np.isfinite(err) for _, err in ranking)
    assert [e for _, e in ranking] == sorted((e for _, e in ranking), reverse=True)


def stub_accuracy(monkeypatch, wrong):
    """Models whose file name `wrong` accepts answer wrongly; FP32 is slow, every candidate fast."""
    real_predict = quantize.ort_predict
    monkeypatch.setattr(quantize, "ort_predict", lambda path, x, **k: np.roll(real_predict(path, x, **k), 1, axis=1)
                        if wrong(path.name) else real_predict(path, x, **k))
    monkeypatch.setattr(quantize, "bench_in_child", lambda path, *a, **k: {"latency_ms": {"p90": 2.0 if path.name == "student.onnx" else 1.0}})


def test_auto_leaves_the_worst_nodes_in_float_when_int8_is_not_accurate_enough(tiny_run, tmp_path, monkeypatch):
    """Simulated: fully quantized models lose 20 points, mixed-precision ones none; FP32 is slow.
    The real ranking, requantization and control flow run; accuracy and latency are stubbed."""
    _, store = tiny_run
    stub_accuracy(monkeypatch, lambda name: name.startswith("qdq_u8s8") and "+float" not in name)
    metrics, model = run_stage(store, tmp_path, recipes=["qdq_u8s8"], max_accuracy_drop=1.0)
    # one node in float, then two, ...: the first whose drop interval stays within 1 point ships
    k = len(metrics["excluded_nodes"])
    assert metrics["choice"] == "quantized" and metrics["recipe"] == f"qdq_u8s8+float{k}" and k in (1, 2, 4)
    assert metrics["val_drop"]["ci_high"] <= 1.0
    tried = {c["name"]: c for c in metrics["candidates"]}
    assert all(tried[f"qdq_u8s8+float{j}"]["val_drop"]["ci_high"] > 1.0 for j in (1, 2, 4) if j < k)
    graph = onnx.load(str(model)).graph
    float_weights = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    for node in metrics["excluded_nodes"]:
        target = next(n for n in graph.node if n.name == node)
        assert target.input[1] in float_weights  # its weight stayed a float initializer, no DequantizeLinear
    others = [n for n in graph.node if n.op_type in ("Conv", "Gemm") and n.name not in metrics["excluded_nodes"]]
    assert others and all(n.input[1] not in float_weights for n in others)  # the rest are quantized


def test_auto_calibrates_again_before_leaving_nodes_in_float(tiny_run, tmp_path, monkeypatch):
    """Simulated: MinMax calibration loses 20 points, percentile none. The re-calibrated recipe ships,
    and no node is left in float."""
    _, store = tiny_run
    stub_accuracy(monkeypatch, lambda name: name == "qdq_u8s8.onnx")
    metrics, model = run_stage(store, tmp_path, recipes=["qdq_u8s8"], retry_calibration=["minmax", "percentile"],
                               max_accuracy_drop=3.0)  # wide: the tiny validation split resolves little
    assert [c["name"] for c in metrics["candidates"]] == ["fp32", "qdq_u8s8", "qdq_u8s8_percentile"]
    assert metrics["choice"] == "quantized" and metrics["recipe"] == "qdq_u8s8_percentile" and not metrics["excluded_nodes"]
    assert model.is_file()


def test_the_search_stops_when_its_budget_is_spent(tiny_run, tmp_path, monkeypatch):
    """search_budget_s 0: the recipes are tried, nothing beyond them, and the reason says why."""
    _, store = tiny_run
    stub_accuracy(monkeypatch, lambda name: name.startswith("qdq_u8s8"))
    metrics, _ = run_stage(store, tmp_path, recipes=["qdq_u8s8"], search_budget_s=0)
    assert [c["name"] for c in metrics["candidates"]] == ["fp32", "qdq_u8s8"]
    assert metrics["choice"] == "fp32" and "budget (quantize.search_budget_s) ran out" in metrics["reason"]


def test_calibration_reader_streams_batches(tiny_run):
    from edgedistill.data.dataset import Dataset

    _, store = tiny_run
    ds = Dataset.load(stage_inputs(store)["dataset"])
    reader = ort_quantize.split_reader(ds.split("train").subset(slice(0, 70)), ort_quantize.model_inputs(stage_inputs(store)["onnx"] / "student.onnx"))
    shapes = []
    while (item := reader.get_next()) is not None:
        shapes.append(item["input"].shape[0])
    assert shapes == [32, 32, 6]
    reader.rewind()
    assert reader.get_next()["input"].dtype == np.float32


def test_standalone_quantize_command(tiny_run, tmp_path, capsys):
    """edgedistill quantize MODEL.onnx --calib DATA for a model from outside a pipeline."""
    import json

    from edgedistill.cli import main
    from edgedistill.data.dataset import Dataset

    _, store = tiny_run
    inputs = stage_inputs(store)
    ds = Dataset.load(inputs["dataset"])
    x_train, _ = ds.inputs("train")
    x_val, y_val = ds.inputs("val")
    np.save(tmp_path / "calib.npy", x_train[:48])
    np.savez(tmp_path / "val.npz", x=x_val, y=y_val)
    model = tmp_path / "model.onnx"
    model.write_bytes((inputs["onnx"] / "student.onnx").read_bytes())
    code = main(["quantize", str(model), "--calib", str(tmp_path / "calib.npy"), "--val", str(tmp_path / "val.npz"),
                 "--set", "recipes=[qdq_u8s8,dynamic_s8]", "--set", "latency_runs=20", "--set", "latency_min_duration_s=0.05", "--report", str(tmp_path / "r.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "qdq_u8s8" in out and "dynamic_s8" in out and "fp32" in out
    assert "graph from" in out and "ONNX Runtime quantize_dynamic" in out
    report = json.loads((tmp_path / "r.json").read_text())  # written whichever ships
    if "kept FP32" in out:
        assert not (tmp_path / "model_quantized.onnx").exists() and report["choice"] == "fp32"
    else:
        assert (tmp_path / "model_quantized.onnx").is_file() and report["choice"] == "quantized"
    # fixed mode takes one recipe by name; a recipe list there is refused, not ignored
    assert main(["quantize", str(model), "--calib", str(tmp_path / "calib.npy"), "--mode", "fixed", "--recipe", "qdq_s8s8",
                 "--out", str(tmp_path / "s8.onnx")]) == 0
    graph = onnx.load(str(tmp_path / "s8.onnx")).graph
    zero_points = {i.name: i.data_type for i in graph.initializer}
    assert {zero_points[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"} == {onnx.TensorProto.INT8}
    assert main(["quantize", str(model), "--calib", str(tmp_path / "calib.npy"), "--mode", "fixed",
                 "--set", "recipes=[qdq_s8s8]"]) == 2
    assert "pick one with --recipe" in capsys.readouterr().err
    # fixed mode needs no labels; auto without --val is a clear error
    assert main(["quantize", str(model), "--calib", str(tmp_path / "calib.npy"), "--mode", "fixed", "--out", str(tmp_path / "f.onnx")]) == 0
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(tmp_path / "f.onnx")).graph.node}
    assert main(["quantize", str(model), "--calib", str(tmp_path / "calib.npy")]) == 2
    assert "--mode auto measures accuracy" in capsys.readouterr().err


def test_standalone_quantize_from_an_image_folder(tiny_run, tmp_path):
    """Calibration images decoded batch by batch from a folder, with a bundle's preprocess.json."""
    from PIL import Image

    from edgedistill.cli import main

    pipeline, store = tiny_run
    bundle = store / "bundles" / "tiny" / "v1"
    for c in range(3):
        (tmp_path / "imgs" / str(c)).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.random.default_rng(i + 10 * c).integers(0, 255, (12, 12), dtype=np.uint8)).save(tmp_path / "imgs" / str(c) / f"{i}.png")
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(stage_inputs(store)["onnx"] / "student.onnx"), "--calib", str(tmp_path / "imgs"),
                 "--preprocess", str(bundle / "preprocess.json"), "--mode", "fixed", "--out", str(out)]) == 0
    assert out.is_file()


def test_the_arm_recipe_set_quantizes_with_signed_activations(tiny_run, tmp_path):
    """quantize.recipes: arm names S8S8 QDQ first (ONNX Runtime's recommendation on ARM64); every recipe
    applies, and the S8S8 models carry int8 activations."""
    from edgedistill.pipeline import load_pipeline
    from edgedistill.quantization.recipes import RECIPE_SETS

    pipeline, store = tiny_run
    assert load_pipeline(pipeline, ["quantize.recipes=arm"]).quantize.recipes == RECIPE_SETS["arm"]
    metrics, _ = run_stage(store, tmp_path, recipes="arm", retry_calibration=[], max_excluded_nodes=0)
    tried = {c["name"]: c for c in metrics["candidates"][1:]}
    assert list(tried) == RECIPE_SETS["arm"] and all(c["error"] is None for c in tried.values())
    for name in ("qdq_s8s8", "qdq_s8s8_per_tensor"):
        graph = onnx.load(str(tmp_path / f"{name}.onnx")).graph
        zero_points = {i.name: i.data_type for i in graph.initializer}
        activation_zp = [zero_points[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
        assert activation_zp and set(activation_zp) == {onnx.TensorProto.INT8}


@pytest.mark.parametrize("flags, machine, saturates", [
    (["avx2", "fma"], "x86_64", True),  # AVX2 only: VPMADDUBSW's 16-bit sums saturate
    (["avx2", "avx512f", "avx512_vnni"], "x86_64", False),
    (["avx2", "avx_vnni"], "AMD64", False),
    (["neon", "asimd", "asimddp"], "aarch64", False),
    ([], "x86_64", False),  # flags unknown (no /proc/cpuinfo): not taken as saturation
])
def test_u8s8_saturation_is_known_by_cpu(flags, machine, saturates):
    assert ort_quantize.saturates_u8s8(flags, machine) is saturates


def test_reduce_range_auto_follows_where_candidates_run(monkeypatch):
    from edgedistill.runtime import ortbench

    monkeypatch.setattr(ortbench, "cpu_info", lambda: ("an AVX2 CPU", ["avx2", "fma"]))
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert ort_quantize.resolve_reduce_range(QuantizeConfig()).reduce_range is True
    assert ort_quantize.resolve_reduce_range(QuantizeConfig(target="ssh://pi@phone")).reduce_range is False
    assert ort_quantize.resolve_reduce_range(QuantizeConfig(reduce_range=False)).reduce_range is False  # as given
    monkeypatch.setattr(ortbench, "cpu_info", lambda: ("a VNNI CPU", ["avx2", "avx512_vnni"]))
    assert ort_quantize.resolve_reduce_range(QuantizeConfig()).reduce_range is False
