"""Prepared data on disk: splits written incrementally by worker processes, read back memory-mapped,
converted to float one batch at a time."""
import numpy as np
import pytest
import torch
from PIL import Image

from edgedistill.core.errors import DataError
from edgedistill.data.config import DataConfig
from edgedistill.data.dataset import Dataset, prepare, read_preprocess
from edgedistill.data.image.files import decode_image, resize_uint8
from edgedistill.data.image.spec import preprocess_spec, to_model_input, view_spec
from edgedistill.data.inputs import open_inputs
from edgedistill.data.splits import NpyWriter, input_batches


def jpeg_folder(root, per_class=12, seed=0):
    g = np.random.default_rng(seed)
    for c in ("ant", "bee", "cat"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = (int(v) for v in g.integers(20, 50, 2))
            Image.fromarray(g.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i}.jpg")
    return root


def test_splits_are_memory_mapped_and_batches_match_the_whole_split(tiny_run):
    _, store = tiny_run
    ds = Dataset.load(next((store / "results" / "prepare").iterdir()))
    x, y = ds.splits["train"]
    assert isinstance(x, np.memmap) and x.dtype == np.uint8 and x.ndim == 4
    val = ds.split("val")
    whole, labels = ds.inputs("val")
    assert np.array_equal(np.concatenate(list(input_batches(val, 50))), whole) and np.array_equal(val.labels, labels)
    assert np.array_equal(val.inputs(np.array([4, 1])), to_model_input(np.asarray(ds.splits["val"][0])[[4, 1]], ds.spec))


def test_the_number_of_decoding_workers_does_not_change_the_data(tmp_path):
    cfg = DataConfig(kind="imagefolder", train_dir=jpeg_folder(tmp_path / "imgs"), image_size=16, channels=3)
    out = {}
    for workers in (1, 2, 3):
        folder = tmp_path / f"w{workers}"
        folder.mkdir()
        prepare(cfg, seed=0, out=folder, workers=workers)
        out[workers] = {f.name: np.load(f) for f in sorted(folder.glob("*.npy"))}
    assert set(out[1]) == {f"{s}_{k}.npy" for s in ("train", "val", "test") for k in ("x", "y")}
    for workers in (2, 3):
        assert all(np.array_equal(out[1][name], out[workers][name]) for name in out[1])


def test_a_bad_image_in_a_worker_fails_with_its_path(tmp_path):
    root = jpeg_folder(tmp_path / "imgs")
    (root / "bee" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    cfg = DataConfig(kind="imagefolder", train_dir=root, image_size=16, channels=3)
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match=r"cannot read image '.*broken\.jpg'"):
        prepare(cfg, seed=0, out=tmp_path / "out", workers=2)


def test_npy_writer_writes_what_numpy_reads_and_counts_rows(tmp_path):
    rows = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
    with NpyWriter(tmp_path / "a.npy", np.float32, (6, 2, 2)) as w:
        w.write(rows[:4])
        w.write(rows[4:])
    assert np.array_equal(np.load(tmp_path / "a.npy", mmap_mode="r"), rows)
    with pytest.raises(AssertionError, match="5 rows written, 6 declared"):
        with NpyWriter(tmp_path / "b.npy", np.float32, (6, 2, 2)) as w:
            w.write(rows[:5])


def test_predict_converts_a_split_per_batch(tiny_run):
    from edgedistill.models.saved import load_trained
    from edgedistill.training.loop import predict

    _, store = tiny_run
    ds = Dataset.load(next((store / "results" / "prepare").iterdir()))
    model = load_trained(next((store / "results" / "finetune").iterdir()))
    whole, _ = ds.inputs("test")
    assert torch.equal(predict(model, ds.split("test"), batch=7), predict(model, whole, batch=7))


def test_center_crop_is_torchvision_resize_then_center_crop(tmp_path):
    """data.resize: shorter_side_center_crop, on files (Pillow) and on decoded arrays (tensors), against
    torchvision's own Resize + CenterCrop on the same image."""
    from torchvision.transforms import v2

    g = np.random.default_rng(1)
    for h, w in ((300, 200), (120, 261), (64, 64)):
        pixels = g.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "a.png")
        ours = decode_image(tmp_path / "a.png", 56, 3, shorter=64)
        with Image.open(tmp_path / "a.png") as im:
            theirs = np.asarray(v2.CenterCrop(56)(v2.Resize(64)(im.convert("RGB"))))
        assert np.array_equal(ours, theirs), (h, w)
        tensor = v2.CenterCrop(56)(v2.Resize(64, antialias=True)(torch.from_numpy(pixels).permute(2, 0, 1)))
        assert np.array_equal(resize_uint8(pixels[None], 56, shorter=64)[0], tensor.permute(1, 2, 0).numpy())


