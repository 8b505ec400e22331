r"""P in exact integer arithmetic: entropy parameters (μ, σ) that every machine computes bit for bit.

The y-stream's CDF indexes come from σ = P_scale(ẑ). Computed in float, a relative difference of 1e-6
between the encoder's and the decoder's σ (another CPU vector unit, another thread count, a GPU, TF32)
already changes some indexes, and one changed index desynchronises the entropy decoder. So the coder never
uses P's float output. It evaluates P (both heads, :class:`HyperSynthesisTransform`: transposed
convolutions with ReLU between them) in fixed point:

- ẑ is rounded to ``fraction_bits`` fractional bits (ẑ·2^F, round half to even);
- each layer's weights are rounded to ``WEIGHT_BITS``-bit integers with a power-of-two scale 2^G chosen
  from the layer's largest weight, its bias to the accumulator's scale 2^(F+G);
- every product and every partial sum is then an integer. The bounds below keep them under 2^52, so the
  float64 convolution computes them exactly, in any order and any algorithm that sums products (GEMM,
  direct): the result does not depend on the machine, the thread count or the vector unit;
- between layers the accumulator is brought back to F fractional bits (multiplication by 2^-G, exact;
  floor(x + 1/2), exact), ReLU'd and clamped to ``2^A``;
- the last accumulator times 2^-(F+G) is exact in float64, and its rounding to float32 is IEEE's.

Bounds: a layer with ``K = C_in·k_h·k_w`` products per output, inputs ``|x| ≤ 2^A`` and weights
``|w| ≤ 2^(WEIGHT_BITS-1)`` accumulates at most ``2^(ceil(log2 K) + A + WEIGHT_BITS - 1) ≤ 2^51``; biases
are refused beyond 2^51. So A = 51 − ceil(log2 K) − (WEIGHT_BITS − 1), and F = A − ``ACTIVATION_RANGE_BITS``
(activations of magnitude up to 2^13 = 8192 are represented; larger ones are clamped, identically
everywhere). For the full-size layout (K = 320·25) F = 12, for the tiny layout F = 17.

The network runs on the CPU in float64 whatever device the model is on, and the quantised weights are
derived from the float32 weights at first use, so checkpoints do not change. It runs on bands of ẑ rows
(with enough rows of context on each side for every output row of the band) so that its float64
activations hold at most :data:`BAND_ELEMENTS` outputs at a time: the arithmetic being exact, a banded
evaluation gives the same bits as a whole one, and memory stays bounded for images of any size.
"""

import math
from fractions import Fraction
from typing import List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F


WEIGHT_BITS = 14
ACTIVATION_RANGE_BITS = 13
_ACCUMULATOR_BITS = 51  # |products summed| ≤ 2^51 and |bias| ≤ 2^51, so every accumulator is below 2^52
#: Outputs (elements of μ or σ) computed per band: 2^22, 32 MiB per float64 activation of that size.
BAND_ELEMENTS = 1 << 22


def quantise_weights(
    weight: torch.Tensor, bias, fraction_bits: int, what: str = "P"
) -> Tuple[torch.Tensor, object, int]:
    """A layer's weights as ``WEIGHT_BITS``-bit integers (float64) with a power-of-two scale 2^G taken from its
    largest weight, and its bias (or ``None``) at the accumulator's scale 2^(F+G): ``(weight, bias, G)``.
    ``ValueError`` for a bias too large to be exact (``what`` names the network in the message)."""
    weight = weight.detach().to("cpu", torch.float64)
    largest = float(weight.abs().max()) if weight.numel() else 0.0
    exponent = math.frexp(largest)[1] if largest > 0 else 0  # largest < 2^exponent
    shift = (WEIGHT_BITS - 1) - exponent
    weight = torch.round(torch.ldexp(weight, torch.tensor(shift, dtype=torch.float64)))
    if bias is not None:
        scale = torch.tensor(fraction_bits + shift, dtype=torch.float64)
        float_bias = bias.detach().to("cpu", torch.float64)
        bias = torch.round(torch.ldexp(float_bias, scale))
        if bias.numel() and float(bias.abs().max()) > 2.0**_ACCUMULATOR_BITS:
            raise ValueError(
                f"a bias of {what} is too large for exact fixed-point evaluation "
                f"(|b| = {float(float_bias.abs().max()):.3g} at scale 2^{fraction_bits + shift})"
            )
    return weight, bias, shift


class _FixedPointLayer:
    def __init__(self, conv: nn.ConvTranspose2d, fraction_bits: int, input_bits: int):
        if conv.groups != 1 or tuple(conv.dilation) != (1, 1):
            raise ValueError("fixed-point P supports plain transposed convolutions (groups=1, dilation=1)")
        self.weight, self.bias, self.weight_shift = quantise_weights(conv.weight, conv.bias, fraction_bits)
        self.input_bits = input_bits
        self.stride, self.padding, self.output_padding = conv.stride, conv.padding, conv.output_padding

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(
            x, self.weight, self.bias, stride=self.stride, padding=self.padding, output_padding=self.output_padding
        )


