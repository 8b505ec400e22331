"""Fidelity decoder D_a of SODEC (HiFiC's generator, or Ballé et al.'s GDN synthesis): ŷ → a high-fidelity
preview image x̂_f; and D_a on its own (:class:`StandaloneFidelityDecoder`), as ``sodec decompress --fidelity``
loads it from a saved ``fidelity_guidance`` component without diffusers."""

import os
from typing import Optional, Sequence, Union

import torch
from torch import nn

from .component_files import init_arguments, read_component
from .gdn_transforms import GDNFidelityDecoder
from .layers import GradientCheckpointingMixin, ResidualBlock, make_activation, make_norm


#: D_a's architecture: "hific" (HiFiC's generator; five ``decoder_block_out_channels``) or "gdn" (Ballé et al.'s
#: synthesis transform with inverse GDN; three).
DECODER_TYPES = ("hific", "gdn")


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


def make_fidelity_decoder(
    latent_channels: int = 220,
    decoder_block_out_channels: Sequence[int] = (960, 480, 240, 120, 60),
    decoder_num_residual_blocks: int = 9,
    channel_norm: bool = True,
    activation: str = "relu",
    decoder_output_activation: Optional[str] = None,
    decoder_type: str = "hific",
) -> nn.Module:
    """D_a from the arguments of ``FidelityGuidanceEncoder`` (same names and defaults) that describe it."""
    if decoder_type not in DECODER_TYPES:
        raise ValueError(f"decoder_type must be one of {DECODER_TYPES}, got {decoder_type!r}")
    if decoder_type == "gdn":
        if decoder_output_activation is not None:
            raise ValueError("the GDN fidelity decoder has no output activation")
        return GDNFidelityDecoder(latent_channels, decoder_block_out_channels)
    return FidelityDecoder(
        latent_channels,
        decoder_block_out_channels,
        decoder_num_residual_blocks,
        3,
        channel_norm,
        activation,
        decoder_output_activation,
    )


class StandaloneFidelityDecoder(nn.Module):
    """D_a of a saved ``FidelityGuidanceEncoder`` without the rest of it (F_p, diffusers): ``fidelity_decoder``
    under the same name, so its state-dict keys are the encoder's ``fidelity_decoder.*``, and :meth:`decode` as
    ``FidelityGuidanceEncoder.decode`` computes it."""

    def __init__(self, fidelity_decoder: nn.Module):
        super().__init__()
        self.fidelity_decoder = fidelity_decoder

    @property
    def dtype(self) -> torch.dtype:
        """The dtype D_a runs in (that of its parameters)."""
        return next(self.parameters()).dtype

    def decode(self, y_hat: torch.Tensor) -> torch.Tensor:
        """D_a: ŷ → x̂_f on the [0, 1] scale (not clamped)."""
        return self.fidelity_decoder(y_hat.to(self.dtype))

    @classmethod
    def from_pretrained(
        cls, folder: Union[str, os.PathLike], subfolder: Optional[str] = None, variant: Optional[str] = None
    ) -> "StandaloneFidelityDecoder":
        """D_a of a saved ``fidelity_guidance`` folder (its config, and the ``fidelity_decoder.*`` tensors of its
        weights file), float32, in eval mode."""
        config, weights = read_component(folder, subfolder, variant)
        model = cls(make_fidelity_decoder(**init_arguments(make_fidelity_decoder, config)))
        model.load_state_dict({k: v for k, v in weights.items() if k.startswith("fidelity_decoder.")}, strict=True)
        return model.eval()
