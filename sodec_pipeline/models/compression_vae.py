"""CompressionVAE: SODEC's hyperprior codec (E, H_a, P, entropy models; optionally a checkerboard context model)
and its diffusion-path transforms (H_s, T_s), as a diffusers model. The coding itself is in
``sodec_pipeline/codec/``."""

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models.base import CompressionModel, get_scale_table
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook
from safetensors.torch import load_file
from torch import nn

from ..codec.entropy_models import (
    ENTROPY_MODEL_TYPES,
    CheckerboardEntropyModel,
    HyperpriorEntropyModel,
    resize_table_buffers,
)
from ..codec.errors import BitstreamError
from ..codec.quality_levels import QualityLevels
from ..codec.stream_checks import ModelFingerprint
from ..hub_download_options import pop_hub_kwargs
from ..library_internals import model_weights_file
from .analysis_transform import AnalysisTransform
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


@dataclass
class CompressionVAEOutput(BaseOutput):
    """Output of ``CompressionVAE.forward``.

    Args:
        y_hat: the quantised latent ŷ (straight-through rounding around the predicted means).
        z_hat: the quantised hyper-latent ẑ (straight-through rounding around the medians).
        latents: ŷ_t = T_s(ŷ, H_s(ẑ)), the UNet's input at stride 8.
        y_likelihoods: likelihoods of the noisy y under the Gaussian conditional.
        z_likelihoods: likelihoods of the noisy z under the factorized prior.
        bpp: estimated bits per pixel of each image (B,), from the likelihoods.
    """

    y_hat: torch.Tensor
    z_hat: torch.Tensor
    latents: torch.Tensor
    y_likelihoods: torch.Tensor
    z_likelihoods: torch.Tensor
    bpp: torch.Tensor


