"""Exponential moving average (EMA) of a module's weights."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from flowkit.checks import Real

#: An EMA decay: ``β ∈ [0, 1)`` (``β = 1`` would never move the average).
DECAY = Real(minimum=0, maximum=1, exclusive_maximum=True)


class EMA:
    """Shadow copy of a module's weights, ``θ̄ ← β·θ̄ + (1 − β)·θ`` after every optimizer step.

    Floating-point parameters are averaged; buffers (e.g. batch-norm statistics) are copied. The
    module itself keeps its raw (trained) weights, as with diffusers' ``EMAModel``: evaluate
    with the average through :meth:`average_parameters` (temporary) or :meth:`copy_to`
    (permanent).

    Args:
        module: the module whose weights are averaged; the shadow starts as a copy of them.
        decay: ``β`` in [0, 1); the average spans about ``1 / (1 − β)`` steps.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> ema = EMA(net, decay=0.99)
        >>> ema.update(net)
        >>> with ema.average_parameters(net):
        ...     y = net(torch.zeros(1, 2))
    """

    def __init__(self, module: nn.Module, decay: float = 0.999) -> None:
        self.decay = DECAY(decay, "decay")
        self.num_updates = 0
        self.averaged = {
            name
            for name, p in module.named_parameters(remove_duplicate=False)
            if p.is_floating_point()
        }
        self.shadow: dict[str, Tensor] = {
            k: v.detach().clone() for k, v in module.state_dict().items()
        }

    def __repr__(self) -> str:
        return f"EMA(decay={self.decay}, num_updates={self.num_updates})"

    def matching_state(self, module: nn.Module) -> dict[str, Tensor]:
        """The module's state dict, checked to have the shadow's keys and shapes."""
        state = module.state_dict()
        if state.keys() != self.shadow.keys() or any(
            state[k].shape != v.shape for k, v in self.shadow.items()
        ):
            raise ValueError(
                "module does not match the EMA shadow (different parameter names or shapes); "
                "use the module the EMA was created from"
            )
        return state

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """One EMA step: ``θ̄ ← θ̄ + (1 − β)·(θ − θ̄)`` for parameters, ``θ̄ ← θ`` for buffers."""
        for key, value in self.matching_state(module).items():
            if key in self.averaged:
                self.shadow[key].lerp_(value.detach(), 1.0 - self.decay)
            else:
                self.shadow[key].copy_(value)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite the module's weights with the averaged ones."""
        self.matching_state(module)
        module.load_state_dict(self.shadow)

    @contextmanager
    def average_parameters(self, module: nn.Module) -> Iterator[nn.Module]:
        """Context manager: the module holds the averaged weights inside, its own ones after."""
        saved = {k: v.detach().clone() for k, v in self.matching_state(module).items()}
        self.copy_to(module)
        try:
            yield module
        finally:
            module.load_state_dict(saved)

    def state_dict(self) -> dict[str, Tensor]:
        """The shadow weights (keys of the module's state dict)."""
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor], num_updates: int) -> None:
        """Restore shadow weights and the update count (e.g. from a checkpoint)."""
        if state.keys() != self.shadow.keys():
            raise ValueError("EMA state does not match the module's parameter names")
        for key, value in state.items():
            self.shadow[key].copy_(value)
        self.num_updates = num_updates
