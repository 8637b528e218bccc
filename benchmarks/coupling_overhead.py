"""Acceptance benchmark (issue 14): what minibatch OT costs in training, and what it buys.

Run from the repository root (one intra-op thread; background workers use another core)::

    python benchmarks/coupling_overhead.py                       # every part, writes the page
    python benchmarks/coupling_overhead.py --parts speed --json runs/coupling_overhead.json

Three parts, each kept in ``--json`` (parts run separately are merged into one page):

- ``sweep``: for N(0, I) → moons batches of 256, 1024 and 4096, the mean transport cost per pair
  ``||x0 − x1||²`` and the time of one assignment (median over 3 batches of the best of 5
  calls): independent pairs, the exact assignment, and chunked OT (``chunk_size`` 16 … 128) with
  the k-d cells of ``flowkit.couplings.chunking`` and, for contrast, with random cells of 32.
- ``speed``: training steps per second of ``fk.train`` (flowkit's MLP, 3 hidden layers of 128)
  with ``minibatch_ot`` (exact and chunked) divided by the same with ``independent``, at batch
  256 and 1024 (and 4096 chunked), with ``num_workers`` 0 and 1; the rate is taken over the steps
  after the first ``WARMUP`` (worker start-up and first batches excluded), median over
  interleaved rounds. Beside it the exact assignment's own rate (assignments per second).
- ``quality``: W2 (Euler, 100 steps, and 2 steps) and straightness the trained flow reaches,
  median over ≥ 3 training seeds, each evaluated on the low-variance sets of
  ``benchmarks/reflow_moons.py`` (quasi-random source, stratified reference; mean of 3 sets),
  trained without workers. With ``num_workers >= 1`` the batches are other draws of the same
  distribution (batch ``k`` a function of the seed and ``k``), so the workers rows share these
  figures.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from conditions import machine, write_page
from reflow_moons import Settings, low_variance_sets
from torch import Tensor

import flowkit as fk
from flowkit.couplings.assignment import exact_assignment, exact_permutation, squared_distances
from flowkit.couplings.chunking import chunked_assignment

#: chunk size of the chunked rows, per batch size (chosen from the sweep: see the page)
CHUNK = {256: 16, 1024: 16, 4096: 16}
SWEEP_CHUNKS = (16, 32, 64, 128)
EXACT_MAX = 1024  # the exact assignment at 4096 takes seconds per batch
WARMUP = 10
MODEL = {"name": "mlp", "dim": 2, "hidden": 128, "depth": 3}


def coupling_spec(kind: str, batch: int) -> dict[str, Any]:
    """``independent``, ``exact`` or ``chunked`` (minibatch OT with ``CHUNK[batch]``)."""
    base = {"source": "gaussian", "target": "moons"}
    if kind == "independent":
        return {"name": "independent", **base}
    extra = {"chunk_size": CHUNK[batch]} if kind == "chunked" else {}
    return {"name": "minibatch_ot", **base, **extra}


def random_cells(x0: Tensor, x1: Tensor, k: int, g: torch.Generator) -> Tensor:
    """Exact OT within random cells of ``k`` sources and ``k`` targets (the naive chunking)."""
    n = x0.shape[0]
    s0, s1 = torch.randperm(n, generator=g), torch.randperm(n, generator=g)
    perm = torch.empty(n, dtype=torch.long)
    for a, b in zip(s0.split(k), s1.split(k), strict=True):
        perm[b] = a[exact_assignment(squared_distances(x0[a], x1[b]))]
    return perm


def timed(solve: Any, x0: Tensor, x1: Tensor) -> float:
    start = time.perf_counter()
    solve(x0, x1)
    return time.perf_counter() - start


def sweep(batches: list[int], repeats: int) -> list[dict[str, Any]]:
    """Mean cost per pair and median milliseconds per assignment of each method."""
    moons, rows = fk.data.build("moons"), []
    for batch in batches:
        g = torch.Generator().manual_seed(batch)
        draws = [
            (torch.randn(batch, 2, generator=g), moons.sample(batch, generator=g))
            for _ in range(repeats)
        ]
        methods: dict[str, Any] = {"independent": lambda a, b: torch.arange(a.shape[0])}
        if batch <= EXACT_MAX:
            methods["exact"] = lambda a, b: exact_assignment(squared_distances(a, b))
        for k in SWEEP_CHUNKS:
            methods[f"k-d cells {k}"] = lambda a, b, k=k: chunked_assignment(
                a, b, k, exact_permutation
            )
        methods["random cells 32"] = lambda a, b, g=g: random_cells(a, b, 32, g)
        for name, solve in methods.items():
            costs, times = [], []
            for x0, x1 in draws:
                perm = solve(x0, x1)
                costs.append(float(((x0[perm] - x1) ** 2).sum(1).mean()))
                times.append(min(timed(solve, x0, x1) for _ in range(5 if batch <= 1024 else 2)))
            rows.append(
                {
                    "batch": batch,
                    "method": name,
                    "cost": statistics.fmean(costs),
                    "ms": 1e3 * statistics.median(times),
                }
            )
            print(rows[-1], flush=True)
    return rows


def workers_supported() -> bool:
    return "num_workers" in inspect.signature(fk.train).parameters


def train_rate(
    base: torch.nn.Module, spec: dict[str, Any], batch: int, steps: int, w: int
) -> float:
    """Steps per second of ``fk.train`` after the first ``WARMUP`` steps."""
    flow = fk.Flow(copy.deepcopy(base), "rectified")
    marks: dict[int, float] = {}

    def clock(step: int, loss: float) -> None:
        if step in (WARMUP, steps):
            marks[step] = time.perf_counter()

    extra = {"num_workers": w} if w else {}
    fk.train(flow, spec, steps, batch, seed=0, progress=False, callback=clock, **extra)
    return (steps - WARMUP) / (marks[steps] - marks[WARMUP])


def assignment_rate(batch: int, seconds: float = 3.0) -> float:
    """Exact assignments (with the batch draw) per second: ``minibatch_ot.sample(batch)``."""
    coupling = fk.couplings.build(coupling_spec("exact", batch))
    g = torch.Generator().manual_seed(0)
    coupling.sample(batch, g)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        coupling.sample(batch, g)
        count += 1
    return count / (time.perf_counter() - start)


def speed_configs(batches: list[int], workers: list[int]) -> list[tuple[int, str, int]]:
    configs = []
    for batch in batches:
        kinds = ["independent", "chunked"] + (["exact"] if batch <= EXACT_MAX else [])
        for w in workers if batch <= EXACT_MAX else [0]:
            configs += [(batch, kind, w) for kind in kinds]
    return configs


def speed(batches: list[int], workers: list[int], rounds: int, step_time: float) -> dict:
    """Median steps/s of every (batch, coupling, workers) over interleaved rounds."""
    torch.manual_seed(0)
    base = fk.models.build(MODEL)
    configs = speed_configs(batches, workers)
    rates: dict[str, list[float]] = {}
    for r in range(rounds):
        for batch, kind, w in configs:
            # about step_time seconds of training per run, at least 4 × WARMUP steps
            steps = max(4 * WARMUP, int(step_time * 1000 / batch) * 10)
            key = f"{batch}/{kind}/{w}"
            rates.setdefault(key, []).append(
                train_rate(base, coupling_spec(kind, batch), batch, steps, w)
            )
            print(r, key, f"{rates[key][-1]:.1f} steps/s", flush=True)
        if 256 in batches:  # the bound of the one-worker target, in every round
            rates.setdefault("assignments/s 256", []).append(assignment_rate(256, 2.0))
    result: dict[str, Any] = {k: statistics.median(v) for k, v in rates.items()}
    result["rounds"] = rates
    if 1024 in batches:
        result["assignments/s 1024"] = assignment_rate(1024, 5.0)
    return result


def evaluate(flow: fk.Flow, sets: list[tuple[Tensor, Tensor, Tensor]]) -> dict[str, float]:
    """W2 after Euler with 100 and 2 steps, and straightness, averaged over evaluation sets."""
    out: dict[str, list[float]] = {}
    for x0, y, _ in sets:
        for steps in (100, 2):
            x = fk.sample(flow, x0, solver="euler", steps=steps).x
            out.setdefault(f"w2 euler {steps}", []).append(fk.metrics.w2(x, y))
        out.setdefault("straightness", []).append(fk.metrics.straightness(flow, x0))
    return {k: statistics.fmean(v) for k, v in out.items()}


def quality(
    batches: list[int], seeds: int, steps: int, rows: list[dict[str, Any]], save: Any
) -> list[dict[str, Any]]:
    """Train every (batch, coupling) with ``seeds`` seeds; median of each figure over seeds.

    Rows already in ``rows`` (same seeds and steps) are kept; ``save()`` runs after each new row,
    so an interrupted run continues where it stopped. The slow exact rows come last.
    """
    sets = [low_variance_sets(Settings(), repeat) for repeat in range(3)]
    plan = [(b, k) for b in batches for k in ("independent", "chunked")]
    plan += [(b, "exact") for b in batches if b <= EXACT_MAX]
    rows[:] = [r for r in rows if (r["seeds"], r["steps"]) == (seeds, steps)]
    done = {(r["batch"], r["kind"]) for r in rows}
    for batch, kind in plan:
        if (batch, kind) in done:
            continue
        per_seed = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            flow = fk.Flow(fk.models.build(MODEL), "rectified")
            fk.train(
                flow,
                coupling_spec(kind, batch),
                steps,
                batch,
                lr=3e-3,
                lr_schedule="cosine",
                seed=seed,
                progress=False,
            )
            per_seed.append(evaluate(flow, sets))
        row = {"batch": batch, "kind": kind, "seeds": seeds, "steps": steps}
        row |= {k: statistics.median(s[k] for s in per_seed) for k in per_seed[0]}
        rows.append(row)
        save()
        print(row, flush=True)
    return rows


def sweep_table(rows: list[dict[str, Any]]) -> list[str]:
    batches = sorted({r["batch"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["batch"], r["method"]): r for r in rows}
    lines = [
        "| method | " + " | ".join(f"batch {b}: cost · ms" for b in batches) + " |",
        "|---|" + "---|" * len(batches),
    ]
    for m in methods:
        cells = [
            f"{cell[b, m]['cost']:.3f} · {cell[b, m]['ms']:.1f}" if (b, m) in cell else "—"
            for b in batches
        ]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def speed_table(rates: dict[str, float], quality_rows: list[dict[str, Any]]) -> list[str]:
    q = {(r["batch"], r["kind"]): r for r in quality_rows}
    lines = [
        "| batch | coupling | workers | steps/s | ÷ independent (0 workers) | W2 (Euler 100) | "
        "W2 (Euler 2) | straightness |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, rate in rates.items():
        if key.startswith("assignments") or key == "rounds":
            continue
        batch, kind, w = key.split("/")
        label = kind if kind != "chunked" else f"chunked ({CHUNK[int(batch)]})"
        ref = rates.get(f"{batch}/independent/0")
        ratio = f"{rate / ref:.2f}×" if ref else "—"
        row = q.get((int(batch), kind))
        figures = (
            [f"{row['w2 euler 100']:.3f}", f"{row['w2 euler 2']:.3f}", f"{row['straightness']:.3f}"]
            if row
            else ["—"] * 3
        )
        cells = " | ".join([batch, label, w, f"{rate:.1f}", ratio, *figures])
        lines.append(f"| {cells} |")
    return lines


def verdicts(rates: dict[str, float], quality_rows: list[dict[str, Any]]) -> list[str]:
    """The three targets of the issue, met or not, with their numbers."""
    q = {(r["batch"], r["kind"]): r for r in quality_rows}
    out = []

    def line(name: str, value: float | None, target: float, detail: str) -> None:
        if value is None:
            out.append(f"- {name}: not measured ({detail})")
            return
        verdict = "met" if value >= target else "**not met**"
        out.append(f"- {name}: {value:.2f} (target ≥ {target}): {verdict}; {detail}")

    ind, ind1 = rates.get("256/independent/0"), rates.get("256/independent/1")
    exact1, per_s = rates.get("256/exact/1"), rates.get("assignments/s 256")
    if exact1 and ind and per_s:
        rounds = rates.get("rounds", {})
        keys = ("256/exact/1", "256/independent/0", "assignments/s 256")
        if all(k in rounds for k in keys):
            per_round = [e / min(i, a) for e, i, a in zip(*(rounds[k] for k in keys), strict=True)]
            ratio = statistics.median(per_round)
            shown = ", ".join(f"{q:.2f}" for q in per_round)
            paired = f"; median of the per-round ratios ({shown})"
        else:
            ratio, paired = exact1 / min(ind, per_s), ""
        line(
            "one worker, exact OT at 256 ÷ min(independent, assignments/s)",
            ratio,
            0.9,
            f"medians {exact1:.1f} steps/s against min({ind:.1f}, {per_s:.1f}){paired}",
        )
    else:
        line("one worker, exact OT at 256", None, 0.9, "fk.train has no num_workers here")
    chunk = rates.get("256/chunked/0")
    if chunk and ind:
        extra = ""
        if (256, "chunked") in q and (256, "exact") in q:
            w2c, w2e = q[256, "chunked"]["w2 euler 100"], q[256, "exact"]["w2 euler 100"]
            within = "within" if w2c <= 1.1 * w2e else "**not within**"
            extra = f"; W2 {w2c:.3f} against exact OT's {w2e:.3f}: {within} 10 %"
        ratio, paired = paired_ratio(rates, 256)
        line("chunked OT at 256 ÷ independent", ratio, 0.65, f"{chunk:.1f} steps/s{paired}{extra}")
    big, big_ind = rates.get("4096/chunked/0"), rates.get("4096/independent/0")
    if big and big_ind:
        ratio, paired = paired_ratio(rates, 4096)
        line("chunked OT at 4096 ÷ independent", ratio, 0.5, f"{big:.2f} steps/s{paired}")
    if ind1 and ind:
        out.append(f"- (independent with one worker ÷ without: {ind1 / ind:.2f}×)")
    return out


def paired_ratio(rates: dict[str, Any], batch: int) -> tuple[float, str]:
    """Chunked ÷ independent (no workers) at ``batch``: the median over rounds of the ratio
    within each round (the two runs of a round are back to back, so a drifting machine speed
    cancels), with the rounds' ratios in words; the ratio of the medians when the rounds were
    not kept."""
    chunk, ind = f"{batch}/chunked/0", f"{batch}/independent/0"
    rounds = rates.get("rounds", {})
    if chunk not in rounds or ind not in rounds:
        return rates[chunk] / rates[ind], ""
    per_round = [c / i for c, i in zip(rounds[chunk], rounds[ind], strict=True)]
    shown = ", ".join(f"{r:.2f}" for r in per_round)
    ratio_of_medians = rates[chunk] / rates[ind]
    return statistics.median(per_round), (
        f"; median of the per-round ratios ({shown}); the ratio of the medians is "
        f"{ratio_of_medians:.2f}"
    )


def page(data: dict[str, Any], command: str) -> str:
    rates, quality_rows = data.get("speed", {}), data.get("quality", [])
    text = [
        "# Minibatch-OT overhead in training",
        "",
        "How much minibatch OT slows `fk.train`, and the flow it trains. N(0, I) → moons,",
        "flowkit's MLP (2-d, 3 hidden layers of 128), Adam, one intra-op thread (a background",
        f"worker uses another core). Generated by `{command}`; see the script's docstring.",
        "",
        f"Machine: {machine()}. Load of the runs: "
        + "; ".join(f"{part}: {text}" for part, text in data.get("loads", {}).items())
        + ".",
        "",
    ]
    if data.get("sweep"):
        text += [
            "## The assignment alone: mean cost per pair ‖x0 − x1‖² · milliseconds per batch",
            "",
            *sweep_table(data["sweep"]),
            "",
        ]
    if rates:
        q = quality_rows[0] if quality_rows else None
        detail = (
            f"W2 and straightness: median over {q['seeds']} training seeds of {q['steps']} steps "
            "(lr 3e-3, cosine), each the mean over 3 low-variance evaluation sets of 2000 "
            "samples, trained without workers (workers draw other batches of the same "
            "distribution: the workers rows share these figures)."
            if q
            else "Quality part not run."
        )
        text += [
            "## Training speed and the flow it reaches",
            "",
            f"Steps per second after {WARMUP} warm-up steps, median over interleaved rounds "
            "(the targets divide rates within each round, then take the median). "
            + detail,
            "",
            *speed_table(rates, quality_rows),
            "",
            "Exact assignments per second (`minibatch_ot.sample`, batch 256): "
            f"{rates.get('assignments/s 256', float('nan')):.1f}"
            + (
                f"; batch 1024: {rates['assignments/s 1024']:.2f}"
                if "assignments/s 1024" in rates
                else ""
            )
            + ".",
            "",
            "## Targets",
            "",
            *verdicts(rates, quality_rows),
            "",
        ]
    return "\n".join(text)


def load_average() -> str:
    return f"load average (1 min) {os.getloadavg()[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts",
        nargs="*",
        default=["sweep", "speed", "quality"],
        help="sweep, speed, quality (none: only rewrite the page from --json)",
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--step-time", type=float, default=3.0, help="seconds per timed run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600, help="training steps (quality)")
    parser.add_argument("--json", default="runs/coupling_overhead.json")
    parser.add_argument("--out", default="docs/benchmarks/coupling_overhead.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = Path(args.json)
    data = json.loads(store.read_text()) if store.exists() else {}
    workers = args.workers if workers_supported() else [0]
    store.parent.mkdir(parents=True, exist_ok=True)
    loads = data.setdefault("loads", {})

    def save() -> None:
        store.write_text(json.dumps(data, indent=1))

    for part in ("sweep", "speed", "quality"):
        if part not in args.parts:
            continue
        start = load_average()
        if part == "sweep":
            data["sweep"] = sweep(args.batches, 3)
        elif part == "speed":
            data["speed"] = speed(args.batches, workers, args.rounds, args.step_time)
        else:
            data["quality"] = data.get("quality", [])
            quality(args.batches, args.seeds, args.steps, data["quality"], save)
        loads[part] = f"{start} at the start, {load_average()} at the end"
        save()
    write_page(page(data, "python benchmarks/coupling_overhead.py"), args.out)


if __name__ == "__main__":
    main()
