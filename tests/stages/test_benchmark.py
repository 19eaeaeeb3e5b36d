"""The benchmark stage's latency rounds: models timed in turn, figures the medians of the rounds."""
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgedistill.core.stage import Context
from edgedistill.release.report import rounds_text
from edgedistill.runtime.benchmark import BenchmarkConfig
from edgedistill.stages import benchmark

ROLES = ("teacher", "student_fp32", "student_int8")


def latency(p90: float) -> dict:
    return {"p50": p90 - 0.01, "p90": p90, "p95": p90 + 0.01, "p99": p90 + 0.02, "min": p90 - 0.02, "mean": p90, "std": 0.001}


def retimed(monkeypatch, tmp_path, cfg: BenchmarkConfig, first: dict[str, float], later: list[float]):
    """The stage's retime on results whose first round gave `first` p90s, the later rounds' timings
    handing out `later` in order. Returns (results, the calls made: (model, settings, inputs, labels))."""
    calls, queue = [], list(later)

    def fake_bench(model, settings, inputs=None, labels=None, **kw):
        calls.append((model, settings, inputs, labels))
        return {"latency_ms": latency(queue.pop(0))}

    monkeypatch.setattr(benchmark, "bench_in_child", fake_bench)
    models = {role: (Path(f"{role}.onnx"), Path(f"{role}_inputs")) for role in ROLES}
    results = {role: {"latency_ms": latency(first[role]), "accuracy": 90.0} for role in ROLES}
    benchmark.retime(results, models, cfg, Context(work=tmp_path, progress=False))
    return results, calls


def test_latency_is_the_median_of_rounds_timed_in_turn(monkeypatch, tmp_path, capsys):
    # INT8's first timing was hit by a slow second of the machine (0.089 against FP32's 0.070, as the
    # quickstart's card once said): its later rounds, taken between FP32's, decide
    cfg = BenchmarkConfig(rounds=3, throughput_batch=8, profile_runs=50)
    results, calls = retimed(monkeypatch, tmp_path, cfg, {"teacher": 1.0, "student_fp32": 0.070, "student_int8": 0.089},
                             [1.1, 0.071, 0.055, 0.9, 0.072, 0.056])
    assert [c[0].name for c in calls] == [f"{r}.onnx" for r in ROLES] * 2  # alternating, each on its own inputs
    assert [c[2].name for c in calls] == [f"{r}_inputs" for r in ROLES] * 2
    assert all(c[1].throughput_batch == 0 and c[1].profile_runs == 0 and c[3] is None for c in calls)  # latency only
    assert results["student_int8"]["latency_rounds_ms"] == [0.089, 0.055, 0.056]
    assert results["student_int8"]["latency_ms"]["p90"] == pytest.approx(0.056)
    assert results["student_fp32"]["latency_ms"]["p90"] == pytest.approx(0.071)
    assert results["teacher"]["latency_ms"] == pytest.approx(latency(1.0))  # every figure, not only p90
    assert results["student_int8"]["latency_ms"]["p90"] < results["student_fp32"]["latency_ms"]["p90"]
    assert results["student_int8"]["accuracy"] == 90.0  # what the first round measured stays
    log = capsys.readouterr().err
    assert "timed 3 times, alternating" in log and "student_int8 0.056 ms (0.055-0.089)" in log


@pytest.mark.parametrize("given", [BenchmarkConfig(rounds=1), BenchmarkConfig(rounds=3, protocol="mlperf")],
                         ids=["one round", "mlperf"])
def test_one_round_times_nothing_again(monkeypatch, tmp_path, capsys, given):
    cfg = benchmark.configure(SimpleNamespace(benchmark=given))  # mlperf: one round, its minimums are the protocol
    assert cfg.rounds == 1
    results, calls = retimed(monkeypatch, tmp_path, cfg, {"teacher": 1.0, "student_fp32": 0.07, "student_int8": 0.089}, [])
    assert calls == [] and capsys.readouterr().err == ""
    assert results["student_int8"]["latency_rounds_ms"] == [0.089] and results["student_int8"]["latency_ms"]["p90"] == 0.089


def test_the_card_says_what_the_figures_are_medians_of():
    report = {"shipped": "student_int8", "models": {"student_int8": {"latency_rounds_ms": [0.089, 0.055, 0.056]}}}
    assert rounds_text(report).startswith("The batch-1 latency percentiles (p50 to p99, min, mean) are the median of 3 rounds")
    assert "0.055-0.089 ms" in rounds_text(report)
    for one in ([0.089], None):  # one round, or a bundle from before the rounds
        assert rounds_text({"shipped": "student_int8", "models": {"student_int8": {"latency_rounds_ms": one}}}) == ""
