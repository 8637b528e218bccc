"""Whether a model fits its data and device, checked before any training (nothing allocated).

:func:`check_model_fits` is what ``flowkit validate`` runs on every model of an experiment; from
Python it checks a model factory against a batch of the data before a long run starts.

Example:
    >>> import torch
    >>> from flowkit.models import MLP
    >>> problems = []
    >>> check_model_fits(lambda: MLP(dim=3), torch.zeros(2, 2), {}, 2**30, None, "model", problems)
    >>> problems[0][1][:44]
    'does not fit the data: a forward pass on a b'
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import Tensor, nn

from flowkit.checks import shown
from flowkit.conditions import LABEL_KEY, VECTOR_KEY
from flowkit.models.signature import ModelSignatureError, check_call_signature

#: Weights below which a model whose forward cannot run on the meta device is run on the CPU.
CPU_CHECK_BYTES = 1 << 30
#: Bytes per parameter to train with Adam in float32: weights, gradients and two moments.
ADAM_BYTES = 16
Problems = list[tuple[str, str]]


def device_memory(device: torch.device) -> int:
    """Total memory (bytes) of ``device``: the GPU's, or the machine's RAM for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def dry_forward(model: nn.Module, x: Tensor, cond: dict[str, Tensor], device: str) -> Tensor:
    """The output of ``model`` (built on ``device``) on the batch ``x`` (with ``cond``)."""
    with torch.device(device):
        x = x.to(device)
        return model(x, torch.zeros(x.shape[0]), **{k: v.to(device) for k, v in cond.items()})


def check_model_fits(
    build: Callable[[], nn.Module],
    x: Tensor,
    cond: dict[str, Tensor],
    memory: int,
    num_classes: int | None,
    key: str,
    problems: Problems,
) -> None:
    """Append at ``key`` (or ``key.<option>``) each way the model ``build()`` does not fit.

    It must be callable as ``model(x, t, **cond)`` with the data's conditions, read exactly the
    conditions the data give (:func:`check_model_conditions`), map the batch ``x`` to its own
    shape, and training it with Adam (:data:`ADAM_BYTES` per parameter) must fit in ``memory``
    bytes. The model is built and run on the meta device (shapes only); a model whose forward
    cannot run on meta tensors (it reads values, say) is run for real on the CPU when it is small
    (under :data:`CPU_CHECK_BYTES` of weights), and not shape-checked otherwise.
    """
    with torch.device("meta"):
        model = build()
    params = sum(p.numel() for p in model.parameters())
    try:
        check_call_signature(model, cond, type(model).__name__)
    except ModelSignatureError as err:
        problems.append((key, str(err)))
        return
    if not check_model_conditions(model, cond, num_classes, key, problems):
        return
    if ADAM_BYTES * params > memory:
        need = ADAM_BYTES * params / 2**30
        problems.append(
            (
                key,
                f"has {params:,} parameters: about {need:.1f} GiB to train with Adam, more than "
                f"the {memory / 2**30:.1f} GiB of the device",
            )
        )
        return
    try:
        try:
            out = dry_forward(model, x, cond, "meta")
        except (NotImplementedError, RuntimeError) as err:
            if "meta" not in str(err) or 4 * params > CPU_CHECK_BYTES:
                raise
            with torch.device("cpu"):
                out = dry_forward(build(), x, cond, "cpu")
    except Exception as err:  # any failure of the user's model is reported, with its message
        where = f"a forward pass on a batch of shape {tuple(x.shape)} fails"
        problems.append((key, f"does not fit the data: {where}: {shown(str(err))}"))
        return
    if tuple(out.shape) != tuple(x.shape):
        problems.append(
            (
                key,
                f"maps inputs of shape {tuple(x.shape)} to {tuple(out.shape)}; a flow's model "
                "must return the shape of its input (check dim / channels)",
            )
        )


def check_model_conditions(
    model: nn.Module,
    cond: dict[str, Tensor],
    num_classes: int | None,
    key: str,
    problems: Problems,
) -> bool:
    """A model that declares its conditions (``num_classes``, ``cond_dim``, as the built-in ones
    do) must read exactly the conditions the data give (``num_classes``: the data's classes, if
    known); False (with a problem) if not."""
    before = len(problems)
    c = cond.get(VECTOR_KEY)
    cond_dim = int(c.shape[-1]) if isinstance(c, Tensor) and c.ndim == 2 else None
    name = type(model).__name__
    for cond_key, option, size in (
        (LABEL_KEY, "num_classes", num_classes),
        (VECTOR_KEY, "cond_dim", cond_dim),
    ):
        if not hasattr(model, option):
            continue
        declared = getattr(model, option)
        if cond_key in cond and declared is None:
            problems.append(
                (
                    key,
                    f"model {name} is unconditional, but the data (data.target) give the "
                    f"condition {cond_key!r}: set {key}.{option}: {size or '...'} "
                    "(or use an unconditional target)",
                )
            )
        elif cond_key not in cond and declared is not None:
            problems.append(
                (
                    f"{key}.{option}",
                    f"is {declared} (a conditional model), but the data give no condition "
                    f"{cond_key!r}: use a conditional target (e.g. data.target: "
                    f"{{name: digits, conditional: true}}) or remove {option}",
                )
            )
        elif size is not None and declared is not None and size > declared:
            problems.append(
                (f"{key}.{option}", f"is {declared}, but the data (data.target) have {size}")
            )
    return len(problems) == before
