"""Every architecture family the README names works, or is refused up front (issue 17, kind 6).

- Every torchvision classification model (torchvision.models.list_models): built as a pretrained
  preset is (the original classifier, then the head swap), and every fine-tuning strategy finds what
  to train; the smallest model of each kind (its set of module types: ResNet-18's basic blocks and
  ResNet-50's bottlenecks are two kinds) trains and predicts at the smallest input it accepts (the
  forward passes are most of the cost: all 80 took 85 s of the suite's 2 cores). Checked on PyTorch's meta device (shapes only), so even ViT-H/14's 632M
  parameters cost nothing; what a model cannot do at the configured size is refused by `plan`
  (models.check_runs).
- One model of each architecture class that needs its own handling (auxiliary outputs, a 1x1
  convolution head, attention): real weights loaded from a file, one training step through the
  fine-tuning strategy, the export and ONNX Runtime parity. The rest of the classes' real export is
  benchmarks/architecture_coverage.py (about 15 s an export here; RESULTS.md has the table).
- Every transformers model type edgedistill takes (models.TRANSFORMER_LAYOUTS), as a tiny random
  config: a training step, partial fine-tuning, a layer-subset student, optimum's export with the
  fusions; the refused types are refused by plan with their reason.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from edgedistill import models
from edgedistill.cli import main
from edgedistill.core.errors import ConfigError
from edgedistill.data.dataset import for_kind
from edgedistill.models.presets import ModelPreset
from edgedistill.stages.export import parity
from edgedistill.stages.finetune import TeacherConfig, strategy

from conftest import write_pipeline

TORCHVISION = torchvision.models.list_models(module=torchvision.models)
STRATEGIES = ("full", "partial", "linear_probe", "gradual")


def pretrained_preset(arch: str, file: Path | str = "weights.pt") -> ModelPreset:
    """A preset with weights from a file: build() puts the new head on the original classifier."""
    return ModelPreset(arch=arch, weights={"file": str(file)})


def smallest_size(model: torch.nn.Module, classes: int) -> int:
    return next(s for s in models.CHECK_SIZES if models.run_problem(model, 3, s, classes) is None)


def meta_check(name: str) -> tuple[str | None, frozenset, int]:
    """What is wrong with one torchvision model's head and strategies (None: nothing), its kind (the set
    of its module types) and its parameter count; see the test below."""
    try:
        model = check_torchvision(name)
    except BaseException as e:  # an assertion, or any error: reported with the model's name
        return f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}", frozenset(), 0
    return None, frozenset(type(m).__name__ for m in model.modules()), sum(p.numel() for p in model.parameters())


def size_check(name: str) -> str | None:
    """Why a torchvision model trains at no size up to 299 px (None: it does)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = models.structure(pretrained_preset(f"torchvision:{name}"), 7, 3)
        assert smallest_size(model, 7) <= 299  # StopIteration: no size from 8 to 512 px works
    except BaseException as e:
        return f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return None


