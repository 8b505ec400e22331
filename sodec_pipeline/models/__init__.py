"""SODEC's own networks (E, H_a, P, g_cm and g_ep, H_s, T_s, D_a, F_p) as diffusers models.

Lazy (:mod:`sodec_pipeline.lazy_exports`): a name is imported when it is first used, so that
``sodec_pipeline.models.hyperprior_codec`` (the codec without diffusers, which ``sodec compress`` loads) is
importable without the diffusers models ``CompressionVAE`` and ``FidelityGuidanceEncoder``.
"""

from typing import TYPE_CHECKING

from ..lazy_exports import lazy_exports


_import_structure = {
    ".analysis_transform": ["AnalysisTransform"],
    ".compression_vae": ["CompressionVAE", "CompressionVAEOutput"],
    ".context_transforms": ["CheckerboardContextPrediction", "EntropyParametersTransform"],
    ".fidelity_decoder": ["FidelityDecoder"],
    ".fidelity_guidance_encoder": ["FidelityGuidanceEncoder"],
    ".guidance_projection": ["GuidanceProjection"],
    ".hyperprior_codec": ["HyperpriorCodec"],
    ".hyperprior_transforms": ["HyperAnalysisTransform", "HyperSynthesisTransform"],
    ".latent_transforms": ["LatentSynthesis", "LatentTransform"],
    ".layers": ["ChannelNorm2d", "GDN", "ResidualBlock"],
}

__all__ = sorted(name for names in _import_structure.values() for name in names)

if TYPE_CHECKING:
    from .analysis_transform import AnalysisTransform  # noqa: F401
    from .compression_vae import CompressionVAE, CompressionVAEOutput  # noqa: F401
    from .context_transforms import CheckerboardContextPrediction, EntropyParametersTransform  # noqa: F401
    from .fidelity_decoder import FidelityDecoder  # noqa: F401
    from .fidelity_guidance_encoder import FidelityGuidanceEncoder  # noqa: F401
    from .guidance_projection import GuidanceProjection  # noqa: F401
    from .hyperprior_codec import HyperpriorCodec  # noqa: F401
    from .hyperprior_transforms import HyperAnalysisTransform, HyperSynthesisTransform  # noqa: F401
    from .latent_transforms import LatentSynthesis, LatentTransform  # noqa: F401
    from .layers import GDN, ChannelNorm2d, ResidualBlock  # noqa: F401
else:
    __getattr__, __dir__ = lazy_exports(__name__, _import_structure)
