"""A small time-conditioned convolutional network for small images (the 8×8 digits)."""

from __future__ import annotations

from torch import Tensor, nn

from flowkit.checks import Integer, OptionError, at_most
from flowkit.models.blocks import ResBlock, output_head
from flowkit.models.conditioning import ConditionalModel, ConditionEmbedding
from flowkit.models.time_embedding import FourierTime
from flowkit.registry import MODELS


@MODELS.register("conv")
class ConvNet(ConditionalModel):
    """Time-conditioned residual conv net for images: ``x (B, C, H, W), t (B,) -> (B, C, H, W)``.

    A 3×3 input convolution, ``depth`` residual blocks whose normalised activations are scaled
    and shifted by an embedding of ``t`` (FiLM), and a 3×3 output convolution initialised to zero
    (the untrained model predicts 0). Padding keeps the spatial size, so any ``H × W`` works;
    with the default ``depth=3`` the receptive field (17 pixels) covers an 8×8 digit.

    With ``num_classes`` (labels ``y``, null label ``num_classes``) or ``cond_dim`` (vectors
    ``c``) the model is conditional: the conditions' embedding is added to the time embedding
    (see :mod:`flowkit.models.conditioning`).

    Args:
        channels: image channels ``C``.
        hidden: feature channels of the residual blocks (a multiple of ``groups``).
        depth: number of residual blocks.
        time_frequencies: Fourier features of ``t``.
        groups: GroupNorm groups.
        num_classes: number of classes of the labels ``y`` (None: no labels).
        cond_dim: size of the condition vectors ``c`` (None: none).

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
        num_classes: int | None = None,
        cond_dim: int | None = None,
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
        self.cond_embed = ConditionEmbedding(time_width, num_classes, cond_dim, "conv")
        self.inp = nn.Conv2d(channels, hidden, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(hidden, time_width, groups) for _ in range(depth))
        self.out = output_head(hidden, channels, groups)

    def forward(self, x: Tensor, t: Tensor, **cond: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"conv expects x of shape (B, {self.channels}, H, W), got {tuple(x.shape)}"
            )
        emb = self.embed(self.time(t.reshape(x.shape[0]).to(x.dtype)))
        extra = self.cond_embed(cond, x.shape[0], emb.dtype)
        if extra is not None:
            emb = emb + extra
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
