"""Building blocks of the image networks (``conv``, ``unet``): residual blocks modulated by an
embedding of time and conditions, self-attention over pixels, and 2× resampling."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class ResBlock(nn.Module):
    """``skip(x) + conv(act(norm(conv(act(norm(x)))) · (1 + scale(e)) + shift(e)))`` (FiLM).

    ``e`` is the embedding of time (and conditions) of each sample. With ``out_width`` different
    from ``width`` the skip connection is a 1×1 convolution, else the identity.

    Args:
        width: input channels (a multiple of ``groups``).
        emb_width: width of the embedding ``e``.
        groups: GroupNorm groups.
        out_width: output channels (default: ``width``; a multiple of ``groups``).
    """

    def __init__(self, width: int, emb_width: int, groups: int, out_width: int | None = None):
        super().__init__()
        out = out_width or width
        self.norm1 = nn.GroupNorm(groups, width)
        self.conv1 = nn.Conv2d(width, out, 3, padding=1)
        self.film = nn.Linear(emb_width, 2 * out)
        self.norm2 = nn.GroupNorm(groups, out)
        self.conv2 = nn.Conv2d(out, out, 3, padding=1)
        self.act = nn.SiLU()
        self.skip = nn.Conv2d(width, out, 1) if out != width else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.act(h))


def output_head(width: int, channels: int, groups: int) -> nn.Sequential:
    """``conv(act(norm(h)))`` from ``width`` features to ``channels``, its convolution initialised
    to zero (an untrained network predicts 0)."""
    head = nn.Sequential(
        nn.GroupNorm(groups, width), nn.SiLU(), nn.Conv2d(width, channels, 3, padding=1)
    )
    nn.init.zeros_(head[-1].weight)
    nn.init.zeros_(head[-1].bias)
    return head


class SelfAttention(nn.Module):
    """``x + proj(attention(q, k, v))`` over the ``H·W`` pixels, with ``heads`` heads.

    ``q, k, v`` are 1×1 convolutions of the normalised input; the output projection starts at
    zero, so the block starts as the identity.

    Args:
        width: channels (a multiple of ``groups`` and of ``heads``).
        heads: attention heads.
        groups: GroupNorm groups.
    """

    def __init__(self, width: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, width)
        self.qkv = nn.Conv2d(width, 3 * width, 1)
        self.proj = nn.Conv2d(width, width, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(
            self.qkv(self.norm(x)),
            "b (three heads d) h w -> three b heads (h w) d",
            three=3,
            heads=self.heads,
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(rearrange(out, "b heads (h w) d -> b (heads d) h w", h=x.shape[2]))


class Downsample(nn.Module):
    """Halve ``H`` and ``W`` with a stride-2 3×3 convolution."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double ``H`` and ``W``: nearest-neighbour upsampling then a 3×3 convolution."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
