"""The networks of the checkerboard context model (He et al. 2021, "Checkerboard Context Model for Efficient
Learned Image Compression"): the context prediction g_cm over the decoded anchors and the entropy-parameter
network g_ep. ``codec/entropy_models.py`` (``CheckerboardEntropyModel``) runs them; ``codec/fixed_point_context.py``
evaluates them in exact fixed point for coding."""

import torch
from torch import nn
from torch.nn import functional as F

from .layers import ThreeConvTransform


def checkerboard_kernel_mask(kernel_size: int) -> torch.Tensor:
    """(1, 1, k, k) float mask of the taps at an odd offset (dy + dx odd) from the centre: seen from a non-anchor
    position those are anchors (the checkerboard's other colour), whichever colour the anchors are."""
    offsets = torch.arange(kernel_size) - kernel_size // 2
    odd = (offsets[:, None] + offsets[None, :]).remainder(2) == 1
    return odd.to(torch.float32)[None, None]


class CheckerboardContextPrediction(nn.Conv2d):
    r"""g_cm: ŷ of the anchors (B, C, h, w; zero elsewhere) → context features (B, M, h, w), a k×k convolution
    (k odd, zero padding) whose weights are masked to the taps at an odd offset (:func:`checkerboard_kernel_mask`),
    so that a non-anchor position reads anchors only (CompressAI's ``CheckerboardMaskedConv2d``, without its
    in-place masking of the weights: the mask is applied in :meth:`forward`, so the stored weights never change
    behind the optimiser's back). The mask is a non-persistent buffer: not in checkpoints, rebuilt from k."""

    def __init__(self, latent_channels: int, context_channels: int, kernel_size: int = 5):
        if kernel_size % 2 != 1 or kernel_size < 3:
            raise ValueError(f"the context kernel size must be odd and at least 3, got {kernel_size}")
        super().__init__(latent_channels, context_channels, kernel_size, padding=kernel_size // 2)
        self.register_buffer("mask", checkerboard_kernel_mask(kernel_size), persistent=False)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, padding=self.padding)


class EntropyParametersTransform(ThreeConvTransform):
    r"""g_ep: [μ_P, σ_P, context] (B, 2C + M, h, w) → (Δμ, Δσ) (B, 2C, h, w), three 1×1 convolutions with ReLU
    between them (He et al.'s and Minnen et al.'s entropy-parameter network). The non-anchors' parameters are
    μ = μ_P + Δμ, σ = σ_P + Δσ. The last layer starts at zero, so that a new context model codes exactly as the
    hyperprior it extends until it trains (a codec converted with ``CompressionVAE.with_entropy_model``)."""

    def __init__(self, latent_channels: int, context_channels: int, hidden_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(2 * latent_channels + context_channels, hidden_channels, kernel_size=1)
        self.conv2 = nn.Conv2d(hidden_channels, hidden_channels, kernel_size=1)
        self.conv3 = nn.Conv2d(hidden_channels, 2 * latent_channels, kernel_size=1)
        nn.init.zeros_(self.conv3.weight)
        nn.init.zeros_(self.conv3.bias)
