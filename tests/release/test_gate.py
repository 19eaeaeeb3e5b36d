"""The release gate: budgets against report.json, table and exit codes."""
import json

import pytest
import yaml

from edgedistill.cli import main
from edgedistill.core.bundles import seal_bundle
from edgedistill.core.errors import ConfigError
from edgedistill.release.gate import check, load_budgets

REPORT = {"shipped": "student_int8", "accuracy": {"teacher": 98.0, "student_fp32": 96.5, "student_int8": 96.0},
          "latency_ms": {"p50": 0.1, "p90": 0.2, "p99": 0.3, "min": 0.05, "mean": 0.12},
          "size_bytes": 3 * 1024 * 1024, "peak_rss_mb": 40.0}


def fake_bundle(folder, report):
    """A folder with a report.json and the manifest that makes it a bundle."""
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(report))
    seal_bundle(folder, {})
    return folder


def budgets(tmp_path, **b):
    path = tmp_path / "budgets.yaml"
    path.write_text(yaml.safe_dump(b))
    return path


def test_each_budget_passes_and_fails_at_its_edge(tmp_path):
    rows = check(REPORT, load_budgets(budgets(tmp_path, max_size_mb=3.0, max_latency_ms_p90=0.2, min_accuracy=96.0,
                                              max_accuracy_drop=2.0, max_peak_rss_mb=40)))
    assert [r.passed for r in rows] == [True] * 5
    rows = check(REPORT, load_budgets(budgets(tmp_path, max_size_mb=2.99, max_latency_ms_p90=0.19, min_accuracy=96.1,
                                              max_accuracy_drop=1.9, max_peak_rss_mb=39)))
    assert [r.metric for r in rows if not r.passed] == ["size_mb", "latency_ms_p90", "accuracy", "accuracy_drop_pts", "peak_rss_mb"]


def test_empty_or_unknown_budgets_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="at least one"):
        load_budgets(budgets(tmp_path))
    with pytest.raises(ConfigError, match="did you mean 'min_accuracy'"):
        load_budgets(budgets(tmp_path, min_acuracy=90))


def test_gate_command_exit_codes_and_table(tmp_path, capsys):
    bundle = fake_bundle(tmp_path / "b", REPORT)
    assert main(["gate", str(bundle), "--budgets", str(budgets(tmp_path, min_accuracy=90))]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "pass" in out
    assert main(["gate", str(bundle), "--budgets", str(budgets(tmp_path, max_latency_ms_p90=0.1))]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "latency_ms_p90" in captured.err
    assert main(["gate", str(bundle), "--budgets", str(budgets(tmp_path, max_latency=1))]) == 2


def test_real_bundle_passes_its_budgets(tiny_run, tmp_path):
    pipeline, store = tiny_run
    bundle = store / "bundles" / "tiny" / "v1"
    assert main(["gate", str(bundle), "--budgets", str(pipeline.parent / "budgets.yaml")]) == 0


def test_gate_json_and_junit(tmp_path, capsys):
    import xml.etree.ElementTree as ET

    bundle = fake_bundle(tmp_path / "b", REPORT)
    junit = tmp_path / "reports" / "gate.xml"
    code = main(["gate", str(bundle), "--budgets", str(budgets(tmp_path, min_accuracy=90, max_latency_ms_p90=0.1)),
                 "--json", "--junit", str(junit)])
    assert code == 1
    result = json.loads(capsys.readouterr().out)
    assert result["passed"] is False
    assert {c["metric"]: c["passed"] for c in result["checks"]} == {"latency_ms_p90": False, "accuracy": True}
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and suite.get("tests") == "2" and suite.get("failures") == "1"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["latency_ms_p90"]


def test_baseline_regressions(tmp_path, capsys):
    def bundle(name, **changes):
        report = json.loads(json.dumps(REPORT))
        for key, value in changes.items():
            if key == "p90":
                report["latency_ms"]["p90"] = value
            elif key == "acc":
                report["accuracy"]["student_int8"] = value
            else:
                report[key] = value
        return str(fake_bundle(tmp_path / name, report))

    old = bundle("v1")
    path = budgets(tmp_path, min_accuracy=90, regression={"max_latency_increase_pct": 10, "max_accuracy_decrease_pts": 0.5})
    assert main(["gate", bundle("same"), "--budgets", str(path), "--baseline", old]) == 0
    assert main(["gate", bundle("slower", p90=0.21), "--budgets", str(path), "--baseline", old]) == 0  # +5%
    capsys.readouterr()
    assert main(["gate", bundle("much_slower", p90=0.23), "--budgets", str(path), "--baseline", old]) == 1  # +15%
    assert "vs baseline latency_ms_p90" in capsys.readouterr().out
    assert main(["gate", bundle("worse", acc=95.4), "--budgets", str(path), "--baseline", old]) == 1
    assert main(["gate", bundle("bigger", size_bytes=4 * 1024 * 1024), "--budgets", str(path), "--baseline", old]) == 1  # default +10%
    with pytest.raises(ConfigError, match="did you mean 'max_size_increase_pct'"):
        load_budgets(budgets(tmp_path, regression={"max_size_increse_pct": 5}))


def test_max_quantization_drop_budget(tmp_path):
    """The shipped model's loss to quantization on test (quantization.test_drop): at the edge, over it,
    and an FP32 model that ships (nothing lost)."""
    drop = {"drop": 0.8, "ci_low": -0.2, "ci_high": 1.9, "level": 0.95, "agreement": 98.4, "images": 500}
    report = dict(REPORT, quantization={"test_drop": drop})
    (row,) = check(report, load_budgets(budgets(tmp_path, max_quantization_drop=0.8)))
    assert row.metric == "quantization_drop_pts" and row.passed and row.actual == "0.80 [-0.20, 1.90]"
    (row,) = check(report, load_budgets(budgets(tmp_path, max_quantization_drop=0.5)))
    assert not row.passed
    fp32 = dict(REPORT, shipped="student_fp32", quantization={"test_drop": None})
    (row,) = check(fp32, load_budgets(budgets(tmp_path, max_quantization_drop=0)))
    assert row.passed and row.actual == "0 (FP32 ships)"
