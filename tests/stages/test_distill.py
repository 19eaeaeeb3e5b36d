"""Feature (FitNets) and relation (RKD) distillation from the pipeline YAML."""
import json

import yaml

from edgedistill.cli import main
from edgedistill.core.files import sha256_file


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


def test_plan_checks_layer_paths_before_anything_runs(tiny_store_copy, capsys):
    """Validate before spending compute: a wrong RKD layer fails plan, and run before its first stage."""
    pipeline, store = tiny_store_copy
    set_distill(pipeline, rkd_angle_weight=1.0, rkd_teacher_layer="99")
    assert main(["plan", str(pipeline), "--store", str(store)]) == 2
    assert "the teacher has no module '99'" in capsys.readouterr().err
    fresh = store.parent / "fresh"
    assert main(["run", str(pipeline), "--store", str(fresh)]) == 2
    assert not (fresh / "results").exists() or not any((fresh / "results").iterdir())


def test_rkd_on_named_layers(tiny_store_copy):
    pipeline, store = tiny_store_copy
    set_distill(pipeline, rkd_angle_weight=10.0, rkd_teacher_layer="12", rkd_student_layer="12")
    assert main(["run", str(pipeline), "--store", str(store), "--until", "distill"]) == 0


def test_sweeping_temperature_reuses_the_stored_teacher_outputs(tiny_store_copy, capsys):
    import numpy as np

    from edgedistill.data.dataset import Dataset
    from edgedistill.models.saved import load_trained
    from edgedistill.training.loop import predict

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


def _metrics_of_newest(store):
    newest = max(distill_results(store).values(), key=lambda p: (p / "meta.json").stat().st_mtime)
    return json.loads((newest / "metrics.json").read_text())


def test_augmented_distillation_runs_the_teacher_on_the_students_view(tiny_store_copy, monkeypatch):
    """With augmentation the stored logits would be of other images: the teacher runs on every batch, on
    exactly the tensors the student gets (consistent teaching)."""
    import torch

    import edgedistill.stages.distill as distill

    pipeline, store = tiny_store_copy
    seen = []
    real_kd = distill.kd_loss

    def spy(student_logits, teacher_logits, *args, **kw):
        seen.append(teacher_logits)
        return real_kd(student_logits, teacher_logits, *args, **kw)

    monkeypatch.setattr(distill, "kd_loss", spy)
    inputs_of_teacher, inputs_of_student = [], []
    real_fit = distill.fit

    def fit_spy(model, train, val, **kw):
        loss_fn = kw["loss_fn"]

        def wrapped(logits, x, y, idx):
            inputs_of_student.append(x)
            return loss_fn(logits, x, y, idx)

        kw["loss_fn"] = wrapped
        return real_fit(model, train, val, **kw)

    monkeypatch.setattr(distill, "fit", fit_spy)
    real_load = distill.models.load_trained

    def load_spy(path):
        m = real_load(path)
        m.register_forward_pre_hook(lambda mod, args: inputs_of_teacher.append(args[0]) if mod.training is False and torch.is_grad_enabled() is False else None)
        return m

    monkeypatch.setattr(distill.models, "load_trained", load_spy)
    assert main(["run", str(pipeline), "--store", str(store), "--until", "distill", "--set", "distill.augment=strong",
                 "--set", "distill.mixup_alpha=0.2"]) == 0
    metrics = _metrics_of_newest(store)
    assert metrics["teacher"] == "online"
    # the teacher's inputs in training steps are the student's (augmented, mixed) inputs, tensor for tensor
    steps = len(inputs_of_student)
    assert steps > 0
    training_calls = [x for x in inputs_of_teacher if any(x is s for s in inputs_of_student)]
    assert len(training_calls) == steps
    assert metrics["test_accuracy"] > 30


