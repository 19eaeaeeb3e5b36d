"""Runner and store with small fake stages: hit, miss, invalidation, crash, force, until, locks, bundles."""
import dataclasses
import hashlib
import json
import signal
import subprocess
import sys
import textwrap

import pytest

from edgedistill.core.config import Strict
from edgedistill.core.errors import ConfigError, StoreBusy
from edgedistill.core.runner import Runner
from edgedistill.core.stage import Stage, active
from edgedistill.core.store import Store
from edgedistill.pipeline import Pipeline

CALLS: list[str] = []


def make_stages(fail_on: str | None = None):
    """a -> b -> c, reading pipeline values so config changes can be tested."""

    def stage_a(cfg, inputs, out, ctx):
        CALLS.append("a")
        (out / "a.txt").write_text(f"seed {cfg.seed}")
        return {"n": 1}

    def stage_b(cfg, inputs, out, ctx):
        CALLS.append("b")
        if fail_on == "b":
            raise RuntimeError("boom")
        (out / "b.txt").write_text((inputs["A"] / "a.txt").read_text() + f" T={cfg.temperature}")
        return {"n": 2}

    def stage_c(cfg, inputs, out, ctx):
        CALLS.append("c")
        (out / "c.txt").write_text((inputs["B"] / "b.txt").read_text() + f" threads={cfg.threads}")
        return {"n": 3}

    return [
        Stage("c", 1, ("B",), "C", lambda p: p.benchmark, stage_c),
        Stage("a", 1, (), "A", lambda p: _Seed(seed=p.seed), stage_a),
        Stage("b", 1, ("A",), "B", lambda p: p.distill, stage_b, key_exclude={"device"}),
    ]


class _Seed(Strict):
    seed: int


def pipe(**over) -> Pipeline:
    tree = {"name": "t", **over}
    return Pipeline.model_validate(tree)


@pytest.fixture(autouse=True)
def clear_calls():
    CALLS.clear()


def statuses(report):
    return {s.stage: s.status for s in report.statuses}


def test_order_comes_from_declared_inputs(tmp_path):
    assert [s.name for s in active(make_stages(), pipe())[0]] == ["a", "b", "c"]


def alternative_stages():
    """a -> b -> c as make_stages, plus "ab", which writes B with A as its part when distill.mode is
    online (a and b are skipped then), as online distillation's stage writes the student and the teacher."""

    def stage_ab(cfg, inputs, out, ctx):
        CALLS.append("ab")
        (out / "part").mkdir()
        (out / "part" / "a.txt").write_text("made by ab")
        (out / "b.txt").write_text(f"ab T={cfg.temperature}")
        return {"n": 4}

    def stage_d(cfg, inputs, out, ctx):  # reads both artifacts
        CALLS.append("d")
        (out / "d.txt").write_text((inputs["A"] / "a.txt").read_text() + " | " + (inputs["B"] / "b.txt").read_text())
        return {"n": 5}

    online = lambda p: p.distill.mode == "online"
    a, b, c = sorted(make_stages(), key=lambda s: s.name)
    return [dataclasses.replace(a, skip=lambda p: "ab writes it" if online(p) else None),
            dataclasses.replace(b, skip=lambda p: "ab writes it" if online(p) else None),
            Stage("ab", 1, (), "B", lambda p: p.distill, stage_ab, parts={"A": "part"},
                  skip=lambda p: None if online(p) else "offline"),
            c, Stage("d", 1, ("A", "B"), "D", lambda p: _Seed(seed=p.seed), stage_d)]


