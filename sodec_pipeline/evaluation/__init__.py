"""Evaluation of SODEC against classical codecs: metrics, Pillow baselines, the ``sodec eval`` command."""

from .baselines import CODECS, DOWNSCALE_FACTORS, codec_availability, run_codec, select_best
from .evaluate import DEFAULT_TARGETS, EvaluationInputError, EvaluationResult, evaluate, find_images, summarize
from .metrics import DISTS, LPIPS, MetricWeightsError, load_dists, load_lpips, ms_ssim, ms_ssim_scales, psnr
from .report import plot_rd, write_report

__all__ = [
    "CODECS",
    "DEFAULT_TARGETS",
    "DISTS",
    "DOWNSCALE_FACTORS",
    "EvaluationInputError",
    "EvaluationResult",
    "LPIPS",
    "MetricWeightsError",
    "codec_availability",
    "evaluate",
    "find_images",
    "load_dists",
    "load_lpips",
    "ms_ssim",
    "ms_ssim_scales",
    "plot_rd",
    "psnr",
    "run_codec",
    "select_best",
    "summarize",
    "write_report",
]
