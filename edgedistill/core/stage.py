"""A stage of the pipeline (a plain function with what the runner needs to cache it), the context the
runner hands it, and the stage graph: which stages run for a pipeline and in what order."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from pydantic import BaseModel

from edgedistill.core.errors import ConfigError


class Pipeline(Protocol):
    """What the runner reads of a pipeline (edgedistill.pipeline.Pipeline): its name. The stages' configure
    functions read the rest."""
    name: str


@dataclass
class Context:
    """What the runner hands a stage besides its config and inputs."""

    work: Path
    """Folder that survives a crash until the stage finishes: checkpoints go here."""
    progress: bool = True
    """Show progress bars."""
    quiet: bool = False
    """Say nothing (the other processes of a torchrun job: rank 0 speaks for all)."""

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"    {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Stage:
    """A pipeline step: a plain function plus what the runner needs to cache it."""

    name: str
    version: int
    """Bump when the stage's code changes what it produces: old results stop matching."""
    inputs: tuple[str, ...]
    """Artifact names this stage reads (outputs of other stages)."""
    output: str
    """Artifact name this stage writes."""
    configure: Callable[[Pipeline], BaseModel]
    """This stage's own typed config, taken from the pipeline (all of what it depends on)."""
    run: Callable[[Any, dict[str, Path], Path, Context], dict]
    """run(cfg, inputs, out, ctx) -> metrics. Writes its files into out."""
    sources: Callable[[Any], dict[str, Path]] = lambda cfg: {}
    """Files outside the store that it reads (data, weights); their content goes into the key."""
    key_exclude: dict | None = None
    """Config fields that do not change the result (model_dump's exclude syntax), e.g. device."""
    headline: Callable[[dict], str] = lambda m: ""
    """One short string of the metrics for the summary table."""
    check: Callable[[Pipeline], None] = lambda p: None
    """Cheap checks of the config against the models and data (layer paths...), run by plan and before
    run computes anything: a mistake fails in seconds, not after an hour of fine-tuning."""
    distributed: bool = False
    """Under torchrun, every process runs it (data-parallel training); rank 0 alone writes the result.
    Other stages run on rank 0 while the rest wait."""
    parts: dict[str, str] = field(default_factory=dict, hash=False)
    """Further artifacts it writes, each a subfolder of its result: {artifact name: subfolder} (online
    distillation's result holds the teacher it trained: {"teacher": "teacher"})."""
    skip: Callable[[Pipeline], str | None] = lambda p: None
    """Why this stage has nothing to do in this pipeline (another stage writes its output in this
    pipeline's mode), or None when it runs. Exactly one stage of those writing an artifact runs; the
    skipped ones show in plan and run with this reason."""

    @property
    def artifacts(self) -> tuple[str, ...]:
        return (self.output, *self.parts)


def active(stages: list[Stage], pipeline: Pipeline) -> tuple[list[Stage], list[tuple[Stage, str]]]:
    """The stages that run for this pipeline, in order (toposort), and the skipped ones with why."""
    skipped = [(s, why) for s in stages if (why := s.skip(pipeline))]
    return toposort([s for s in stages if not s.skip(pipeline)]), skipped


def producers_of(stages: list[Stage]) -> dict[str, Stage]:
    """{artifact: the stage that writes it}; ConfigError when two stages of one pipeline write the same."""
    out: dict[str, Stage] = {}
    for s in stages:
        for a in s.artifacts:
            if a in out:
                raise ConfigError(f"stages '{out[a].name}' and '{s.name}' both write '{a}'")
            out[a] = s
    return out


def toposort(stages: list[Stage]) -> list[Stage]:
    """Order by declared inputs and outputs, never by list order."""
    producers = producers_of(stages)
    for s in stages:
        for i in s.inputs:
            if i not in producers:
                raise ConfigError(f"stage '{s.name}' reads '{i}', which no stage writes")
    ordered: list[Stage] = []
    state: dict[str, int] = {}

    def visit(s: Stage) -> None:
        if state.get(s.name) == 2:
            return
        if state.get(s.name) == 1:
            raise ConfigError(f"stage dependency cycle through '{s.name}'")
        state[s.name] = 1
        for i in s.inputs:
            visit(producers[i])
        state[s.name] = 2
        ordered.append(s)

    for s in sorted(stages, key=lambda s: s.name):
        visit(s)
    return ordered


def upstream(stages: list[Stage], target: str) -> set[str]:
    producers = producers_of(stages)
    by_name = {s.name: s for s in stages}
    need, todo = set(), [by_name[target]]
    while todo:
        s = todo.pop()
        if s.name not in need:
            need.add(s.name)
            todo.extend(producers[i] for i in s.inputs)
    return need
