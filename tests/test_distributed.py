"""Distributed training and sharding: 2 gloo processes on loopback against one process.

One ``torch.multiprocessing.spawn`` of two ranks (1 thread each) runs every distributed
scenario and saves what it produced; the single-process references are computed here. Starting
the two interpreters dominates the cost, so all scenarios share one launch.
"""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import flowkit as fk
from flowkit import distributed
from flowkit.errors import ConfigError
from flowkit.training import TrainConfig, Trainer
from flowkit.training.ddp_trainer import DistributedTrainer
from flowkit.training.trainer import TrainBatch

WORLD = 2
SEED = 0
STEPS = 4
BATCH = 16  # per rank
LR = 1e-2
COUPLING = {"name": "independent", "source": "gaussian", "target": "moons"}
REFLOW = {"solver": "euler", "steps": 4, "num_pairs": 50, "chunk_size": 8, "seed": 3}
N_SAMPLE = 33  # not a multiple of the world size: unequal slices


def make_flow(init_seed: int) -> fk.Flow:
    torch.manual_seed(init_seed)
    return fk.Flow(fk.models.build({"name": "mlp", "dim": 2, "hidden": 32, "depth": 2}))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_run(
    flow: fk.Flow, steps: int, ckpt: Path, resume: bool = False, coupling: object = COUPLING
) -> fk.History:
    return fk.train(
        flow,
        coupling,
        steps,
        BATCH,
        lr=LR,
        seed=SEED,
        progress=False,
        checkpoint_dir=ckpt,
        checkpoint_every=2,
        resume=resume,
    )