def test_few_labels_distill_on_the_unlabeled_rest(tiny_store_copy):
    """labeled_per_class: the teacher sees 10 labels a class; the student every training image, with
    the labels hidden from all but those; alpha 0 (student alone) uses the labeled ones only."""
    pipeline, store = tiny_store_copy
    few = ["--set", "data.labeled_per_class=10"]
    assert main(["run", str(pipeline), "--store", str(store), "--until", "distill", *few]) == 0
    (prep,) = [p for p in (store / "results" / "prepare").iterdir()
               if json.loads((p / "metrics.json").read_text())["unlabeled_train"] > 0]
    prep_m = json.loads((prep / "metrics.json").read_text())
    assert prep_m["unlabeled_train"] == prep_m["samples"]["train"] - 100
    teacher = max((store / "results" / "finetune").iterdir(), key=lambda p: (p / "meta.json").stat().st_mtime)
    assert json.loads((teacher / "metrics.json").read_text())["train_images"] == 100
    kd = _metrics_of_newest(store)
    assert kd["train_images"] == prep_m["samples"]["train"] and kd["unlabeled_train_images"] == prep_m["unlabeled_train"]
    assert main(["run", str(pipeline), "--store", str(store), "--until", "distill", *few, "--set", "distill.alpha=0"]) == 0
    alone = _metrics_of_newest(store)
    assert alone["train_images"] == 100 and alone["unlabeled_train_images"] == 0 and alone["losses"][0] == "ce"


def test_unlabeled_folder_joins_the_transfer_set(tiny_store_copy, tmp_path):
    from PIL import Image

    pipeline, store = tiny_store_copy
    folder = tmp_path / "device_images" / "day1"
    folder.mkdir(parents=True)
    for i in range(5):
        Image.new("L", (20, 20), color=40 * i).save(folder / f"frame{i}.png")
    (folder / "notes.txt").write_text("not an image")
    assert main(["run", str(pipeline), "--store", str(store), "--until", "distill",
                 "--set", f"data.unlabeled_dir={folder.parent}"]) == 0
    kd = _metrics_of_newest(store)
    assert kd["unlabeled_train_images"] == 5


def test_self_distillation_and_multi_teacher(tiny_store_copy):
    """student.preset: teacher trains the teacher's architecture; extra_teachers averages in another
    trained teacher (here the same one: the stored logits of both are then equal)."""
    import numpy as np

    pipeline, store = tiny_store_copy
    assert main(["run", str(pipeline), "--store", str(store), "--until", "distill", "--set", "student.preset=teacher"]) == 0
    same = _metrics_of_newest(store)
    assert same["params"] == same["teacher_params"]
    teacher = next((store / "results" / "finetune").iterdir())
    assert main(["run", str(pipeline), "--store", str(store), "--until", "distill",
                 "--set", f"distill.extra_teachers=[{{model: {teacher}, weight: 0.5}}]"]) == 0
    multi = _metrics_of_newest(store)
    assert multi["teachers"] == 2
    teach = max((store / "results" / "teach").iterdir(), key=lambda p: (p / "meta.json").stat().st_mtime)
    np.testing.assert_array_equal(np.load(teach / "extra_0_train_logits.npy"), np.load(teach / "train_logits.npy"))
    assert main(["run", str(pipeline), "--store", str(store), "--until", "distill",
                 "--set", "distill.extra_teachers=[{model: /nonexistent}]"]) == 2


def test_dist_response_loss_from_the_yaml(tiny_store_copy):
    pipeline, store = tiny_store_copy
    assert main(["run", str(pipeline), "--store", str(store), "--until", "distill", "--set", "distill.response=dist"]) == 0
    metrics = _metrics_of_newest(store)
    assert metrics["losses"] == ["dist"] and metrics["teacher"] == "cached"
    assert metrics["test_accuracy"] > 30  # it learns the task from the teacher's relations


