"""The Pareto front, its knee and the choice against hand-worked examples."""
import pytest

from edgedistill.sweep import pareto
from edgedistill.sweep.results import assess


def trial(name, accuracy, latency, size=100, feasible=True, error=None):
    return {"trial": name, "accuracy": accuracy, "latency": latency, "size": size, "feasible": feasible, "error": error}


# A (90%, 1 ms), B (96%, 2 ms), C (97%, 6 ms) are the front; D (95%, 3 ms) is dominated by B; E (99%, 1 ms)
# would dominate them all but misses a budget; F failed.
TRIALS = [trial("A", 90, 1), trial("B", 96, 2), trial("C", 97, 6), trial("D", 95, 3),
          trial("E", 99, 1, feasible=False), trial("F", None, None, error="trial failed")]
OBJ = ["accuracy", "latency"]


def test_statuses_keep_infeasible_and_failed_trials_and_mark_them():
    assert pareto.statuses(TRIALS, OBJ) == ["front", "front", "front", "dominated", "infeasible", "failed"]


def test_dominance_needs_one_strictly_better_objective():
    assert pareto.dominates(trial("x", 96, 2), trial("y", 95, 3), OBJ)
    assert not pareto.dominates(trial("x", 96, 2), trial("y", 96, 2), OBJ)  # equal: neither
    assert pareto.front([trial("x", 96, 2), trial("y", 96, 2)], OBJ) == [0, 1]  # ties both stay
    assert not pareto.dominates(trial("x", 96, 2), trial("y", 97, 6), OBJ)


def test_knee_is_the_front_point_farthest_beyond_the_line_through_its_extremes():
    # normalized over the front (1 best): A (0, 1), B (6/7, 0.8), C (1, 0); the line through A and C is
    # x + y = 1; B lies (6/7 + 0.8 - 1) / sqrt(2) = 0.46 beyond it, A and C on it
    front = [TRIALS[i] for i in (0, 1, 2)]
    x = pareto.normalized(front, OBJ)
    assert x.ravel().tolist() == pytest.approx([0, 1, 6 / 7, 0.8, 1, 0])
    assert pareto.knee(front, OBJ) == 1
    assert pareto.knee([], OBJ) is None
    assert pareto.knee([TRIALS[0]], OBJ) == 0


def test_knee_with_three_objectives():
    # size added: the plane through the three extremes; the balanced point beyond it is the knee
    pts = [trial("a", 99, 9, 9), trial("b", 90, 1, 9), trial("c", 90, 9, 1), trial("d", 97, 3, 3)]
    assert pareto.knee(pts, ["accuracy", "latency", "size"]) == 3


def test_choice_is_the_most_accurate_feasible_trial_and_ties_go_to_the_faster():
    a = assess(TRIALS, OBJ)
    assert a["chosen"] == "C"  # E is more accurate but infeasible
    assert a["knee"] == "B"
    tie = [trial("slow", 97, 6), trial("fast", 97, 2)]
    assert assess(tie, OBJ)["chosen"] == "fast"
    assert assess([trial("E", 99, 1, feasible=False)], OBJ) == {"status": {"E": "infeasible"}, "chosen": None, "knee": None}


def test_running_trials_are_shown_but_not_ranked():
    a = assess([*TRIALS[:2], {"trial": "R", "params": {}, "status": "running"}], OBJ)
    assert a["status"]["R"] == "running" and a["chosen"] == "B"
