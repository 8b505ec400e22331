"""sodec-pipeline: SODEC (Chen et al., AAAI 2026) as a diffusers pipeline with real bitstreams."""

import warnings as _warnings

import diffusers as _diffusers

with _warnings.catch_warnings():
    # compressai 1.2.8 scripts a function with torch.jit at import time, which torch ≥ 2.10 deprecates.
    _warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    import compressai as _compressai  # noqa: F401

# diffusers' loader resolves a component recorded as ["sodec_pipeline", "CompressionVAE"] by looking its
# base classes up in this namespace: keep them importable from here.
from diffusers import ModelMixin, SchedulerMixin  # noqa: F401
from diffusers.pipelines.pipeline_loading_utils import LOADABLE_CLASSES as _LOADABLE_CLASSES

from .bitstream import (
    DEFAULT_MAX_PIXELS,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    BitstreamError,
    PixelBudgetError,
    SODECBitstream,
    decode_bitstream,
    encode_bitstream,
)
from .models import CompressionVAE, CompressionVAEOutput, FidelityGuidanceEncoder
from .pipelines import SODECPipeline, SODECPipelineOutput
from .schedulers import SODECScheduler, SODECSchedulerOutput

__version__ = "0.1.0"

# `DiffusionPipeline.from_pretrained(dir)` looks the `_class_name` of model_index.json up in the
# diffusers namespace: make SODECPipeline resolvable there once this package is imported.
for _name, _obj in (("SODECPipeline", SODECPipeline),):
    if not hasattr(_diffusers, _name):
        setattr(_diffusers, _name, _obj)

# Register this package as a library diffusers loads components from (like "transformers"): components
# are then recorded in model_index.json as ["sodec_pipeline", class], and the Hub download path accepts
# them instead of looking for a custom-code file in the repository.
_LOADABLE_CLASSES.setdefault(
    "sodec_pipeline",
    {"ModelMixin": ["save_pretrained", "from_pretrained"], "SchedulerMixin": ["save_pretrained", "from_pretrained"]},
)

__all__ = [
    "BitstreamError",
    "CompressionVAE",
    "CompressionVAEOutput",
    "DEFAULT_MAX_PIXELS",
    "FidelityGuidanceEncoder",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "PixelBudgetError",
    "SODECBitstream",
    "SODECPipeline",
    "SODECPipelineOutput",
    "SODECScheduler",
    "SODECSchedulerOutput",
    "decode_bitstream",
    "encode_bitstream",
]
