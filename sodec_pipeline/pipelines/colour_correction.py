"""Colour correction of the diffusion decode: its low frequencies are replaced by the fidelity decode's.

The fidelity decoder D_a reconstructs colours and smooth shading well (it is trained on MSE); the one-step
diffusion path (UNet step, VAE decoder) adds detail but drifts in colour. As the colour fixes of diffusion
super-resolution (StableSR's and OSEDiff's ``wavelet``/``adain`` fixes) do, the decode keeps the diffusion
output's high frequencies and takes its low frequencies from x̂_f:

    x̂ ← x̂ + up(mean_k(x̂_f) − mean_k(x̂))

where ``mean_k`` is the mean over k × k blocks and ``up`` a bilinear upsampling by k (a tent filter of width
2k). x̂_f is only needed as its block means, so the decode never holds x̂_f and x̂ at full size at once; the
correction is added in bands of rows, so that it takes no full-size temporary either.
"""

import torch
import torch.nn.functional as F


#: Output rows per band of the in-place correction (a multiple of every block size in use).
BAND_ROWS = 1024


def block_means(image: torch.Tensor, block_size: int) -> torch.Tensor:
    """Means of ``block_size`` × ``block_size`` blocks of ``image`` (B, C, H, W), H and W multiples of it."""
    height, width = image.shape[-2:]
    if height % block_size or width % block_size:
        raise ValueError(f"a {width}×{height} image is not made of {block_size}×{block_size} blocks")
    return F.avg_pool2d(image.float(), block_size)


def _upsample(low: torch.Tensor, block_size: int) -> torch.Tensor:
    return F.interpolate(low, scale_factor=block_size, mode="bilinear", align_corners=False)


def correct_colours(image: torch.Tensor, reference_means: torch.Tensor, block_size: int) -> torch.Tensor:
    """``image`` (B, 3, H, W) with its ``block_size`` block means moved to ``reference_means`` (B, 3, H/k, W/k)
    by a smooth (bilinear) correction. Differentiable when ``image`` needs a gradient; otherwise in place,
    band by band (equal to the whole-image computation up to float rounding, 1 ulp)."""
    if reference_means.shape[-2:] != (image.shape[-2] // block_size, image.shape[-1] // block_size):
        raise ValueError(f"reference means {tuple(reference_means.shape)} do not fit a {tuple(image.shape)} image")
    difference = reference_means.to(torch.float32) - block_means(image, block_size)
    if image.requires_grad:
        return image + _upsample(difference, block_size).to(image.dtype)
    rows = difference.shape[-2]
    band = max(1, BAND_ROWS // block_size)
    for start in range(0, rows, band):
        stop = min(rows, start + band)
        low, high = max(0, start - 1), min(rows, stop + 1)  # one block row of context: bilinear needs it
        upsampled = _upsample(difference[..., low:high, :], block_size)
        offset = (start - low) * block_size
        image[..., start * block_size : stop * block_size, :] += upsampled[
            ..., offset : offset + (stop - start) * block_size, :
        ].to(image.dtype)
    return image
