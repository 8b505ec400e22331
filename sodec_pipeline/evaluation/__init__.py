"""Evaluation of SODEC against classical codecs: Pillow baselines, the evaluation and its report (metrics:
:mod:`sodec_pipeline.metrics`; the ``sodec eval`` command: :mod:`sodec_pipeline.cli.eval_command`).

Names are imported on first use (:mod:`sodec_pipeline.lazy_exports`): ``sodec eval --help`` does not
import torch.
"""

from typing import TYPE_CHECKING

from ..lazy_exports import lazy_exports


_import_structure = {
    ".baselines": ["CODECS", "DOWNSCALE_FACTORS", "codec_availability", "run_codec", "select_best"],
    ".evaluate": [
        "DEFAULT_TARGETS",
        "EvaluationInputError",
        "EvaluationResult",
        "evaluate",
        "find_images",
        "summarize",
    ],
    ".report": ["plot_rd", "write_compressai_results", "write_report"],
}

__all__ = sorted(name for names in _import_structure.values() for name in names)

if TYPE_CHECKING:
    from .baselines import CODECS, DOWNSCALE_FACTORS, codec_availability, run_codec, select_best  # noqa: F401
    from .evaluate import (  # noqa: F401
        DEFAULT_TARGETS,
        EvaluationInputError,
        EvaluationResult,
        evaluate,
        find_images,
        summarize,
    )
    from .report import plot_rd, write_compressai_results, write_report  # noqa: F401
else:
    __getattr__, __dir__ = lazy_exports(__name__, _import_structure, ("baselines", "evaluate", "report"))
