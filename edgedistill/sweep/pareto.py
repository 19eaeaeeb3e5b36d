"""The Pareto front of a sweep's trials, its knee, and the choice. Plain functions over dicts of metrics,
written here because they are a few lines each (Optuna's own front, study.best_trials, knows nothing of
budgets or of trials that ran outside it).

A trial's metrics: accuracy (%, higher is better), latency (ms, lower), size (bytes, lower) and whether it
meets the budgets (feasible)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from edgedistill.sweep.config import OBJECTIVES


def _better(a: float, b: float, objective: str) -> bool:
    return a > b if OBJECTIVES[objective] == "max" else a < b


def dominates(a: dict, b: dict, objectives: Sequence[str]) -> bool:
    """Whether a is at least as good as b in every objective and better in one."""
    return (all(not _better(b[o], a[o], o) for o in objectives)
            and any(_better(a[o], b[o], o) for o in objectives))


def front(points: Sequence[dict], objectives: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates (ties: both stay), in input order."""
    return [i for i, p in enumerate(points)
            if not any(dominates(q, p, objectives) for j, q in enumerate(points) if j != i)]


def statuses(points: Sequence[dict], objectives: Sequence[str]) -> list[str]:
    """Each trial's place: failed (no metrics), infeasible (misses a budget), front (feasible and no
    feasible trial dominates it) or dominated."""
    ok = [i for i, p in enumerate(points) if p.get("error") is None and p.get("feasible")]
    on_front = {ok[i] for i in front([points[i] for i in ok], objectives)}
    out = []
    for i, p in enumerate(points):
        if p.get("error") is not None:
            out.append("failed")
        elif not p.get("feasible"):
            out.append("infeasible")
        else:
            out.append("front" if i in on_front else "dominated")
    return out


def normalized(points: Sequence[dict], objectives: Sequence[str]) -> np.ndarray:
    """Each objective scaled to [0, 1] over the points, 1 the best (an objective all points share: 1)."""
    values = np.array([[p[o] for o in objectives] for p in points], dtype=float)
    low, high = values.min(0), values.max(0)
    varies = high > low
    scaled = np.where(varies, (values - low) / np.where(varies, high - low, 1.0), 1.0)
    for j, o in enumerate(objectives):
        if OBJECTIVES[o] == "min" and varies[j]:
            scaled[:, j] = 1.0 - scaled[:, j]
    return scaled


def knee(points: Sequence[dict], objectives: Sequence[str]) -> int | None:
    """The knee of a front (points: the front's trials): with every objective normalized to [0, 1] over
    the front (1 the best), the point farthest beyond the hyperplane through the extreme points (each
    objective's best), i.e. the one that gives up the least of each objective for the others (the
    "maximum distance to the extremes' line" knee: Das, 1999; Branke et al., 2004, "Finding knees in
    multi-objective optimization"). Two objectives: the line through the most accurate and the fastest
    trials. None for an empty front; with fewer points than objectives, the one nearest the ideal."""
    if not points:
        return None
    if len(objectives) < 2:
        return int(np.argmax(normalized(points, objectives)[:, 0]))
    x = normalized(points, objectives)
    extremes = np.stack([x[int(np.argmax(x[:, j]))] for j in range(len(objectives))])
    # the hyperplane n.x = 1 through the extremes; singular (extremes repeat, or lie on one line
    # through the origin): fall back to the distance to the ideal point (1, ..., 1)
    if len({tuple(e) for e in extremes}) == len(objectives) and abs(np.linalg.det(extremes)) > 1e-12:
        n = np.linalg.solve(extremes, np.ones(len(objectives)))
        beyond = (x @ n - 1.0) / np.linalg.norm(n)
        best = float(beyond.max())
        ties = [i for i in range(len(points)) if beyond[i] >= best - 1e-12]
    else:
        ties = list(range(len(points)))
    gaps = np.linalg.norm(1.0 - x[ties], axis=1)  # ties (all on the plane): the one nearest the ideal
    return ties[int(np.argmin(gaps))]


def most_accurate(points: Sequence[dict], candidates: Sequence[int]) -> int | None:
    """Among candidates (indices of feasible trials): the highest validation accuracy; ties go to the
    lower latency, then the smaller model."""
    if not candidates:
        return None
    return min(candidates, key=lambda i: (-points[i]["accuracy"], points[i]["latency"], points[i]["size"]))
