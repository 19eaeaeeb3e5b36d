"""The Ray Tune side without starting Ray: the search space, Optuna told which trials miss the budgets,
the settings a sweep's folder belongs to."""
import json

import pytest

from edgedistill.core.errors import ConfigError
from edgedistill.sweep import engine
from edgedistill.sweep.config import SweepConfig


def config(tmp_path, **fields) -> SweepConfig:
    (tmp_path / "p.yaml").write_text("name: p\n")
    space = {"student.kwargs.width": {"choice": [8, 16]}, "distill.epochs": {"integer": [2, 3]},
             "quantize.recipes": {"choice": [["qdq_u8s8"], ["qdq_u8s8", "dynamic_s8"]]}}
    return SweepConfig.model_validate({"name": "s", "pipeline": str(tmp_path / "p.yaml"), "space": space, **fields})


def test_list_choices_travel_as_json_and_integer_ranges_include_their_end(tmp_path):
    sweep = config(tmp_path, trials=4)
    assert engine.encoded_keys(sweep) == ("quantize.recipes",)
    space = engine.param_space(sweep)
    assert space["quantize.recipes"].categories == ['["qdq_u8s8"]', '["qdq_u8s8", "dynamic_s8"]']
    assert {space["distill.epochs"].sample() for _ in range(200)} == {2, 3}


def test_a_grid_over_two_keys_runs_every_combination(tmp_path):
    """What Ray Tune generates from the grid's space (its own variant generator): the product of the choices,
    each once (the e2e sweep test searches one key)."""
    from ray.tune.search.variant_generator import generate_variants

    (tmp_path / "p.yaml").write_text("name: p\n")
    sweep = SweepConfig.model_validate({"name": "s", "pipeline": str(tmp_path / "p.yaml"), "search": "grid", "space": {
        "student.kwargs.width": {"choice": [3, 6]}, "distill.temperature": {"choice": [2.0, 4.0]}}})
    points = [(c["student.kwargs.width"], c["distill.temperature"]) for _, c in generate_variants(engine.param_space(sweep))]
    assert sweep.trial_count() == 4 and sorted(points) == [(3, 2.0), (3, 4.0), (6, 2.0), (6, 4.0)]


def test_optuna_learns_which_trials_miss_the_budgets(tmp_path):
    sweep = config(tmp_path, trials=4)
    search = engine.search_algorithm(sweep)
    assert search.set_search_properties(None, None, engine.param_space(sweep))
    suggested = search.suggest("t1")
    assert set(suggested) == set(sweep.space)
    search.on_trial_complete("t1", {"accuracy": 90.0, "latency": 1.5, "budgets_missed": 2.0})
    trial = search._ot_study.trials[0]
    assert trial.values == [90.0, 1.5] and trial.constraints == {"budgets_missed": 2.0}
    assert search._ot_study.directions[0].name == "MAXIMIZE" and search._ot_study.directions[1].name == "MINIMIZE"


def test_random_search_keeps_to_the_concurrency(tmp_path):
    assert engine.search_algorithm(config(tmp_path, search="random", concurrent=1)).max_concurrent == 1


def test_a_folder_of_other_settings_is_refused_naming_what_changed(tmp_path):
    folder = tmp_path / "sweeps" / "s"
    first = engine.spec(config(tmp_path, trials=4), _Dumpable(), None)
    assert engine.prepare_folder(folder, first, restart=False) is False
    assert engine.prepare_folder(folder, first, restart=False) is False  # no Ray experiment yet: a fresh start
    other = engine.spec(config(tmp_path, trials=6), _Dumpable(), None)
    with pytest.raises(ConfigError, match=r"sweep\.trials changed.*--restart"):
        engine.prepare_folder(folder, other, restart=False)
    assert engine.prepare_folder(folder, other, restart=True) is False
    assert json.loads((folder / engine.SPEC).read_text())["sweep"]["trials"] == 6


class _Dumpable:
    def model_dump(self, mode):
        return {"name": "p"}
