"""Small collectives on Python objects and scalars; each is the identity in a single process."""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import torch.distributed as dist
from torch import Tensor

from flowkit.distributed.process_group import info

P = ParamSpec("P")
R = TypeVar("R")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled; for small objects)."""
    if not info().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, indexed by rank (pickled; for small objects)."""
    me = info()
    if not me.distributed:
        return [obj]
    out: list[Any] = [None] * me.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_across_ranks(value: Tensor) -> Tensor:
    """``(1/W)·Σ_r value_r``: the mean of a tensor over the ``W`` ranks (a detached copy).

    With equal per-rank batch sizes, the mean of per-rank mean losses is the mean loss of the
    concatenated batch. (gloo has no AVG reduction, so this is a SUM divided by ``W``.)
    """
    me = info()
    reduced = value.detach().clone()
    if me.distributed:
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        reduced /= me.world_size
    return reduced


def portable_error(err: BaseException) -> BaseException:
    """``err`` if it survives pickling unchanged, else a ``RuntimeError`` carrying its text."""
    try:
        copy = pickle.loads(pickle.dumps(err))
        if type(copy) is type(err) and str(copy) == str(err):
            return err
    except Exception:
        pass
    return RuntimeError(f"rank 0 raised {type(err).__name__}: {err}")


def from_rank_zero(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``fn`` on rank 0 only and hand its result (or its exception) to every rank.

    For work that must happen once, such as creating a run directory: rank 0 calls
    ``fn(*args, **kwargs)``; every rank returns its result, or raises the exception it raised
    (so no rank is left waiting in a later collective). In a single process this is ``fn(...)``.

    Example:
        >>> from flowkit.distributed import from_rank_zero
        >>> from_rank_zero(max, 3, 4)
        4
    """
    me = info()
    if not me.distributed:
        return fn(*args, **kwargs)
    outcome: tuple[bool, Any] | None = None
    if me.rank == 0:
        try:
            outcome = (True, fn(*args, **kwargs))
        except Exception as err:
            outcome = (False, portable_error(err))
    ok, value = broadcast_object(outcome)
    if not ok:
        raise value
    return value


def rank_zero_only(fn: Callable[P, R]) -> Callable[P, R | None]:
    """Decorator: call ``fn`` on rank 0 only; other ranks skip it and get None.

    Example:
        >>> from flowkit.distributed import rank_zero_only
        >>> @rank_zero_only
        ... def write(path, text):
        ...     return len(text)
        >>> write("out.txt", "abc")  # rank 0 (or a single process) runs it
        3
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
        return fn(*args, **kwargs) if info().is_writer else None

    return wrapper


def check_same(**values: Any) -> None:
    """Raise ``ValueError`` on every rank unless every rank passed equal ``values``.

    Arguments that decide control flow (steps, checkpoint paths, stores) must agree across
    ranks, or the ranks would wait for each other forever; this turns such a mismatch into an
    error that names the argument and each rank's value.
    """
    gathered = all_gather_objects(values)
    for name in values:
        seen = [g[name] for g in gathered]
        if any(v != seen[0] for v in seen[1:]):
            per_rank = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(seen))
            raise ValueError(
                f"{name} must be the same on every rank; got {per_rank}. Pass the same value on "
                "every rank (paths must be on a filesystem shared by all ranks)"
            )
