"""The diffusion-path transforms of SODEC: latent synthesis H_s and latent transformation T_s."""

import torch
from torch import nn

from .layers import GradientCheckpointingMixin, ResidualBlock, ThreeConvTransform, make_activation, make_norm


class LatentSynthesis(ThreeConvTransform):
    r"""H_s: hyper-latent ``ẑ`` (B, N, H/64, W/64) → side features ``w`` (B, C_w, H/16, W/16).

    Two stride-2 transposed convolutions and a 3×3 projection, like a hyper-synthesis head, but
    trained for the diffusion path rather than for the entropy model.
    """

    def __init__(self, hyper_channels: int = 320, out_channels: int = 320):
        super().__init__()
        kwargs = dict(kernel_size=5, stride=2, padding=2, output_padding=1)
        self.conv1 = nn.ConvTranspose2d(hyper_channels, hyper_channels, **kwargs)
        self.conv2 = nn.ConvTranspose2d(hyper_channels, out_channels, **kwargs)
        self.conv3 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)


class LatentTransform(GradientCheckpointingMixin, nn.Module):
    r"""T_s: ``(ŷ, w)`` at stride 16 → ``ŷ_t`` (B, out_channels, H/8, W/8), the noisy-latent input of
    the one-step UNet, on the scale of Stable Diffusion's scaled latents.

    Concatenation, a 3×3 convolution, residual blocks, one stride-2 transposed convolution, and a 3×3
    projection to the UNet's input channels.
    """

    def __init__(
        self,
        latent_channels: int = 220,
        side_channels: int = 320,
        hidden_channels: int = 256,
        out_channels: int = 4,
        num_residual_blocks: int = 2,
        channel_norm: bool = True,
        activation: str = "relu",
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(latent_channels + side_channels, hidden_channels, kernel_size=3, padding=1)
        self.norm_in = make_norm(hidden_channels, channel_norm)
        self.activation = make_activation(activation)
        self.resblocks = nn.ModuleList(
            [ResidualBlock(hidden_channels, channel_norm, activation) for _ in range(num_residual_blocks)]
        )
        self.upsample = nn.ConvTranspose2d(
            hidden_channels, hidden_channels, kernel_size=3, stride=2, padding=1, output_padding=1
        )
        self.conv_out = nn.Conv2d(hidden_channels, out_channels, kernel_size=3, padding=1)

    def forward(self, y_hat: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        h = self.checkpointed(self._stem, y_hat, side)
        for block in self.resblocks:
            h = self.checkpointed(block, h)
        return self.checkpointed(self._head, h)

    def _stem(self, y_hat: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm_in(self.conv_in(torch.cat([y_hat, side], dim=1))))

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.activation(self.upsample(h)))
