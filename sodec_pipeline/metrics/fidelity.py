"""PSNR and MS-SSIM, for training (batches of tensors) and for ``sodec eval`` (uint8 images).

- PSNR: 10·log10(peak² / MSE), MSE over all pixels and the three channels; ``inf`` for identical images.
- MS-SSIM: pytorch-msssim's algorithm on RGB, 11×11 Gaussian window (σ = 1.5), the standard five scales
  and weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333). Five scales need a smaller side above 160 px. A
  smaller image uses the largest number of scales M its smaller side allows (side > 10·2^(M−1)), with the
  first M weights renormalised to sum to 1; :func:`ms_ssim_scales` says how many were used and the
  evaluation report records it. Below 11 px not even one scale fits and the value is NaN.

The uint8 functions (:func:`psnr`, :func:`ms_ssim`) take two RGB images (H, W, 3), the reference first,
as a user sees them (decoded outputs are rounded to 8 bits like a PNG before they are measured). The
batch functions (:func:`batch_psnr`, :func:`batch_ms_ssim`) take (B, 3, H, W) tensors in [0, 1] and
return one value per image.
"""

import math
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_WIN_SIZE = 11
MS_SSIM_WIN_SIGMA = 1.5


def check_pair(reference: np.ndarray, test: np.ndarray) -> None:
    if reference.shape != test.shape:
        raise ValueError(f"images differ in size: {reference.shape} vs {test.shape}")


def uint8_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) → float32 (1, 3, H, W) on the 0…255 scale (float64 convolutions are ~5× slower on CPU
    and change MS-SSIM by ~1e-7)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3); got shape {image.shape}")
    image = np.ascontiguousarray(image)
    if not image.flags.writeable:  # torch.from_numpy would warn; .float() copies anyway
        return torch.tensor(image).permute(2, 0, 1)[None].float()
    return torch.from_numpy(image).permute(2, 0, 1)[None].float()


def ms_ssim_scales(height: int, width: int, win_size: int = MS_SSIM_WIN_SIZE) -> int:
    """How many MS-SSIM scales (at most 5) an image of this size allows: M with min side > (win−1)·2^(M−1)."""
    side = min(height, width)
    if side < win_size:
        return 0
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and side > (win_size - 1) * 2**scales:
        scales += 1
    return scales


def ms_ssim_per_image(
    x: torch.Tensor,
    y: torch.Tensor,
    weights: Sequence[float],
    data_range: float,
    win_size: int = MS_SSIM_WIN_SIZE,
    win_sigma: float = MS_SSIM_WIN_SIGMA,
) -> torch.Tensor:
    """pytorch-msssim's MS-SSIM loop for any number of levels (its public function insists on five):
    one value per image of (B, C, H, W) tensors, ``len(weights)`` scales with those exponents."""
    from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

    win = _fspecial_gauss_1d(win_size, win_sigma).repeat([x.shape[1], 1, 1, 1]).to(x.dtype)
    mcs = []
    for level in range(len(weights)):
        ssim_per_channel, cs = _ssim(x, y, win=win, data_range=data_range, size_average=False, K=(0.01, 0.03))
        if level < len(weights) - 1:
            mcs.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    stacked = torch.stack(mcs + [torch.relu(ssim_per_channel)], dim=0)
    return torch.prod(stacked ** x.new_tensor(weights).view(-1, 1, 1), dim=0).mean(1)


def _ms_ssim_tensor(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """MS-SSIM per image of (B, 3, H, W) tensors with the small-image rule of the module docstring."""
    scales = ms_ssim_scales(*x.shape[-2:])
    if scales == 0:
        return torch.full((x.shape[0],), float("nan"))
    weights = MS_SSIM_WEIGHTS[:scales]
    if scales < len(MS_SSIM_WEIGHTS):  # the standard five weights stay as published (they sum to 1.0001)
        weights = [w / sum(weights) for w in weights]
    return ms_ssim_per_image(x, y, weights, data_range=data_range)


# ---------------------------------------------------------------------- batches of tensors in [0, 1]
def batch_psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image of (B, 3, H, W) tensors in [0, 1]."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def batch_ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MS-SSIM of each image of (B, 3, H, W) tensors in [0, 1] (clamped to it; NaN below 11 px)."""
    return _ms_ssim_tensor(x.float().clamp(0, 1), y.float().clamp(0, 1), data_range=1.0)


# ---------------------------------------------------------------------- uint8 images
def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of two uint8 RGB images (``inf`` when they are identical)."""
    check_pair(reference, test)
    mse = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * math.log10(255.0**2 / mse))


def ms_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """MS-SSIM of two uint8 RGB images (see the module docstring for images under 161 px)."""
    check_pair(reference, test)
    return float(_ms_ssim_tensor(uint8_to_tensor(reference), uint8_to_tensor(test), data_range=255)[0])


#: Side of the blocks of :func:`colour_psnr`.
COLOUR_BLOCK = 16


def colour_psnr(reference: np.ndarray, test: np.ndarray, block: int = COLOUR_BLOCK) -> float:
    """Block-mean colour PSNR in dB of two uint8 RGB images: the PSNR between their ``block``×``block`` means
    (RGB on the [0, 1] scale, each image cropped to whole blocks): the colour and brightness of regions, which
    a codec that spends its bits on edges can get wrong. An image smaller than a block is one block of its
    own size."""
    check_pair(reference, test)
    height, width = reference.shape[:2]
    bh, bw = min(block, height), min(block, width)
    h, w = height - height % bh, width - width % bw

    def means(image: np.ndarray) -> np.ndarray:
        crop = image[:h, :w].astype(np.float64) / 255.0
        return crop.reshape(h // bh, bh, w // bw, bw, -1).mean(axis=(1, 3))

    mse = np.mean((means(reference) - means(test)) ** 2)
    return float("inf") if mse == 0 else float(-10.0 * math.log10(mse))


def finite_mean(values) -> float:
    """Mean of the finite values (NaN when there is none)."""
    values = [float(v) for v in values if math.isfinite(float(v))]
    return sum(values) / len(values) if values else float("nan")
