"""sodec-pipeline: SODEC (Chen et al., AAAI 2026) as a diffusers pipeline with real bitstreams.

``import sodec_pipeline`` is cheap (no torch, diffusers or compressai): each public name below is
imported the first time it is used, the way diffusers and transformers do it
(:mod:`sodec_pipeline.lazy_exports`). Importing ``SODECPipeline`` registers it with diffusers, so that
plain ``diffusers.DiffusionPipeline.from_pretrained(dir_or_id)`` returns a ``SODECPipeline`` from then
on for folders saved without code files (:mod:`sodec_pipeline.pipelines.diffusers_registration`); a folder saved now
carries them, and loads with ``trust_remote_code=True`` without this import
(:mod:`sodec_pipeline.pipelines.hub_code`).
"""

from typing import TYPE_CHECKING

from .lazy_exports import lazy_exports


__version__ = "0.1.0"

_import_structure = {
    ".codec.bitstream": [
        "DEFAULT_MAX_PIXELS",
        "MAX_IMAGE_PIXELS",
        "MAX_IMAGE_SIDE",
        "SODECBitstream",
        "decode_bitstream",
        "encode_bitstream",
    ],
    ".codec.errors": ["BitstreamError", "PixelBudgetError", "SizeBudgetError"],
    ".models": ["CompressionVAE", "CompressionVAEOutput", "FidelityGuidanceEncoder"],
    ".pipelines": ["SODECPipeline", "SODECPipelineOutput"],
    ".schedulers": ["SODECScheduler", "SODECSchedulerOutput"],
    # diffusers' loader resolves a component recorded as ["sodec_pipeline", "CompressionVAE"] by looking
    # its base classes up in this namespace: keep them reachable from here.
    "diffusers": ["ModelMixin", "SchedulerMixin"],
}
_submodules = (
    "benchmarking",
    "cli",
    "codec",
    "conversion",
    "evaluation",
    "hardware",
    "hub_configs",
    "image_processing",
    "metrics",
    "models",
    "orientation",
    "pipelines",
    "schedulers",
    "shipped_models",
)

__all__ = sorted(name for module, names in _import_structure.items() if module != "diffusers" for name in names)

if TYPE_CHECKING:
    from diffusers import ModelMixin, SchedulerMixin  # noqa: F401

    from .codec.bitstream import (  # noqa: F401
        DEFAULT_MAX_PIXELS,
        MAX_IMAGE_PIXELS,
        MAX_IMAGE_SIDE,
        SODECBitstream,
        decode_bitstream,
        encode_bitstream,
    )
    from .codec.errors import BitstreamError, PixelBudgetError, SizeBudgetError  # noqa: F401
    from .models import CompressionVAE, CompressionVAEOutput, FidelityGuidanceEncoder  # noqa: F401
    from .pipelines import SODECPipeline, SODECPipelineOutput  # noqa: F401
    from .schedulers import SODECScheduler, SODECSchedulerOutput  # noqa: F401
else:
    __getattr__, __dir__ = lazy_exports(__name__, _import_structure, _submodules)
