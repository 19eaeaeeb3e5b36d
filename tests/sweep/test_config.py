"""The sweep file: strict, and every value that bounds the search checked against the pipeline before
Ray starts (one line, exit 2)."""
import pytest
import yaml
from conftest import write_pipeline

from edgedistill.cli import main
from edgedistill.sweep.config import load_sweep


def sweep_file(tmp_path, **fields):
    write_pipeline(tmp_path / "p")
    tree = {"name": "s", "pipeline": "p/pipeline.yaml", "space": {"distill.temperature": {"uniform": [1, 4]}}, **fields}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def error_of(capsys, tmp_path, **fields) -> str:
    code = main(["sweep", str(sweep_file(tmp_path, **fields)), "--store", str(tmp_path / "store")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("space, says", [
    ({"distill.temprature": {"uniform": [1, 4]}}, "temprature"),  # misspelt key: the pipeline's error names it
    ({"distill.temperature": {"choice": ["hot"]}}, "distill.temperature = 'hot'"),
    ({"distill.temperature": {"uniform": [4, 1]}}, "low < high"),
    ({"distill.lr": {"loguniform": [0, 0.1]}}, "above 0"),
    ({"distill.lr": {"uniform": [0.1, 0.2], "choice": [0.1]}}, "exactly one of"),
    ({"student.kwargs.widht": {"choice": [4]}}, "widht"),  # the model cannot be built: found by plan, before Ray
    ({"student.kwargs.width": {"choice": [4, 4.5]}}, "cannot be built with kwargs"),  # a value the model refuses
])
def test_a_bad_space_fails_in_one_line_before_any_trial(capsys, tmp_path, space, says):
    assert says in error_of(capsys, tmp_path, space=space)
    assert not (tmp_path / "store" / "sweeps").exists()


def test_an_unknown_device_for_latency_names_the_key(capsys, tmp_path):
    assert "sweep.yaml: latency_on: " in error_of(capsys, tmp_path, latency_on="nosuchdevice")


def test_grid_needs_choices_and_keys_are_searched_or_fixed_not_both(capsys, tmp_path):
    assert "grid needs choice values" in error_of(capsys, tmp_path, search="grid")
    assert "leave trials unset" in error_of(capsys, tmp_path, search="grid", trials=4,
                                            space={"distill.temperature": {"choice": [1.0, 2.0]}})
    assert "both searched" in error_of(capsys, tmp_path, set={"distill.temperature": 2.0})


def test_paths_resolve_against_the_sweep_file(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, budgets="p/budgets.yaml"))
    assert sweep.pipeline == (tmp_path / "p" / "pipeline.yaml").resolve()
    assert sweep.budgets == (tmp_path / "p" / "budgets.yaml").resolve()
    assert sweep.objectives == ["accuracy", "latency"] and sweep.search == "optuna" and sweep.trial_count() == 8
