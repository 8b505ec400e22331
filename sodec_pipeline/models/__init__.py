from .analysis_transform import AnalysisTransform
from .compression_vae import CompressionVAE, CompressionVAEOutput, get_scale_table
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
    "get_scale_table",
]
