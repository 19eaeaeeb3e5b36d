"""SIGKILL in the middle of distillation, then run again: it resumes from the last epoch checkpoint
and ends with exactly the weights and metrics of a run that was never interrupted (CPU, same seed)."""
import json
import shutil
from pathlib import Path

import pytest

from conftest import ENV, cli, kill_at_first_checkpoint, run_uninterrupted, write_pipeline


def distill_result(store: Path) -> Path:
    results = list((store / "results" / "distill").iterdir()) if (store / "results" / "distill").exists() else []
    assert len(results) == 1, results
    return results[0]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A store with the tiny pipeline run up to finetune (distillation settings are not in its keys)."""
    root = tmp_path_factory.mktemp("resume")
    pipeline = write_pipeline(root / "p")
    assert cli("run", pipeline, "--store", root / "store", "--until", "finetune", env=ENV).wait() == 0
    return root / "store"


@pytest.mark.parametrize("options", [{"augment": "strong", "mixup_alpha": 0.2, "workers": 2}],
                         ids=["augmented-2-workers"])
def test_sigkill_during_distill_then_resume_matches_uninterrupted(tmp_path, options, finetuned):
    """With augmentation, mixup and loader worker processes: every random draw of an epoch replays from
    its seed. (The in-process loader resumes in test_online's and test_qat's SIGKILL tests.)"""
    # enough epochs that the kill, as soon as the first checkpoint is written, lands before the last one
    pipeline = write_pipeline(tmp_path / "p", distill={"epochs": 4, **options})
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    env = ENV
    shutil.copytree(finetuned, killed)
    shutil.copytree(finetuned, clean)

    proc = cli("run", pipeline, "--store", killed, "--until", "distill", env=env)
    work = killed / "work" / "distill"
    kill_at_first_checkpoint(proc, work)
    assert not (killed / "results" / "distill").exists(), "the run finished before it could be killed"
    checkpoint = next(work.glob("*/checkpoint.pt"))
    assert checkpoint.is_file()

    resumed = cli("run", pipeline, "--store", killed, "--until", "distill", env=env)
    log = resumed.communicate()[0]
    assert resumed.returncode == 0, log
    assert "resuming after epoch" in log
    assert not checkpoint.parent.exists()  # checkpoints go once the result is sealed

    assert run_uninterrupted("run", pipeline, "--store", clean, "--until", "distill") == 0
    a, b = distill_result(killed), distill_result(clean)
    assert a.name == b.name  # same cache key
    assert (a / "model.pt").read_bytes() == (b / "model.pt").read_bytes()
    ma, mb = json.loads((a / "metrics.json").read_text()), json.loads((b / "metrics.json").read_text())
    assert ma["test_accuracy"] == mb["test_accuracy"]
    assert ma == mb
