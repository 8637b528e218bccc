"""What the stages of one run share: the experiment, run directory, data, flows and couplings."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from flowkit.devices import pick_device
from flowkit.experiment.components import build_coupling, build_data, build_flow
from flowkit.experiment.data_statistics import keep_statistics
from flowkit.experiment.rundir import WEIGHTS_FILE, RunDir
from flowkit.flow import Flow
from flowkit.seeds import derive_seed

if TYPE_CHECKING:
    from flowkit.experiment.schema import Experiment

#: The stream of the evaluation sets (no stage trains on it).
EVALUATION_STREAM = -1


@contextmanager
def restored_threads() -> Iterator[None]:
    """Restore torch's CPU thread count on exit (a run may set its own with ``threads``)."""
    previous = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def stage_seed(seed: int, index: int) -> int:
    """Seed of stage ``index`` (``-1``: the evaluation sets), one stream each."""
    return derive_seed(seed, index)


@dataclass(frozen=True)
class Deferred:
    """A value built on first use (see :meth:`Context.defer_coupling`)."""

    build: Callable[[], Any]


@dataclass
class Context:
    """State shared by the stages of one run.

    Attributes:
        experiment: the validated experiment.
        run: the run directory (all writes go through it).
        device: torch device of the flows.
        source, target: the data distributions.
        base_coupling: the top-level coupling (its source feeds every reflow and distillation).
        coupling: the coupling the next train stage uses (the last reflow's pairs after one);
            one set with :meth:`defer_coupling` is built when first read.
        flows: flows produced so far, by stage name, in stage order.
        specs: model, path and prediction of each flow, by stage name.
        quiet: no progress bars or log lines.
    """

    experiment: Experiment
    run: RunDir
    device: torch.device
    source: Any
    target: Any
    base_coupling: Any
    current: Any = field(default=None, repr=False)
    flows: dict[str, Flow] = field(default_factory=dict)
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    quiet: bool = False

    @classmethod
    def create(cls, experiment: Experiment, run: RunDir, quiet: bool = False) -> Context:
        if experiment.threads is not None:
            torch.set_num_threads(experiment.threads)
        source, target = build_data(experiment.data)
        keep_statistics(run, source, target)
        base = build_coupling(experiment.coupling, source, target)
        device = pick_device(experiment.device)
        return cls(experiment, run, device, source, target, base, base, quiet=quiet)

    @property
    def coupling(self) -> Any:
        """The coupling the next train stage uses (built now if it was deferred)."""
        if isinstance(self.current, Deferred):
            self.current = self.current.build()
        return self.current

    @coupling.setter
    def coupling(self, value: Any) -> None:
        self.current = value

    def defer_coupling(self, build: Callable[[], Any]) -> None:
        """Make ``build()`` the current coupling, built only if a later stage reads it.

        A finished reflow stage restores its pairs this way, so that sampling and evaluating a
        run need only its weights (not its pair store).
        """
        self.current = Deferred(build)

    @property
    def progress(self) -> bool:
        return not self.quiet

    def log(self, message: str) -> None:
        """Print a line (above any progress bar) unless quiet."""
        if not self.quiet:
            tqdm.write(message)

    def last_flow(self) -> str:
        """The name of the latest flow."""
        return next(reversed(self.flows))

    def new_flow(self, spec: Mapping[str, Any], seed: int = 0) -> Flow:
        """A freshly initialised flow of ``spec``; its initial weights depend only on ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_flow(spec, self.device)

    def keep_flow(self, name: str, flow: Flow, spec: Mapping[str, Any]) -> None:
        """Hold ``flow`` (and its spec) as the result of stage ``name``."""
        self.specs[name] = dict(spec)
        self.flows[name] = flow

    def save_flow(self, name: str, flow: Flow, spec: Mapping[str, Any]) -> None:
        """Keep ``flow`` as stage ``name``'s result and write its final weights."""
        self.keep_flow(name, flow, spec)
        self.run.save_tensors(f"stages/{name}/{WEIGHTS_FILE}", flow.state_dict())

    def load_flow(self, name: str, spec: Mapping[str, Any], info: Mapping[str, Any]) -> Flow:
        """Rebuild stage ``name``'s flow from its final weights (on resume, or for eval)."""
        flow = self.new_flow(spec)
        state = self.run.load_stage_tensors(name, info, WEIGHTS_FILE)
        flow.load_state_dict({k: v.to(self.device) for k, v in state.items()})
        flow.deterministic_coupling = bool(info.get("deterministic_coupling", False))
        self.keep_flow(name, flow, spec)
        return flow
