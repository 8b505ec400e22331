"""Fidelity decoder D_a of SODEC (HiFiC's generator): ŷ → a high-fidelity preview image x̂_f."""

from typing import Optional, Sequence

import torch
from torch import nn

from .layers import GradientCheckpointingMixin, ResidualBlock, make_activation, make_norm


class FidelityDecoder(GradientCheckpointingMixin, nn.Module):
    r"""D_a: ``ŷ`` (B, C, H/16, W/16) → ``x̂_f`` (B, 3, H, W), images on the [0, 1] scale (unclamped
    without an output activation; with ``output_activation="tanh"`` the output is (tanh(o) + 1) / 2, the
    form of HiFiC models trained on [-1, 1] images).

    HiFiC's generator: channel norm, a 3×3 convolution, ``num_residual_blocks`` residual blocks
    with a long skip, four stride-2 transposed convolutions and a 7×7 output convolution. Module
    names (``conv_block_init``, ``resblock_{i}``, ``upconv_block{1..4}``, ``conv_block_out``) follow
    HiFiC's PyTorch port.
    """

    def __init__(
        self,
        latent_channels: int = 220,
        block_out_channels: Sequence[int] = (960, 480, 240, 120, 60),
        num_residual_blocks: int = 9,
        out_channels: int = 3,
        channel_norm: bool = True,
        activation: str = "relu",
        output_activation: Optional[str] = None,
    ):
        super().__init__()
        if output_activation not in (None, "tanh"):
            raise ValueError(f"output_activation must be None or 'tanh'; got {output_activation!r}")
        self.output_activation = output_activation
        if len(block_out_channels) != 5:
            raise ValueError("the fidelity decoder has 4 upsampling blocks: block_out_channels needs 5 entries")
        c = list(block_out_channels)
        self.num_residual_blocks = num_residual_blocks
        self.conv_block_init = nn.Sequential(
            make_norm(latent_channels, channel_norm),
            nn.ReflectionPad2d(1),
            nn.Conv2d(latent_channels, c[0], kernel_size=3, stride=1),
            make_norm(c[0], channel_norm),
        )
        for m in range(num_residual_blocks):
            self.add_module(f"resblock_{m}", ResidualBlock(c[0], channel_norm, activation))
        for i in range(1, 5):
            block = nn.Sequential(
                nn.ConvTranspose2d(c[i - 1], c[i], kernel_size=3, stride=2, padding=1, output_padding=1),
                make_norm(c[i], channel_norm),
                make_activation(activation),
            )
            self.add_module(f"upconv_block{i}", block)
        self.conv_block_out = nn.Sequential(
            nn.ReflectionPad2d(3),
            nn.Conv2d(c[4], out_channels, kernel_size=7, stride=1),
        )

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        head = self.checkpointed(self.conv_block_init, y_hat)
        x = head
        for m in range(self.num_residual_blocks):
            x = self.checkpointed(getattr(self, f"resblock_{m}"), x)
        x = x + head
        for i in range(1, 5):
            x = self.checkpointed(getattr(self, f"upconv_block{i}"), x)
        x = self.checkpointed(self.conv_block_out, x)
        if self.output_activation == "tanh":
            x = (torch.tanh(x) + 1.0) / 2.0
        return x
