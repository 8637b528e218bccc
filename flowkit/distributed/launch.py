"""``flowkit run --nproc N``: start ``N`` processes through torchrun (torch.distributed.run)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def torchrun_arguments(nproc: int, flowkit_args: Sequence[str]) -> list[str]:
    """torchrun's command line for ``N`` local processes running ``python -m flowkit ARGS``.

    ``--standalone`` runs the rendezvous on this machine on a free port, so several launches
    can run side by side.

    Example:
        >>> torchrun_arguments(2, ["run", "cfg.yaml"])
        ['--standalone', '--nnodes=1', '--nproc_per_node=2', '-m', 'flowkit', 'run', 'cfg.yaml']
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive integer, got {nproc!r}")
    return [
        "--standalone",
        "--nnodes=1",
        f"--nproc_per_node={nproc}",
        "-m",
        "flowkit",
        *flowkit_args,
    ]


def without_option(args: Sequence[str], option: str) -> list[str]:
    """``args`` without ``option VALUE`` / ``option=VALUE`` (e.g. ``--nproc 2``)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(f"{option}="):
            out.append(arg)
    return out


def launch_torchrun(nproc: int, flowkit_args: Sequence[str]) -> int:
    """Run ``python -m flowkit ARGS`` in ``nproc`` processes under torchrun; the exit status.

    Returns 0 when every process succeeded, else the exit status of the first failed rank
    (e.g. 2 for an invalid experiment), after printing torchrun's summary of the failure.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    try:
        torchrun_main(torchrun_arguments(nproc, flowkit_args))
    except ChildFailedError as err:
        print(err, file=sys.stderr)
        _, failure = err.get_first_failure()
        return failure.exitcode if failure.exitcode > 0 else 1
    return 0