def worker_batches_run(ckpt: Path) -> tuple[fk.History, fk.History, dict, dict]:
    """Finite data through worker processes: a straight run (1 worker) and one stopped at step
    2 (2 workers) and resumed (1 worker); returns both histories and final weights."""
    rows = torch.randn(40, 2, generator=torch.Generator().manual_seed(9))

    def run(flow: fk.Flow, steps: int, directory: Path, workers: int, resume: bool = False):
        coupling = {"name": "independent", "source": "gaussian",
                    "target": fk.data.from_tensor(rows)}
        return fk.train(flow, coupling, steps, BATCH, lr=LR, seed=SEED, progress=False,
                        checkpoint_dir=directory, resume=resume, num_workers=workers)

    full_flow, flow = make_flow(5), make_flow(5)
    full = run(full_flow, STEPS, ckpt / "full", 1)
    run(flow, STEPS // 2, ckpt / "split", 2)
    again = run(flow, STEPS, ckpt / "split", 1, resume=True)
    return full, again, full_flow.state_dict(), flow.state_dict()


def bad_config() -> None:
    raise ConfigError([("training.lr", "must be a number > 0, got -1")], "x.yaml")


def collective_outcomes(rank: int) -> dict:
    """What the object collectives give each rank: agreements, mismatches, rank-0 errors."""
    outcomes: dict = {"seed": distributed.shared_seed(None)}
    try:
        distributed.check_same(store=f"pairs-{rank}")
    except ValueError as err:
        outcomes["mismatch"] = str(err)
    try:
        distributed.from_rank_zero(bad_config)
    except ConfigError as err:
        outcomes["config_error"] = err.problems
    outcomes["made_by"] = distributed.from_rank_zero(distributed.rank)
    return outcomes


def resume_pairs(pairs: object, ckpt: Path) -> tuple[fk.History, fk.History]:
    """Training on stored pairs (whose epoch order is sampling state): straight and resumed."""
    full = train_run(make_flow(5), STEPS, ckpt / "full", coupling=copy.deepcopy(pairs))
    flow = make_flow(5)
    train_run(flow, STEPS // 2, ckpt / "split", coupling=copy.deepcopy(pairs))
    again = train_run(flow, STEPS, ckpt / "split", resume=True, coupling=copy.deepcopy(pairs))
    return full, again


def worker(rank: int, port: int, out: str) -> None:
    """One rank: train, resume, reflow (store and in memory), sharded sampling; save results."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        GLOO_SOCKET_IFNAME="lo",
    )
    torch.set_num_threads(1)
    out_dir = Path(out)
    with distributed.process_group(backend="gloo", timeout=120, bind_cpus=True) as me:
        flow = make_flow(100 + rank)  # different inits: DDP must broadcast rank 0's
        full = train_run(flow, STEPS, out_dir / "ckpt_full")
        resumed = make_flow(100 + rank)
        train_run(resumed, STEPS // 2, out_dir / "ckpt_resume")
        again = train_run(resumed, STEPS, out_dir / "ckpt_resume", resume=True)
        teacher = make_flow(7)
        stored = fk.reflow(teacher, COUPLING, store=out_dir / "pairs", progress=False, **REFLOW)
        if me.is_writer:  # an interrupted store: no manifest, a shard of each rank missing
            for name in ("manifest.json", "shard-00001.safetensors", "shard-00004.safetensors"):
                (out_dir / "pairs" / name).unlink()
        distributed.barrier()
        completed = fk.reflow(teacher, COUPLING, store=out_dir / "pairs", progress=False, **REFLOW)
        memory = fk.reflow(teacher, COUPLING, progress=False, **REFLOW)
        x0 = torch.randn(N_SAMPLE, 2, generator=torch.Generator().manual_seed(1))
        sol = distributed.sharded_sample(teacher, x0, solver="heun", steps=5)
        paired_full, paired_again = resume_pairs(memory, out_dir / "ckpt_pairs")
        workers = worker_batches_run(out_dir / "ckpt_workers")
        small_buckets = make_flow(100 + rank)  # many gradient buckets; the loss rides the last
        trainer = DistributedTrainer(
            small_buckets,
            fk.couplings.build(COUPLING),
            TrainConfig(steps=STEPS, batch_size=BATCH, lr=LR),
            distributed.rank_generator(SEED, rank),
            SEED,
            bucket_cap_mb=0.002,
        )
        bucketed = trainer.run(progress=False)
        buckets = trainer.ddp._get_ddp_logging_data()["num_buckets_reduced"]
        accumulated_flow = make_flow(100 + rank)  # two micro-batches per step (no_sync first)
        accumulated = fk.train(
            accumulated_flow, COUPLING, STEPS, BATCH, lr=LR, seed=SEED, progress=False, accumulate=2
        )
        torch.save(
            {
                "info": (me.rank, me.world_size),
                "weights": flow.state_dict(),
                "losses": full.losses,
                "effective_batch": full.effective_batch_size,
                "resumed_weights": resumed.state_dict(),
                "resumed_losses": again.losses,
                "stored": (stored.x0, stored.x1),
                "completed": (completed.x0, completed.x1),
                "memory": (memory.x0, memory.x1),
                "sample": (sol.x, sol.nfe),
                "collectives": collective_outcomes(rank),
                "paired_losses": (paired_full.losses, paired_again.losses),
                "bound": distributed.bound_cpus(),
                "buckets": (buckets, bucketed.losses),
                "bucketed_weights": small_buckets.state_dict(),
                "accumulated": (accumulated.losses, accumulated_flow.state_dict()),
                "workers": (workers[0].losses, workers[1].losses, workers[2], workers[3]),
                "thread_cpus": [
                    sorted(os.sched_getaffinity(int(tid))) for tid in os.listdir("/proc/self/task")
                ],
            },
            out_dir / f"rank{rank}.pt",
        )


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def reference_training() -> tuple[dict[str, torch.Tensor], list[float]]:
    """One process, one optimizer step per step on the concatenation of both ranks' batches."""
    flow = make_flow(100)
    config = TrainConfig(steps=STEPS, batch_size=WORLD * BATCH, lr=LR)
    trainer = Trainer(flow, fk.couplings.build(COUPLING), config, torch.Generator())
    drawers = [
        Trainer(
            copy.deepcopy(flow),
            fk.couplings.build(COUPLING),
            TrainConfig(steps=STEPS, batch_size=BATCH),
            distributed.rank_generator(SEED, r),
        )
        for r in range(WORLD)
    ]
    for _ in range(STEPS):
        parts = [d.draw_batch() for d in drawers]
        batch = TrainBatch(*(torch.cat([getattr(p, k) for p in parts]) for k in ("x0", "x1", "t")))
        trainer.train_step(batch)
    return flow.state_dict(), trainer.history.losses


def test_ranks_hold_identical_weights(ranks):
    assert [r["info"] for r in ranks] == [(0, WORLD), (1, WORLD)]
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), key
    assert ranks[0]["losses"] == ranks[1]["losses"]
    assert ranks[0]["effective_batch"] == WORLD * BATCH


def test_ddp_equals_one_process_on_the_concatenated_batch(ranks):
    # DDP averages the ranks' gradients of their mean losses: the gradient of the mean loss of
    # the concatenated batch. Only the order of float additions differs (all-reduce vs one
    # mean), so after a few Adam steps the weights agree to float32 rounding.
    weights, losses = reference_training()
    for key, value in weights.items():
        torch.testing.assert_close(ranks[0]["weights"][key], value, rtol=0, atol=1e-6)
    assert ranks[0]["losses"] == pytest.approx(losses, rel=1e-6)
    untrained = make_flow(100).state_dict()
    assert any(not torch.equal(untrained[k], weights[k]) for k in weights)


def test_loss_rides_on_the_last_of_many_gradient_buckets(ranks):
    # The mean loss travels in the last bucket's all-reduce: with tiny buckets (many
    # all-reduces) the recorded losses and the weights are those of the default single bucket.
    for r in ranks:
        count, losses = r["buckets"]
        assert count > 1
        assert losses == r["losses"]
        for key, value in r["weights"].items():
            assert torch.equal(r["bucketed_weights"][key], value), key


def test_accumulation_under_ddp_takes_the_same_steps(ranks):
    # accumulate=2: the first micro-batch's backward skips the all-reduce (no_sync), the second
    # reduces the summed gradient and carries the whole step's loss: the run of accumulate=1 up
    # to float32 rounding, and the same on both ranks.
    for r in ranks:
        losses, weights = r["accumulated"]
        assert losses == pytest.approx(r["losses"], rel=1e-5)
        for key, value in weights.items():
            torch.testing.assert_close(value, r["weights"][key], rtol=0, atol=1e-5)
    assert ranks[0]["accumulated"][0] == ranks[1]["accumulated"][0]


def test_distributed_resume_is_exact(ranks):
    # Every rank restores its own generator from the checkpoint: bit-for-bit the full run.
    for r in ranks:
        assert r["resumed_losses"] == r["losses"]
        for key, value in r["weights"].items():
            assert torch.equal(r["resumed_weights"][key], value), key
        full, again = r["paired_losses"]  # each rank's epoch order of the pairs is restored too
        assert again == full and len(full) == STEPS


def test_worker_batches_under_ddp_resume_exactly(ranks):
    # num_workers under DDP: each rank's own stream, the same whether 1 or 2 workers draw it,
    # resumed exactly (the finite data's epoch position included); the ranks' weights agree.
    for r in ranks:
        full, again, full_weights, weights = r["workers"]
        assert again == full and len(full) == STEPS
        assert all(torch.equal(weights[k], v) for k, v in full_weights.items())
    assert all(
        torch.equal(ranks[0]["workers"][2][k], v) for k, v in ranks[1]["workers"][2].items()
    )


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < WORLD, reason="needs a CPU per rank")
def test_gloo_ranks_are_bound_to_disjoint_cpus(ranks):
    # bind_cpus=True gives each local rank its own slice of the CPUs, every thread of the rank
    # (gloo's communication threads included) confined to it.
    allowed = sorted(os.sched_getaffinity(0))
    bound = [r["bound"] for r in ranks]
    assert bound == [distributed.cpu_share(allowed, r, WORLD) for r in range(WORLD)]
    assert not set(bound[0]) & set(bound[1])
    for r in ranks:
        assert r["thread_cpus"] and all(cpus == r["bound"] for cpus in r["thread_cpus"])


