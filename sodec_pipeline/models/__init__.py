"""SODEC's own networks (E, H_a, P, g_cm and g_ep, H_s, T_s, D_a, F_p) as diffusers models."""

from .. import library_internals as _library_internals  # noqa: F401  (first: it imports compressai quietly)
from .analysis_transform import AnalysisTransform
from .compression_vae import CompressionVAE, CompressionVAEOutput
from .context_transforms import CheckerboardContextPrediction, EntropyParametersTransform
from .fidelity_decoder import FidelityDecoder
from .fidelity_guidance_encoder import FidelityGuidanceEncoder
from .guidance_projection import GuidanceProjection
from .hyperprior_transforms import HyperAnalysisTransform, HyperSynthesisTransform
from .latent_transforms import LatentSynthesis, LatentTransform
from .layers import ChannelNorm2d, ResidualBlock


__all__ = [
    "AnalysisTransform",
    "ChannelNorm2d",
    "CheckerboardContextPrediction",
    "CompressionVAE",
    "CompressionVAEOutput",
    "EntropyParametersTransform",
    "FidelityDecoder",
    "FidelityGuidanceEncoder",
    "GuidanceProjection",
    "HyperAnalysisTransform",
    "HyperSynthesisTransform",
    "LatentSynthesis",
    "LatentTransform",
    "ResidualBlock",
]
