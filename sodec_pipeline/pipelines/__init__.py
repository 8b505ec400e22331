"""SODEC's pipelines: ``SODECPipeline`` (diffusers) and ``SODECCodecPipeline`` (its coding half without diffusers).

Lazy (:mod:`sodec_pipeline.lazy_exports`): ``sodec_pipeline.pipelines.coding`` is importable without diffusers, which
``pipeline_sodec`` imports (and registers ``SODECPipeline`` with when it is first imported).
"""

from typing import TYPE_CHECKING

from ..lazy_exports import lazy_exports


_import_structure = {
    ".coding": ["CodecPipelineOutput", "SODECCodecPipeline"],
    ".pipeline_output": ["SODECPipelineOutput"],
    ".pipeline_sodec": ["DecodeOptions", "SODECPipeline"],
    ".random_initialisation": ["build_pipeline_from_config"],
}

__all__ = sorted(name for names in _import_structure.values() for name in names)

if TYPE_CHECKING:
    from .coding import CodecPipelineOutput, SODECCodecPipeline  # noqa: F401
    from .pipeline_output import SODECPipelineOutput  # noqa: F401
    from .pipeline_sodec import DecodeOptions, SODECPipeline  # noqa: F401
    from .random_initialisation import build_pipeline_from_config  # noqa: F401
else:
    __getattr__, __dir__ = lazy_exports(__name__, _import_structure)