def test_resume_on_stored_pairs_is_exact(tmp_path):
    pairs = fk.reflow(make_flow(7), COUPLING, progress=False, **REFLOW)
    full, again = resume_pairs(pairs, tmp_path)
    assert again.losses == full.losses


@pytest.mark.parametrize("kind", ["stored", "completed", "memory"])
def test_sharded_reflow_matches_one_process(ranks, kind, tmp_path):
    store = tmp_path / "pairs" if kind == "stored" else None
    pairs = fk.reflow(make_flow(7), COUPLING, store=store, progress=False, **REFLOW)
    for r in ranks:
        x0, x1 = r[kind]
        assert len(x0) == REFLOW["num_pairs"]
        assert torch.equal(x0, pairs.x0) and torch.equal(x1, pairs.x1)


def test_sharded_sampling_matches_one_process(ranks):
    x0 = torch.randn(N_SAMPLE, 2, generator=torch.Generator().manual_seed(1))
    sol = fk.sample(make_flow(7), x0, solver="heun", steps=5)
    for r in ranks:
        x, nfe = r["sample"]
        torch.testing.assert_close(x, sol.x, rtol=0, atol=1e-6)
        assert nfe == sol.nfe


def test_collectives_agree_or_fail_on_every_rank(ranks):
    outcomes = [r["collectives"] for r in ranks]
    assert outcomes[0]["seed"] == outcomes[1]["seed"]  # rank 0's fresh seed, shared
    for o in outcomes:
        assert "rank 0: 'pairs-0', rank 1: 'pairs-1'" in o["mismatch"]
        assert o["config_error"] == [("training.lr", "must be a number > 0, got -1")]
        assert o["made_by"] == 0


