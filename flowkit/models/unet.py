"""A small U-Net for images: residual blocks, 2× down/up sampling, attention at the bottom."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowkit.checks import Flag, Integer, ListOf, OptionError, at_most
from flowkit.models.blocks import Downsample, ResBlock, SelfAttention, Upsample, output_head
from flowkit.models.conditioning import ConditionalModel, ConditionEmbedding
from flowkit.models.time_embedding import FourierTime
from flowkit.registry import MODELS


@MODELS.register("unet")
class UNet(ConditionalModel):
    """U-Net for images, conditioned on time and classes: ``x (B, C, H, W), t (B,) -> same shape``.

    Resolution level ``i`` has ``width · mults[i]`` channels and ``depth`` residual blocks
    (GroupNorm, FiLM by the embedding ``e = SiLU(MLP(fourier(t)) + E[y] + W·c)``); a stride-2
    convolution leads to the next level, and the decoder mirrors the encoder with
    nearest-neighbour upsampling and the encoder's activations concatenated (skip connections).
    With ``attention``, multi-head self-attention runs at the lowest resolution (after each of
    its blocks and between the two middle blocks). The output convolution starts at zero.
    ``H`` and ``W`` must be divisible by ``2^(len(mults) − 1)``.

    The defaults (about 1.3 M weights) train on the 8×8 digits and 32×32 RGB images on a CPU in
    minutes; ``width``, ``mults`` and ``depth`` scale it up.

    Args:
        channels: image channels ``C``.
        width: channels of the first level (a multiple of ``groups``).
        mults: channel multiplier of each level; ``len(mults) − 1`` downsamplings.
        depth: residual blocks per level (the decoder has ``depth + 1``).
        attention: self-attention at the lowest resolution.
        heads: attention heads (they must divide the lowest level's channels).
        groups: GroupNorm groups.
        time_frequencies: Fourier features of ``t``.
        num_classes: number of classes of the labels ``y`` (None: no labels; the null label of
            guidance is ``num_classes``).
        cond_dim: size of the condition vectors ``c`` (None: none).

    Example:
        >>> import torch, flowkit as fk
        >>> net = fk.models.build({"name": "unet", "channels": 3, "num_classes": 10})
        >>> x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 10])
        >>> net(x, torch.rand(2), y=y).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(
        self,
        channels: int = 1,
        width: int = 32,
        mults: Sequence[int] = (1, 2, 2),
        depth: int = 1,
        attention: bool = True,
        heads: int = 4,
        groups: int = 8,
        time_frequencies: int = 8,
        num_classes: int | None = None,
        cond_dim: int | None = None,
    ) -> None:
        super().__init__()
        for arg, val in (("channels", channels), ("width", width), ("groups", groups)):
            at_most(2**14)(val, arg)
        mults = ListOf(Integer(1, 64))(mults, "mults")
        Integer(1, 64)(depth, "depth")
        Flag()(attention, "attention")
        at_most(1024)(heads, "heads")
        if width % groups:
            raise OptionError("width", f"({width}) must be a multiple of groups ({groups})")
        bottom = width * mults[-1]
        if attention and bottom % heads:
            raise OptionError("heads", f"({heads}) must divide the {bottom} channels at the bottom")
        self.channels = channels
        self.levels = len(mults)
        self.time = FourierTime(time_frequencies)
        emb_width = 4 * width
        self.embed = nn.Sequential(
            nn.Linear(self.time.out_features, emb_width), nn.SiLU(), nn.Linear(emb_width, emb_width)
        )
        self.cond_embed = ConditionEmbedding(emb_width, num_classes, cond_dim, "unet")
        self.inp = nn.Conv2d(channels, width, 3, padding=1)

        def block(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, emb_width, groups, c_out)

        def attend(c: int, level: int) -> nn.Module:
            at_bottom = attention and level == len(mults) - 1
            return SelfAttention(c, heads, groups) if at_bottom else nn.Identity()

        self.down, self.down_attn = nn.ModuleList(), nn.ModuleList()
        skips, c = [width], width
        for level, mult in enumerate(mults):
            for _ in range(depth):
                self.down.append(block(c, width * mult))
                c = width * mult
                self.down_attn.append(attend(c, level))
                skips.append(c)
            if level < len(mults) - 1:
                self.down.append(Downsample(c))
                self.down_attn.append(nn.Identity())
                skips.append(c)
        self.mid = nn.ModuleList([block(c, c), block(c, c)])
        self.mid_attn = SelfAttention(c, heads, groups) if attention else nn.Identity()
        self.up, self.up_attn = nn.ModuleList(), nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for _ in range(depth + 1):
                self.up.append(block(c + skips.pop(), width * mult))
                c = width * mult
                self.up_attn.append(attend(c, level))
            if level > 0:
                self.up.append(Upsample(c))
                self.up_attn.append(nn.Identity())
        self.out = output_head(c, channels, groups)

    def check_input(self, x: Tensor) -> None:
        """``x`` must be ``(B, channels, H, W)`` with ``H, W`` divisible by ``2^(levels − 1)``."""
        factor = 2 ** (self.levels - 1)
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"unet expects x of shape (B, {self.channels}, H, W), got {tuple(x.shape)}"
            )
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"unet with {self.levels} levels (len(mults)) needs H and W divisible by "
                f"{factor}, got {tuple(x.shape[2:])}; use fewer levels"
            )

    def forward(self, x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        self.check_input(x)
        emb = self.embed(self.time(t.reshape(x.shape[0]).to(x.dtype)))
        extra = self.cond_embed(cond, x.shape[0], emb.dtype)
        emb = torch.nn.functional.silu(emb if extra is None else emb + extra)
        h = self.inp(x)
        skips = [h]
        for layer, attn in zip(self.down, self.down_attn, strict=True):
            h = attn(layer(h, emb) if isinstance(layer, ResBlock) else layer(h))
            skips.append(h)
        h = self.mid[1](self.mid_attn(self.mid[0](h, emb)), emb)
        for layer, attn in zip(self.up, self.up_attn, strict=True):
            if isinstance(layer, ResBlock):
                h = attn(layer(torch.cat([h, skips.pop()], dim=1), emb))
            else:
                h = layer(h)
        return self.out(h)