def test_every_torchvision_classifier_builds_and_each_kind_trains_at_its_smallest_size():
    """All 80 built, headed and frozen per strategy; the smallest model of each kind of blocks run at its
    smallest size. In two processes (2 cores): shapes on the meta device are Python-bound."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2) as pool:
        checked = dict(zip(TORCHVISION, pool.map(meta_check, TORCHVISION, chunksize=1)))
        problems = [p for p, _, _ in checked.values() if p]
        smallest: dict[frozenset, tuple[int, str]] = {}
        for name, (_, kind, params) in checked.items():
            if kind and (kind not in smallest or params < smallest[kind][0]):
                smallest[kind] = (params, name)
        representatives = sorted(name for _, name in smallest.values())
        problems += [p for p in pool.map(size_check, representatives, chunksize=1) if p]
    assert len(TORCHVISION) >= 80 and len(representatives) >= 22 and not problems, "\n".join(problems)


def check_torchvision(name: str) -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = models.structure(pretrained_preset(f"torchvision:{name}"), 7, 3)
    head = models.last_head(model)
    assert models.is_head(model.get_submodule(head))
    for s in STRATEGIES:
        groups, epoch_start = strategy(model, head, TeacherConfig(strategy=s), pretrained=True)
        frozen = epoch_start(1)
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        head_params = {id(p) for p in model.get_submodule(head).parameters()}
        assert head_params <= trainable and {id(p) for g in groups for p in g["params"]} >= trainable
        if s == "linear_probe":
            norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
            assert trainable == head_params and len(frozen) == len(norms)  # the backbone's BatchNorm statistics stay
        elif s in ("partial", "gradual"):
            assert head_params < trainable < {id(p) for p in model.parameters()}
    return model


def plan_with_teacher(tmp_path, capsys, preset_yaml: str, size: int) -> str:
    """`edgedistill plan` of a tiny digits pipeline with this teacher preset at size px: its error line."""
    p = write_pipeline(tmp_path / "p", data={"kind": "digits", "image_size": size, "channels": 3,
                                             "mean": [0.5] * 3, "std": [0.5] * 3})
    preset = tmp_path / "teacher.yaml"
    preset.write_text(preset_yaml)
    assert main(["plan", str(p), "--store", str(tmp_path / "s"), "--set", f"teacher.preset={preset}"]) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_plan_refuses_a_size_a_model_cannot_take_and_names_the_ones_it_can(tmp_path, capsys):
    line = plan_with_teacher(tmp_path, capsys, "arch: torchvision:alexnet\n", 16)
    assert "the teacher (torchvision:alexnet) cannot train on 16x16 inputs" in line
    assert "it runs at 64, 75, 96" in line and "teacher.image_size" in line


def test_a_model_returning_auxiliary_outputs_is_refused_in_plan(tmp_path, capsys):
    line = plan_with_teacher(tmp_path, capsys, "arch: torchvision:googlenet\nkwargs: {aux_logits: true}\n", 32)
    assert "in training mode it returns GoogLeNetOutputs, not one tensor of logits" in line


# One of each class that needs handling of its own, small enough for the suite (export dominates).
REAL = {"googlenet": 16, "squeezenet1_1": 32}


@pytest.mark.parametrize("name", REAL)
def test_class_representatives_load_weights_train_and_export(name, tmp_path):
    torch.manual_seed(0)
    kwargs = {"aux_logits": True, "init_weights": True} if name == "googlenet" else {}  # a file with auxiliary weights
    torch.save(torchvision.models.get_model(name, **kwargs).state_dict(), tmp_path / "w.pt")
    model, head = models.build(pretrained_preset(f"torchvision:{name}", tmp_path / "w.pt"), 5, 3, seed=0)
    size = REAL[name]
    groups, epoch_start = strategy(model, head, TeacherConfig(strategy="partial"), pretrained=True)
    frozen = epoch_start(0)
    model.train()
    for m in frozen:
        m.eval()
    before = {k: v.clone() for k, v in model.get_submodule(head).state_dict().items()}
    optimizer = torch.optim.AdamW(groups)
    x = torch.randn(4, 3, size, size)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    assert any(not torch.equal(before[k], v) for k, v in model.get_submodule(head).state_dict().items())
    model.eval()
    for_kind("digits").export(model, x[:2].numpy(), tmp_path / "m.onnx", 18)
    p = parity(model, tmp_path / "m.onnx", torch.randn(3, 3, size, size).numpy())
    assert p["max_abs_diff"] < 1e-3 and p["top1_agreement"] == 1.0


# ---- text: BERT-family sequence classifiers --------------------------------------------------------

def tiny_hf(folder: Path, model_type: str, weights: bool = True) -> Path:
    """A tiny random model of this type saved as a model folder (config.json only without weights)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.for_model(model_type, vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                  intermediate_size=37, max_position_embeddings=128)
    if model_type == "albert":
        config.embedding_size = 32
    if weights:
        torch.manual_seed(0)
        AutoModelForSequenceClassification.from_config(config).save_pretrained(str(folder))
    else:
        config.save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("model_type", list(models.TRANSFORMER_LAYOUTS))