def _layer_input_bits(conv: nn.ConvTranspose2d) -> int:
    return input_bits_for(conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1])


def input_bits_for(products: int) -> int:
    """A: the bits of a layer's integer inputs that keep ``products`` products per output, and the bias, below
    2^52 in all (the module docstring's bound)."""
    return _ACCUMULATOR_BITS - math.ceil(math.log2(max(products, 1))) - (WEIGHT_BITS - 1)


class FixedPointHyperSynthesis:
    """A :class:`HyperSynthesisTransform` head (``conv1`` → ReLU → ``conv2`` → ReLU → ``conv3``) evaluated
    exactly in fixed point; see the module docstring. Build it from the head's current weights; call it
    on ẑ (any device, any float dtype) for the head's float32 output on the same device."""

    def __init__(self, head: nn.Module):
        convs: Sequence[nn.ConvTranspose2d] = (head.conv1, head.conv2, head.conv3)
        input_bits = [_layer_input_bits(conv) for conv in convs]
        self.fraction_bits = min(input_bits) - ACTIVATION_RANGE_BITS
        if self.fraction_bits < 4:
            raise ValueError("P is too wide for exact fixed-point evaluation in float64")
        self.layers: List[_FixedPointLayer] = [
            _FixedPointLayer(conv, self.fraction_bits, bits) for conv, bits in zip(convs, input_bits)
        ]

        # Rows of ẑ of context a band needs on each side. Output row o of a transposed convolution (kernel k,
        # stride s, padding p) reads input rows ceil((o + p − k + 1)/s) … floor((o + p)/s): a band of outputs
        # reaches ceil((k − 1 − p)/s) input rows above its inputs and floor((p − 1)/s) + 1 below. In rows of ẑ
        # that is that reach over the upsampling u of the layers before; summed over the layers, plus one.
        # (Bands need every layer to map n rows to exactly s·n rows, as P's layers do; otherwise P runs whole.)
        self.upsampling, reach, self.bandable = 1, Fraction(0), True
        for layer in self.layers:
            kernel, stride, padding = layer.weight.shape[-2], layer.stride[0], layer.padding[0]
            self.bandable &= kernel + layer.output_padding[0] - 2 * padding - stride == 0
            rows = max(-(-(kernel - 1 - padding) // stride), (padding - 1) // stride + 1)
            reach += Fraction(rows, self.upsampling)
            self.upsampling *= stride
        self.halo = math.ceil(reach) + 1
        self.out_channels = self.layers[-1].weight.shape[1]

    def __call__(self, z_hat: torch.Tensor) -> torch.Tensor:
        """P's float32 output for ẑ (B, N, h, w), computed in bands of ẑ rows (see the module docstring)."""
        z = z_hat.detach().to("cpu", torch.float64)
        batch, _, rows, columns = z.shape
        up = self.upsampling
        band = max(4 * self.halo, BAND_ELEMENTS // max(1, batch * self.out_channels * columns * up * up))
        if band >= rows or not self.bandable:
            return self._evaluate(z).to(torch.float32).to(z_hat.device)
        out = torch.empty(batch, self.out_channels, rows * up, columns * up, dtype=torch.float32)
        for top in range(0, rows, band):
            bottom = min(rows, top + band)
            start, stop = max(0, top - self.halo), min(rows, bottom + self.halo)
            part = self._evaluate(z[:, :, start:stop])
            out[:, :, top * up : bottom * up] = part[:, :, (top - start) * up : (bottom - start) * up]
        return out.to(z_hat.device)

    def _evaluate(self, z_hat: torch.Tensor) -> torch.Tensor:
        """The exact fixed-point network on float64 ẑ; float64 output (exact values of the float32 result)."""
        first = self.layers[0]
        limit = 2.0**first.input_bits
        x = torch.round(torch.ldexp(z_hat, torch.tensor(self.fraction_bits, dtype=torch.float64)))
        x = x.clamp(-limit, limit)
        for layer, following in zip(self.layers[:-1], self.layers[1:]):
            accumulator = layer(x)
            shift = torch.tensor(-layer.weight_shift, dtype=torch.float64)
            x = torch.floor(torch.ldexp(accumulator.clamp_min(0), shift) + 0.5).clamp_max(2.0**following.input_bits)
        last = self.layers[-1]
        accumulator = last(x)
        return torch.ldexp(accumulator, torch.tensor(-(self.fraction_bits + last.weight_shift), dtype=torch.float64))


def weights_key(modules: Sequence[nn.Module]) -> Tuple:
    """Identifies the current weights of ``modules`` (changes when any is replaced or modified in place)."""
    return tuple(
        (id(t), t.data_ptr(), t._version, t.device.type)
        for m in modules
        for t in list(m.parameters()) + list(m.buffers())
    )
