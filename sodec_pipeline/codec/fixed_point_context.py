r"""The checkerboard context model's second pass in exact fixed point: the non-anchors' entropy parameters that every
machine computes bit for bit.

The non-anchors' CDF indexes come from σ = σ_P + Δσ, where (Δμ, Δσ) = g_ep([μ_P, σ_P, g_cm(ŷ_anchors)])
(``models/context_transforms.py``). Computed in float they would differ in the last bits between machines, as P's
output does, and one changed index desynchronises the entropy decoder (``fixed_point_hyper_synthesis.py`` says
why, and how P avoids it). So the coder evaluates g_cm and g_ep as P is evaluated:

- the inputs (ŷ of the anchors, μ_P and σ_P: float32 values that every machine derives alike) are rounded to
  ``fraction_bits`` fractional bits (round half to even) and clamped to each layer's input range 2^A;
- each layer's weights are ``WEIGHT_BITS``-bit integers with a power-of-two scale, its bias at the accumulator's
  scale (:func:`quantise_weights`); g_cm's masked taps are exact zeros and are not evaluated;
- every product and partial sum is an integer below 2^52 (A from the products per output: C·taps for g_cm, the
  input channels for g_ep's 1×1 layers), so float64 matrix products are exact in any summation order;
- between layers the accumulator is brought back to F fractional bits (multiplication by 2^-G, floor(x + 1/2)),
  ReLU'd after g_ep's hidden layers (g_cm's output has no activation) and clamped;
- g_ep's last accumulator times 2^-(F+G) is exact in float64; μ = float32(float64(μ_P) + Δμ) (one IEEE addition
  and one IEEE rounding), and σ likewise.

The context is only evaluated at the non-anchor positions (half of ŷ) and only over the anchor taps (12 of 25 for a
5×5 kernel): g_cm becomes one matrix product per tap on the gathered anchors, and g_ep three matrix products, over
bands of ŷ rows of at most :data:`BAND_ELEMENTS` activations (each band reads the k//2 rows around it). The
quantised weights are derived from the float32 weights at first use; training keeps the float networks.
"""

from typing import List, Tuple

import torch

from . import fixed_point_hyper_synthesis as _fixed
from .fixed_point_hyper_synthesis import ACTIVATION_RANGE_BITS, input_bits_for, quantise_weights


def anchor_mask(height: int, width: int, device=None) -> torch.Tensor:
    """(height, width) bool: the checkerboard's anchors, the positions (i, j) with i + j even; the others are the
    non-anchors, coded in the second pass."""
    rows = torch.arange(height, device=device)[:, None]
    columns = torch.arange(width, device=device)[None, :]
    return (rows + columns).remainder(2) == 0


