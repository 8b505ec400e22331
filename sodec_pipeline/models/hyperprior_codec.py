"""HyperpriorCodec: SODEC's codec (E, H_a, P, the entropy layers, optionally the checkerboard context model's g_cm
and g_ep, H_s, T_s) as a plain torch module.

It is everything ``CompressionVAE`` (``compression_vae.py``) computes, without diffusers: ``CompressionVAE`` is this
class plus diffusers' ``ModelMixin``/``ConfigMixin`` (config registration, ``save_pretrained``/``from_pretrained``
from the Hub, offload hooks, the pipeline's component machinery). Importing diffusers costs seconds (it imports
``torch._dynamo`` and much more), so the command line's ``sodec compress`` and ``sodec decompress --fidelity`` build
this class from a saved ``compression_vae`` folder instead (:meth:`HyperpriorCodec.from_pretrained`): the same
modules, weights, tables and fingerprint, so the same bytes (``tests/test_codec_pipeline.py``).

The coding itself is in ``sodec_pipeline/codec/`` (``entropy_models.py``: the training pass, the tables, compress and
decompress). Only torch, safetensors and the package's codec are imported here.
"""

import math
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..codec.entropy_layers import EntropyBottleneck, GaussianConditional, get_scale_table
from ..codec.entropy_models import (
    ENTROPY_MODEL_TYPES,
    CheckerboardEntropyModel,
    HyperpriorEntropyModel,
    resize_table_buffers,
)
from ..codec.errors import BitstreamError
from ..codec.quality_levels import QualityLevels
from ..codec.stream_checks import ModelFingerprint
from .analysis_transform import AnalysisTransform
from .component_files import init_arguments, read_component
from .context_transforms import CheckerboardContextPrediction, EntropyParametersTransform
from .float32_lock import Float32Lock
from .gdn_transforms import GDNAnalysisTransform
from .hyperprior_transforms import HyperAnalysisTransform, HyperSynthesisTransform
from .latent_transforms import LatentSynthesis, LatentTransform


# Stride of the hyper-latent z relative to the image: inputs must be a multiple of it.
PADDING_MULTIPLE = 64
# Stride of ŷ_t = T_s(ŷ, H_s(ẑ)), the UNet's latent (E's 16, halved by T_s): the VAE must decode it ×8.
LATENT_STRIDE = 8

#: E's architecture: "hific" (HiFiC's encoder: 7×7 stem, four strided convolutions with channel norm; five
#: ``block_out_channels``) or "gdn" (Ballé et al.'s: four strided 5×5 convolutions with GDN; three).
ANALYSIS_TYPES = ("hific", "gdn")


#: What :meth:`HyperpriorCodec.forward` returns, in this order (``CompressionVAEOutput``'s fields).
FORWARD_OUTPUTS = ("y_hat", "z_hat", "latents", "y_likelihoods", "z_likelihoods", "bpp")


