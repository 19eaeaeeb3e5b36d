"""Timings take turns: two runs on one machine (a sweep's concurrent trials) never time at once."""
import threading
import time

from edgedistill.core.locks import FileLock
from edgedistill.runtime.benchmark import timing_lock_path, timing_turn


def test_a_timing_waits_for_the_one_under_way_and_says_how_long(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEDISTILL_TIMING_LOCK_DIR", str(tmp_path))
    other = FileLock(timing_lock_path(), exclusive=True)  # another process timing on this machine
    assert other.acquire(0)
    seen = {}

    def time_a_model():
        with timing_turn() as isolation:
            seen.update(isolation, at=time.monotonic())

    t = threading.Thread(target=time_a_model)
    started = time.monotonic()
    t.start()
    time.sleep(0.5)
    assert not seen  # still waiting
    other.release()
    t.join(10)
    assert seen["at"] - started >= 0.5 and seen["waited_s"] >= 0.45
    assert seen["scope"] == "this machine" and seen["lock"] == str(tmp_path / "edgedistill-timing-host.lock")


def test_each_ssh_device_has_its_own_turns(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEDISTILL_TIMING_LOCK_DIR", str(tmp_path))
    pi, phone = timing_lock_path("ssh://pi@10.0.0.2"), timing_lock_path("ssh://me@phone")
    assert len({pi, phone, timing_lock_path()}) == 3
    with timing_turn("ssh://pi@10.0.0.2") as isolation:  # the host's own timings are not held up by it
        host = FileLock(timing_lock_path(), exclusive=True)
        assert host.acquire(0)
        host.release()
        assert isolation["scope"] == "this device, from this machine"
