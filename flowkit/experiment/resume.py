"""What a resumed run may change: the options of stages that have not finished.

A run resumed with an experiment (``flowkit run CONFIG --resume RUN``) must agree with the
``config.yaml`` it was started with wherever a finished stage's result depends on it. So after a
failure, fixing a later stage's options (or adding stages at the end) and resuming keeps the
finished stages, while changing the seed, the data, the model or a finished stage is refused.

- Top-level keys must match, except ``description`` (shown in the report only) and the
  sections only evaluation reads (``evaluation``, ``plots``) while no evaluating stage has
  finished.
- ``stages[i]`` may differ, appear or disappear only for stages that have not finished.

A stage whose options changed starts afresh: its partial work (checkpoints, pair shards) was
made with the old options and is moved aside under ``stages/<name>.replaced-<n>/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import zip_longest
from typing import Any

from flowkit.errors import ConfigError
from flowkit.experiment.rundir import RunDir

FREE_KEYS = ("description",)
EVALUATION_KEYS = ("evaluation", "plots")


def changed_stages(stored: Mapping[str, Any], given: Mapping[str, Any]) -> list[int]:
    """Indices of the stages whose resolved options differ (or exist in only one of the two)."""
    pairs = zip_longest(stored["stages"], given["stages"])
    return [i for i, (a, b) in enumerate(pairs) if a != b]


def resume_problems(
    stored: Mapping[str, Any], given: Mapping[str, Any], finished: set[str], evaluated: bool
) -> list[tuple[str, str]]:
    """``(key, message)`` for every difference that a finished stage depends on.

    Args:
        stored, given: the resolved experiments (``Experiment.resolved``) of the run and of the
            resume call.
        finished: names of the finished stages.
        evaluated: whether an evaluating stage has finished (it read ``evaluation``/``plots``).
    """
    problems = []
    for key in dict.fromkeys([*stored, *given]):
        if key == "stages" or key in FREE_KEYS or stored.get(key) == given.get(key):
            continue
        if key in EVALUATION_KEYS and not evaluated:
            continue
        problems.append((key, "differs from the config.yaml that finished stages of the run used"))
    for i in changed_stages(stored, given):
        old = stored["stages"][i] if i < len(stored["stages"]) else None
        if old is not None and old["name"] in finished:
            problems.append(
                (f"stages[{i}]", f"differs from the finished stage {old['name']!r} of the run")
            )
    return problems


def accept_changes(stored: Any, given: Any, run: RunDir) -> Any:
    """The experiment to resume with: ``given`` if it differs from ``stored`` only where no
    finished stage depends on it (its config.yaml is then rewritten, and the partial work of
    changed stages moved aside), else a :class:`ConfigError` naming every difference."""
    finished = {s.name for s in stored.stages if run.done(s.name) is not None}
    evaluated = any(s.rerun_on_eval and s.name in finished for s in stored.stages)
    problems = resume_problems(stored.resolved, given.resolved, finished, evaluated)
    if problems:
        raise ConfigError(
            [(k, f"{m} ({str(run.root)!r}); resume with the same options") for k, m in problems]
        )
    if stored.resolved == given.resolved:
        return stored
    for i in changed_stages(stored.resolved, given.resolved):
        if i < len(stored.stages):
            set_aside(run, stored.stages[i].name)
    run.write_config(given.resolved)
    return given


def set_aside(run: RunDir, stage: str) -> None:
    """Move the partial work of a changed, unfinished stage out of its way."""
    directory = run.stage_path(stage)
    if not run.writer or not directory.is_dir():
        return
    n = 1
    while directory.with_name(f"{stage}.replaced-{n}").exists():
        n += 1
    directory.rename(directory.with_name(f"{stage}.replaced-{n}"))
