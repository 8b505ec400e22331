"""The GDN transforms of Ballé et al. 2018 as SODEC's E and D_a: an analysis transform with generalized
divisive normalization and a synthesis transform with its inverse (IGDN), stride 16 each.

A lighter alternative to HiFiC's transforms (``analysis_transform.py``, ``fidelity_decoder.py``) for a codec
trained from scratch: no stride-1 7×7 convolution at full resolution and no residual blocks, so a step costs a
fraction of HiFiC's, and at equal steps it learns as fast (issue 18's pilot). The layer names (``conv1`` …,
``gdn1`` …) follow compressai's ``g_a``/``g_s`` of ``MeanScaleHyperprior`` in order.
"""

from typing import Sequence

import torch
from torch import nn

from .layers import GDN, GradientCheckpointingMixin


#: Channels of the three hidden layers of a GDN transform (compressai's N).
NUM_HIDDEN_LAYERS = 3


def _check_channels(block_out_channels: Sequence[int], what: str) -> list:
    channels = list(block_out_channels)
    if len(channels) != NUM_HIDDEN_LAYERS:
        raise ValueError(f"the GDN {what} has {NUM_HIDDEN_LAYERS} hidden layers: block_out_channels needs 3 entries")
    return channels


class _GDNStack(GradientCheckpointingMixin, nn.Module):
    """Four stride-2 5×5 layers ``{conv}1..4`` with a GDN ``{norm}1..3`` after the first three."""

    conv_name, norm_name = "conv", "gdn"

    def _layer(self, x: torch.Tensor, i: int) -> torch.Tensor:
        x = getattr(self, f"{self.conv_name}{i + 1}")(x)
        return x if i == 3 else getattr(self, f"{self.norm_name}{i + 1}")(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(4):
            x = self.checkpointed(self._layer, x, i)
        return x


class GDNAnalysisTransform(_GDNStack):
    r"""E: ``x`` (B, 3, H, W) in [0, 1] → ``y`` (B, latent_channels, H/16, W/16).

    Four stride-2 5×5 convolutions, GDN after the first three (compressai's ``g_a``).
    """

    def __init__(
        self, in_channels: int = 3, block_out_channels: Sequence[int] = (128, 128, 128), latent_channels: int = 192
    ):
        super().__init__()
        c = [in_channels] + _check_channels(block_out_channels, "analysis transform") + [latent_channels]
        for i in range(4):
            self.add_module(f"conv{i + 1}", nn.Conv2d(c[i], c[i + 1], kernel_size=5, stride=2, padding=2))
            if i < 3:
                self.add_module(f"gdn{i + 1}", GDN(c[i + 1]))


class GDNFidelityDecoder(_GDNStack):
    r"""D_a: ``ŷ`` (B, latent_channels, H/16, W/16) → ``x̂_f`` (B, 3, H, W) on the [0, 1] scale (unclamped).

    Four stride-2 5×5 transposed convolutions, inverse GDN after the first three (compressai's ``g_s``).
    """

    conv_name, norm_name = "deconv", "igdn"

    def __init__(
        self, latent_channels: int = 192, block_out_channels: Sequence[int] = (128, 128, 128), out_channels: int = 3
    ):
        super().__init__()
        c = [latent_channels] + _check_channels(block_out_channels, "fidelity decoder") + [out_channels]
        for i in range(4):
            self.add_module(
                f"deconv{i + 1}",
                nn.ConvTranspose2d(c[i], c[i + 1], kernel_size=5, stride=2, padding=2, output_padding=1),
            )
            if i < 3:
                self.add_module(f"igdn{i + 1}", GDN(c[i + 1], inverse=True))
