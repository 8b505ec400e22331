"""SODEC's own networks (E, H_a, P, H_s, T_s, D_a, F_p) as diffusers models."""

import warnings as _warnings


with _warnings.catch_warnings():
    # compressai 1.2.8 scripts a function with torch.jit at import time, which torch ≥ 2.10 deprecates.
    _warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    import compressai as _compressai  # noqa: F401

from .analysis_transform import AnalysisTransform
from .compression_vae import CompressionVAE, CompressionVAEOutput
from .fidelity_decoder import FidelityDecoder
from .fidelity_guidance_encoder import FidelityGuidanceEncoder
from .guidance_projection import GuidanceProjection
from .hyperprior_transforms import HyperAnalysisTransform, HyperSynthesisTransform
from .latent_transforms import LatentSynthesis, LatentTransform
from .layers import ChannelNorm2d, ResidualBlock


__all__ = [
    "AnalysisTransform",
    "ChannelNorm2d",
    "CompressionVAE",
    "CompressionVAEOutput",
    "FidelityDecoder",
    "FidelityGuidanceEncoder",
    "GuidanceProjection",
    "HyperAnalysisTransform",
    "HyperSynthesisTransform",
    "LatentSynthesis",
    "LatentTransform",
    "ResidualBlock",
]
