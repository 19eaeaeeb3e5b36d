"""`edgedistill sweep` end to end on Ray Tune with tiny models on the digits: concurrent trials share the
teacher (fine-tuned once) and leave valid results; infeasible trials are kept and marked; --publish ships
the chosen trial; a sweep killed mid-way resumes without rerunning the trials that finished."""
import json
import os
import shutil
import signal
import time

import pytest
import yaml
from conftest import ENV, cli, write_pipeline

pytestmark = pytest.mark.slow

# sizes of the shipped INT8 model: width 3 about 9 KiB, width 6 about 11 KiB; the budget lies between
MAX_SIZE_MB = 10 / 1024
FAST = {"benchmark": {"threads": 1, "warmup": 2, "runs": 20, "min_duration_s": 0.0, "profile_runs": 0,
                      "throughput_batch": 0, "rounds": 1}}


def sweep_file(folder, **fields):
    pipeline = write_pipeline(folder / "p", **FAST)
    budgets = yaml.safe_load((folder / "p" / "budgets.yaml").read_text())
    (folder / "p" / "budgets.yaml").write_text(yaml.safe_dump(dict(budgets, max_size_mb=MAX_SIZE_MB)))
    tree = {"pipeline": str(pipeline), "space": {"student.kwargs.width": {"choice": [3, 6]}}, **fields}
    path = folder / f"{fields['name']}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def sweep(path, store, *args, timeout=600):
    proc = cli("sweep", path, "--store", store, *args, env=ENV)
    out = proc.communicate(timeout=timeout)[0]
    return proc.returncode, out


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    """A grid of 3 trials (student width 2, 3 or 6), 2 at once, SIGKILLed as soon as the first trial has
    finished (the third cannot have finished then: it starts when a slot frees), then resumed with
    --publish. The first command runs in the sweep's folder with $EDGEDISTILL_MODELS relative to it.
    Returns the store, the resumed run's exit code and output, and the result files that were finished
    when it was killed (their bytes)."""
    root = tmp_path_factory.mktemp("sweep")
    path = sweep_file(root, name="grid", search="grid", concurrent=2,
                      space={"student.kwargs.width": {"choice": [2, 3, 6]}})
    store = root / "store"
    # the presets' folder given relative to where the command runs (Ray's workers run elsewhere)
    relative = dict(ENV, EDGEDISTILL_MODELS=os.path.relpath(ENV["EDGEDISTILL_MODELS"], root))
    proc = cli("sweep", path, "--store", store, env=relative, cwd=root)
    deadline = time.time() + 300
    while not list(store.glob("sweeps/grid/trials/*/result.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: p.read_bytes() for p in store.glob("sweeps/grid/trials/*/result.json")}
    code, out = sweep(path, store, "--publish")
    return store, code, out, finished


def test_trials_share_the_teacher_and_infeasible_ones_are_kept(grid_sweep):
    store, code, out, _ = grid_sweep
    assert code == 0, out
    for stage, count in (("prepare", 1), ("finetune", 1), ("teach", 1), ("distill", 3), ("bundle", 3)):
        assert len(list((store / "results" / stage).iterdir())) == count, (stage, out)
    folder = store / "sweeps" / "grid"
    summary = json.loads((folder / "trials.json").read_text())
    trials = summary["trials"]
    assert len(trials) == 3 and all(t["error"] is None for t in trials)
    for t in trials:  # the wide students miss the size budget: kept, marked, never chosen
        wide = t["params"]["student.kwargs.width"] == 6
        assert (t["status"] == "infeasible") == wide and t["feasible"] == (not wide), t
        assert wide == any(c["metric"] == "size_mb" and not c["passed"] for c in t["checks"]), t
        assert t["test"] is None or t["status"] == "front"  # the test split is read for the front only
        assert t["ran"] and "accuracy" in t and set(t["keys"]) >= {"prepare", "finetune", "bundle"}
    feasible = [t for t in trials if t["feasible"]]
    chosen = next(t for t in trials if t["trial"] == summary["chosen"])
    assert chosen["accuracy"] == max(t["accuracy"] for t in feasible)
    assert chosen["test"]["gate"] == "pass" and 0 <= chosen["test"]["accuracy"] <= 100
    for name in ("index.html", "front.png", "trials.csv", "choice.json"):
        assert (folder / name).stat().st_size > 0
    assert len((folder / "trials.csv").read_text().strip().splitlines()) == 4
    # gc keeps every trial's results, and the stages they share (run first, in the command)
    assert {p.name for p in (store / "runs").glob("sweep@grid@*.json")} == {
        *(f"sweep@grid@{t['trial']}.json" for t in trials), "sweep@grid@shared.json"}
    # the isolation of the timings is in each bundle's report
    report = json.loads((store / "results" / "bundle" / chosen["bundle_key"] / "report.json").read_text())
    assert report["benchmark"]["isolation"]["scope"] == "this machine"


def test_publish_ships_the_chosen_trial_and_the_store_stays_valid(grid_sweep):
    store, code, out, _ = grid_sweep
    summary = json.loads((store / "sweeps" / "grid" / "trials.json").read_text())
    chosen = next(t for t in summary["trials"] if t["trial"] == summary["chosen"])
    versions = sorted((store / "bundles" / "tiny").iterdir())
    assert [v.name for v in versions] == ["v1"], out  # trials publish nothing; --publish the chosen one
    manifest = json.loads((versions[0] / "manifest.json").read_text())
    assert manifest["results"] == chosen["keys"]
    verify = cli("verify", "--store", store, env=ENV)
    assert verify.wait(timeout=120) == 0, verify.communicate()[0]


def test_a_killed_sweep_resumes_without_rerunning_finished_trials(grid_sweep):
    store, code, out, finished = grid_sweep
    assert code == 0 and "resuming" in out, out
    assert 1 <= len(finished) < 3
    for path, before in finished.items():  # kept, not run again
        assert path.read_bytes() == before
        assert (path.parent / "log.txt").read_text().count("> bundle") == 1
    trials = json.loads((store / "sweeps" / "grid" / "trials.json").read_text())["trials"]
    assert len(trials) == 3 and all(t.get("accuracy") is not None for t in trials), out


def test_gc_keeps_a_trials_results_while_the_sweeps_folder_has_it(grid_sweep):
    store = grid_sweep[0]
    summary = json.loads((store / "sweeps" / "grid" / "trials.json").read_text())
    other = next(t for t in summary["trials"] if t["trial"] != summary["chosen"])
    dry = cli("gc", "--store", store, "--dry-run", env=ENV).communicate(timeout=120)[0]
    assert "results/distill" not in dry and "runs/" not in dry, dry
    shutil.rmtree(store / "sweeps" / "grid" / "trials" / other["trial"])
    dry = cli("gc", "--store", store, "--dry-run", env=ENV).communicate(timeout=120)[0]
    assert f"would remove runs/sweep@grid@{other['trial']}.json" in dry, dry
    assert f"would remove results/distill/{other['keys']['distill']}" in dry, dry
    assert f"results/finetune/{other['keys']['finetune']}" not in dry  # the other trials still use the teacher
