"""What the stages of one run share: config, run directory, data, flows and the current coupling."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from flowkit.experiment.components import (
    build_coupling,
    build_data,
    build_flow,
    flow_spec,
    pick_device,
)
from flowkit.experiment.rundir import WEIGHTS_FILE, RunDir
from flowkit.flow import Flow


@contextmanager
def restored_threads() -> Iterator[None]:
    """Restore torch's CPU thread count on exit (a run may set its own with ``threads``)."""
    previous = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def stage_seed(seed: int, index: int) -> int:
    """Seed of stage ``index``: distinct, reproducible streams per stage."""
    return seed * 1009 + index + 1


@dataclass
class Context:
    """State shared by the stages of one run.

    Attributes:
        config: the resolved experiment.
        run: the run directory (all writes go through it).
        device: torch device of the flows.
        source, target: the data distributions.
        base_coupling: the top-level coupling (its source feeds every reflow and distillation).
        coupling: the coupling the next train stage uses (the last reflow's pairs after one).
        flows: flows produced so far, by stage name, in stage order.
        specs: model, path and prediction of each flow, by stage name.
        quiet: no progress bars or log lines.
    """

    config: dict[str, Any]
    run: RunDir
    device: torch.device
    source: Any
    target: Any
    base_coupling: Any
    coupling: Any = None
    flows: dict[str, Flow] = field(default_factory=dict)
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    quiet: bool = False

    @classmethod
    def create(cls, config: dict[str, Any], run: RunDir, quiet: bool = False) -> Context:
        if config["threads"] is not None:
            torch.set_num_threads(config["threads"])
        source, target = build_data(config)
        base = build_coupling(config["coupling"], source, target)
        return cls(
            config, run, pick_device(config["device"]), source, target, base, base, quiet=quiet
        )

    @property
    def progress(self) -> bool:
        return not self.quiet

    def log(self, message: str) -> None:
        """Print a line (above any progress bar) unless quiet."""
        if not self.quiet:
            tqdm.write(message)

    def last_flow(self) -> str:
        return next(reversed(self.flows))

    def teacher_name(self, stage: Mapping[str, Any]) -> str:
        """The flow a reflow/distill stage starts from: ``teacher``, else the last flow."""
        return stage.get("teacher") or next(reversed(self.flows))

    def spec_of(self, stage: Mapping[str, Any]) -> dict[str, Any]:
        """Model, path and prediction of a stage's flow (a student copies its teacher's)."""
        if stage["type"] == "train":
            return flow_spec(self.config, stage)
        return self.specs[self.teacher_name(stage)]

    def new_flow(self, stage: Mapping[str, Any], seed: int = 0) -> Flow:
        """A freshly initialised flow for ``stage``; its initial weights depend only on ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_flow(self.config, self.spec_of(stage), self.device)

    def save_flow(self, stage: Mapping[str, Any], flow: Flow) -> None:
        """Keep ``flow`` as the stage's result and write its final weights."""
        self.specs[stage["name"]] = self.spec_of(stage)
        self.flows[stage["name"]] = flow
        self.run.save_tensors(f"stages/{stage['name']}/{WEIGHTS_FILE}", flow.state_dict())

    def load_flow(self, stage: Mapping[str, Any], info: Mapping[str, Any]) -> Flow:
        """Rebuild a finished stage's flow from its final weights (on resume, or for eval)."""
        flow = self.new_flow(stage)
        state = self.run.load_tensors(f"stages/{stage['name']}/{WEIGHTS_FILE}")
        flow.load_state_dict({k: v.to(self.device) for k, v in state.items()})
        flow.deterministic_coupling = bool(info.get("deterministic_coupling", False))
        self.specs[stage["name"]] = self.spec_of(stage)
        self.flows[stage["name"]] = flow
        return flow


Runner = Callable[[Context, dict[str, Any], int], dict[str, Any]]
