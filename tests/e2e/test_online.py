"""Online distillation (distill.mode: online): teacher and student train together in the distill stage;
finetune and teach are skipped; export, quantization and the bundle read the teacher from its result."""
import json
from pathlib import Path

import pytest

from conftest import ENV, cli, kill_at_first_checkpoint, run_uninterrupted, write_pipeline
from edgedistill.cli import main


def only_result(store: Path, stage: str) -> Path:
    (result,) = (store / "results" / stage).iterdir()
    return result


def test_online_mode_runs_end_to_end(tmp_path, capsys):
    pipeline = write_pipeline(tmp_path / "p", distill={"mode": "online"})
    store = tmp_path / "store"
    assert main(["plan", str(pipeline), "--store", str(store)]) == 0
    plan = capsys.readouterr().out
    assert "finetune   skipped" in plan and "distill.mode online: the teacher trains with the student in distill" in plan
    assert "teach      skipped" in plan

    assert main(["run", str(pipeline), "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "online: student test acc" in out
    assert not (store / "results" / "finetune").exists() and not (store / "results" / "teach").exists()

    result = only_result(store, "distill")
    student, teacher = (json.loads((f / "metrics.json").read_text()) for f in (result, result / "teacher"))
    assert student["mode"] == "online" and teacher["trained_by"] == "distill (online)"
    assert (result / "model.pt").is_file() and (result / "teacher" / "model.pt").is_file()
    # both models' curves: 3 epochs each, the teacher learning (it starts from scratch here)
    assert [h["epoch"] for h in student["history"]] == [h["epoch"] for h in teacher["history"]] == [1, 2, 3]
    assert teacher["history"][-1]["val_accuracy"] > teacher["history"][0]["val_accuracy"]
    assert teacher["test_accuracy"] == student["teacher_test_accuracy"] > 50

    bundle = store / "bundles" / "tiny" / "v1"
    report = json.loads((bundle / "report.json").read_text())
    assert report["distillation"]["mode"] == "online"
    assert report["distillation"]["teacher_val_accuracy"] == teacher["val_accuracy"]
    assert "Online distillation" in (bundle / "MODEL_CARD.md").read_text()
    assert "Online distillation" in (bundle / "report.html").read_text()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "finetune" not in manifest["results"] and manifest["results"]["distill"] == result.name
    # the exported teacher is the one trained here
    export = json.loads((only_result(store, "export") / "metrics.json").read_text())
    assert export["parity"]["teacher"]["params"] == teacher["params"]
    assert main(["verify", "--store", str(store)]) == 0

    # rerun: everything cached; offline mode afterwards needs finetune and teach, and reuses prepare
    assert main(["run", str(pipeline), "--store", str(store)]) == 0
    assert main(["plan", str(pipeline), "--store", str(store), "--set", "distill.mode=offline"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[-11:] if line.strip()}
    assert rows["prepare"] == "cached" and rows["finetune"] == "will" and rows["distill"] == "will"
    assert main(["run", str(pipeline), "--store", str(store), "--until", "finetune"]) == 2
    assert "stage 'finetune' does not run in this pipeline: distill.mode online" in capsys.readouterr().err


def test_online_settings_leave_offline_keys_alone(tmp_path):
    """distill.mode offline (the default) reads nothing online mode adds: every stage's keyed config is the
    same with distill.teacher_alpha set (a key is its keyed config and its inputs' content)."""
    from edgedistill.core.stage import active
    from edgedistill.pipeline import load_pipeline
    from edgedistill.stages import STAGES

    path = write_pipeline(tmp_path / "p")
    default, explicit = load_pipeline(path), load_pipeline(path, ["distill.mode=offline", "distill.teacher_alpha=0.2"])
    stages = active(STAGES, default)[0]
    assert [s.name for s in stages] == [s.name for s in active(STAGES, explicit)[0]] and len(stages) == 10
    for s in stages:
        assert s.configure(default).model_dump(mode="json", exclude=s.key_exclude) == \
            s.configure(explicit).model_dump(mode="json", exclude=s.key_exclude), s.name


@pytest.mark.parametrize("options", [{"augment": "light", "teacher_alpha": 0.3}], ids=["augmented"])
def test_sigkill_during_online_distill_then_resume_matches_uninterrupted(tmp_path, options):
    """Both models resume from the epoch checkpoint to exactly the weights of an uninterrupted run (that one
    in this process, on one thread as the others: bitwise-equal results need the same thread count)."""
    pipeline = write_pipeline(tmp_path / "p", distill={"mode": "online", "epochs": 4, **options})
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = cli("run", pipeline, "--store", killed, "--until", "distill", env=ENV)
    assert kill_at_first_checkpoint(proc, killed / "work" / "distill"), "the run finished before it could be killed"
    assert not (killed / "results" / "distill").exists()
    resumed = cli("run", pipeline, "--store", killed, "--until", "distill", env=ENV)
    log = resumed.communicate()[0]
    assert resumed.returncode == 0, log
    assert "resuming after epoch" in log

    assert run_uninterrupted("run", pipeline, "--store", clean, "--until", "distill") == 0
    a, b = only_result(killed, "distill"), only_result(clean, "distill")
    assert a.name == b.name
    for f in ("model.pt", "metrics.json", "teacher/model.pt", "teacher/metrics.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
