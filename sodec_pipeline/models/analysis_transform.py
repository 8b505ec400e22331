"""Analysis transform E of SODEC (HiFiC's encoder): image → latent y at stride 16."""

from typing import Sequence

import torch
from torch import nn

from .layers import GradientCheckpointingMixin, make_activation, make_norm


class AnalysisTransform(GradientCheckpointingMixin, nn.Module):
    r"""E: ``x`` (B, 3, H, W) in [0, 1] → ``y`` (B, latent_channels, H/16, W/16).

    A 7×7 stem then four stride-2 3×3 convolutions, each followed by channel normalisation and an
    activation, then a 3×3 projection to the bottleneck. The module names (``conv_block1`` …
    ``conv_block5``, ``conv_block_out``) and layouts follow HiFiC's PyTorch port.
    """

    def __init__(
        self,
        in_channels: int = 3,
        block_out_channels: Sequence[int] = (60, 120, 240, 480, 960),
        latent_channels: int = 220,
        channel_norm: bool = True,
        activation: str = "relu",
    ):
        super().__init__()
        if len(block_out_channels) != 5:
            raise ValueError("the analysis transform has 5 blocks (stride 16): block_out_channels needs 5 entries")
        c = list(block_out_channels)
        self.conv_block1 = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, c[0], kernel_size=7, stride=1),
            make_norm(c[0], channel_norm),
            make_activation(activation),
        )
        for i in range(1, 5):
            block = nn.Sequential(
                nn.ReflectionPad2d((0, 1, 1, 0)),
                nn.Conv2d(c[i - 1], c[i], kernel_size=3, stride=2),
                make_norm(c[i], channel_norm),
                make_activation(activation),
            )
            self.add_module(f"conv_block{i + 1}", block)
        self.conv_block_out = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(c[4], latent_channels, kernel_size=3, stride=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 6):
            x = self.checkpointed(getattr(self, f"conv_block{i}"), x)
        return self.checkpointed(self.conv_block_out, x)
