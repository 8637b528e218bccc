"""A small time-conditioned MLP for vector data."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowkit.checks import OneOf, at_most
from flowkit.models.conditioning import ConditionalModel, ConditionEmbedding
from flowkit.models.time_embedding import FourierTime
from flowkit.registry import MODELS

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@MODELS.register("mlp")
class MLP(ConditionalModel):
    """Time-conditioned MLP acting on the last axis: ``x (..., dim), t (...) -> (..., dim)``.

    ``t`` of shape ``(B,)`` is broadcast over the middle axes, so the same network serves vectors
    ``(B, dim)`` and tokens ``(B, N, dim)`` with per-token times ``(B, N)``.

    With ``num_classes`` (labels ``y`` of shape ``(B,)``, null label ``num_classes``) or
    ``cond_dim`` (vectors ``c`` of shape ``(B, cond_dim)``) the model is conditional: the
    conditions' embedding is added to the first layer's pre-activation, the layer that reads the
    time features (see :mod:`flowkit.models.conditioning`).

    Args:
        dim: data dimension.
        hidden: width of the hidden layers.
        depth: number of hidden layers.
        time_frequencies: Fourier time features (0: the raw t only).
        activation: one of ``silu``, ``relu``, ``gelu``, ``tanh``.
        num_classes: number of classes of the labels ``y`` (None: no labels).
        cond_dim: size of the condition vectors ``c`` (None: none).
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 128,
        depth: int = 3,
        time_frequencies: int = 8,
        activation: str = "silu",
        num_classes: int | None = None,
        cond_dim: int | None = None,
    ) -> None:
        super().__init__()
        for arg, val, limit in (
            ("dim", dim, 2**20),
            ("hidden", hidden, 2**16),
            ("depth", depth, 1024),
        ):
            at_most(limit)(val, arg)
        OneOf(tuple(ACTIVATIONS))(activation, "activation")
        self.dim = dim
        self.time = FourierTime(time_frequencies)
        layers: list[nn.Module] = []
        width = dim + self.time.out_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)
        self.cond_embed = ConditionEmbedding(layers[0].out_features, num_classes, cond_dim, "mlp")

    def forward(self, x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"MLP expects x with last axis {self.dim}, got shape {tuple(x.shape)}")
        t = t.reshape(*t.shape, *([1] * (x.ndim - 1 - t.ndim))).expand(x.shape[:-1])
        inp = torch.cat([x, self.time(t).to(x.dtype)], dim=-1)
        extra = self.cond_embed(cond, x.shape[0], x.dtype)
        if extra is None:
            return self.net(inp)
        first = self.net[0](inp)
        return self.net[1:](first + extra.reshape(x.shape[0], *([1] * (x.ndim - 2)), -1))
