"""CompressionVAE: SODEC's hyperprior codec (E, H_a, P, entropy models; optionally a checkerboard context model)
and its diffusion-path transforms (H_s, T_s), as a diffusers model. The networks and methods are ``HyperpriorCodec``'s
(``hyperprior_codec.py``, no diffusers); the coding itself is in ``sodec_pipeline/codec/``."""

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from ..codec.entropy_models import resize_table_buffers
from ..hub_download_options import pop_hub_kwargs
from ..library_internals import model_weights_file
from .component_files import load_safetensors
from .hyperprior_codec import (  # noqa: F401  (PADDING_MULTIPLE, LATENT_STRIDE, ANALYSIS_TYPES: re-exported)
    ANALYSIS_TYPES,
    LATENT_STRIDE,
    PADDING_MULTIPLE,
    HyperpriorCodec,
)


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


class CompressionVAE(HyperpriorCodec, ModelMixin, ConfigMixin):
    r"""SODEC's learned codec, modelled on HiFiC (Mentzer et al. 2020) and Ballé's mean-scale hyperprior.

    Submodules (paper symbol → attribute):

    - E → ``analysis_transform``: x → y, stride 16 (HiFiC's encoder, or Ballé's GDN transform with
      ``analysis_type="gdn"``).
    - H_a → ``hyper_analysis``: y → z, stride 4 more.
    - P → ``hyper_synthesis_mean`` and ``hyper_synthesis_scale``: ẑ → (μ, σ) of y.
    - ``entropy_bottleneck``: the factorized prior of z (``EntropyBottleneck``, ``codec/entropy_layers.py``).
    - ``gaussian_conditional``: the mean-scale Gaussian conditional of y (``GaussianConditional``).
    - With ``entropy_model_type="checkerboard"`` only: g_cm → ``context_prediction`` (anchors' ŷ → context) and
      g_ep → ``entropy_parameters`` ((μ_P, σ_P, context) → the other half's (Δμ, Δσ)).
    - H_s → ``latent_synthesis``: ẑ → w, stride 16.
    - T_s → ``latent_transform``: (ŷ, w) → ŷ_t, the UNet's noisy latent at stride 8.

    Images are (B, 3, H, W) tensors in [0, 1] whose sides are multiples of 64 (the pipeline pads).
    The codec stays in float32 whatever dtype it is moved to (``models/float32_lock.py`` says why), and the
    CDF tables built by :meth:`update` are saved and restored byte for byte; ``aux_loss`` trains the factorized
    prior's quantiles.

    Everything but diffusers' part (config registration, ``save_pretrained``/``from_pretrained``, offload hooks) is
    :class:`~sodec_pipeline.models.hyperprior_codec.HyperpriorCodec`'s, which the command line loads on its own
    when it only codes (no diffusers import).

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
            Hidden widths of the factorized prior's density model (`EntropyBottleneck`'s `filters`, as compressai's).
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

    # HyperpriorCodec's __init__ (its signature is the config), registered as diffusers registers an __init__
    __init__ = register_to_config(HyperpriorCodec.__init__)

    # the methods that run networks fire accelerate's offload hooks (enable_model_cpu_offload), as diffusers' VAEs do
    encode = apply_forward_hook(HyperpriorCodec.encode)
    synthesize_latents = apply_forward_hook(HyperpriorCodec.synthesize_latents)
    compress = apply_forward_hook(HyperpriorCodec.compress)
    compress_latent = apply_forward_hook(HyperpriorCodec.compress_latent)
    decompress = apply_forward_hook(HyperpriorCodec.decompress)

    def forward(
        self,
        x: torch.Tensor,
        return_dict: bool = True,
        quantization_step: Union[float, torch.Tensor, None] = None,
    ):
        """Training pass: additive-noise rate estimate, straight-through quantisation for the synthesis
        paths, likelihoods and the estimated bpp of each image (``HyperpriorCodec.forward``), as a
        :class:`CompressionVAEOutput` (a tuple with ``return_dict=False``).

        ``quantization_step``: Δ (a float, or one per image as a (B,) tensor); ŷ = Δ · round((y − μ) / Δ) + μ and
        the likelihoods are those of (y − μ) / Δ under N(0, σ / Δ), as :meth:`compress` codes a level with that
        Δ. ``None``: Δ = 1."""
        outputs = super().forward(x, quantization_step=quantization_step)
        return CompressionVAEOutput(*outputs) if return_dict else outputs

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
        model.load_state_dict(load_safetensors(weights), strict=True)
        if device is not None:
            model.to(device)
        model.eval()
        return model
