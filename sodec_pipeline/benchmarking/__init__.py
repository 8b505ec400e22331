"""Latency and memory benchmark of SODEC decoding against an N-step DDIM decode (the ``sodec benchmark``
command: :mod:`sodec_pipeline.cli.benchmark_command`).

Names are imported on first use (:mod:`sodec_pipeline.lazy_exports`): ``sodec benchmark --help`` does
not import torch.
"""

from typing import TYPE_CHECKING

from ..lazy_exports import lazy_exports


_import_structure = {
    ".benchmark": [
        "STAGES",
        "decode_by_stage",
        "format_table",
        "make_ddim_scheduler",
        "run_benchmark",
        "summarize_times",
    ],
    ".compute_floor": ["count_stage_flops", "matmul_flops_per_second", "stage_floors"],
    ".dtype_comparison": ["compare_with_float32", "format_comparison"],
}

__all__ = sorted(name for names in _import_structure.values() for name in names)

if TYPE_CHECKING:
    from .benchmark import (  # noqa: F401
        STAGES,
        decode_by_stage,
        format_table,
        make_ddim_scheduler,
        run_benchmark,
        summarize_times,
    )
    from .compute_floor import count_stage_flops, matmul_flops_per_second, stage_floors  # noqa: F401
    from .dtype_comparison import compare_with_float32, format_comparison  # noqa: F401
else:
    __getattr__, __dir__ = lazy_exports(
        __name__, _import_structure, ("benchmark", "compute_floor", "dtype_comparison", "scaling")
    )