def test_a_stage_skipped_in_one_mode_and_an_artifact_that_is_a_part(tmp_path):
    store = Store(tmp_path)
    runner = Runner(store, alternative_stages(), progress=False)
    off = runner.run(pipe())
    assert [(s.stage, s.status) for s in off.statuses] == [("a", "ran"), ("b", "ran"), ("ab", "skipped"), ("c", "ran"),
                                                          ("d", "ran")]
    assert CALLS == ["a", "b", "c", "d"]
    CALLS.clear()
    plan = runner.plan(pipe(distill={"mode": "online"}))
    assert [(s.stage, s.status) for s in plan] == [("a", "skipped"), ("b", "skipped"), ("ab", "will run"),
                                                  ("c", "will run"), ("d", "will run")]
    assert plan[0].reason == "ab writes it"
    on = runner.run(pipe(distill={"mode": "online"}))
    assert CALLS == ["ab", "c", "d"]
    # d read A from the part folder of ab's result, B from its top
    assert (on.result("d").path / "d.txt").read_text() == "made by ab | ab T=4.0"
    assert (on.result("c").path / "c.txt").read_text().startswith("ab T=4.0")
    with pytest.raises(ConfigError, match="stage 'a' does not run in this pipeline: ab writes it"):
        runner.run(pipe(distill={"mode": "online"}), until="a")
    with pytest.raises(ConfigError, match="stage 'b' does not run in this pipeline: ab writes it"):
        runner.run(pipe(distill={"mode": "online"}), force=["b"])
    # --until d shows the skipped stages whose artifacts it reads; the offline results are still there
    assert statuses(runner.run(pipe(), until="d")) == {"a": "cached", "b": "cached", "ab": "skipped", "d": "cached"}


def test_two_stages_writing_one_artifact_in_one_pipeline_is_refused(tmp_path):
    a, b, c = sorted(make_stages(), key=lambda s: s.name)
    with pytest.raises(ConfigError, match="stages 'b' and 'b2' both write 'B'"):
        Runner(Store(tmp_path), [a, b, dataclasses.replace(b, name="b2"), c]).plan(pipe())


def test_miss_then_hit(tmp_path):
    runner = Runner(Store(tmp_path), make_stages(), progress=False)
    r1 = runner.run(pipe())
    assert statuses(r1) == {"a": "ran", "b": "ran", "c": "ran"} and CALLS == ["a", "b", "c"]
    r2 = runner.run(pipe())
    assert statuses(r2) == {"a": "cached", "b": "cached", "c": "cached"} and CALLS == ["a", "b", "c"]
    assert [s.key for s in r1.statuses] == [s.key for s in r2.statuses]


def test_config_change_invalidates_that_stage_and_later_ones(tmp_path):
    runner = Runner(Store(tmp_path), make_stages(), progress=False)
    runner.run(pipe())
    CALLS.clear()
    r = runner.run(pipe(distill={"temperature": 2.0}))
    assert statuses(r) == {"a": "cached", "b": "ran", "c": "ran"}
    r = runner.run(pipe(benchmark={"threads": 3}))  # b's config back to default: cached
    assert statuses(r) == {"a": "cached", "b": "cached", "c": "ran"}


def test_excluded_field_does_not_change_the_key(tmp_path):
    runner = Runner(Store(tmp_path), make_stages(), progress=False)
    runner.run(pipe())
    assert statuses(runner.run(pipe(distill={"device": "cpu"}))) == {"a": "cached", "b": "cached", "c": "cached"}


def test_stage_version_and_library_versions_are_in_the_key(tmp_path, monkeypatch):
    runner = Runner(Store(tmp_path), make_stages(), progress=False)
    runner.run(pipe())
    bumped = [Stage(s.name, s.version + (s.name == "b"), s.inputs, s.output, s.configure, s.run, key_exclude=s.key_exclude)
              for s in make_stages()]
    # b reruns; its output is byte-identical, so c (keyed on b's content) stays cached
    assert statuses(Runner(Store(tmp_path), bumped).run(pipe())) == {"a": "cached", "b": "ran", "c": "cached"}
    import edgedistill.core.runner as runner_mod

    monkeypatch.setattr(runner_mod, "library_versions", lambda: {"torch": "9.9", "onnx": "1", "onnxruntime": "1"})
    assert statuses(Runner(Store(tmp_path), make_stages()).run(pipe())) == {"a": "ran", "b": "ran", "c": "ran"}