def test_preprocess_json_says_how_to_crop(tmp_path):
    cfg = DataConfig(kind="imagefolder", train_dir=jpeg_folder(tmp_path / "imgs"), image_size=28, channels=3,
                     resize="shorter_side_center_crop", crop_fraction=0.875)
    spec = preprocess_spec(cfg, 3)
    assert spec["resize"]["rule"] == "shorter_side_center_crop" and spec["resize"]["shorter_side"] == 32
    (tmp_path / "out").mkdir()
    prepare(cfg, seed=0, out=tmp_path / "out", workers=2)
    # what prepare stored is what a device following preprocess.json gets from the same file
    from edgedistill.data.inputs import open_inputs
    inputs = open_inputs(tmp_path / "imgs", spec)
    x = np.load(tmp_path / "out" / "train_x.npy")
    decoded = np.stack([decode_image(p, 28, 3, shorter=32) for p in inputs.items])
    assert len(x) and all(any(np.array_equal(xi, d) for d in decoded) for xi in x)


def test_a_smaller_model_gets_the_stored_square_resized(tmp_path):
    """Images are stored once at the larger model's size; the smaller model's view (its preprocess.json,
    evaluation, calibration, image folders read with it) is that square resized: here against
    torchvision's Resize + CenterCrop + Resize on the same file."""
    from torchvision.transforms import v2

    folder = jpeg_folder(tmp_path / "imgs", per_class=2)
    cfg = DataConfig(kind="imagefolder", train_dir=folder, image_size=28, channels=3, resize="shorter_side_center_crop")
    spec = preprocess_spec(cfg, 3)
    view = view_spec(spec, 14)
    assert (view["height"], view["width"], view["resize"]["size"], view["resize"]["then_resize"]) == (14, 14, [28, 28], [14, 14])
    assert "then resize that 28x28 square to 14x14" in view["resize"]["text"] and view_spec(spec, 28) is spec
    inputs = open_inputs(folder, view)
    ours = inputs.inputs(slice(0, len(inputs)))
    for path, x in zip(inputs.items, ours):
        with Image.open(path) as im:
            square = torch.from_numpy(np.array(v2.CenterCrop(28)(v2.Resize(32)(im.convert("RGB"))))).permute(2, 0, 1)
        small = v2.Resize([14, 14], antialias=True)(square).permute(1, 2, 0).numpy()
        assert np.array_equal(x, to_model_input(small[None], view)[0])
    stored = np.stack([decode_image(p, 28, 3, shorter=32) for p in inputs.items])
    assert np.array_equal(to_model_input(stored, view), ours)  # the pipeline's per-batch path: the same numbers
    with pytest.raises(DataError, match="do not fit"):
        to_model_input(stored[:, :20, :20], view)
    (tmp_path / "view.json").write_text(__import__("json").dumps(view))
    assert read_preprocess(tmp_path / "view.json") == view
    (tmp_path / "bad.json").write_text(__import__("json").dumps(view | {"height": 15, "width": 15}))
    with pytest.raises(DataError, match="not a preprocess.json"):
        read_preprocess(tmp_path / "bad.json")


def test_teacher_and_student_each_at_its_own_size(tmp_path):
    """teacher.image_size 16, student 8: stored once at 16, each model trained, exported and measured at
    its size, and the bundle's preprocess.json describes the student's input."""
    import json

    import onnx

    from edgedistill.cli import main

    from conftest import write_pipeline

    pipeline = write_pipeline(tmp_path / "p", teacher={"image_size": 16}, distill={"augment": "light"})
    store = tmp_path / "store"
    assert main(["run", str(pipeline), "--store", str(store)]) == 0
    results = store / "results"
    (prepared,) = (results / "prepare").iterdir()
    assert np.load(prepared / "train_x.npy", mmap_mode="r").shape[1:] == (16, 16, 1)
    sizes = {stage: json.loads(next((results / stage).iterdir()).joinpath("model.json").read_text())["image_size"]
             for stage in ("finetune", "distill")}
    assert sizes == {"finetune": 16, "distill": 8}
    (bundle,) = (store / "bundles" / "tiny").iterdir()
    pre = json.loads((bundle / "preprocess.json").read_text())
    assert (pre["height"], pre["resize"]["size"], pre["resize"]["then_resize"]) == (8, [16, 16], [8, 8])
    dims = [d.dim_value for d in onnx.load(str(bundle / "model.onnx")).graph.input[0].type.tensor_type.shape.dim[1:]]
    (onnx_dir,) = (results / "export").iterdir()
    teacher_dims = [d.dim_value for d in onnx.load(str(onnx_dir / "teacher.onnx")).graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [1, 8, 8] and teacher_dims == [1, 16, 16]
    report = json.loads((bundle / "report.json").read_text())
    assert report["accuracy"]["teacher"] > 50 and report["accuracy"]["student_fp32"] > 50
