"""Evaluation of SODEC against classical codecs: Pillow baselines, the ``sodec eval`` command (metrics:
:mod:`sodec_pipeline.metrics`)."""

from .baselines import CODECS, DOWNSCALE_FACTORS, codec_availability, run_codec, select_best
from .evaluate import DEFAULT_TARGETS, EvaluationInputError, EvaluationResult, evaluate, find_images, summarize
from .report import plot_rd, write_report

__all__ = [
    "CODECS",
    "DEFAULT_TARGETS",
    "DOWNSCALE_FACTORS",
    "EvaluationInputError",
    "EvaluationResult",
    "codec_availability",
    "evaluate",
    "find_images",
    "plot_rd",
    "run_codec",
    "select_best",
    "summarize",
    "write_report",
]
