"""The sweep file: a base pipeline, the search space over its config keys, the objectives, the budgets a
trial must meet, and how many trials run (and how many at once)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from edgedistill.core.config import PathField, Strict, read_yaml, validate
from edgedistill.core.errors import ConfigError

OBJECTIVES = {"accuracy": "max", "latency": "min", "size": "min"}
"""What a trial can be ranked on, and which way is better: validation accuracy of the shipped model (%),
its p90 latency at batch 1 (ms), the size of its model.onnx (bytes)."""


Bounds = Annotated[list[float], Field(min_length=2, max_length=2)]
"""[low, high]"""


class Domain(Strict):
    """One searched config key's values: exactly one of choice, uniform, loguniform, integer."""

    choice: list[Any] | None = Field(None, min_length=1)
    """These values (any YAML: numbers, names, lists such as quantize.recipes)."""
    uniform: Bounds | None = None
    """A float between low and high."""
    loguniform: Bounds | None = None
    """A float between low and high, uniform in its logarithm (learning rates); low > 0."""
    integer: Annotated[list[int], Field(min_length=2, max_length=2)] | None = None
    """A whole number from low to high, both included."""

    @model_validator(mode="after")
    def _one(self) -> "Domain":
        given = [k for k in ("choice", "uniform", "loguniform", "integer") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a searched key needs exactly one of choice, uniform, loguniform, integer")
        bounds = self.uniform or self.loguniform or self.integer
        if bounds is not None:
            low, high = bounds
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"{given[0]}: [low, high] needs low < high, both finite (got {list(bounds)})")
            if self.loguniform is not None and low <= 0:
                raise ValueError(f"loguniform: low must be above 0 (got {low})")
        return self

    def extremes(self) -> list[Any]:
        """The values that bound this domain (every choice; low and high of a range): each must make a
        valid pipeline before any trial runs."""
        if self.choice is not None:
            return list(self.choice)
        low, high = self.uniform or self.loguniform or self.integer
        return [low, high]


class Resources(Strict):
    cpu: float = Field(1, gt=0)
    """CPU cores per trial: Ray runs a trial where it has them, and sets the trial's OMP_NUM_THREADS (and
    torch's threads) to this number."""
    gpu: float = Field(0, ge=0)
    """GPUs per trial (0: none; a fraction shares one)."""


class SweepConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """The sweep's name: its results go to <store>/sweeps/<name>/."""
    pipeline: PathField
    """The base pipeline YAML (relative to the sweep file). Every trial is this pipeline with the trial's
    values set: an ordinary run into the store, so what trials share (prepared data, the fine-tuned
    teacher) is computed once."""
    set: dict[str, Any] = Field(default_factory=dict)
    """Fixed values for every trial, as --set gives them ({distill.epochs: 4})."""
    space: dict[str, Domain] = Field(min_length=1)
    """Searched config keys (dotted, as --set names them) and their values."""
    objectives: list[Literal["accuracy", "latency", "size"]] = Field(default_factory=lambda: ["accuracy", "latency"],
                                                                    min_length=1)
    """What the search optimizes together: accuracy (validation, higher is better), latency (p90, lower),
    size (lower). The page shows accuracy against latency and against size whatever is searched."""
    latency_on: str = "host"
    """Where latency is measured: host (this machine's CPU, the benchmark stage's figure), a device name
    from the devices file, or ssh://user@host (bench.py over SSH on each trial's bundle)."""
    budgets: PathField | None = None
    """Budgets file a trial must meet to be feasible (relative to the sweep file). None: the pipeline's.
    Accuracy budgets are checked on the validation split during the search (the test split is read only
    at the end, for the chosen trials)."""
    search: Literal["optuna", "random", "grid"] = "optuna"
    """optuna: Optuna's TPE sampler through Ray Tune's OptunaSearch, multi-objective, told which trials
    miss the budgets (its constraints); random: Ray Tune's random sampling; grid: every combination of
    choices (no ranges), each once."""
    trials: int | None = Field(None, ge=1, le=10_000)
    """Trials to run (optuna, random; default 8). A grid runs every combination once: leave it unset."""
    concurrent: int = Field(1, ge=1, le=1024)
    """Trials at once (each takes `resources`; Ray runs fewer when the machine or cluster lacks them)."""
    resources: Resources = Resources()
    seed: int = 0
    """Seed of the search (which values are tried); each trial's own training seed is the pipeline's."""

    @model_validator(mode="after")
    def _grid(self) -> "SweepConfig":
        if self.search == "grid":
            ranges = [k for k, d in self.space.items() if d.choice is None]
            if ranges:
                raise ValueError(f"search: grid needs choice values; {', '.join(ranges)} is a range (use optuna or random)")
            if self.trials is not None:
                raise ValueError(f"search: grid runs each of its {self.grid_size()} combinations once; leave trials unset")
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError("objectives name the same objective twice")
        return self

    def grid_size(self) -> int:
        return math.prod(len(d.choice or ()) for d in self.space.values())

    def trial_count(self) -> int:
        """How many trials the sweep runs: every combination of a grid, else `trials` (default 8)."""
        return self.grid_size() if self.search == "grid" else self.trials or 8


def load_sweep(path: Path) -> SweepConfig:
    """A sweep YAML, strictly validated, its paths resolved against its folder. ConfigError when invalid."""
    path = Path(path)
    tree = read_yaml(path, "sweep file")
    for key in ("pipeline", "budgets"):
        value = tree.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            tree[key] = str((path.resolve().parent / value).resolve())
    sweep = validate(SweepConfig, tree, str(path))
    if not Path(sweep.pipeline).is_file():
        raise ConfigError(f"{path}: pipeline '{sweep.pipeline}' does not exist")
    return sweep


def check_space(sweep: SweepConfig, load: Any) -> None:
    """Every value that bounds the search (each choice, each range's ends) must give a valid pipeline:
    load(values) validates one; a misspelt key or a value of the wrong type fails here, in seconds,
    not in every trial. ConfigError naming the key and value."""
    for key, domain in sweep.space.items():
        if key in sweep.set:
            raise ConfigError(f"sweep '{sweep.name}': '{key}' is both searched (space) and fixed (set); keep one")
        for value in domain.extremes():
            try:
                load({key: value})
            except ConfigError as e:
                raise ConfigError(f"sweep '{sweep.name}': {key} = {value!r}: {e}") from None


def corner_points(sweep: SweepConfig) -> list[dict[str, Any]]:
    """The first point, and for each key each of its bounding values with the others at the first point:
    a stage whose config is the same at all of them depends on no searched key."""
    first = first_point(sweep)
    return [first, *({**first, k: v} for k, d in sweep.space.items() for v in d.extremes()[1:])]


def first_point(sweep: SweepConfig) -> dict[str, Any]:
    """One point of the space (each key's first choice or low end), for the checks before the search."""
    return {k: d.extremes()[0] for k, d in sweep.space.items()}