def test_single_process_helpers_are_identities():
    me = distributed.info()
    assert (me.rank, me.world_size, me.is_writer, me.distributed) == (0, 1, True, False)
    assert distributed.from_rank_zero(max, 3, 4) == 4
    assert distributed.all_gather_objects("a") == ["a"]
    assert distributed.shared_seed(5) == 5
    assert distributed.rank_shards(5) == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="process group"):
        distributed.wrap_ddp(torch.nn.Linear(2, 2))


def test_rank_streams():
    first = torch.rand(4, generator=distributed.rank_generator(SEED, 0))
    assert torch.equal(first, torch.rand(4, generator=torch.Generator().manual_seed(SEED)))
    seeds = {distributed.rank_seed(SEED, r) for r in range(8)}
    assert len(seeds) == 8
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        distributed.rank_seed(-1, 0)


@pytest.mark.parametrize("n", [0, 1, 7, 33])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_work_splits_cover_everything_once(n, world):
    shards = sorted(i for r in range(world) for i in distributed.rank_shards(n, r, world))
    assert shards == list(range(n))
    rows = [i for r in range(world) for i in range(n)[distributed.rank_slice(n, r, world)]]
    assert rows == list(range(n))


def test_torchrun_command_line():
    args = distributed.without_option(
        ["run", "cfg.yaml", "--nproc", "2", "--set", "seed=1"], "--nproc"
    )
    assert args == ["run", "cfg.yaml", "--set", "seed=1"]
    assert distributed.without_option(["run", "--nproc=3"], "--nproc") == ["run"]
    assert distributed.torchrun_arguments(2, args)[-6:] == ["-m", "flowkit", *args]
    assert "--nproc_per_node=2" in distributed.torchrun_arguments(2, args)
    with pytest.raises(ValueError, match="nproc must be a positive integer"):
        distributed.torchrun_arguments(0, args)


@pytest.mark.parametrize(
    ("given", "passed"),
    [
        ([], ["--bind-cpus"]),  # flowkit starts every local rank: binding is the default
        (["--no-bind-cpus"], ["--no-bind-cpus"]),
        (["--bind-cpus"], ["--bind-cpus"]),
    ],
)
def test_nproc_binds_the_ranks_it_starts_unless_told_not_to(monkeypatch, given, passed):
    from flowkit import cli

    launched = []
    monkeypatch.setattr(distributed, "launch_torchrun", lambda n, a: launched.append((n, a)) or 0)
    monkeypatch.setattr(distributed, "can_bind_ranks", lambda n: True)
    assert cli.main(["run", "--nproc", "2", "--set", "seed=1", *given]) == 0
    assert launched == [(2, ["run", "--set", "seed=1", *passed])]


def test_nproc_does_not_bind_by_default_without_a_cpu_per_rank(monkeypatch):
    from flowkit import cli

    launched = []
    monkeypatch.setattr(distributed, "launch_torchrun", lambda n, a: launched.append(a) or 0)
    monkeypatch.setattr(distributed, "can_bind_ranks", lambda n: False)
    assert cli.main(["run", "--nproc", "2"]) == 0
    assert launched == [["run"]]  # no --bind-cpus, so no warning about too few CPUs
    assert distributed.can_bind_ranks(10**6) is False  # more ranks than any machine's CPUs


def test_flow_loss_module_is_the_flow_loss():
    flow = make_flow(0)
    x0, x1, t = torch.randn(8, 2), torch.randn(8, 2), torch.rand(8)
    assert torch.equal(distributed.FlowLoss(flow)(x0, x1, t), flow.loss(x0, x1, t))
