"""Sampler overhead: flowkit euler/heun vs the bare model calls and peer implementations.

For each batch size and step count, every method integrates the same MLP from the same x0 over
[0, 1]; its wall time is divided by the *floor*: the time of the same number of bare model calls
(``model(x, t)`` with a precomputed t, no state update). Methods, timed interleaved in one run
(median over repeats):

* flowkit ``fk.sample(model, x0, "euler" | "heun", steps=n)``;
* a hand-written loop (``x = x + dt * model(x, torch.full((B,), t))``; Heun likewise);
* ``torchdiffeq.odeint`` with ``method="euler" | "heun2"`` on the same fixed grid;
* flow_matching's ``ODESolver.sample(step_size=1/n, method="euler" | "heun2")``;
* diffusers' ``FlowMatchEulerDiscreteScheduler`` / ``FlowMatchHeunDiscreteScheduler`` loops (their
  own sigma grid; the model is wrapped as ``-model(x, 1 − σ)``; diffusers' Heun takes an Euler
  last step, so it makes 2n − 1 calls and is divided by the floor of 2n − 1 calls).

Times are CPU time of the single sampling thread by default (``--clock cpu``): on a shared machine
wall time mostly measures the other processes. ``--clock wall`` measures wall time.

Usage: ``python benchmarks/sampler_overhead.py [--quick] [--threads 1] [--clock cpu|wall]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from conditions import CLOCKS, machine, write_page
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler
from flow_matching.solver import ODESolver
from torchdiffeq import odeint

import flowkit as fk

PEERS = ("flowkit", "hand loop", "torchdiffeq", "flow_matching", "diffusers")


def hand_euler(model: Callable, x: torch.Tensor, n: int) -> torch.Tensor:
    dt, b = 1.0 / n, x.shape[0]
    for i in range(n):
        x = x + dt * model(x, torch.full((b,), i * dt))
    return x


def hand_heun(model: Callable, x: torch.Tensor, n: int) -> torch.Tensor:
    dt, b = 1.0 / n, x.shape[0]
    for i in range(n):
        k1 = model(x, torch.full((b,), i * dt))
        k2 = model(x + dt * k1, torch.full((b,), (i + 1) * dt))
        x = x + 0.5 * dt * (k1 + k2)
    return x


def diffusers_loop(sched, model: Callable, x: torch.Tensor, n: int) -> torch.Tensor:
    sched.set_timesteps(n)
    b = x.shape[0]
    for ts in sched.timesteps:
        sigma = ts / sched.config.num_train_timesteps
        x = sched.step(-model(x, (1.0 - sigma).expand(b)), ts, x).prev_sample
    return x


def methods(
    model: torch.nn.Module, scheme: str
) -> dict[str, tuple[Callable, Callable[[int], int]]]:
    """name -> (run(x0, n), nfe(n))."""
    tdq = "euler" if scheme == "euler" else "heun2"
    per = 1 if scheme == "euler" else 2
    fm = ODESolver(velocity_model=lambda x, t: model(x, t))
    sched = (
        FlowMatchEulerDiscreteScheduler() if scheme == "euler" else FlowMatchHeunDiscreteScheduler()
    )
    hand = hand_euler if scheme == "euler" else hand_heun

    def tdq_run(x: torch.Tensor, n: int) -> torch.Tensor:
        grid = torch.linspace(0, 1, n + 1)
        f = lambda t, y: model(y, t.expand(y.shape[0]))  # noqa: E731
        return odeint(
            f, x, grid[[0, -1]], method=tdq, options={"grid_constructor": lambda *_: grid}
        )[-1]

    return {
        "flowkit": (lambda x, n: fk.sample(model, x, scheme, steps=n).x, lambda n: per * n),
        "hand loop": (lambda x, n: hand(model, x, n), lambda n: per * n),
        "torchdiffeq": (tdq_run, lambda n: per * n),
        "flow_matching": (
            lambda x, n: fm.sample(x_init=x, step_size=1.0 / n, method=tdq),
            lambda n: per * n,
        ),
        "diffusers": (
            lambda x, n: diffusers_loop(sched, model, x, n),
            lambda n: n if scheme == "euler" else 2 * n - 1,
        ),
    }


def floor_run(model: Callable, x: torch.Tensor, calls: int) -> None:
    t = torch.full((x.shape[0],), 0.5)
    for _ in range(calls):
        model(x, t)


CLOCK = [time.thread_time]


def timed(fn: Callable[[], object]) -> float:
    clock = CLOCK[0]
    start = clock()
    fn()
    return clock() - start


class Stub(torch.nn.Module):
    """A free model: returns a cached output, so a run's time is the sampler's own overhead."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out
        self.dim = out.shape[-1]

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.out


def bench(model, x0: torch.Tensor, steps: int, scheme: str, repeats: int, check: bool):
    """Raw times per method (and ``floor{c}`` for c bare calls), interleaved, after a warm-up."""
    runs = methods(model, scheme)
    calls = sorted({nfe(steps) for _, nfe in runs.values()})
    times: dict[str, list[float]] = {k: [] for k in [*runs, *[f"floor{c}" for c in calls]]}
    if check:
        ref = runs["flowkit"][0](x0, steps)
        for name in ("hand loop", "torchdiffeq", "flow_matching"):
            torch.testing.assert_close(runs[name][0](x0, steps), ref, rtol=1e-4, atol=1e-4)
    for r in range(repeats + 1):
        order = list(runs)[r % len(runs) :] + list(runs)[: r % len(runs)]
        for c in calls:
            t = timed(lambda c=c: floor_run(model, x0, c))
            if r:
                times[f"floor{c}"].append(t)
        for name in order:
            t = timed(lambda name=name: runs[name][0](x0, steps))
            if r:  # the first round is a warm-up
                times[name].append(t)
    nfes = {name: nfe(steps) for name, (_, nfe) in runs.items()}
    return times, nfes