class CompressionVAE(Float32Lock, CompressionModel, ModelMixin, ConfigMixin):
    r"""SODEC's learned codec, modelled on HiFiC (Mentzer et al. 2020) and Ballé's mean-scale hyperprior.

    Submodules (paper symbol → attribute):

    - E → ``analysis_transform``: x → y, stride 16 (HiFiC's encoder, or Ballé's GDN transform with
      ``analysis_type="gdn"``).
    - H_a → ``hyper_analysis``: y → z, stride 4 more.
    - P → ``hyper_synthesis_mean`` and ``hyper_synthesis_scale``: ẑ → (μ, σ) of y.
    - ``entropy_bottleneck``: compressai ``EntropyBottleneck`` (factorized prior) for z.
    - ``gaussian_conditional``: compressai mean-scale ``GaussianConditional`` for y.
    - With ``entropy_model_type="checkerboard"`` only: g_cm → ``context_prediction`` (anchors' ŷ → context) and
      g_ep → ``entropy_parameters`` ((μ_P, σ_P, context) → the other half's (Δμ, Δσ)).
    - H_s → ``latent_synthesis``: ẑ → w, stride 16.
    - T_s → ``latent_transform``: (ŷ, w) → ŷ_t, the UNet's noisy latent at stride 8.

    Images are (B, 3, H, W) tensors in [0, 1] whose sides are multiples of 64 (the pipeline pads).
    The codec stays in float32 whatever dtype it is moved to (``models/float32_lock.py`` says why), and the
    CDF tables built by :meth:`update` are saved and restored byte for byte. compressai's ``CompressionModel``
    provides ``aux_loss``.

    The networks are here; the coding is ``entropy_model``'s (``codec/entropy_models.py``: a
    ``HyperpriorEntropyModel`` over H_a, P and the two entropy models, or a ``CheckerboardEntropyModel`` over those
    and g_cm, g_ep, as the config's ``entropy_model_type`` says): :meth:`forward`'s quantisation and
    likelihoods, :meth:`update`'s tables, and :meth:`compress`/:meth:`decompress`, which code the symbols with
    constriction's ANS coder (``codec/entropy_coding.py``) with (μ, σ) from P in exact fixed point
    (``entropy_parameter_arithmetic="fixed_point"``, ``codec/fixed_point_hyper_synthesis.py``) so that every
    machine derives the same CDF indexes; ``"float32"`` uses P's float output instead (not portable).
    Training (:meth:`forward`) always uses the float P. The quality levels are a ``QualityLevels``
    (``codec/quality_levels.py``), the fingerprint ``codec/stream_checks.py``'s.

    ``scale_bias_init=(low, high)`` initialises P_scale's output bias log-spaced over [low, high] across
    channels, so that a randomly initialised model's scales span the scale table (the tiny test layout uses
    it); loaded weights replace it.

    Args:
        in_channels (`int`, *optional*, defaults to 3):
            Channels of the input image.
        block_out_channels (`Tuple[int]`, *optional*, defaults to `(60, 120, 240, 480, 960)`):
            Output channels of E's stages before its last layer: five for HiFiC's encoder, three for the GDN one.
        latent_channels (`int`, *optional*, defaults to 220):
            Channels of y (and ŷ), the coded latent at 1/16 of the image size.
        hyper_channels (`int`, *optional*, defaults to 320):
            Channels of z (and ẑ), the hyper-latent at 1/64 of the image size, and of H_a and P's hidden layers.
        channel_norm (`bool`, *optional*, defaults to `True`):
            HiFiC's ChannelNorm after the convolutions of E (HiFiC layout) and T_s; `False`: an affine
            InstanceNorm instead.
        activation (`str`, *optional*, defaults to `"relu"`):
            Activation of E (HiFiC layout) and T_s: `"relu"`, `"elu"`, `"leaky_relu"` or `"silu"`.
        latent_synthesis_channels (`int`, *optional*, defaults to 320):
            Channels of w = H_s(ẑ), the hyper-latent's input to T_s.
        latent_transform_channels (`int`, *optional*, defaults to 256):
            Hidden channels of T_s.
        latent_transform_num_blocks (`int`, *optional*, defaults to 2):
            Residual blocks of T_s.
        out_latent_channels (`int`, *optional*, defaults to 4):
            Channels of ŷ_t, the UNet's input latent (the VAE's `latent_channels`).
        entropy_bottleneck_filters (`Tuple[int]`, *optional*, defaults to `(3, 3, 3, 3)`):
            Hidden widths of the factorized prior's density model (compressai's `EntropyBottleneck` `filters`).
        scale_bound (`float`, *optional*, defaults to 0.11):
            Lower bound of σ in the Gaussian conditional.
        scale_table_min (`float`, *optional*, defaults to 0.11):
            Smallest σ of the scale table (one CDF table per entry).
        scale_table_max (`float`, *optional*, defaults to 256.0):
            Largest σ of the scale table.
        scale_table_levels (`int`, *optional*, defaults to 64):
            Entries of the scale table, log-spaced from `scale_table_min` to `scale_table_max`.
        entropy_parameter_arithmetic (`str`, *optional*, defaults to `"fixed_point"`):
            How `compress`/`decompress` evaluate P: `"fixed_point"` (identical on every machine) or `"float32"`
            (P's float output; streams may not decode on another machine).
        scale_bias_init (`Tuple[float, float]`, *optional*):
            For random initialisation only: P_scale's output bias log-spaced over (low, high).
        analysis_type (`str`, *optional*, defaults to `"hific"`):
            E's layout: `"hific"` (HiFiC's encoder) or `"gdn"` (four stride-2 convolutions with GDN, compressai's
            `g_a`).
        quantization_steps (`Tuple[float]`, *optional*):
            The quality levels: quantisation step Δ of ŷ at quality 1, 2, … (decreasing: level 1 is the smallest
            stream). A level codes the symbols round((y − μ) / Δ) with the CDF tables of σ / Δ and decodes
            ŷ = Δ · symbols + μ; the level travels in each stream. `None`: one level, Δ = 1 (the single-rate
            codec).
        default_quality (`int`, *optional*):
            The level used when none is asked for (1-based; `None`: the level whose Δ is 1, else the middle one).
        entropy_model_type (`str`, *optional*, defaults to `"hyperprior"`):
            How ŷ is coded: `"hyperprior"` (the mean-scale hyperprior, streams of version 3) or `"checkerboard"`
            (He et al.'s checkerboard context model over it, streams of version 4: adds `context_prediction`, g_cm,
            and `entropy_parameters`, g_ep; `codec/entropy_models.py`). `with_entropy_model` converts a codec.
        context_channels (`int`, *optional*):
            Checkerboard only: output channels of g_cm (default: `latent_channels`).
        entropy_parameters_channels (`int`, *optional*):
            Checkerboard only: hidden channels of g_ep (default: `latent_channels`).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
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

    def with_quality_levels(
        self, quantization_steps: Optional[Sequence[float]] = None, default_quality: Optional[int] = None
    ) -> "CompressionVAE":
        """A copy of this codec (same weights and tables) with other quality levels: ``quantization_steps``
        (``None``: keep this model's) and ``default_quality`` (``None``: the new levels' default). The copy
        has another :meth:`fingerprint` when its levels differ."""
        config = {k: v for k, v in self.config.items() if k != "_use_default_values"}
        if quantization_steps is not None:
            config["quantization_steps"] = [float(s) for s in quantization_steps]
            config["default_quality"] = None
        if default_quality is not None:
            config["default_quality"] = int(default_quality)
        model = type(self).from_config(config)
        model.load_state_dict(self.state_dict())
        return model.to(self.device).train(self.training)

    def with_entropy_model(
        self,
        entropy_model_type: str,
        context_channels: Optional[int] = None,
        entropy_parameters_channels: Optional[int] = None,
    ) -> "CompressionVAE":
        """A copy of this codec that codes with another entropy model (config ``entropy_model_type``): every weight
        and table of this one but the context model's networks, which are freshly initialised (g_ep's last layer at
        zero: a hyperprior codec converted to ``"checkerboard"`` writes other streams, of version 4, but estimates
        and codes the same rate until it trains) or left behind (``"hyperprior"``). The start of training a context
        model from a trained codec (``train_sodec.py --entropy_model``)."""
        config = {k: v for k, v in self.config.items() if k != "_use_default_values"}
        config.update(
            entropy_model_type=entropy_model_type,
            context_channels=context_channels,
            entropy_parameters_channels=entropy_parameters_channels,
        )
        model = type(self).from_config(config)
        own = ("context_prediction.", "entropy_parameters.")  # the context model's networks: always new
        new_state = model.state_dict()
        carried = {k: v for k, v in self.state_dict().items() if k in new_state and not k.startswith(own)}
        resize_table_buffers(model, carried)
        missing, _ = nn.Module.load_state_dict(model, carried, strict=False)
        if any(not key.startswith(own) for key in missing):
            raise RuntimeError(
                f"converting the codec left weights unset: {[k for k in missing if not k.startswith(own)]}"
            )
        return model.to(self.device).train(self.training)

    @property
    def stream_version(self) -> int:
        """The container version of this codec's streams (its entropy model's; docs/bitstream.md)."""
        return self.entropy_model.stream_version

    @property
    def readable_stream_versions(self) -> Tuple[int, ...]:
        """The container versions this codec decodes (its entropy model's)."""
        return self.entropy_model.readable_stream_versions

    # ------------------------------------------------------------------ the transforms
    @apply_forward_hook
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E: images in [0, 1] → the continuous latent y."""
        _check_image_tensor(x)
        return self.analysis_transform(x.float())

    def hyper_synthesis(self, z_hat: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """P in float: ẑ → (μ, σ) of the Gaussian conditional over y."""
        return self.entropy_model.hyper_synthesis(z_hat)

    @apply_forward_hook
    def synthesize_latents(self, y_hat: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
        """H_s and T_s: (ŷ, ẑ) → ŷ_t, the UNet's input at stride 8 on the SD scaled-latent scale."""
        return self.latent_transform(y_hat, self.latent_synthesis(z_hat))

    def forward(
        self,
        x: torch.Tensor,
        return_dict: bool = True,
        quantization_step: Union[float, torch.Tensor, None] = None,
    ):
        """Training pass: additive-noise rate estimate, straight-through quantisation for the synthesis
        paths, likelihoods and the estimated bpp of each image.

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
        if not return_dict:
            return (y_hat, z_hat, latents, y_likelihoods, z_likelihoods, bpp)
        return CompressionVAEOutput(y_hat, z_hat, latents, y_likelihoods, z_likelihoods, bpp)

    # ------------------------------------------------------------------ entropy coding (``entropy_model``)
    def update(
        self, scale_table: Optional[torch.Tensor] = None, force: bool = False, update_quantiles: bool = False
    ) -> bool:
        """Builds the CDF tables of both entropy models (needed before ``compress``), by default with the
        config's scale table (``scale_table_min``/``max``/``levels``). Returns whether anything changed."""
        if scale_table is None:
            cfg = self.config
            scale_table = get_scale_table(cfg.scale_table_min, cfg.scale_table_max, cfg.scale_table_levels)
        return self.entropy_model.update(scale_table, force=force, update_quantiles=update_quantiles)

    @property
    def is_updated(self) -> bool:
        return self.entropy_model.is_updated

    @apply_forward_hook
    @torch.no_grad()
    def compress(self, x: torch.Tensor, quality: Optional[int] = None) -> Dict[str, object]:
        """Entropy-codes images (B, 3, H, W) in [0, 1], sides multiples of 64, each on its own, at a quality
        level (``None``: :attr:`default_quality`).

        Returns ``{"strings": [y_strings, z_strings], "shape": z_shape, "entropy_checks": checks, "quality":
        level}``: per image the y and z strings (constriction's ANS coder with the entropy models' tables) and
        the entropy check of its entropy parameters (``codec/stream_checks.py``).
        """
        level = self.check_quality(quality)
        with torch.autocast(device_type=x.device.type, enabled=False):  # bit-exact fp32 under any autocast
            return self._compress_latent(self.encode(x), level)

    @apply_forward_hook
    @torch.no_grad()
    def compress_latent(self, y: torch.Tensor, quality: Optional[int] = None) -> Dict[str, object]:
        """:meth:`compress` from E's output y (the pipeline runs E tile by tile)."""
        return self._compress_latent(y, self.check_quality(quality))

    def _compress_latent(self, y: torch.Tensor, level: int) -> Dict[str, object]:
        coded = self.entropy_model.compress(y, self.quality_levels.step(level))
        return {**coded, "quality": level}

    @apply_forward_hook
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
        steps = self.config.quantization_steps
        return self._fingerprint(self, None if steps is None else self.quality_levels.steps)

    # ------------------------------------------------------------------ loading with dynamic buffers
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` after giving the CDF-table buffers the shapes they have in
        ``state_dict`` (compressai's ``update_registered_buffers``). Unlike ``CompressionModel``'s, it also
        resizes tables that are already built (resuming training into an updated model)."""
        resize_table_buffers(self, state_dict)
        return nn.Module.load_state_dict(self, state_dict, strict=strict, assign=assign)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs):
        """Loads a saved ``CompressionVAE`` (local folder or Hub id, optional ``subfolder``).

        Unlike ``ModelMixin.from_pretrained`` this never initialises on the meta device: the entropy
        models' CDF tables change shape at ``update()`` and are resized from the checkpoint before a
        strict load. ``torch_dtype`` is accepted and ignored (the codec stays float32); ``variant`` loads
        ``diffusion_pytorch_model.<variant>.safetensors`` as ``ModelMixin`` does.
        """
        hub_kwargs = pop_hub_kwargs(kwargs)
        subfolder = kwargs.pop("subfolder", None)
        variant = kwargs.pop("variant", None)
        device = kwargs.pop("device", None)
        config, _unused = cls.load_config(
            pretrained_model_name_or_path, subfolder=subfolder, return_unused_kwargs=True, **hub_kwargs
        )
        model = cls.from_config(config)
        weights = model_weights_file(pretrained_model_name_or_path, subfolder, variant, **hub_kwargs)
        model.load_state_dict(load_file(weights), strict=True)
        if device is not None:
            model.to(device)
        model.eval()
        return model


def _check_image_tensor(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
    if x.shape[-2] % PADDING_MULTIPLE or x.shape[-1] % PADDING_MULTIPLE:
        raise ValueError(
            f"image sides must be multiples of {PADDING_MULTIPLE} (got {x.shape[-2]}×{x.shape[-1]}); "
            "SODECPipeline pads for you"
        )
