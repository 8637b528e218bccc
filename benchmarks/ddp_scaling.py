"""Data-parallel scaling: training throughput of 1 process vs N processes (1 thread each).

Every configuration trains the same flow (an MLP on N(0, I) -> moons) with flowkit's trainer:

- **1 process**: the ordinary single-process trainer, while the other processes wait idle;
- **DDP**: ``N`` processes joined by gloo on loopback (``fk.train`` switches to
  ``DistributedTrainer``: DistributedDataParallel, gradient all-reduce every step, loss averaged
  over the ranks);
- **independent**: the same ``N`` processes each training on its own, no communication: the
  ceiling the machine itself allows (cores that share caches and memory bandwidth or, in a VM,
  host cores slow each other down), against which DDP's own cost reads.

Every process has ``batch_size`` pairs per step, so ``N`` processes see ``N×`` the pairs per
step; throughput is pairs per second of training-loop wall time (``History.wall_time``, the step
loop only: start-up, DDP construction and a warm-up call are excluded; the slowest process):

    throughput = steps × batch_size × processes / wall_time
    speed-up = throughput_N / throughput_1

Binding matters on CPU, so DDP and the single process each run twice: left to the operating
system (as a plain torchrun launch runs them) and *bound*, each rank and all its threads (gloo's
communication threads included) confined to its own share of the CPUs, as ``flowkit run
--nproc`` does by default (:mod:`flowkit.distributed.affinity`). The independent processes are
always bound. Every speed-up is taken against the **unbound** single process, the run a user
compares with (``flowkit run`` in one process binds nothing).

On a VM whose host is shared, a process's speed drifts by ±15 % from one minute to the next. So
the configurations run in *rounds* inside one launch of ``N`` processes, one right after the
other, and each round gives its own speed-ups against the 1-process run of the same round; the
table reports the median over rounds (and the spread).

Usage: ``python benchmarks/ddp_scaling.py [--world 2] [--steps 100] [--batch 2048] [--hidden 256]
[--rounds 7]``; prints a Markdown table (docs/benchmarks/ddp_scaling.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.multiprocessing as mp

import flowkit as fk
from flowkit import distributed
from flowkit.distributed.affinity import apply_binding
from flowkit.training import TrainConfig, Trainer
from flowkit.training.api import build_coupling

COUPLING = {"name": "independent", "source": "gaussian", "target": "moons"}
WARMUP_STEPS = 5
CONFIGS = ("1 process", "1 process, bound", "DDP", "DDP, bound", "independent, bound")
TARGET = 1.7


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def confined(cpus: list[int] | None) -> Iterator[None]:
    """Run the block on ``cpus`` only (all of this process's threads), then restore; None:
    leave the placement alone."""
    before = sorted(os.sched_getaffinity(0))
    if cpus:
        apply_binding(cpus)
    try:
        yield
    finally:
        apply_binding(before)


def train_alone(flow: fk.Flow, steps: int, batch: int, seed: int) -> float:
    """Wall time of ``steps`` steps of the single-process trainer (no communication)."""
    config = TrainConfig(steps=steps, batch_size=batch)
    generator = torch.Generator().manual_seed(seed)
    trainer = Trainer(flow, build_coupling(COUPLING), config, generator, seed)
    return trainer.run(progress=False).wall_time


def worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str):
    """One rank: ``args.rounds`` rounds of every configuration; writes its wall times
    (``{config: [seconds per round]}``, None where it sat out) to ``out/<rank>``."""
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    times: dict[str, list[float | None]] = {name: [] for name in CONFIGS}
    with distributed.process_group(backend="gloo"):
        share = distributed.cpu_share(sorted(os.sched_getaffinity(0)), rank, world)
        torch.manual_seed(0)
        model = fk.models.build({"name": "mlp", "dim": 2, "hidden": args.hidden, "depth": 3})
        flow = fk.Flow(model, "rectified")
        fk.train(flow, COUPLING, WARMUP_STEPS, args.batch, seed=0, progress=False)
        train_alone(flow, WARMUP_STEPS, args.batch, seed=0)
        for r in range(args.rounds):
            for name in CONFIGS:
                distributed.barrier()
                with confined(share if name.endswith("bound") else None):
                    if name.startswith("1 process"):
                        wall = train_alone(flow, args.steps, args.batch, r) if rank == 0 else None
                    elif name.startswith("DDP"):
                        history = fk.train(
                            flow, COUPLING, args.steps, args.batch, seed=r, progress=False
                        )
                        wall = history.wall_time
                    else:
                        wall = train_alone(flow, args.steps, args.batch, r)
                times[name].append(wall)
    Path(out, str(rank)).write_text(json.dumps(times))


def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    """Throughput (pairs/s) per configuration and round, from one launch of ``args.world``
    processes (the slowest process of each configuration)."""
    with tempfile.TemporaryDirectory() as out:
        port = free_port()
        mp.spawn(worker, args=(args.world, port, args, out), nprocs=args.world, join=True)
        ranks = [json.loads(Path(out, str(r)).read_text()) for r in range(args.world)]
    throughput: dict[str, list[float]] = {}
    for name in CONFIGS:
        processes = 1 if name.startswith("1 process") else args.world
        walls = [
            max(t for t in per_rank if t is not None)
            for per_rank in zip(*(rank[name] for rank in ranks), strict=True)
        ]
        throughput[name] = [args.steps * args.batch * processes / wall for wall in walls]
    return throughput


def speedups(runs: dict[str, list[float]], name: str) -> list[float]:
    """Per-round speed-ups of configuration ``name`` over the 1-process run of the same round."""
    return [value / base for value, base in zip(runs[name], runs["1 process"], strict=True)]


def table_row(label: str, per_step: int, throughput: list[float], ratios: list[float]) -> str:
    """Markdown row: median throughput and the median and range of the per-round speed-ups."""
    return (
        f"| {label} | {per_step} | {statistics.median(throughput):,.0f} "
        f"| {statistics.median(ratios):.2f}× | {min(ratios):.2f}–{max(ratios):.2f}× |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", type=int, default=2, help="processes to compare with 1")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per configuration")
    parser.add_argument("--batch", type=int, default=2048, help="pairs per step and process")
    parser.add_argument("--hidden", type=int, default=256, help="MLP width (3 hidden layers)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the configurations")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    runs = measure(args)
    w, b = args.world, args.batch
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, load average before: {load:.2f}; MLP hidden {args.hidden}, "
        f"{b} pairs/step/process, {args.steps} steps per configuration, {args.rounds} rounds\n"
    )
    print(
        "| configuration | pairs per step | pairs/s (median) | speed-up over 1 process "
        "(median of rounds) | speed-up (range) |"
    )
    print("|---|---|---|---|---|")
    labels = {
        "1 process": "1 process (the baseline)",
        "1 process, bound": "1 process, bound to its share of the CPUs",
        "DDP": f"{w} processes, DDP, not bound (a plain torchrun launch, `--no-bind-cpus`)",
        "DDP, bound": f"{w} processes, DDP, bound (`flowkit run --nproc`'s default)",
        "independent, bound": f"{w} independent processes, bound (no communication: the ceiling)",
    }
    for name in CONFIGS:
        per_step = b if name.startswith("1 process") else w * b
        print(table_row(labels[name], per_step, runs[name], speedups(runs, name)))
    median = statistics.median(speedups(runs, "DDP, bound"))
    verdict = "met" if median >= TARGET else "not met"
    print(f"\nTarget: DDP speed-up >= {TARGET}x (bound, as --nproc runs): {median:.2f}x, {verdict}")


if __name__ == "__main__":
    main()