def ratios(times: dict, nfes: dict, stat: Callable) -> dict[str, float]:
    s = {k: stat(v) for k, v in times.items()}
    out = {name: s[name] / s[f"floor{n}"] for name, n in nfes.items()}
    out["floor"] = 1e3 * s[f"floor{nfes['flowkit']}"]
    return out


def derived(stub_times: dict, nfes: dict, floor_per_call: float) -> dict[str, float]:
    """``1 + overhead / floor``: overhead = min time with the free model − its bare calls."""
    s = {k: min(v) for k, v in stub_times.items()}
    out = {}
    for name, n in nfes.items():
        overhead = s[name] - s[f"floor{n}"]
        out[name] = 1.0 + overhead / (floor_per_call * n)
        out[f"{name} us"] = 1e6 * overhead
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 256, 10 steps, 2 repeats")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="docs/benchmarks/sampler_overhead.md")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: CPU time of the (single) sampling thread, robust to other processes on a "
        "shared machine; wall: wall-clock time",
    )
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu measures one thread: use it with --threads 1")
    CLOCK[0] = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = fk.models.MLP(dim=64, hidden=256, depth=3)
    batches, step_counts = ((256,), (10,)) if args.quick else ((256, 4096), (10, 100))
    repeats = 2 if args.quick else args.repeats
    load0 = os.getloadavg()
    tables: dict[str, list[str]] = {"derived": [], "median": [], "min": []}
    with torch.no_grad():
        for batch in batches:
            x0 = torch.randn(batch, model.dim, generator=torch.Generator().manual_seed(0))
            stub = Stub(model(x0, torch.full((batch,), 0.5)))
            for steps in step_counts:
                for scheme in ("euler", "heun"):
                    reps = repeats if batch <= 256 else max(2, repeats // 2)
                    times, nfes = bench(model, x0, steps, scheme, reps, check=True)
                    stub_times, _ = bench(stub, x0, steps, scheme, 30, check=False)
                    med = ratios(times, nfes, statistics.median)
                    per_call = med["floor"] / 1e3 / nfes["flowkit"]
                    results = {
                        "derived": derived(stub_times, nfes, per_call),
                        "median": med,
                        "min": ratios(times, nfes, min),
                    }
                    for key, res in results.items():
                        cells = " | ".join(f"{res[p]:.3f}×" for p in PEERS)
                        if key == "derived":
                            cells += " | " + " | ".join(f"{res[p + ' us']:.0f}" for p in PEERS)
                        row = f"| {batch} | {steps} | {scheme} | {med['floor']:.1f} | {cells} |"
                        tables[key].append(row)
                        print(key, row, flush=True)
    load1 = os.getloadavg()
    header = (
        "| batch | steps | scheme | floor (ms) | " + " | ".join(PEERS) + " |\n"
        "|---|---|---|---|" + "---|" * len(PEERS)
    )
    header_derived = (
        "| batch | steps | scheme | floor (ms) | "
        + " | ".join(PEERS)
        + " | "
        + " | ".join(f"{p} (µs)" for p in PEERS)
        + " |\n|---|---|---|---|"
        + "---|" * (2 * len(PEERS))
    )
    text = "\n".join(
        [
            "# Sampler overhead",
            "",
            "Time of a full sampling run divided by the time of the same number of bare model",
            "calls (the floor; lower is better, 1.000× = no overhead). Model: flowkit MLP, dim 64,",
            "hidden 256, depth 3, float32, under `torch.no_grad()`, one intra-op thread. Clock: "
            + (
                "CPU time of the sampling thread (`--clock cpu`)."
                if args.clock == "cpu"
                else "wall time (`--clock wall`)."
            ),
            "Generated by "
            f"`python benchmarks/sampler_overhead.py{' --quick' if args.quick else ''}`.",
            "",
            f"Machine: {machine()}. Load average (1 min) {load0[0]:.1f} at the start, "
            f"{load1[0]:.1f} at the end"
            + (
                " — the machine was shared and busy, so the direct timings below are noisy at "
                "the level of several percent; the first table is the stable estimate."
                if max(load0[0], load1[0]) > 1.5
                else "."
            ),
            "",
            "## Overhead measured with a free model",
            "",
            "Each method run with a model that returns a cached output (30 interleaved repeats, "
            "minimum), minus the same number of calls of that free model, gives the sampler's own",
            "overhead per solve (µs columns); the ratio is `1 + overhead / floor` with the floor",
            "of the real model measured below.",
            "",
            header_derived,
            *tables["derived"],
            "",
            f"## Direct timings, median of {repeats} (batch 256) or {max(2, repeats // 2)} "
            "(batch 4096) interleaved repeats after a warm-up round",
            "",
            header,
            *tables["median"],
            "",
            "## Direct timings, minimum of the repeats",
            "",
            header,
            *tables["min"],
            "",
            "diffusers' Heun makes 2n − 1 model calls (its last step is Euler) and is divided by",
            "the floor of 2n − 1 calls; every other Heun makes 2n. diffusers runs on its own sigma",
            "grid and its loop includes the adapter `-model(x, 1 − σ)`.",
            "",
        ]
    )
    write_page(text, args.out)


if __name__ == "__main__":
    main()
