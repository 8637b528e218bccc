"""Reflow: pair each source sample with the teacher flow's image, ``(x0, Flow(x0))``.

Training a new flow on these deterministic pairs (k-rectified flow after k rounds) straightens
the paths and never raises the transport cost ``E||x1 − x0||²`` of convex costs (Liu et al.,
"Flow Straight and Fast", 2022). The pairs are produced shard by shard (see
:mod:`flowkit.couplings.store`) so that a long solve can be interrupted and resumed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from flowkit import distributed
from flowkit.couplings.paired import PairedCoupling
from flowkit.couplings.reflow_job import ReflowJob, ShardCallback
from flowkit.couplings.store import PairStore
from flowkit.errors import DamagedRunError


def write_shards(
    job: ReflowJob,
    store: PairStore,
    shards: Iterable[int] | None = None,
    progress: bool = True,
    callback: ShardCallback | None = None,
) -> list[int]:
    """Solve and write the missing shards among ``shards`` (all by default); no manifest.

    For sharded generation across processes: each process writes its own shards (e.g.
    ``range(rank, num_shards, world_size)``), then one process calls :func:`reflow` with the same
    arguments, which finds every shard present and writes the manifest. Returns the indices of
    the shards still missing from the store.
    """
    done = store.completed(job.fingerprint)
    wanted = set(range(len(job.sizes)) if shards is None else shards)
    for index, tensors, nfe in job.run(sorted(wanted - done), progress, callback):
        store.write_shard(index, tensors, job.fingerprint, nfe)
        done.add(index)
    return sorted(set(range(len(job.sizes))) - done)


def reflow(
    flow: Any,
    coupling: Any,
    solver: str = "dopri5",
    num_pairs: int = 10_000,
    store: str | os.PathLike | None = None,
    chunk_size: int = 10_000,
    seed: int = 0,
    progress: bool = True,
    *,
    state_grid: int | Sequence[float] | None = None,
    callback: ShardCallback | None = None,
    **solver_options: Any,
) -> PairedCoupling:
    """Teacher pairs ``(x0, Flow(x0), cond)`` with ``x0`` and ``cond`` from ``coupling``'s source.

    ``num_pairs`` pairs are made in shards of ``chunk_size`` (one solve per shard). Shard ``i``
    draws its sources with a generator seeded by ``shard_seed(seed, i)``, so the pairs do not
    depend on which shards were computed before, by which process, or whether a store is used.
    With ``store=DIR`` every shard is written atomically as it finishes, the manifest last;
    calling again with the same arguments resumes (finished shards are kept, only missing ones
    are solved) and a finished store is loaded without solving. A store made with another
    teacher (sha256 of its ``state_dict``), solver, options, seed or counts raises
    :class:`~flowkit.couplings.store.StoreMismatchError`. A damaged shard or manifest (its
    sha256 differs) is deleted and regenerated, with a warning.

    Under torchrun, rank ``r`` of ``W`` solves the shards ``i`` with ``i mod W = r``: the same
    pairs as one process, since shard seeds do not depend on the rank. With a store each rank
    writes its own shards and rank 0 writes the manifest once all are there; without one the
    shards are gathered on every rank.

    k-rectified flow is reflow applied k times: train a flow on ``coupling`` (1-RF), reflow it,
    train a new flow on the pairs (2-RF), reflow that flow with the same source coupling, ...

    Args:
        flow: the teacher, a :class:`~flowkit.Flow` or any field ``f(x, t)`` that
            :func:`flowkit.sample` integrates.
        coupling: a coupling (or spec) whose :meth:`~Coupling.sample_source` gives ``x0, cond``.
        solver: solver name for :func:`flowkit.sample` (an adaptive one by default).
        num_pairs: number of pairs.
        store: optional pair store directory.
        chunk_size: pairs per shard (and per solve).
        seed: base seed of the shard generators.
        progress: show a tqdm progress bar.
        state_grid: also keep the teacher's states on a time grid (a step count k for the uniform
            grid ``t_i = i/k``, or explicit times); needed by k-step distillation.
        callback: called as ``callback(shard_index, pairs_done)`` after each finished shard
            (``pairs_done`` counts the pairs solved by this call).
        **solver_options: passed to :func:`flowkit.sample` (``rtol``, ``atol``, ``steps``, ...;
            ``guidance=w`` solves a class-conditional teacher with classifier-free guidance).

    Conditions: each pair keeps the conditions its source was drawn with (e.g. the label ``y``
    of a conditional target), stored beside ``x0``/``x1`` (``cond.<key>`` tensors of the pair
    store) and handed to the model by the :class:`PairedCoupling`, so a student trained on the
    pairs learns the teacher's map class by class (the guided map with ``guidance``, which it
    then samples without guidance, in one model call per step).

    Returns:
        A :class:`PairedCoupling` with ``deterministic=True`` (states and grid when requested).

    Example:
        >>> pairs = fk.reflow(flow, coupling, solver="dopri5", num_pairs=50_000,
        ...                   store="runs/pairs", rtol=1e-5, atol=1e-5)  # doctest: +SKIP
        >>> flow2 = fk.Flow(fk.models.build("mlp"), "rectified")  # doctest: +SKIP
        >>> fk.train(flow2, pairs, steps=5000, batch_size=512)  # 2-rectified flow # doctest: +SKIP
    """
    job = ReflowJob.create(
        flow, coupling, solver, num_pairs, chunk_size, seed, state_grid, solver_options
    )
    mine = distributed.rank_shards(len(job.sizes))  # all shards in a single process
    progress = progress and distributed.is_writer()
    if distributed.is_distributed():
        distributed.check_same(store=None if store is None else str(store))
    if store is None:
        solved = ((i, (t, nfe)) for i, t, nfe in job.run(mine, progress, callback))
        parts = [part for _, part in distributed.gather_shards(solved)]
        return assemble([t for t, _ in parts], job.manifest([nfe for _, nfe in parts]))
    pair_store = PairStore(store)
    pairs = load_finished(job, pair_store)
    if pairs is None:
        write_shards(job, pair_store, mine, progress, callback)
        distributed.barrier()
        distributed.from_rank_zero(write_manifest, job, pair_store)
        pairs = PairedCoupling.from_store(pair_store.directory)
    distributed.barrier()  # every rank has read the store before any rank goes on to touch it
    return pairs


def load_finished(job: ReflowJob, store: PairStore) -> PairedCoupling | None:
    """The pairs of a finished store, or None when shards must be (re)generated first.

    A damaged manifest or shard is deleted with a warning (the shard is then regenerated from
    its own seed and the manifest rewritten); a store made with other settings raises.
    """
    try:
        manifest = store.read_manifest()
        if manifest is None:
            return None
        store.check(job.fingerprint, manifest["fingerprint"], "manifest.json")
        return PairedCoupling.from_store(store.directory)
    except DamagedRunError as err:
        warnings.warn(f"{err.path} is damaged ({err.reason}); it is regenerated", stacklevel=3)
        err.path.unlink(missing_ok=True)
        store.manifest_path.unlink(missing_ok=True)
        return None


def write_manifest(job: ReflowJob, store: PairStore) -> None:
    """Write the manifest once every shard of ``job`` is in ``store`` (else raise)."""
    missing = sorted(set(range(len(job.sizes))) - store.completed(job.fingerprint))
    if missing:
        raise RuntimeError(f"pair store {str(store.directory)!r} lacks shards {missing}")
    store.write_manifest(job.manifest([store.shard_nfe(i) for i in range(len(job.sizes))]))


def assemble(parts: list[dict[str, Tensor]], manifest: dict[str, Any]) -> PairedCoupling:
    """Concatenate in-memory shards into a deterministic :class:`PairedCoupling`."""
    cat = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    cond = {k.removeprefix("cond."): v for k, v in cat.items() if k.startswith("cond.")}
    return PairedCoupling(
        cat["x0"],
        cat["x1"],
        cond,
        deterministic=True,
        states=cat.get("states"),
        grid=manifest["grid"],
        manifest=manifest,
    )
