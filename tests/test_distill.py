"""Feature (FitNets) and relation (RKD) distillation from the pipeline YAML."""
import json

import yaml

from edgedistill.cli import main
from edgedistill.store import sha256_file


def set_distill(pipeline, **distill):
    tree = yaml.safe_load(pipeline.read_text())
    tree["distill"].update(distill)
    pipeline.write_text(yaml.safe_dump(tree))


def distill_results(store):
    return {p.name: p for p in (store / "results" / "distill").iterdir()}


def test_hints_and_rkd_train_and_change_the_student(tiny_store_copy, capsys):
    pipeline, store = tiny_store_copy
    plain = distill_results(store)
    # small_cnn is an nn.Sequential: "7" is the second block's max-pool (teacher 32, student 8 channels)
    set_distill(pipeline, hints=[{"teacher": "7", "student": "7", "weight": 2.0}], rkd_distance_weight=25.0,
                rkd_angle_weight=50.0)
    assert main(["run", str(pipeline), "--store", str(store), "--until", "distill"]) == 0
    new = {k: v for k, v in distill_results(store).items() if k not in plain}
    assert len(new) == 1
    result = next(iter(new.values()))
    metrics = json.loads((result / "metrics.json").read_text())
    assert metrics["losses"] == ["kd", "hint:7->7", "rkd_distance", "rkd_angle"]
    assert metrics["test_accuracy"] > 30  # it still learns the task
    assert sha256_file(result / "model.pt") != sha256_file(next(iter(plain.values())) / "model.pt")
    # only the student is saved: the adapters stay behind
    import torch

    keys = torch.load(result / "model.pt", weights_only=True).keys()
    assert not any(k.startswith(("adapters", "student.")) for k in keys)


def test_a_wrong_layer_path_fails_before_training_with_the_nearest_name(tiny_store_copy, capsys):
    pipeline, store = tiny_store_copy
    set_distill(pipeline, hints=[{"teacher": "7", "student": "77"}])
    assert main(["run", str(pipeline), "--store", str(store), "--until", "distill"]) == 2
    err = capsys.readouterr().err
    assert "the student has no module '77' (did you mean '7'?)" in err
    assert not list((store / "work" / "distill").glob("*/checkpoint.pt"))  # no epoch was trained


def test_rkd_on_named_layers(tiny_store_copy):
    pipeline, store = tiny_store_copy
    set_distill(pipeline, rkd_angle_weight=10.0, rkd_teacher_layer="12", rkd_student_layer="12")
    assert main(["run", str(pipeline), "--store", str(store), "--until", "distill"]) == 0


def test_sweeping_temperature_reuses_the_stored_teacher_outputs(tiny_store_copy, capsys):
    import numpy as np

    from edgedistill.data import Dataset
    from edgedistill.models import load_trained
    from edgedistill.train import predict

    pipeline, store = tiny_store_copy
    capsys.readouterr()
    assert main(["run", str(pipeline), "--store", str(store), "--until", "distill", "--set", "distill.temperature=2"]) == 0
    out = capsys.readouterr().out
    status = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.split()[:1] and
              line.split()[0] in ("prepare", "finetune", "teach", "distill")}
    assert status == {"prepare": "cached", "finetune": "cached", "teach": "cached", "distill": "ran"}
    newest = max(distill_results(store).values(), key=lambda p: (p / "meta.json").stat().st_mtime)
    assert json.loads((newest / "metrics.json").read_text())["teacher"] == "cached"
    # the stored logits are the teacher's
    teach = next((store / "results" / "teach").iterdir())
    x_train, _ = Dataset.load(next((store / "results" / "prepare").iterdir())).inputs("train")
    live = predict(load_trained(next((store / "results" / "finetune").iterdir())), x_train).numpy()
    np.testing.assert_allclose(np.load(teach / "train_logits.npy"), live, rtol=1e-5, atol=1e-5)
