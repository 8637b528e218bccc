"""CPU binding of local ranks: the split of the CPUs and when a rank is left alone."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowkit.distributed import affinity
from flowkit.distributed.affinity import Placement, cpu_share, plan_binding


@given(
    cpus=st.sets(st.integers(0, 255), min_size=1, max_size=64),
    data=st.data(),
)
def test_cpu_share_partitions_the_cpus(cpus, data):
    world = data.draw(st.integers(1, len(cpus)))
    shares = [cpu_share(cpus, r, world) for r in range(world)]
    assert sorted(c for share in shares for c in share) == sorted(cpus)  # each CPU exactly once
    sizes = [len(share) for share in shares]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert all(share == sorted(share) for share in shares)


def test_cpu_share_examples_and_errors():
    assert cpu_share([3, 2, 1, 0], 0, 2) == [0, 1]
    assert cpu_share(range(5), 1, 2) == [2, 3, 4]
    with pytest.raises(ValueError, match="cannot give each of 3 local ranks"):
        cpu_share([0, 1], 0, 3)
    with pytest.raises(ValueError, match="local_rank must be in"):
        cpu_share([0, 1], 2, 2)


def places(*specs: tuple[str, tuple[int, ...]]) -> list[Placement]:
    return [Placement(host, rank, cpus) for rank, (host, cpus) in enumerate(specs)]


def test_plan_splits_each_hosts_cpus_among_its_ranks():
    ranks = places(("a", (0, 1, 2, 3)), ("b", (0, 1)), ("a", (0, 1, 2, 3)), ("b", (0, 1)))
    assert [plan_binding(ranks, r) for r in range(4)] == [[0, 1], [0], [2, 3], [1]]


def test_plan_leaves_ranks_alone_when_binding_would_be_wrong():
    alone = places(("a", (0, 1)), ("b", (0, 1)))  # one rank per host: nothing to share
    assert plan_binding(alone, 0) is None
    confined = places(("a", (0,)), ("a", (1,)))  # already bound by numactl/taskset per rank
    assert plan_binding(confined, 0) is None and plan_binding(confined, 1) is None
    crowded = places(("a", (0,)), ("a", (0,)))  # fewer CPUs than ranks
    assert plan_binding(crowded, 1) is None


def test_too_few_cpus_warns():
    crowded = places(("a", (0,)), ("a", (0,)))
    with pytest.warns(UserWarning, match="2 ranks on a share 1 CPU"):
        affinity.warn_cannot_share(crowded, 0)


def test_binding_is_opt_in():
    assert affinity.bind_local_ranks(False) is None
    assert affinity.bound_cpus() is None


@pytest.mark.skipif(not affinity.can_bind(), reason="no sched_setaffinity on this platform")
def test_apply_binding_confines_every_thread(tmp_path):
    # In a child process, so the test process keeps its CPUs.
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        cpus, threads = pool.apply(_bind_to_first_cpu)
    assert cpus == [min(os.sched_getaffinity(0))]
    assert threads and all(t == cpus for t in threads)


def _bind_to_first_cpu() -> tuple[list[int], list[list[int]]]:
    import threading

    import torch

    started = threading.Event()
    stop = threading.Event()

    def idle() -> None:
        started.set()
        stop.wait()

    worker = threading.Thread(target=idle)
    worker.start()
    started.wait()
    cpus = [min(os.sched_getaffinity(0))]
    affinity.apply_binding(cpus)
    threads = [sorted(os.sched_getaffinity(t)) for t in affinity.process_threads()]
    stop.set()
    worker.join()
    assert torch.get_num_threads() == 1
    return cpus, threads
