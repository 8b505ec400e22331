"""The two operators with a custom gradient that the entropy layers and GDN train through.

- :func:`quantize_ste`: rounding with the identity as its gradient (the straight-through estimator of Theis et
  al. 2017), written ``(round(x) − x).detach() + x`` so that the forward value is round(x) to the last bit.
- :class:`LowerBound`: ``max(x, bound)`` whose gradient also passes where x is below the bound but the gradient
  would push it up (Ballé et al.'s ``lower_bound`` in tensorflow/compression): a scale or a likelihood stuck at
  its bound can still leave it.

Both behave as compressai's ``quantize_ste`` and ``LowerBound`` (``tests/test_entropy_layers.py`` compares them),
and a ``LowerBound`` keeps its bound in a float32 buffer named ``bound``, as compressai's does, so that the
state-dict keys of the modules holding one stay the same.
"""

import torch
from torch import nn


def quantize_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) in the forward pass, the identity in the backward pass."""
    return (torch.round(x) - x).detach() + x


class _LowerBoundFunction(torch.autograd.Function):
    """max(x, bound); the gradient passes where x ≥ bound, or where it is negative (descent raises x)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, bound)
        return torch.max(x, bound)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        x, bound = ctx.saved_tensors
        passes = (x >= bound) | (grad_output < 0)
        return passes * grad_output, None


class LowerBound(nn.Module):
    """``max(x, bound)`` with the gradient of :class:`_LowerBoundFunction`; ``bound`` is a (1,) float32 buffer."""

    bound: torch.Tensor

    def __init__(self, bound: float):
        super().__init__()
        self.register_buffer("bound", torch.Tensor([float(bound)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LowerBoundFunction.apply(x, self.bound)