def test_source_file_content_is_in_the_key(tmp_path):
    src = tmp_path / "data.bin"
    src.write_bytes(b"one")
    stages = make_stages()
    stages[1] = Stage("a", 1, (), "A", stages[1].configure, stages[1].run, sources=lambda cfg: {"data": src})
    runner = Runner(Store(tmp_path / "s"), stages, progress=False)
    runner.run(pipe())
    src.write_bytes(b"two")
    # a reruns; it does not read the file, so its output and everything after it are unchanged
    assert statuses(runner.run(pipe())) == {"a": "ran", "b": "cached", "c": "cached"}


def test_input_content_not_key_decides_downstream(tmp_path):
    """A forced rerun that produces identical content leaves later stages cached."""
    runner = Runner(Store(tmp_path), make_stages(), progress=False)
    runner.run(pipe())
    r = runner.run(pipe(), force=["a"])
    assert statuses(r) == {"a": "ran", "b": "cached", "c": "cached"}


def test_failed_stage_is_never_cached_and_leaves_no_partial_result(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(RuntimeError, match="boom"):
        Runner(store, make_stages(fail_on="b"), progress=False).run(pipe())
    assert not (tmp_path / "results" / "b").exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    r = Runner(store, make_stages(), progress=False).run(pipe())
    assert statuses(r) == {"a": "cached", "b": "ran", "c": "ran"}


def test_plan_says_why(tmp_path):
    runner = Runner(Store(tmp_path), make_stages(), progress=False)
    first = runner.plan(pipe())
    assert [s.reason for s in first][0] == "no earlier result"
    runner.run(pipe())
    plan = {s.stage: s for s in runner.plan(pipe(distill={"temperature": 9.0}))}
    assert plan["a"].status == "cached"
    assert plan["b"].status == "will run" and "config.temperature: 4.0 -> 9.0" in plan["b"].reason
    assert plan["c"].status == "will run" and "'B' will be recomputed" in plan["c"].reason
    assert CALLS == ["a", "b", "c"]  # plan computed nothing


def test_until_runs_only_what_is_needed(tmp_path):
    r = Runner(Store(tmp_path), make_stages(), progress=False).run(pipe(), until="b")
    assert statuses(r) == {"a": "ran", "b": "ran"}
    with pytest.raises(ConfigError, match="did you mean 'b'"):
        Runner(Store(tmp_path), make_stages()).run(pipe(), until="bb")


def test_crash_leftovers_are_ignored_and_cleaned(tmp_path):
    """What a SIGKILL mid-write leaves (a half-written tmp folder) is never taken for a result."""
    store = Store(tmp_path)
    half = store.new_tmp("b")
    (half / "b.txt").write_text("half")
    lock = store.lock()
    lock.release()
    assert not (tmp_path / "tmp").exists()
    assert statuses(Runner(store, make_stages(), progress=False).run(pipe())) == {"a": "ran", "b": "ran", "c": "ran"}


def test_result_without_meta_is_never_reused(tmp_path):
    store = Store(tmp_path)
    (tmp_path / "results" / "a" / "deadbeef").mkdir(parents=True)
    assert store.get("a", "deadbeef").problem == "meta.json is missing"


def test_runs_share_the_store_gc_waits_for_them_and_sigkill_releases(tmp_path):
    """A run holds the store's lock shared: a second run takes it too; gc (exclusive) is refused, naming the
    run; once the run is SIGKILLed the OS has released its lock and gc gets it."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from edgedistill.core.store import Store
        store = Store({str(tmp_path)!r})
        lock = store.lock()
        (store.new_tmp("b") / "half.txt").write_text("being written")
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        Store(tmp_path).lock().release()  # a second run: the live run's half-written result stays
        assert len(list((tmp_path / "tmp").glob("b@*/half.txt"))) == 1
        with pytest.raises(StoreBusy, match=rf"in use by run pid {holder.pid} since .*gc needs it alone"):
            Store(tmp_path).lock(exclusive=True, what="gc")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    Store(tmp_path).lock(wait_s=5, exclusive=True, what="gc").release()  # the OS released the dead holder's lock
    assert Store(tmp_path).holders() == [] and not (tmp_path / "tmp").exists()  # and its tmp/ went


def test_two_runs_compute_a_shared_result_once(tmp_path):
    """Two runs that need the same result at once (threads here; flock locks are per open file, so they
    exclude each other as processes do): one computes it, the other waits and reuses it."""
    import threading
    import time

    started = threading.Barrier(2)
    stages = make_stages()
    i_a = next(i for i, st in enumerate(stages) if st.name == "a")
    slow_a = stages[i_a].run

    def stage_a(cfg, inputs, out, ctx):
        time.sleep(0.5)  # long enough that the other run asks for it meanwhile
        return slow_a(cfg, inputs, out, ctx)

    stages[i_a] = dataclasses.replace(stages[i_a], run=stage_a)
    seen: dict[int, list[str]] = {0: [], 1: []}
    reports = {}

    def run(i):
        started.wait()
        reports[i] = Runner(Store(tmp_path), stages, progress=False).run(
            pipe(distill={"temperature": 2.0 + i}), on_status=lambda st: seen[i].append(f"{st.stage}:{st.status}"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(CALLS) == ["a", "b", "b", "c", "c"]  # a once; b and c differ by temperature
    assert sorted(statuses(r)["a"] for r in reports.values()) == ["cached", "ran"]
    assert any("a:waiting" in s for s in seen.values())
    assert len(list((tmp_path / "results" / "a").iterdir())) == 1


def test_a_forced_run_that_waited_replaces_the_result(tmp_path):
    """--force on a result another run is computing: it waits, then computes it again and replaces it
    (it used to fail committing: the result had appeared while it waited)."""
    import threading
    import time

    stages = make_stages()
    i_a = next(i for i, st in enumerate(stages) if st.name == "a")
    slow_a = stages[i_a].run
    in_a = threading.Event()

    def stage_a(cfg, inputs, out, ctx):
        in_a.set()
        time.sleep(0.5)
        return slow_a(cfg, inputs, out, ctx)

    stages[i_a] = dataclasses.replace(stages[i_a], run=stage_a)
    first = threading.Thread(target=lambda: Runner(Store(tmp_path), stages, progress=False).run(pipe(), until="a"))
    first.start()
    assert in_a.wait(30)
    seen = []
    forced = Runner(Store(tmp_path), stages, progress=False).run(pipe(), until="a", force=["a"],
                                                                  on_status=lambda st: seen.append(st.status))
    first.join(30)
    assert seen[:2] == ["waiting", "running"] and statuses(forced) == {"a": "ran"} and CALLS == ["a", "a"]
    assert len(list((tmp_path / "results" / "a").iterdir())) == 1


def test_bundle_versions_grow_only_with_content(tmp_path):
    store = Store(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"m1")
    v1 = store.publish_bundle("x", src, {"created": "now"})
    assert v1[0] == 1 and v1[2] == "new"
    assert store.publish_bundle("x", src, {"created": "later"})[:1] == (1,)
    (src / "model.onnx").write_bytes(b"m2")
    assert store.publish_bundle("x", src, {"created": "later"})[0] == 2
    (src / "model.onnx").write_bytes(b"m1")
    assert store.publish_bundle("x", src, {})[0] == 1  # the same content is the same version
    manifest = json.loads((tmp_path / "bundles" / "x" / "v2" / "manifest.json").read_text())
    assert manifest["version"] == 2
    assert manifest["files"]["model.onnx"] == hashlib.sha256(b"m2").hexdigest()
