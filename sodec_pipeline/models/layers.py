"""Building blocks shared by the SODEC transforms (HiFiC-style channel normalisation and residual blocks, Ballé et
al.'s GDN)."""

import torch
from torch import nn
from torch.nn import functional as F

from ..codec.ops import LowerBound


class ChannelNorm2d(nn.Module):
    r"""Channel normalisation of HiFiC (Mentzer et al. 2020): each pixel's feature vector is
    normalised over the channel axis, then scaled and shifted per channel.

    The parameters are named ``gamma`` and ``beta`` with shape ``(1, C, 1, 1)``, and the variance over
    channels is the unbiased one, as in HiFiC's PyTorch port, so its checkpoints load key by key and
    compute the same function.
    """

    def __init__(self, num_channels: int, eps: float = 1e-3, unbiased: bool = True):
        super().__init__()
        self.eps = eps
        self.unbiased = unbiased and num_channels > 1
        self.gamma = nn.Parameter(torch.ones(1, num_channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, num_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=self.unbiased)
        return self.gamma * (x - mean) * torch.rsqrt(var + self.eps) + self.beta


class GradientCheckpointingMixin:
    """An ``nn.Module`` whose :meth:`checkpointed` blocks are recomputed in the backward pass once
    ``gradient_checkpointing`` is set (diffusers' ``ModelMixin.enable_gradient_checkpointing`` sets it,
    with ``_gradient_checkpointing_func``, on every submodule that has the attribute)."""

    gradient_checkpointing = False

    def checkpointed(self, block, *inputs):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(block, *inputs)
        return block(*inputs)


class ThreeConvTransform(GradientCheckpointingMixin, nn.Module):
    """``conv1`` → ReLU → ``conv2`` → ReLU → ``conv3``, the hyperprior's layout (Ballé et al. 2018; HiFiC's and
    CompressAI's ``h_a``/``h_s``): subclasses make the three layers, this runs them (checkpointed as one block)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.checkpointed(self._transform, x)

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.conv3(x)


def make_norm(num_channels: int, channel_norm: bool) -> nn.Module:
    """ChannelNorm2d, or an affine InstanceNorm2d when ``channel_norm`` is False."""
    if channel_norm:
        return ChannelNorm2d(num_channels)
    return nn.InstanceNorm2d(num_channels, affine=True, track_running_stats=False)


def make_activation(name: str) -> nn.Module:
    activations = {"relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU, "silu": nn.SiLU}
    if name not in activations:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(activations)}")
    return activations[name]()


class ResidualBlock(nn.Module):
    """Two reflect-padded 3×3 convolutions with normalisation and a skip connection (HiFiC generator block)."""

    def __init__(self, channels: int, channel_norm: bool = True, activation: str = "relu"):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, stride=1)
        self.norm1 = make_norm(channels, channel_norm)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=1)
        self.norm2 = make_norm(channels, channel_norm)
        self.activation = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.activation(self.norm1(self.conv1(self.pad(x))))
        residual = self.norm2(self.conv2(self.pad(residual)))
        return x + residual


class NonNegativeParametrizer(nn.Module):
    """A non-negative parameter stored as its square root (Ballé et al. 2016, for GDN's β and γ): the value is
    max(θ, √(minimum + ε²))² − ε², ε = ``reparam_offset``, so that it stays ≥ ``minimum`` and its gradient does not
    vanish near 0. Buffers ``pedestal`` (ε²) and ``lower_bound.bound``, as compressai's of the same name."""

    pedestal: torch.Tensor

    def __init__(self, minimum: float = 0, reparam_offset: float = 2**-18):
        super().__init__()
        self.minimum = float(minimum)
        self.reparam_offset = float(reparam_offset)
        self.register_buffer("pedestal", torch.Tensor([self.reparam_offset**2]))
        self.lower_bound = LowerBound((self.minimum + self.reparam_offset**2) ** 0.5)

    def init(self, x: torch.Tensor) -> torch.Tensor:
        """The stored θ of the value ``x``."""
        return torch.sqrt(torch.max(x + self.pedestal, self.pedestal))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lower_bound(x) ** 2 - self.pedestal


class GDN(nn.Module):
    r"""Generalized divisive normalization (Ballé, Laparra and Simoncelli, ICLR 2016):
    y_i = x_i / √(β_i + Σ_j γ_ij x_j²), or with ``inverse=True`` (IGDN, the synthesis side) x_i · √(β_i + Σ_j γ_ij
    x_j²).

    β and γ are kept non-negative by :class:`NonNegativeParametrizer` (β ≥ ``beta_min``); they start at 1 and
    ``gamma_init`` · I. Parameters ``beta`` (C,) and ``gamma`` (C, C) and their parametrizers' buffers carry
    compressai's names, so that its checkpoints load unchanged and compute the same values.
    """

    def __init__(self, in_channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.inverse = bool(inverse)
        self.beta_reparam = NonNegativeParametrizer(minimum=float(beta_min))
        self.beta = nn.Parameter(self.beta_reparam.init(torch.ones(in_channels)))
        self.gamma_reparam = NonNegativeParametrizer()
        self.gamma = nn.Parameter(self.gamma_reparam.init(float(gamma_init) * torch.eye(in_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.size(1)
        beta = self.beta_reparam(self.beta)
        gamma = self.gamma_reparam(self.gamma).reshape(channels, channels, 1, 1)
        norm = F.conv2d(x**2, gamma, beta)
        return x * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))
