"""Validation metrics on [0, 1] images: PSNR and MS-SSIM (pytorch-msssim) at any image size.

pytorch-msssim's ``ms_ssim`` uses 5 scales and needs the shorter side to exceed (win_size − 1)·2⁴ = 160
pixels. For smaller images :func:`ms_ssim` drops the coarsest scales (keeping the first ``levels`` of the
standard weights, renormalised to sum to 1) until the shorter side exceeds (win_size − 1)·2^(levels−1);
below 11 pixels it also shrinks the Gaussian window to the largest odd size that fits (σ scaled with it).
From 161 pixels up the result is pytorch-msssim's standard 5-scale MS-SSIM.
"""

import math
from typing import Tuple

import torch
from pytorch_msssim import ms_ssim as _standard_ms_ssim

from sodec_pipeline.evaluation.metrics import MS_SSIM_WEIGHTS, ms_ssim_per_image


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image of (B, 3, H, W) tensors in [0, 1]."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def ms_ssim_config(height: int, width: int, win_size: int = 11, win_sigma: float = 1.5) -> Tuple[int, int, float]:
    """(levels, win_size, win_sigma) used for an image of this size (see the module docstring)."""
    side = min(height, width)
    levels = len(MS_SSIM_WEIGHTS)
    while levels > 1 and side <= (win_size - 1) * 2 ** (levels - 1):
        levels -= 1
    if side < win_size:
        new_size = side if side % 2 else side - 1
        new_size = max(new_size, 1)
        win_sigma = win_sigma * new_size / win_size
        win_size = new_size
    return levels, win_size, win_sigma


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MS-SSIM of each image of (B, 3, H, W) tensors in [0, 1] (data range 1)."""
    x, y = x.float().clamp(0, 1), y.float().clamp(0, 1)
    levels, win_size, win_sigma = ms_ssim_config(*x.shape[-2:])
    if levels == len(MS_SSIM_WEIGHTS) and win_size == 11:
        return _standard_ms_ssim(x, y, data_range=1.0, size_average=False)
    weights = MS_SSIM_WEIGHTS[:levels]
    weights = [w / sum(weights) for w in weights]
    return ms_ssim_per_image(x, y, weights, data_range=1.0, win_size=win_size, win_sigma=max(win_sigma, 1e-3))


def finite_mean(values) -> float:
    values = [float(v) for v in values if math.isfinite(float(v))]
    return sum(values) / len(values) if values else float("nan")
