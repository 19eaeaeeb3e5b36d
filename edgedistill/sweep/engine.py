"""A sweep on Ray Tune: the search space as Ray's, the search algorithm (Optuna's multi-objective TPE
through Ray's OptunaSearch, told which trials miss the budgets; Ray's random or grid search), trials with
their CPUs and GPUs, resume with Tuner.restore, and a callback that prints each trial and rewrites the
sweep's page as trials finish.

Ray runs embedded (ray.init() in the command: nothing to start) unless an address is given (or
RAY_ADDRESS is set): then the trials run on that cluster, and the store must be on storage every node
sees, with edgedistill installed on every node."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ray import tune

from edgedistill.core.errors import ConfigError
from edgedistill.core.files import hash_obj, read_json, write_json
from edgedistill.models.presets import pin_search_path
from edgedistill.sweep import results
from edgedistill.sweep.config import OBJECTIVES, SweepConfig
from edgedistill.sweep.trial import RESULT, TrialSetup, run_trial

SPEC = "sweep.json"
RAY_DIR = "ray"
VIOLATIONS = "budgets_missed"


def encoded_keys(sweep: SweepConfig) -> tuple[str, ...]:
    """Searched keys with a choice that is not a plain value (a list of recipes): Optuna's categories
    must be None, bool, int, float or str, so these travel as JSON text."""
    plain = (type(None), bool, int, float, str)
    return tuple(k for k, d in sweep.space.items() if d.choice is not None and not all(isinstance(v, plain) for v in d.choice))


def param_space(sweep: SweepConfig) -> dict[str, Any]:
    """The sweep's space as Ray Tune's (integer ranges include their high end)."""
    encoded = encoded_keys(sweep)
    space = {}
    for key, d in sweep.space.items():
        if d.choice is not None:
            values = [json.dumps(v) for v in d.choice] if key in encoded else list(d.choice)
            space[key] = tune.grid_search(values) if sweep.search == "grid" else tune.choice(values)
        elif d.uniform is not None:
            space[key] = tune.uniform(*d.uniform)
        elif d.loguniform is not None:
            space[key] = tune.loguniform(*d.loguniform)
        else:
            space[key] = tune.randint(d.integer[0], d.integer[1] + 1)
    return space


def search_algorithm(sweep: SweepConfig):
    """None (Ray's own grid generation), Ray's random generation, or OptunaSearch with a seeded,
    constrained TPE sampler."""
    if sweep.search == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.concurrent)  # not a Searcher: Ray ignores
        # TuneConfig.max_concurrent_trials for it
    if sweep.search == "grid":
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    class BudgetAwareOptunaSearch(OptunaSearch):
        """Ray's OptunaSearch, passing on how many budgets a trial missed as the Optuna trial's constraint
        (feasible at 0), which Optuna's TPE sampler reads (constrained TPE: Watanabe and Hutter, 2023).
        Ray's class does not pass it."""

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            if result and VIOLATIONS in result and trial_id in self._ot_trials:
                self._ot_trials[trial_id].set_constraint(VIOLATIONS, float(result[VIOLATIONS]))
            super().on_trial_complete(trial_id, result, error)

    sampler = optuna.samplers.TPESampler(seed=sweep.seed, n_startup_trials=max(2, min(10, sweep.trial_count() // 3)))
    return BudgetAwareOptunaSearch(metric=list(sweep.objectives), mode=[OBJECTIVES[o] for o in sweep.objectives],
                                   sampler=sampler)


def spec(sweep: SweepConfig, pipeline: Any, budgets: Any) -> dict:
    """What a sweep's folder belongs to: the sweep file's settings, the base pipeline they apply to and the
    budgets trials are judged on (Ray restores its experiment with the settings it began with, trials and
    concurrency included: a resumed sweep is the same sweep)."""
    return {"sweep": sweep.model_dump(mode="json"), "pipeline": pipeline.model_dump(mode="json"),
            "budgets": None if budgets is None else budgets.model_dump(mode="json")}


def prepare_folder(folder: Path, this: dict, restart: bool) -> bool:
    """Make the sweep's folder ready: returns whether an earlier run of the same sweep is resumed.
    ConfigError when the folder holds a different sweep (unless restart, which removes it; the store's
    results of its trials stay and are reused)."""
    if restart and folder.exists():
        shutil.rmtree(folder)
    if (folder / SPEC).is_file():
        old = read_json(folder / SPEC)
        if old.get("hash") != hash_obj(this):
            changed = [k for k in this if old.get(k) != this[k]]
            fields = [f for f in this["sweep"] if (old.get("sweep") or {}).get(f) != this["sweep"][f]] if "sweep" in changed else []
            what = ", ".join([*(f"sweep.{f}" for f in fields), *(k for k in changed if k != "sweep")]) or "its settings"
            raise ConfigError(f"'{folder}' holds sweep '{this['sweep']['name']}' with other settings ({what} changed); "
                              f"--restart starts it over (its trials' stage results stay in the store and are reused), "
                              f"or give the sweep another name")
        return (folder / RAY_DIR).is_dir()
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / SPEC, {"hash": hash_obj(this), **this})
    return False


def start_ray(address: str | None, cpus: int | None) -> str:
    """ray.init: embedded (this machine's CPUs) or the cluster at address / $RAY_ADDRESS. Returns a line
    saying which."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Ray's own tables off: the sweep prints one line a trial
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")  # the experiment's state, for resume, kept current
    pin_search_path()  # embedded Ray's workers inherit this environment, not this folder
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=True)
    try:
        if address:
            ray.init(address=address, **kwargs)
            return f"Ray cluster at {address} ({ray.cluster_resources().get('CPU', 0):.0f} CPUs)"
        ray.init(num_cpus=cpus, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = f"the Ray cluster at {address}" if address else "an embedded Ray"
        raise ConfigError(f"cannot start {where} ({type(e).__name__}: {str(e)[:150]}); check --address / RAY_ADDRESS, "
                          f"or that /tmp has room for Ray's session files") from None
    return f"embedded Ray on this machine ({ray.cluster_resources().get('CPU', 0):.0f} CPUs)"


def run(sweep: SweepConfig, setup: TrialSetup, meta: dict, resume: bool, address: str | None) -> bool:
    """Run (or resume) the sweep's trials on Ray Tune until they have all finished; the page is rewritten
    as each finishes. Returns whether they did (False: Ray stopped on Ctrl-C, which it catches itself)."""
    import ray

    folder = Path(setup.folder)
    say(start_ray(address, None))
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup),
                                    {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu})
    callback = Progress(list(sweep.objectives), sweep.trial_count(), str(folder), meta)
    run_config = tune.RunConfig(name=RAY_DIR, storage_path=str(folder), verbose=0, callbacks=[callback],
                                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False))
    try:
        if resume and tune.Tuner.can_restore(str(folder / RAY_DIR)):
            say("resuming: trials that finished are kept, unfinished ones start again (their stages cached so far are reused)")
            try:
                tuner = tune.Tuner.restore(str(folder / RAY_DIR), trainable=trainable, resume_unfinished=True,
                                           resume_errored=False, restart_errored=False)
            except Exception as e:  # another Ray or edgedistill wrote it, or its files were damaged
                raise ConfigError(f"cannot resume sweep '{sweep.name}' from {folder / RAY_DIR} ({type(e).__name__}: "
                                  f"{str(e)[:120]}); --restart starts it over (its trials' stage results stay cached)") from None
        else:  # a fresh search: trials of an earlier one that Ray cannot restore would not be its trials
            shutil.rmtree(folder / RAY_DIR, ignore_errors=True)
            shutil.rmtree(folder / "trials", ignore_errors=True)
            tuner = tune.Tuner(trainable, param_space=param_space(sweep), run_config=run_config,
                               tune_config=tune.TuneConfig(search_alg=search_algorithm(sweep),
                                                           num_samples=1 if sweep.search == "grid" else sweep.trial_count(),
                                                           max_concurrent_trials=sweep.concurrent,
                                                           # a trial's worker process (torch imported) runs the next
                                                           # trial too: 2-3 s less a trial
                                                           reuse_actors=True))
        grid = tuner.fit()
    finally:
        ray.shutdown()
    return len(grid) >= sweep.trial_count() and grid.num_terminated + grid.num_errors >= sweep.trial_count()


class Progress(tune.Callback):
    """Live progress: a line per trial started, finished or failed, and the sweep's files and page
    rewritten as each finishes. (Ray pickles it with the experiment, so it holds plain values.)"""

    def __init__(self, objectives: list[str], trials: int, folder: str, meta: dict):
        self.objectives, self.trials, self.folder, self.meta = objectives, trials, Path(folder), meta

    def _refresh(self) -> tuple[list[dict], int]:
        done = results.collect(self.folder)
        results.write(self.folder, done, self.objectives, dict(self.meta, state="running"))
        return done, sum(t.get("status") != "running" for t in done)

    def on_trial_start(self, iteration, trials, trial, **info):
        values = ", ".join(f"{k}={results.show_value(v)}" for k, v in trial.config.items())
        say(f"trial {trial.trial_id} started: {values}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        done, finished = self._refresh()
        r = next((t for t in done if t["trial"] == trial.trial_id and t.get("accuracy") is not None), None)
        if r is None:
            say(f"trial {trial.trial_id} finished without a result ({finished}/{self.trials} finished)")
            return
        missed = [c["metric"] for c in r["checks"] if not c["passed"]]
        say(f"trial {trial.trial_id} (#{r['number']}) done in {r['seconds']:.0f} s: val acc {r['accuracy']:.2f}%, "
            f"p90 {r['latency']:.3f} ms, {r['size'] / 1024:.1f} KiB, "
            f"{'feasible' if not missed else 'misses ' + ', '.join(missed)} ({finished}/{self.trials} finished)")

    def on_trial_error(self, iteration, trials, trial, **info):
        done, finished = self._refresh()
        path = self.folder / "trials" / trial.trial_id / RESULT
        error = read_json(path).get("error") if path.is_file() else None
        say(f"trial {trial.trial_id} failed: {error or 'see its Ray log in ' + str(self.folder / RAY_DIR)} "
            f"({finished}/{self.trials} finished)")


def say(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)