class HyperpriorCodec(Float32Lock, nn.Module):
    r"""SODEC's codec without diffusers: the submodules, arguments and methods of ``CompressionVAE`` (see its
    docstring for each argument), apart from diffusers' config, saving and hooks.

    Submodules: ``analysis_transform`` (E), ``hyper_analysis`` (H_a), ``hyper_synthesis_mean`` and
    ``hyper_synthesis_scale`` (P), ``entropy_bottleneck`` and ``gaussian_conditional`` (``codec/entropy_layers.py``),
    with ``entropy_model_type="checkerboard"`` ``context_prediction`` (g_cm) and ``entropy_parameters`` (g_ep),
    ``latent_synthesis`` (H_s), ``latent_transform`` (T_s). The coding is ``entropy_model``'s
    (``codec/entropy_models.py``). The codec stays float32 whatever dtype it is moved to (``float32_lock.py``).
    """

    def __init__(
        self,
        in_channels: int = 3,
        block_out_channels: Sequence[int] = (60, 120, 240, 480, 960),
        latent_channels: int = 220,
        hyper_channels: int = 320,
        channel_norm: bool = True,
        activation: str = "relu",
        latent_synthesis_channels: int = 320,
        latent_transform_channels: int = 256,
        latent_transform_num_blocks: int = 2,
        out_latent_channels: int = 4,
        entropy_bottleneck_filters: Sequence[int] = (3, 3, 3, 3),
        scale_bound: float = 0.11,
        scale_table_min: float = 0.11,
        scale_table_max: float = 256.0,
        scale_table_levels: int = 64,
        entropy_parameter_arithmetic: str = "fixed_point",
        scale_bias_init: Optional[Sequence[float]] = None,
        analysis_type: str = "hific",
        quantization_steps: Optional[Sequence[float]] = None,
        default_quality: Optional[int] = None,
        entropy_model_type: str = "hyperprior",
        context_channels: Optional[int] = None,
        entropy_parameters_channels: Optional[int] = None,
    ):
        super().__init__()
        self.quality_levels = QualityLevels(quantization_steps, default_quality)
        if entropy_model_type not in ENTROPY_MODEL_TYPES:
            raise ValueError(
                f"entropy_model_type must be one of {tuple(ENTROPY_MODEL_TYPES)}, got {entropy_model_type!r}"
            )
        # the fingerprint covers the levels only when the model has explicit ones (single-rate models: none)
        self._explicit_quality_levels = quantization_steps is not None
        self._scale_table_spec = (scale_table_min, scale_table_max, scale_table_levels)
        if analysis_type not in ANALYSIS_TYPES:
            raise ValueError(f"analysis_type must be one of {ANALYSIS_TYPES}, got {analysis_type!r}")
        if analysis_type == "gdn":
            self.analysis_transform = GDNAnalysisTransform(in_channels, block_out_channels, latent_channels)
        else:
            self.analysis_transform = AnalysisTransform(
                in_channels, block_out_channels, latent_channels, channel_norm, activation
            )
        self.hyper_analysis = HyperAnalysisTransform(latent_channels, hyper_channels)
        self.hyper_synthesis_mean = HyperSynthesisTransform(latent_channels, hyper_channels)
        self.hyper_synthesis_scale = HyperSynthesisTransform(latent_channels, hyper_channels)
        self.entropy_bottleneck = EntropyBottleneck(hyper_channels, filters=tuple(entropy_bottleneck_filters))
        self.gaussian_conditional = GaussianConditional(None, scale_bound=scale_bound)
        self.latent_synthesis = LatentSynthesis(hyper_channels, latent_synthesis_channels)
        self.latent_transform = LatentTransform(
            latent_channels,
            latent_synthesis_channels,
            latent_transform_channels,
            out_latent_channels,
            latent_transform_num_blocks,
            channel_norm,
            activation,
        )
        if scale_bias_init is not None:
            # random initialisation only (loaded weights replace it): σ's output bias log-spaced over
            # [low, high] across channels, so that an untrained model's scales span the scale table
            low, high = (float(v) for v in scale_bias_init)
            with torch.no_grad():
                bias = self.hyper_synthesis_scale.conv3.bias
                bias.copy_(torch.exp(torch.linspace(math.log(low), math.log(high), bias.numel())))
        hyperprior = (
            self.hyper_analysis,
            self.hyper_synthesis_mean,
            self.hyper_synthesis_scale,
            self.entropy_bottleneck,
            self.gaussian_conditional,
        )
        if entropy_model_type == "checkerboard":
            context_channels = context_channels or latent_channels
            self.context_prediction = CheckerboardContextPrediction(latent_channels, context_channels)
            self.entropy_parameters = EntropyParametersTransform(
                latent_channels, context_channels, entropy_parameters_channels or latent_channels
            )
            self.entropy_model = CheckerboardEntropyModel(
                *hyperprior, self.context_prediction, self.entropy_parameters, entropy_parameter_arithmetic
            )
        else:
            self.entropy_model = HyperpriorEntropyModel(*hyperprior, entropy_parameter_arithmetic)
        self._fingerprint = ModelFingerprint()

    # ------------------------------------------------------------------ quality levels
    @property
    def num_qualities(self) -> int:
        """Number of quality levels (1 for a single-rate codec)."""
        return len(self.quality_levels)

    @property
    def default_quality(self) -> int:
        """The level :meth:`compress` uses when none is given (1-based)."""
        return self.quality_levels.default

    def quantization_step(self, quality: Optional[int] = None) -> float:
        """Δ of a quality level (1-based; ``None``: :attr:`default_quality`). Raises ``ValueError`` for a level
        outside 1 … :attr:`num_qualities`."""
        return self.quality_levels.step(self.check_quality(quality))

    def check_quality(self, quality: Optional[int]) -> int:
        """The level as an int, :attr:`default_quality` for ``None``; ``ValueError`` saying the range otherwise."""
        return self.quality_levels.check(quality)

    @property
    def stream_version(self) -> int:
        """The container version of this codec's streams (its entropy model's; docs/bitstream.md)."""
        return self.entropy_model.stream_version

    @property
    def readable_stream_versions(self) -> Tuple[int, ...]:
        """The container versions this codec decodes (its entropy model's)."""
        return self.entropy_model.readable_stream_versions

    # ------------------------------------------------------------------ the transforms
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E: images in [0, 1] → the continuous latent y."""
        _check_image_tensor(x)
        return self.analysis_transform(x.float())

    def hyper_synthesis(self, z_hat: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """P in float: ẑ → (μ, σ) of the Gaussian conditional over y."""
        return self.entropy_model.hyper_synthesis(z_hat)

    def synthesize_latents(self, y_hat: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
        """H_s and T_s: (ŷ, ẑ) → ŷ_t, the UNet's input at stride 8 on the SD scaled-latent scale."""
        return self.latent_transform(y_hat, self.latent_synthesis(z_hat))

    def forward(
        self, x: torch.Tensor, quantization_step: Union[float, torch.Tensor, None] = None
    ) -> Tuple[torch.Tensor, ...]:
        """Training pass: additive-noise rate estimate, straight-through quantisation for the synthesis
        paths, likelihoods and the estimated bpp of each image: the tuple :data:`FORWARD_OUTPUTS`.

        ``quantization_step``: Δ (a float, or one per image as a (B,) tensor); ŷ = Δ · round((y − μ) / Δ) + μ and
        the likelihoods are those of (y − μ) / Δ under N(0, σ / Δ), as :meth:`compress` codes a level with that
        Δ. ``None``: Δ = 1."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            coded = self.entropy_model(self.encode(x), quantization_step)
            y_hat, z_hat = coded["y_hat"], coded["z_hat"]
            y_likelihoods, z_likelihoods = coded["likelihoods"]["y"], coded["likelihoods"]["z"]
            latents = self.synthesize_latents(y_hat, z_hat)
            num_pixels = x.shape[-2] * x.shape[-1]
            bits = -(torch.log2(y_likelihoods).flatten(1).sum(1) + torch.log2(z_likelihoods).flatten(1).sum(1))
            bpp = bits / num_pixels
        return (y_hat, z_hat, latents, y_likelihoods, z_likelihoods, bpp)

    def aux_loss(self) -> torch.Tensor:
        """The entropy bottleneck's auxiliary loss (its quantiles' distance from the tails and median of its
        density: ``EntropyBottleneck.loss``), which trains the quantiles only."""
        return sum(m.loss() for m in self.modules() if isinstance(m, EntropyBottleneck))

    # ------------------------------------------------------------------ entropy coding (``entropy_model``)
    def update(
        self, scale_table: Optional[torch.Tensor] = None, force: bool = False, update_quantiles: bool = False
    ) -> bool:
        """Builds the CDF tables of both entropy layers (needed before ``compress``), by default with the
        config's scale table (``scale_table_min``/``max``/``levels``). Returns whether anything changed."""
        if scale_table is None:
            scale_table = get_scale_table(*self._scale_table_spec)
        return self.entropy_model.update(scale_table, force=force, update_quantiles=update_quantiles)

    @property
    def is_updated(self) -> bool:
        return self.entropy_model.is_updated

    @torch.no_grad()
    def compress(self, x: torch.Tensor, quality: Optional[int] = None) -> Dict[str, object]:
        """Entropy-codes images (B, 3, H, W) in [0, 1], sides multiples of 64, each on its own, at a quality
        level (``None``: :attr:`default_quality`).

        Returns ``{"strings": [y_strings, z_strings], "shape": z_shape, "entropy_checks": checks, "quality":
        level}``: per image the y and z strings (constriction's ANS coder with the entropy layers' tables) and
        the entropy check of its entropy parameters (``codec/stream_checks.py``).
        """
        level = self.check_quality(quality)
        with torch.autocast(device_type=x.device.type, enabled=False):  # bit-exact fp32 under any autocast
            return self._compress_latent(self.encode(x), level)

    @torch.no_grad()
    def compress_latent(self, y: torch.Tensor, quality: Optional[int] = None) -> Dict[str, object]:
        """:meth:`compress` from E's output y (the pipeline runs E tile by tile)."""
        return self._compress_latent(y, self.check_quality(quality))

    def _compress_latent(self, y: torch.Tensor, level: int) -> Dict[str, object]:
        coded = self.entropy_model.compress(y, self.quality_levels.step(level))
        return {**coded, "quality": level}

    @torch.no_grad()
    def decompress(
        self,
        strings: List[List[bytes]],
        shape: Sequence[int],
        entropy_checks: Optional[Sequence[bytes]] = None,
        quality: Optional[int] = None,
    ) -> Dict[str, torch.Tensor]:
        """Inverse of :meth:`compress` at the same quality level (the stream's): returns ``{"y_hat": ŷ,
        "z_hat": ẑ}``.

        With ``entropy_checks`` (from :meth:`compress`, or the stream's header) each image's entropy
        parameters are verified before its y string is decoded. Raises ``BitstreamError`` for a string
        that does not decode, parameters other than the encoder's, or a level this model does not have.
        """
        try:
            step = self.quantization_step(quality)
        except ValueError as e:
            raise BitstreamError(f"stream asks for a quality level this model does not have: {e}") from None
        return self.entropy_model.decompress(strings, shape, step, entropy_checks)

    # ------------------------------------------------------------------ identity of the model
    def fingerprint(self) -> bytes:
        """4 bytes identifying this model's weights, entropy tables and quality levels (``codec/stream_checks.py``).
        Written in each bitstream so that a stream is only decoded by the model that made it."""
        return self._fingerprint(self, self.quality_levels.steps if self._explicit_quality_levels else None)

    # ------------------------------------------------------------------ loading with dynamic buffers
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` after giving the CDF-table buffers the shapes they have in
        ``state_dict``, tables already built included (resuming training into an updated model)."""
        resize_table_buffers(self, state_dict)
        return nn.Module.load_state_dict(self, state_dict, strict=strict, assign=assign)

    @classmethod
    def from_pretrained(
        cls,
        folder: Union[str, os.PathLike],
        subfolder: Optional[str] = None,
        variant: Optional[str] = None,
        device: Optional[Union[str, torch.device]] = None,
    ) -> "HyperpriorCodec":
        """Loads a saved ``compression_vae`` from a local folder (``config.json`` and
        ``diffusion_pytorch_model[.variant].safetensors``, as ``CompressionVAE.save_pretrained`` writes them),
        config keys this class does not take ignored, in eval mode. Hub ids are ``CompressionVAE``'s."""
        config, weights = read_component(folder, subfolder, variant)
        model = cls(**init_arguments(cls, config))
        model.load_state_dict(weights, strict=True)
        if device is not None:
            model.to(device)
        return model.eval()


def _check_image_tensor(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
    if x.shape[-2] % PADDING_MULTIPLE or x.shape[-1] % PADDING_MULTIPLE:
        raise ValueError(
            f"image sides must be multiples of {PADDING_MULTIPLE} (got {x.shape[-2]}×{x.shape[-1]}); "
            "SODECPipeline pads for you"
        )