def test_choose_student_rule():
    """The student alone ships only when the distilled one is worse beyond the validation split's noise."""
    from edgedistill.stages.export import choose_student

    teacher, distilled = {"val_accuracy": 90.0}, {"val_accuracy": 85.0, "test_accuracy": 84.0}
    alone = {"enabled": True, "val_accuracy": 85.4, "test_accuracy": 86.0}
    noise = {"drop": 0.4, "ci_low": -0.5, "ci_high": 1.3}  # the distilled student's drop against the alone one
    kept = choose_student(teacher, distilled, alone, noise)
    assert kept["shipped"] == "distilled" and kept["warning"] is None and kept["alone"]["test_accuracy"] == 86.0
    assert choose_student(teacher, distilled, alone, dict(noise, ci_low=0.1))["shipped"] == "alone"
    weak = choose_student({"val_accuracy": 85.4}, distilled, alone, noise)
    assert "teacher (85.40% on validation) is not better than the student trained alone (85.40%)" in weak["warning"]
    assert "teacher.image_size" in weak["warning"]
    off = choose_student(teacher, distilled, {"enabled": False}, None)
    assert off["shipped"] == "distilled" and off["alone"] is None and off["warning"] is None


def test_a_weak_teacher_loses_to_the_student_alone_and_the_report_says_so(tiny_store_copy, capsys):
    """A teacher made weak on purpose (one epoch at a learning rate too small to learn anything) and a
    student that learns only from it (alpha 1): the student trained alone ships, and the run, report.json,
    the model card and the page say why."""
    pipeline, store = tiny_store_copy
    tree = yaml.safe_load(pipeline.read_text())
    tree["teacher"].update(epochs=1, lr=1e-6)
    tree["distill"].update(alpha=1.0)
    pipeline.write_text(yaml.safe_dump(tree))
    capsys.readouterr()
    assert main(["run", str(pipeline), "--store", str(store)]) == 0
    out = capsys.readouterr()
    assert "the one trained alone is shipped" in out.out and "warning: the fine-tuned teacher" in out.out
    assert "baseline" in out.out and "cached" in out.out.split("baseline")[1].splitlines()[0]  # not retrained
    bundle = max((store / "bundles" / "tiny").iterdir(), key=lambda p: int(p.name[1:]))
    report = json.loads((bundle / "report.json").read_text())
    d = report["distillation"]
    assert d["shipped"] == "alone" and d["alone"]["val_accuracy"] > d["distilled"]["val_accuracy"]
    assert report["accuracy"]["student_alone"] == d["alone"]["test_accuracy"] > 50
    assert abs(report["accuracy"]["student_fp32"] - d["alone"]["test_accuracy"]) < 0.5  # the exported one is the alone one
    assert "Shipped: the student trained alone" in (bundle / "MODEL_CARD.md").read_text()
    assert "Warning: the fine-tuned teacher" in (bundle / "report.html").read_text()


def test_baseline_false_trains_no_baseline(tiny_store_copy, capsys):
    pipeline, store = tiny_store_copy
    set_distill(pipeline, baseline=False)
    capsys.readouterr()
    assert main(["run", str(pipeline), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "off (distill.baseline: false)" in out
    assert "distill    cached" in out  # distill.baseline is not part of the distilled student's key
    bundle = max((store / "bundles" / "tiny").iterdir(), key=lambda p: int(p.name[1:]))
    report = json.loads((bundle / "report.json").read_text())
    assert report["distillation"]["alone"] is None and "student_alone" not in report["accuracy"]


def test_student_kwargs_are_the_size_axis_over_the_preset(tmp_path):
    """student.kwargs replace the preset's constructor arguments (the size a sweep searches); empty, the
    preset is unchanged, so are the cache keys."""
    from conftest import write_pipeline

    from edgedistill.pipeline import load_pipeline
    from edgedistill.stages.distill import student_preset

    path = write_pipeline(tmp_path)
    plain = student_preset(load_pipeline(path))
    assert plain.kwargs == {"width": 4, "grid": 1}  # tests/fixtures/models/students/tiny_student.yaml
    wider = student_preset(load_pipeline(path, values={"student.kwargs.width": 8}))
    assert wider.kwargs == {"width": 8, "grid": 1} and wider.arch == plain.arch
    assert student_preset(load_pipeline(path, values={"student.kwargs.width": 4})) == plain
