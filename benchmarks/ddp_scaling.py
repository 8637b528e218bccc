"""Data-parallel scaling: training throughput of 1 process vs N processes (1 thread each).

Each configuration trains the same flow (an MLP on N(0, I) -> moons) with ``fk.train``: one
plain process (no process group, the ordinary trainer), then ``N`` processes joined by gloo on
loopback (``DistributedTrainer``: DDP, gradient all-reduce every step, loss averaged over the
ranks). Every process has ``batch_size`` pairs per step, so ``N`` processes see ``N×`` the pairs
per step; throughput is pairs per second of training-loop wall time (``History.wall_time``, the
step loop only: start-up, DDP construction and a warm-up call are excluded):

    throughput = steps × batch_size × world_size / wall_time
    speed-up = throughput_N / throughput_1

A third configuration runs ``N`` independent processes (no process group, no communication)
side by side: the ceiling the machine itself allows (cores that share caches, memory bandwidth
or, in a VM, host cores slow each other down), against which DDP's own cost can be read.

Runs alternate between the configurations and the median of the repeats is reported, with the load
average before the runs. On a machine shared with other work the wall-clock numbers mostly
measure the others; the table therefore also gives the throughput computed from CPU time (the
process's CPU seconds for the same steps, slowest rank): what the processes would reach on
cores of their own, provided waiting for each other costs no CPU (gloo blocks, it does not spin).

Usage: ``python benchmarks/ddp_scaling.py [--world 2] [--steps 30] [--batch 2048] [--hidden 256]
[--repeats 3]``; prints a Markdown table (docs/benchmarks/ddp_scaling.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

import flowkit as fk
from flowkit import distributed

COUPLING = {"name": "independent", "source": "gaussian", "target": "moons"}
WARMUP_STEPS = 5


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_seconds(args: argparse.Namespace) -> tuple[float, float]:
    """Wall time and CPU time of ``args.steps`` training steps after a warm-up call."""
    torch.manual_seed(0)
    model = fk.models.build({"name": "mlp", "dim": 2, "hidden": args.hidden, "depth": 3})
    flow = fk.Flow(model, "rectified")
    fk.train(flow, COUPLING, WARMUP_STEPS, args.batch, seed=0, progress=False)
    cpu = time.process_time()
    history = fk.train(flow, COUPLING, args.steps, args.batch, seed=1, progress=False)
    return history.wall_time, time.process_time() - cpu


def worker(
    rank: int, world: int, port: int, args: argparse.Namespace, out: str, joined: bool
) -> None:
    """One process of a configuration; writes its times to ``out/<rank>`` (``joined``: as a
    rank of a process group of ``world``, else as an independent process)."""
    torch.set_num_threads(1)
    if joined and world > 1:
        os.environ.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
    with distributed.process_group(backend="gloo"):
        Path(out, str(rank)).write_text(json.dumps(train_seconds(args)))


def measure(world: int, args: argparse.Namespace, joined: bool = True) -> tuple[float, float]:
    """Throughput (pairs/s) of ``world`` processes from wall time and from CPU time (slowest
    process)."""
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(worker, args=(world, free_port(), args, out, joined), nprocs=world, join=True)
        times = [json.loads(Path(out, str(r)).read_text()) for r in range(world)]
    wall, cpu = (max(t) for t in zip(*times, strict=True))
    pairs = args.steps * args.batch * world
    return pairs / wall, pairs / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", type=int, default=2, help="processes to compare with 1")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--batch", type=int, default=2048, help="pairs per step and process")
    parser.add_argument("--hidden", type=int, default=256, help="MLP width (3 hidden layers)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    configs = {
        "1 process": (1, True),
        f"{args.world} processes, DDP": (args.world, True),
        f"{args.world} independent processes (no communication: the ceiling)": (args.world, False),
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, (world, joined) in configs.items():
            runs[name].append(measure(world, args, joined))
    one_wall = statistics.median(w for w, _ in runs["1 process"])
    one_cpu = statistics.median(c for _, c in runs["1 process"])
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, load average before: {load:.2f}; MLP hidden {args.hidden}, "
        f"{args.batch} pairs/step/process, {args.steps} steps, median of {args.repeats}\n"
    )
    print(
        "| configuration | pairs per step | pairs/s, wall (runs) | speed-up, wall "
        "| pairs/s, CPU time (runs) | speed-up, CPU time |"
    )
    print("|---|---|---|---|---|---|")
    for name, values in runs.items():
        world = configs[name][0]
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        walls = ", ".join(f"{w:,.0f}" for w, _ in values)
        cpus = ", ".join(f"{c:,.0f}" for _, c in values)
        print(
            f"| {name} | {args.batch * world} | {wall:,.0f} ({walls}) | {wall / one_wall:.2f}× "
            f"| {cpu:,.0f} ({cpus}) | {cpu / one_cpu:.2f}× |"
        )


if __name__ == "__main__":
    main()
