"""Training-step overhead: ``fk.train`` vs a hand-written flow-matching loop and peer libraries.

Every method trains the same model (flowkit's MLP, 3 hidden layers of 128, on 2-d data) from the
same initial weights with Adam (lr 1e-3) on the same pairs: independent coupling N(0, I) → moons,
drawn once before timing (``steps`` batches), so that no method pays for drawing data and the
times compare the training loops themselves. Times ``t ~ U[0, 1)`` are drawn every step from a
generator seeded alike in every method (flowkit's ``uniform`` time sampler draws the same
numbers), so all methods see the same batches and times. Methods, timed interleaved in one run:

* **bare loop**: hand-written PyTorch, ``x_t = t·x1 + (1 − t)·x0``, target ``x1 − x0``,
  ``((model(x_t, t) − target)²).mean()``, ``zero_grad``/``backward``/``step``; the detached loss
  of every step is kept (a list of tensors, stacked at the end);
* **torchcfm**: the same loop with ``ConditionalFlowMatcher(sigma=0)
  .sample_location_and_conditional_flow(x0, x1, t)`` for ``x_t`` and the target;
* **flow_matching**: the same loop with ``CondOTProbPath().sample(x0, x1, t)``;
* **flowkit**: ``fk.train(flow, coupling, steps, batch)`` with a coupling that hands out the
  pre-drawn batches, defaults otherwise (``log_every=10``, no progress bar).

The methods are timed together, in chunks: ``fk.train`` drives the run, and its coupling (which
hands out the pre-drawn batches) runs the next ``chunk`` steps (default 25) of every hand-written
loop before the steps of ``fk.train`` that use them, timing each loop's chunk on its own; the time
spent in the coupling is taken off ``fk.train``'s. So every method is timed over the same stretch
of the machine's history (on a shared VM the clock rate drifts by 20 % within a minute, more than
the differences measured here), yet runs ``chunk`` steps in a row as it would alone. A warm-up
round (not timed) checks that every loop computes the same losses as ``fk.train``. Each
method's time of one round (its set-up, i.e. optimizer and, for ``fk.train``, option checks and
coupling, included) is divided by the bare loop's in the same round; the table gives the median
of these ratios over the rounds, and the median time per step of the bare loop. One torch thread;
the clock is the CPU time of that thread by default (``--clock cpu``).

Usage: ``python benchmarks/train_overhead.py [--quick] [--steps 300] [--repeats 9]
[--chunk 25] [--batches 512 4096] [--clock cpu|wall]``; writes docs/benchmarks/train_overhead.md.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
from collections.abc import Callable

import torch
import torchcfm.conditional_flow_matching as tcfm
from conditions import CLOCKS, machine, write_page
from flow_matching.path import CondOTProbPath
from torch import Tensor, nn

import flowkit as fk
from flowkit.couplings.base import CouplingBatch

METHODS = ("bare loop", "torchcfm", "flow_matching", "flowkit")
TARGETS = {512: 1.03, 4096: 1.01}
LR = 1e-3
SEED = 0

Pair = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


class Stepper:
    """A hand-written training loop around ``pair(x0, x1, t) -> (x_t, target)``, one step per
    :meth:`step` call (its own optimizer and time generator; the detached losses are kept)."""

    def __init__(self, pair: Pair, model: nn.Module) -> None:
        self.pair, self.model = pair, model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        self.generator = torch.Generator().manual_seed(SEED)
        self.losses: list[Tensor] = []

    def step(self, x0: Tensor, x1: Tensor) -> None:
        t = torch.rand(x0.shape[0], generator=self.generator)
        x_t, target = self.pair(x0, x1, t)
        loss = ((self.model(x_t, t) - target) ** 2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.losses.append(loss.detach())


class Interleaved:
    """The coupling handed to ``fk.train``: every ``chunk``-th ``sample`` call (one call per
    training step) first runs the next ``chunk`` steps of every hand-written loop, each loop
    timed on its own, then each call returns its step's pre-drawn batch. The whole time spent in
    here is taken off ``fk.train``'s time. So all methods are timed over the same stretch of the
    machine's history (a drifting clock rate, other jobs), chunk by chunk, while each runs
    ``chunk`` steps in a row, as it would alone (a method interrupted every step would pay for
    the others' data and code evicting its own from the caches)."""

    def __init__(
        self,
        x0: Tensor,
        x1: Tensor,
        loops: dict[str, Stepper],
        clock: Callable[[], float],
        chunk: int,
    ) -> None:
        self.x0, self.x1, self.loops, self.clock, self.chunk = x0, x1, loops, clock, chunk
        self.times = dict.fromkeys(loops, 0.0)
        self.inside, self.index = 0.0, 0

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> CouplingBatch:
        entered = self.clock()
        i = self.index
        if i % self.chunk == 0:
            names = list(self.loops)
            shift = (i // self.chunk) % len(names)  # each loop's place in the chunk rotates
            for name in names[shift:] + names[:shift]:
                start = self.clock()
                for j in range(i, min(i + self.chunk, len(self.x0))):
                    self.loops[name].step(self.x0[j], self.x1[j])
                self.times[name] += self.clock() - start
        self.index += 1
        batch = CouplingBatch(self.x0[i], self.x1[i])
        self.inside += self.clock() - entered
        return batch


def predraw(batch: int, steps: int) -> tuple[Tensor, Tensor]:
    """``steps`` batches of independent pairs N(0, I) → moons, shape ``(steps, batch, 2)``."""
    g = torch.Generator().manual_seed(SEED)
    x0 = torch.randn(steps, batch, 2, generator=g)
    x1 = fk.data.build("moons").sample(steps * batch, generator=g).reshape(steps, batch, 2)
    return x0, x1


def hand_pair(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    tt = t[:, None]
    return tt * x1 + (1 - tt) * x0, x1 - x0


def torchcfm_pair() -> Pair:
    matcher = tcfm.ConditionalFlowMatcher(sigma=0.0)
    return lambda x0, x1, t: matcher.sample_location_and_conditional_flow(x0, x1, t)[1:]


def flow_matching_pair() -> Pair:
    path = CondOTProbPath()

    def pair(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        s = path.sample(x_0=x0, x_1=x1, t=t)
        return s.x_t, s.dx_t

    return pair


PAIRS: dict[str, Callable[[], Pair]] = {
    "bare loop": lambda: hand_pair,
    "torchcfm": torchcfm_pair,
    "flow_matching": flow_matching_pair,
}


def round_times(
    base: nn.Module, x0s: Tensor, x1s: Tensor, clock: Callable[[], float], chunk: int
) -> tuple[dict[str, float], dict[str, Tensor]]:
    """One round: ``fk.train`` with every hand-written loop interleaved step by step; each
    method's seconds (its set-up included) and its losses."""
    loops, times = {}, {}
    for name, make in PAIRS.items():
        model = copy.deepcopy(base)
        start = clock()
        loops[name] = Stepper(make(), model)
        times[name] = clock() - start
    coupling = Interleaved(x0s, x1s, loops, clock, chunk)
    flow = fk.Flow(copy.deepcopy(base), "rectified")
    start = clock()
    history = fk.train(
        flow,
        coupling,
        x0s.shape[0],
        x0s.shape[1],
        lr=LR,
        generator=torch.Generator().manual_seed(SEED),
        progress=False,
    )
    times["flowkit"] = clock() - start - coupling.inside
    for name, spent in coupling.times.items():
        times[name] += spent
    losses = {name: torch.stack(loop.losses) for name, loop in loops.items()}
    losses["flowkit"] = torch.tensor(history.losses)
    return times, losses


def bench(
    base: nn.Module,
    batch: int,
    steps: int,
    repeats: int,
    clock: Callable[[], float],
    chunk: int,
) -> dict[str, list[float]]:
    """Seconds per run of every method, ``repeats`` rounds after a checked warm-up round."""
    x0s, x1s = predraw(batch, steps)
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    for r in range(repeats + 1):
        elapsed, losses = round_times(base, x0s, x1s, clock, chunk)
        if not r:  # same batches, times and initial weights: the first steps agree closely
            for name in METHODS:
                torch.testing.assert_close(
                    losses[name][:20], losses["flowkit"][:20], rtol=1e-4, atol=1e-6
                )
            continue
        for name in METHODS:
            times[name].append(elapsed[name])
    return times


def paired_ratios(times: dict[str, list[float]]) -> dict[str, float]:
    """Median over rounds of each method's time divided by the bare loop's of the same round."""
    bare = times["bare loop"]
    return {
        name: statistics.median(t / b for t, b in zip(values, bare, strict=True))
        for name, values in times.items()
    }


def verdict(batch: int, ratio: dict[str, float]) -> str:
    """Whether flowkit meets its targets: the ratio bound of the batch, not slower than peers."""
    fk_ratio, parts = ratio["flowkit"], []
    if batch in TARGETS:
        bound = TARGETS[batch]
        met = "met" if fk_ratio <= bound else f"**not met** (by {fk_ratio - bound:.3f})"
        parts.append(f"≤ {bound:.2f}×: {met}")
    for peer in ("torchcfm", "flow_matching"):
        met = "met" if fk_ratio <= ratio[peer] else "**not met**"
        parts.append(f"≤ {peer}: {met}")
    return "; ".join(parts)


class OneWeight(nn.Module):
    """``model(x, t) = w·x``: a model that costs next to nothing, so a loop's time is its own."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return x * self.w


def loop_overhead(batch: int, steps: int, runs: int, clock: Callable[[], float]) -> list[str]:
    """Table rows: each loop's time per step with :class:`OneWeight` (what the loop itself
    costs: pairs, loss, backward and Adam on one weight, bookkeeping), the minimum over
    ``runs`` rounds, each method run alone for all ``steps`` (``chunk = steps``)."""
    x0s, x1s = predraw(batch, steps)
    best = dict.fromkeys(METHODS, math.inf)
    for _ in range(runs):
        times, _ = round_times(OneWeight(), x0s, x1s, clock, chunk=steps)
        best = {name: min(best[name], times[name]) for name in METHODS}
    bare = best["bare loop"]
    return [
        f"| {name} | {1e6 * best[name] / steps:.1f} | {1e6 * (best[name] - bare) / steps:+.1f} |"
        for name in METHODS
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 64, 20 steps, 1 repeat")
    parser.add_argument("--batches", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--chunk", type=int, default=25, help="steps per method in a row")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--out", default="docs/benchmarks/train_overhead.md")
    args = parser.parse_args()
    batches, steps, repeats = (
        ([64], 20, 1) if args.quick else (args.batches, args.steps, args.repeats)
    )
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    base = fk.models.build({"name": "mlp", "dim": 2, "hidden": 128, "depth": 3})
    load0 = os.getloadavg()
    rows = []
    for batch in batches:
        times = bench(base, batch, steps, repeats, CLOCKS[args.clock], args.chunk)
        ratio = paired_ratios(times)
        per_step = 1e3 * statistics.median(times["bare loop"]) / steps
        cells = " | ".join(f"{ratio[name]:.3f}×" for name in METHODS)
        rows.append(f"| {batch} | {steps} | {per_step:.2f} | {cells} | {verdict(batch, ratio)} |")
        print(rows[-1], flush=True)
    overhead_runs = 3 if args.quick else 15
    overhead = loop_overhead(512, steps, overhead_runs, CLOCKS[args.clock])
    load1 = os.getloadavg()
    command = "python benchmarks/train_overhead.py" + (" --quick" if args.quick else "")
    clock = (
        "CPU time of the training thread (`--clock cpu`)"
        if args.clock == "cpu"
        else "wall time (`--clock wall`)"
    )
    text = "\n".join(
        [
            "# Training-step overhead",
            "",
            "Time of a whole training run of each method divided by the time of a bare,",
            "hand-written PyTorch flow-matching loop in the same round (lower is better; 1.000× =",
            "no overhead), median over the rounds. Model: flowkit's MLP (2-d, 3 hidden layers of",
            "128), Adam lr 1e-3, float32, one intra-op thread; pairs N(0, I) → moons drawn before",
            "timing, times `t ~ U[0, 1)` drawn every step alike in every method (see the script's",
            f"docstring). Clock: {clock}. Generated by `{command}`.",
            "",
            f"Machine: {machine()}. Load average (1 min) {load0[0]:.2f} at the start, "
            f"{load1[0]:.2f} at the end.",
            "",
            f"Median of {repeats} rounds after a warm-up round, the methods interleaved in chunks "
            f"of {args.chunk} steps:",
            "",
            "| batch | steps | bare loop (ms/step) | " + " | ".join(METHODS) + " | targets |",
            "|---|---|---|" + "---|" * len(METHODS) + "---|",
            *rows,
            "",
            "Targets: `fk.train` ≤ 1.03× the bare loop at batch 512 and ≤ 1.01× at batch 4096, and",
            "not slower than either peer loop.",
            "",
            "## What the loops themselves cost",
            "",
            "The same loops with a one-weight model `w·x` (batch 512), whose forward, backward",
            "and Adam step cost next to nothing, so the time is the loop's own: drawing",
            "the times, the path point and target, the loss, the optimizer calls and bookkeeping.",
            f"Time per step, the minimum over {overhead_runs} rounds of {steps} steps (each method "
            "alone):",
            "",
            "| method | µs per step | above the bare loop |",
            "|---|---|---|",
            *overhead,
            "",
            "What `fk.train` does per step beyond the bare loop: draw the batch through the",
            "coupling interface and the time sampler, the path's coefficients (`a(t)`, `b(t)`, the",
            "schedule's velocity), the learning-rate schedule's step, the step count and learning",
            "rate of the history. It does not wait for the device: the losses stay there and are",
            "read every `log_every` steps; times drawn by flowkit's samplers are not checked (see",
            "[Training](../training.md#no-host-synchronisation-per-step)). The set-up of a call",
            "(option checks, optimizer, coupling) is timed too.",
            "",
        ]
    )
    write_page(text, args.out)


if __name__ == "__main__":
    main()
