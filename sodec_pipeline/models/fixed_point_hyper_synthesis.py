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

The network runs on the CPU in float64 whatever device the model is on (ẑ is at stride 64: small), and
the quantised weights are derived from the float32 weights at first use, so checkpoints do not change.
"""

import math
from typing import List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

WEIGHT_BITS = 14
ACTIVATION_RANGE_BITS = 13
_ACCUMULATOR_BITS = 51  # |products summed| ≤ 2^51 and |bias| ≤ 2^51, so every accumulator is below 2^52


class _FixedPointLayer:
    def __init__(self, conv: nn.ConvTranspose2d, fraction_bits: int, input_bits: int):
        if conv.groups != 1 or tuple(conv.dilation) != (1, 1):
            raise ValueError("fixed-point P supports plain transposed convolutions (groups=1, dilation=1)")
        weight = conv.weight.detach().to("cpu", torch.float64)
        largest = float(weight.abs().max()) if weight.numel() else 0.0
        exponent = math.frexp(largest)[1] if largest > 0 else 0  # largest < 2^exponent
        self.weight_shift = (WEIGHT_BITS - 1) - exponent
        self.weight = torch.round(torch.ldexp(weight, torch.tensor(self.weight_shift, dtype=torch.float64)))
        self.bias = None
        if conv.bias is not None:
            scale = torch.tensor(fraction_bits + self.weight_shift, dtype=torch.float64)
            self.bias = torch.round(torch.ldexp(conv.bias.detach().to("cpu", torch.float64), scale))
            if self.bias.numel() and float(self.bias.abs().max()) > 2.0**_ACCUMULATOR_BITS:
                raise ValueError(
                    "a bias of P is too large for exact fixed-point evaluation "
                    f"(|b| = {float(conv.bias.abs().max()):.3g} at scale 2^{fraction_bits + self.weight_shift})"
                )
        self.input_bits = input_bits
        self.stride, self.padding, self.output_padding = conv.stride, conv.padding, conv.output_padding

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(
            x, self.weight, self.bias, stride=self.stride, padding=self.padding, output_padding=self.output_padding
        )


def _layer_input_bits(conv: nn.ConvTranspose2d) -> int:
    products = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
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

    def __call__(self, z_hat: torch.Tensor) -> torch.Tensor:
        first = self.layers[0]
        limit = 2.0**first.input_bits
        x = torch.round(torch.ldexp(z_hat.detach().to("cpu", torch.float64), torch.tensor(self.fraction_bits, dtype=torch.float64)))
        x = x.clamp(-limit, limit)
        for layer, following in zip(self.layers[:-1], self.layers[1:]):
            accumulator = layer(x)
            shift = torch.tensor(-layer.weight_shift, dtype=torch.float64)
            x = torch.floor(torch.ldexp(accumulator.clamp_min(0), shift) + 0.5).clamp_max(2.0**following.input_bits)
        last = self.layers[-1]
        accumulator = last(x)
        out = torch.ldexp(accumulator, torch.tensor(-(self.fraction_bits + last.weight_shift), dtype=torch.float64))
        return out.to(torch.float32).to(z_hat.device)


def weights_key(modules: Sequence[nn.Module]) -> Tuple:
    """Identifies the current weights of ``modules`` (changes when any is replaced or modified in place)."""
    return tuple(
        (id(t), t.data_ptr(), t._version, t.device.type) for m in modules for t in list(m.parameters()) + list(m.buffers())
    )
