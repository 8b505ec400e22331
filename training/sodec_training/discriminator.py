"""The HiFiC-style conditional discriminator of the optional adversarial stage (stage 4 in docs/design.md §4)."""

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm


class ConditionalPatchDiscriminator(nn.Module):
    """D(x, ŷ): a patch discriminator conditioned on the quantised latent, as in HiFiC (Mentzer et al. 2020).

    ŷ goes through a 3×3 convolution to ``context_channels`` and is upsampled (nearest) to the image size;
    the concatenation of image and context goes through 4×4 stride-2 convolutions of
    ``block_out_channels`` (spectral norm, LeakyReLU 0.2) and a 1×1 convolution to one logit per patch.
    """

    def __init__(
        self, latent_channels: int, context_channels: int = 12, block_out_channels: Sequence[int] = (64, 128, 256, 512)
    ):
        super().__init__()
        self.config = {
            "latent_channels": latent_channels,
            "context_channels": context_channels,
            "block_out_channels": list(block_out_channels),
        }
        self.context = spectral_norm(nn.Conv2d(latent_channels, context_channels, 3, padding=1))
        layers = []
        in_channels = 3 + context_channels
        for channels in block_out_channels:
            layers += [spectral_norm(nn.Conv2d(in_channels, channels, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            in_channels = channels
        self.blocks = nn.Sequential(*layers)
        self.to_logits = spectral_norm(nn.Conv2d(in_channels, 1, 1))

    def forward(self, images: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        context = F.leaky_relu(self.context(y_hat.float()), 0.2)
        context = F.interpolate(context, size=images.shape[-2:], mode="nearest")
        return self.to_logits(self.blocks(torch.cat([images.float() * 2 - 1, context], dim=1)))
