"""A small time-conditioned convolutional network for small images (the 8×8 digits)."""

from __future__ import annotations

from torch import Tensor, nn

from flowkit.checks import Integer, OptionError, at_most
from flowkit.models.time_embedding import FourierTime
from flowkit.registry import MODELS


class ResBlock(nn.Module):
    """``x + conv(act(norm(conv(act(norm(x))) + shift(t)) · (1 + scale(t))))`` (FiLM by time)."""

    def __init__(self, width: int, time_width: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.film = nn.Linear(time_width, 2 * width)
        self.norm2 = nn.GroupNorm(groups, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(self.act(h))


@MODELS.register("conv")
class ConvNet(nn.Module):
    """Time-conditioned residual conv net for images: ``x (B, C, H, W), t (B,) -> (B, C, H, W)``.

    A 3×3 input convolution, ``depth`` residual blocks whose normalised activations are scaled
    and shifted by an embedding of ``t`` (FiLM), and a 3×3 output convolution initialised to zero
    (the untrained model predicts 0). Padding keeps the spatial size, so any ``H × W`` works;
    with the default ``depth=3`` the receptive field (17 pixels) covers an 8×8 digit.

    Args:
        channels: image channels ``C``.
        hidden: feature channels of the residual blocks (a multiple of ``groups``).
        depth: number of residual blocks.
        time_frequencies: Fourier features of ``t``.
        groups: GroupNorm groups.

    Example:
        >>> import torch, flowkit as fk
        >>> net = fk.models.build({"name": "conv", "hidden": 32})
        >>> net(torch.randn(4, 1, 8, 8), torch.rand(4)).shape
        torch.Size([4, 1, 8, 8])
    """

    def __init__(
        self,
        channels: int = 1,
        hidden: int = 64,
        depth: int = 3,
        time_frequencies: int = 8,
        groups: int = 8,
    ) -> None:
        super().__init__()
        for arg, val in (("channels", channels), ("hidden", hidden), ("groups", groups)):
            at_most(2**14)(val, arg)
        Integer(0, 1024)(depth, "depth")
        if hidden % groups:
            raise OptionError("hidden", f"({hidden}) must be a multiple of groups ({groups})")
        self.channels = channels
        self.time = FourierTime(time_frequencies)
        time_width = 4 * hidden
        self.embed = nn.Sequential(
            nn.Linear(self.time.out_features, time_width),
            nn.SiLU(),
            nn.Linear(time_width, time_width),
        )
        self.inp = nn.Conv2d(channels, hidden, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(hidden, time_width, groups) for _ in range(depth))
        self.out = nn.Sequential(
            nn.GroupNorm(groups, hidden), nn.SiLU(), nn.Conv2d(hidden, channels, 3, padding=1)
        )
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: Tensor, t: Tensor, **cond: object) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"conv expects x of shape (B, {self.channels}, H, W), got {tuple(x.shape)}"
            )
        emb = self.embed(self.time(t.reshape(x.shape[0]).to(x.dtype)))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
