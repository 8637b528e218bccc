"""The calling convention every model follows: ``model(x, t, **cond)``."""

from __future__ import annotations

import inspect
from collections.abc import Iterable

from torch import nn


class ModelSignatureError(TypeError):
    """A model whose ``forward`` cannot be called as ``model(x, t, **cond)``."""


def check_call_signature(model: nn.Module, cond: Iterable[str] = (), name: str = "model") -> None:
    """Raise unless ``model.forward`` accepts ``(x, t)`` positionally and the conditions ``cond``
    as keywords (``**cond`` or named parameters).

    Only the signature is read (nothing runs), so this also checks models built on the meta
    device.

    Raises:
        ModelSignatureError: naming the model, its signature and the call flowkit makes.

    Example:
        >>> import torch
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x):
        ...         return x
        >>> check_call_signature(Net(), name="Net")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ModelSignatureError: Net.forward(x) cannot be called as model(x, t): ...
    """
    keys = list(cond)
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):  # a builtin or C forward: nothing to read
        return
    try:
        signature.bind(None, None, **dict.fromkeys(keys))
    except TypeError as err:
        call = ", ".join(["x", "t", *(f"{k}=..." for k in keys)])
        raise ModelSignatureError(
            f"{name}.forward{signature} cannot be called as model({call}): {err}; flowkit calls "
            "every model as model(x, t, **cond) with x (B, ...), t (B,) and the data's "
            "conditions as keywords"
        ) from None
