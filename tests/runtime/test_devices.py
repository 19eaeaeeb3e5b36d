"""Target devices: bench.py from a bundle, `edgedistill bench`, `ingest`, per-device budgets."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgedistill.cli import main
from edgedistill.core.files import sha256_file


def device_run(bundle, tmp_path, name="pi4"):
    """bench.py as a device runs it: its own interpreter, only numpy and onnxruntime, in the bundle folder."""
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, "-I", "bench.py", "--name", name, "--runs", "20", "--min-seconds", "0.05",
                           "--profile-runs", "3", "--out", str(out)], cwd=bundle, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


def test_bench_py_needs_only_numpy_and_onnxruntime(bundle):
    source = (bundle / "bench.py").read_text()
    imports = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "argparse", "hashlib", "json", "os", "platform", "resource", "sys", "tempfile", "time",
                       "numpy", "onnxruntime"}, imports


def test_ingest_records_the_device_and_keeps_the_manifest_true(bundle, tmp_path, capsys):
    result = device_run(bundle, tmp_path)
    version_before = json.loads((bundle / "manifest.json").read_text())["content_sha256"]
    assert main(["ingest", str(result), str(bundle)]) == 0
    assert "recorded device 'pi4'" in capsys.readouterr().out
    report = json.loads((bundle / "report.json").read_text())
    assert report["devices"]["pi4"]["latency_ms"]["p90"] > 0 and report["devices"]["pi4"]["device"]["name"] == "pi4"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert all(sha256_file(bundle / f) == digest for f, digest in manifest["files"].items())
    assert manifest["devices"] == ["pi4"] and manifest["content_sha256"] == version_before
    assert "| pi4 |" in (bundle / "MODEL_CARD.md").read_text()
    assert "<td>pi4</td>" in (bundle / "report.html").read_text()


def test_ingest_refuses_a_result_of_another_model(bundle, tmp_path, capsys):
    result = device_run(bundle, tmp_path)
    data = json.loads(result.read_text())
    data["sha256"] = "0" * 64
    result.write_text(json.dumps(data))
    assert main(["ingest", str(result), str(bundle)]) == 2
    assert "measured a different model" in capsys.readouterr().err


def test_per_device_budgets(bundle, tmp_path, capsys):
    budgets = tmp_path / "b.yaml"
    budgets.write_text(yaml.safe_dump({"devices": {"pi4": {"max_latency_ms_p90": 10_000}}}))
    assert main(["gate", str(bundle), "--budgets", str(budgets)]) == 1  # no result for pi4 yet
    assert "no result" in capsys.readouterr().out
    assert main(["ingest", str(device_run(bundle, tmp_path)), str(bundle)]) == 0
    assert main(["gate", str(bundle), "--budgets", str(budgets)]) == 0
    budgets.write_text(yaml.safe_dump({"devices": {"pi4": {"max_latency_ms_p90": 1e-6}}}))
    assert main(["gate", str(bundle), "--budgets", str(budgets)]) == 1
    assert "pi4.latency_ms_p90" in capsys.readouterr().out


def test_bench_command_on_a_bundle_and_a_model(bundle, tmp_path, capsys):
    out = tmp_path / "here.json"
    assert main(["bench", str(bundle), "--runs", "10", "--min-seconds", "0", "--out", str(out), "--name", "ci"]) == 0
    table = capsys.readouterr().out
    assert "latency ms p50 / p90 / p99" in table and "top operators" in table
    result = json.loads(out.read_text())
    assert result["runs"] >= 10 and result["device"]["name"] == "ci"
    assert main(["bench", str(bundle / "model.onnx"), "--runs", "5", "--min-seconds", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sha256"] == sha256_file(bundle / "model.onnx")
    assert main(["bench", str(tmp_path / "nothing.onnx")]) == 2


def test_ingest_refuses_what_is_not_a_bench_result(bundle, tmp_path, capsys):
    junk = tmp_path / "junk.json"
    for text in ('{"latency": 1}', "[1, 2]", "not json"):
        junk.write_text(text)
        assert main(["ingest", str(junk), str(bundle)]) == 2
        assert "is not a bench.py result" in capsys.readouterr().err
    assert main(["ingest", str(tmp_path / "missing.json"), str(bundle)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.fixture
def devices_yaml(tmp_path):
    path = tmp_path / "devices.yaml"
    path.write_text(yaml.safe_dump({
        "pi4": {"target": "ssh://pi@pi4.local", "threads": 4, "notes": "Raspberry Pi 4, 4 GB"},
        "pi4-emulated": {"target": "aarch64:cortex-a72"},
    }))
    return path


def test_a_devices_file_names_the_devices_and_a_wrong_name_is_a_clear_error(bundle, devices_yaml, tmp_path, capsys):
    from edgedistill.runtime.devices import find_device, load_devices

    assert set(load_devices(devices_yaml)) == {"pi4", "pi4-emulated"} and find_device("pi4", devices_yaml).threads == 4
    assert main(["verify", str(bundle), "--device", "pi-4", "--devices", str(devices_yaml)]) == 2
    assert "unknown device 'pi-4'" in (err := capsys.readouterr().err) and "did you mean 'pi4'" in err
    # bench needs a real device: an emulated one has no latency worth recording
    assert main(["bench", str(bundle), "--device", "pi4-emulated", "--devices", str(devices_yaml)]) == 2
    assert "latency under emulation means nothing" in capsys.readouterr().err
    # the gate refuses a budget for a device nobody knows (a typo), instead of failing it for want of a result
    budgets = tmp_path / "b.yaml"
    budgets.write_text(yaml.safe_dump({"devices": {"pi5": {"max_latency_ms_p90": 10}}}))
    assert main(["gate", str(bundle), "--budgets", str(budgets), "--devices", str(devices_yaml)]) == 2
    assert "not in devices file" in (err := capsys.readouterr().err) and "did you mean 'pi4'" in err
    # a target that is neither ssh:// nor an emulated core
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"board": {"target": "telnet://board"}}))
    assert main(["verify", str(bundle), "--device", "board", "--devices", str(bad)]) == 2
    assert "devices file" in capsys.readouterr().err


def test_quantize_target_can_name_a_device_but_not_an_emulated_one(tiny_run, devices_yaml, capsys):
    pipeline, _ = tiny_run
    assert main(["plan", str(pipeline), "--set", "quantize.target=pi4-emulated", "--set", f"devices={devices_yaml}"]) == 2
    assert "latency under emulation means nothing" in capsys.readouterr().err
    assert main(["plan", str(pipeline), "--set", "quantize.target=pi_4", "--set", f"devices={devices_yaml}"]) == 2
    assert "did you mean 'pi4'" in capsys.readouterr().err
    from edgedistill.pipeline import load_pipeline
    from edgedistill.stages import quantize

    cfg = quantize.configure(load_pipeline(pipeline, ["quantize.target=pi4", f"devices={devices_yaml}"]))
    assert cfg.quantize.target == "ssh://pi@pi4.local" and cfg.latency.threads == 4  # the device's, in the cache key


def text_model(path):
    """A tiny text classifier as ONNX (token embeddings, masked mean, linear head), inputs input_ids and
    attention_mask (int64, dynamic batch and sequence): what an exported transformers model takes."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    emb, head = rng.standard_normal((3000, 8)).astype(np.float32), rng.standard_normal((8, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["tok"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["tok", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
        helper.make_node("Div", ["summed", "count"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "head"], ["logits"]),
    ]
    ints = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
    graph = helper.make_graph(nodes, "text", [ints("input_ids"), ints("attention_mask")],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
                              [numpy_helper.from_array(emb, "emb"), numpy_helper.from_array(head, "head"),
                               numpy_helper.from_array(np.array([2]), "axis2"), numpy_helper.from_array(np.array([1]), "axis1")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return emb, head


def test_bench_py_runs_a_text_model_with_int64_inputs(tmp_path):
    """bench.py makes up token ids and masks at --sequence-length, or reads them from an .npz by input
    name; accuracy and verify mode work on them as on images."""
    import numpy as np

    emb, head = text_model(tmp_path / "text.onnx")
    bench = [sys.executable, "-I", str(Path(__file__).parents[2] / "edgedistill" / "runtime" / "ortbench.py"), str(tmp_path / "text.onnx")]
    proc = subprocess.run([*bench, "--runs", "10", "--min-seconds", "0", "--profile-runs", "0", "--sequence-length", "32"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    timed = json.loads(proc.stdout)
    assert timed["latency_ms"]["p90"] > 0 and timed["sequence_length"] == 32
    rng = np.random.default_rng(1)
    ids, mask = rng.integers(0, 3000, size=(20, 12)), (rng.random((20, 12)) < 0.8).astype(np.int64)
    mask[:, 0] = 1  # right padding: every sentence has a first token
    np.savez(tmp_path / "test.npz", input_ids=ids, attention_mask=mask)
    expected = ((emb[ids] * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)) @ head
    labels = expected.argmax(1)
    labels[:5] = (labels[:5] + 1) % 3  # 15 of 20 right
    np.save(tmp_path / "labels.npy", labels)
    proc = subprocess.run([*bench, "--inputs", str(tmp_path / "test.npz"), "--labels", str(tmp_path / "labels.npy"),
                           "--logits", str(tmp_path / "logits.npy")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accuracy"] == 75.0
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, rtol=1e-4, atol=1e-5)
    np.save(tmp_path / "ids.npy", ids)  # one array for a two-input model: a clear error
    proc = subprocess.run([*bench, "--inputs", str(tmp_path / "ids.npy")], capture_output=True, text=True)
    assert proc.returncode != 0 and "give --inputs as an .npz with one array per input name" in proc.stderr