class FixedPointCheckerboardContext:
    """g_cm (a ``CheckerboardContextPrediction``) and g_ep (an ``EntropyParametersTransform``: ``conv1`` → ReLU →
    ``conv2`` → ReLU → ``conv3``, 1×1) evaluated exactly in fixed point; see the module docstring. Build it from the
    current weights; call it on (ŷ of the anchors, μ_P, σ_P), each (B, C, h, w) float32 on any device, for the
    (μ, σ) of every position: the non-anchors' from the context, the anchors' the inputs unchanged."""

    def __init__(self, context_prediction, entropy_parameters):
        mask = context_prediction.mask.detach().to("cpu")[0, 0]
        self.radius = context_prediction.kernel_size[0] // 2
        self.taps = [(int(i) - self.radius, int(j) - self.radius) for i, j in torch.nonzero(mask).tolist()]
        if tuple(context_prediction.padding) != (self.radius, self.radius) or context_prediction.groups != 1:
            raise ValueError("the fixed-point context needs a square, zero-padded, ungrouped context prediction")
        convs = (entropy_parameters.conv1, entropy_parameters.conv2, entropy_parameters.conv3)
        if any(conv.kernel_size != (1, 1) for conv in convs):
            raise ValueError("the fixed-point context needs 1×1 entropy-parameter layers")
        self.input_bits = [input_bits_for(context_prediction.in_channels * len(self.taps))]
        self.input_bits += [input_bits_for(conv.in_channels) for conv in convs]
        self.fraction_bits = min(self.input_bits) - ACTIVATION_RANGE_BITS
        if self.fraction_bits < 4:
            raise ValueError("the context model is too wide for exact fixed-point evaluation in float64")
        weight, self.context_bias, self.context_shift = quantise_weights(
            context_prediction.masked_weight(), context_prediction.bias, self.fraction_bits, "the context model"
        )
        self.context_weights = [weight[:, :, i + self.radius, j + self.radius].contiguous() for i, j in self.taps]
        self.layers: List[Tuple[torch.Tensor, torch.Tensor, int]] = []
        for conv in convs:
            weight, bias, shift = quantise_weights(conv.weight, conv.bias, self.fraction_bits, "the context model")
            self.layers.append((weight[:, :, 0, 0].contiguous(), bias, shift))
        self.latent_channels = convs[-1].out_channels // 2
        self.widest = max(
            [self.latent_channels * 2 + context_prediction.out_channels] + [c.out_channels for c in convs]
        )

    def __call__(
        self, y_hat_anchors: torch.Tensor, means: torch.Tensor, scales: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        device = means.device
        anchors_in = y_hat_anchors.detach().to("cpu", torch.float32)
        out_means = means.detach().to("cpu", torch.float32).clone()
        out_scales = scales.detach().to("cpu", torch.float32).clone()
        batch, _, height, width = out_means.shape
        band = max(1, _fixed.BAND_ELEMENTS // max(1, self.widest * width))
        anchors = anchor_mask(height, width)
        for b in range(batch):
            for top in range(0, height, band):
                self._band(anchors_in[b], anchors, out_means[b], out_scales[b], top, min(height, top + band))
        return out_means.to(device), out_scales.to(device)

    def _fixed(self, values: torch.Tensor, bits: int) -> torch.Tensor:
        """float32 values → integers at F fractional bits (float64), clamped to ±2^bits."""
        scaled = torch.ldexp(values.to(torch.float64), torch.tensor(self.fraction_bits, dtype=torch.float64))
        return torch.round(scaled).clamp(-(2.0**bits), 2.0**bits)

    def _rescale(self, accumulator: torch.Tensor, shift: int) -> torch.Tensor:
        """An accumulator at scale 2^(F+G) → F fractional bits, rounded half up (exact)."""
        return torch.floor(torch.ldexp(accumulator, torch.tensor(-shift, dtype=torch.float64)) + 0.5)

    def _band(self, y_hat, anchors, means, scales, top: int, bottom: int) -> None:
        """Writes the (μ, σ) of the non-anchors of rows [top, bottom) into ``means`` and ``scales`` (C, h, w)."""
        r = self.radius
        height, width = anchors.shape
        start, stop = max(0, top - r), min(height, bottom + r)
        x = self._fixed(y_hat[:, start:stop], self.input_bits[0]) * anchors[start:stop]
        x = torch.nn.functional.pad(x, (r, r, r - (top - start), r - (stop - bottom)))  # row p: ŷ row top − r + p
        rows, columns = torch.nonzero(~anchors[top:bottom], as_tuple=True)
        if rows.numel() == 0:
            return
        accumulator = torch.zeros(self.context_weights[0].shape[0], rows.numel(), dtype=torch.float64)
        for (i, j), weight in zip(self.taps, self.context_weights):
            accumulator += weight @ x[:, rows + r + i, columns + r + j]
        if self.context_bias is not None:
            accumulator += self.context_bias[:, None]
        limit = 2.0 ** self.input_bits[1]
        context = self._rescale(accumulator, self.context_shift).clamp(-limit, limit)
        rows = rows + top
        mu, sigma = means[:, rows, columns], scales[:, rows, columns]
        h = torch.cat([self._fixed(mu, self.input_bits[1]), self._fixed(sigma, self.input_bits[1]), context])
        for number, (weight, bias, shift) in enumerate(self.layers):
            accumulator = weight @ h
            if bias is not None:
                accumulator += bias[:, None]
            if number == len(self.layers) - 1:
                break
            h = self._rescale(accumulator.clamp_min(0), shift).clamp_max(2.0 ** self.input_bits[number + 2])
        delta = torch.ldexp(accumulator, torch.tensor(-(self.fraction_bits + shift), dtype=torch.float64))
        c = self.latent_channels
        means[:, rows, columns] = (mu.to(torch.float64) + delta[:c]).to(torch.float32)
        scales[:, rows, columns] = (sigma.to(torch.float64) + delta[c:]).to(torch.float32)
