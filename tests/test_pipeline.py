"""Strict pipeline config: unknown keys, wrong types, overrides, paths, presets."""

import pytest
import yaml

from edgedistill.core.errors import ConfigError
from edgedistill.models.presets import load_preset
from edgedistill.pipeline import load_pipeline

from conftest import write_pipeline


def test_defaults_and_overrides_are_typed(tmp_path):
    p = load_pipeline(write_pipeline(tmp_path), ["distill.temperature=2", "benchmark.threads=4", "quantize.per_channel=false"])
    assert p.distill.temperature == 2.0 and isinstance(p.distill.temperature, float)
    assert p.benchmark.threads == 4 and p.quantize.per_channel is False
    assert p.export.opset >= 17


def test_unknown_key_names_it_and_suggests_the_nearest(tmp_path):
    path = write_pipeline(tmp_path, distill={"temprature": 3})
    with pytest.raises(ConfigError, match=r"unknown key 'distill.temprature' \(did you mean 'temperature'\?\)"):
        load_pipeline(path)


def test_unknown_override_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'quantize.calibration_sample' \(did you mean 'calibration_samples'\?\)"):
        load_pipeline(write_pipeline(tmp_path), ["quantize.calibration_sample=10"])


@pytest.mark.parametrize("override, key", [
    ("distill.temperature=hot", "distill.temperature"),
    ("teacher.epochs=2.5", "teacher.epochs"),
    ("benchmark.threads='3'", "benchmark.threads"),
    ("data.kind=cifar", "data.kind"),
    ("distill.alpha=1.5", "distill.alpha"),
    ("quantize.recipes=[qdq_u8s9]", "quantize.recipes"),
    ("quantize.reduce_range=maybe", "quantize.reduce_range"),
    ("qat.recipe=qdq_u8s9", "qat.recipe"),
])
def test_wrong_type_or_value_names_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        load_pipeline(write_pipeline(tmp_path), [override])
    assert str(e.value).count(key) == 1  # one clause, not one per member of a union


def test_paths_are_relative_to_the_pipeline_file(tmp_path):
    path = write_pipeline(tmp_path / "sub", data={"kind": "imagefolder", "train_dir": "images/train", "channels": 1})
    p = load_pipeline(path)
    assert p.data.train_dir == (tmp_path / "sub" / "images" / "train").resolve()
    assert p.budgets == (tmp_path / "sub" / "budgets.yaml").resolve()


def test_imagefolder_needs_train_dir(tmp_path):
    with pytest.raises(ConfigError, match="needs data.train_dir"):
        load_pipeline(write_pipeline(tmp_path, data={"kind": "imagefolder"}))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_pipeline(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n  seed: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline(bad)


def test_yaml_object_tags_are_refused(tmp_path):
    bad = tmp_path / "evil.yaml"
    bad.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pipeline(bad)


def test_presets_by_name_and_unknown_name_suggestion():
    assert load_preset("mobilenet_v2_imagenet", "teachers").arch == "torchvision:mobilenet_v2"
    assert load_preset("small_cnn", "students").kwargs["width"] == 32
    with pytest.raises(ConfigError, match="did you mean 'small_cnn'"):
        load_preset("smal_cnn", "students")


def test_preset_file_path_weights_resolve_against_the_preset(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"arch": "torchvision:resnet18", "weights": {"file": "w.pt"}}))
    assert load_preset(str(tmp_path / "m.yaml"), "teachers").weights.file == tmp_path / "w.pt"