def test_every_supported_transformer_type_trains_distills_a_layer_subset_and_exports_fused(model_type, tmp_path):
    pytest.importorskip("optimum")
    folder = tiny_hf(tmp_path / "hf", model_type)
    preset = ModelPreset(arch="transformers:auto", weights={"file": str(folder)})
    models.check_runs(preset, 3, 1, None, "teacher")
    model, head = models.build(preset, 3, 1, seed=0)
    ids = torch.randint(1000, 2000, (4, 12))
    ids[0, 8:] = 0
    groups, epoch_start = strategy(model, head, TeacherConfig(strategy="partial"), pretrained=True)
    epoch_start(0)
    model.train()
    F.cross_entropy(model(ids), torch.tensor([0, 1, 2, 0])).backward()
    torch.optim.AdamW(groups).step()
    attention = model.get_submodule(model.last_attention())
    assert all(hasattr(attention, name) for name in model.attention_projections())  # MiniLM's relation taps
    subset = ModelPreset(arch="transformers:auto", weights={"file": str(folder)}, kwargs={"num_layers": 2})
    if models.TRANSFORMER_LAYOUTS[model_type][0] is None:  # one shared layer: nothing to take a subset of
        with pytest.raises(ConfigError, match="shares one layer's weights"):
            models.check_runs(subset, 3, 1, None, "student")
    else:
        student, _ = models.build(subset, 3, 1, seed=0)
        assert len(student.layers()) == 2 and student.eval()(ids).shape == (4, 3)
    model.eval()
    info = for_kind("csv").export(model, ids[:2].numpy(), tmp_path / "m.onnx", 18, log=lambda m: None)
    assert {"Attention", "SkipLayerNormalization"} <= set(info["fused_operators"])


@pytest.mark.parametrize("model_type", ["deberta-v2", "mpnet", "ernie", "funnel"])
def test_unsupported_transformer_types_are_refused_by_plan_with_the_reason(model_type, tmp_path, capsys):
    pytest.importorskip("transformers")
    from transformers import AutoConfig

    folder = tmp_path / "hf"
    AutoConfig.for_model(model_type).save_pretrained(str(folder))
    preset = tmp_path / "t.yaml"
    preset.write_text(f"arch: transformers:auto\nweights: {{file: {folder}}}\n")
    p = write_pipeline(tmp_path / "p", data={"kind": "csv", "csv_file": str(tmp_path / "d.csv"), "max_length": 16})
    (tmp_path / "d.csv").write_text("text,label\na,x\nb,y\n")
    assert main(["plan", str(p), "--store", str(tmp_path / "s"), "--set", f"teacher.preset={preset}"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"transformers model type '{model_type}' cannot be used" in line
    assert models.TRANSFORMER_REFUSED.get(model_type, "not among the model types") in line


@pytest.mark.parametrize("model_type", ["deberta-v2", "ernie"])
def test_the_refusal_reasons_are_still_true(model_type, tmp_path):
    """One type of each reason, exported the way edgedistill would: it fails as the table says."""
    pytest.importorskip("optimum")
    from transformers import AutoModelForSequenceClassification

    from edgedistill.core.errors import StageError
    from edgedistill.models.transformers import export_transformer

    hf = AutoModelForSequenceClassification.from_pretrained(str(tiny_hf(tmp_path / "hf", model_type)))
    reason = {"deberta-v2": "did not fuse Attention", "ernie": "optimum's ONNX export failed"}[model_type]
    with pytest.raises(StageError, match=reason):
        export_transformer(hf, tmp_path / "m.onnx", 18, log=lambda m: None)
