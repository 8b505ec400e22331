"""FidelityGuidanceEncoder: SODEC's fidelity decoder D_a, the ViT input preparation and the guidance
projection F_p, as a diffusers model."""

from typing import Optional, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch.nn import functional as F

from .fidelity_decoder import DECODER_TYPES, make_fidelity_decoder  # noqa: F401  (DECODER_TYPES: re-exported)
from .guidance_projection import GuidanceProjection


# OpenAI / OpenCLIP image normalisation.
CLIP_IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


class FidelityGuidanceEncoder(ModelMixin, ConfigMixin):
    r"""The steering half of SODEC's decoder.

    - D_a → ``fidelity_decoder``: ŷ → x̂_f, a high-fidelity image in [0, 1] (HiFiC generator;
      ``decoder_output_activation="tanh"`` ends it with (tanh + 1) / 2 as HiFiC's ``-norm`` models; or
      Ballé et al.'s synthesis transform with inverse GDN, ``decoder_type="gdn"``).
    - :meth:`prepare_image_encoder_input`: x̂_f → the frozen ViT's ``pixel_values`` (bicubic resize to
      ``image_encoder_size`` and mean/std normalisation, in torch, differentiable).
    - F_p → ``guidance_projection``: the ViT's last hidden states → c_g
      (``num_tokens × cross_attention_dim``), the UNet's ``encoder_hidden_states``.

    The ViT itself is the pipeline's ``image_encoder`` component (frozen, not part of this model), and
    the pipeline runs the three in turn (``SODECPipeline.decode_fidelity`` and ``encode_guidance``): this
    model has no ``forward`` of its own.

    Args:
        latent_channels (`int`, *optional*, defaults to 220):
            Channels of ŷ, D_a's input (the codec's `latent_channels`).
        decoder_block_out_channels (`Tuple[int]`, *optional*, defaults to `(960, 480, 240, 120, 60)`):
            D_a's channels per upsampling stage: five for HiFiC's generator, three for the GDN decoder.
        decoder_num_residual_blocks (`int`, *optional*, defaults to 9):
            Residual blocks at the start of HiFiC's generator (0 for the GDN decoder).
        channel_norm (`bool`, *optional*, defaults to `True`):
            HiFiC's ChannelNorm in D_a (HiFiC layout); `False`: an affine InstanceNorm instead.
        activation (`str`, *optional*, defaults to `"relu"`):
            D_a's activation (HiFiC layout): `"relu"`, `"elu"`, `"leaky_relu"` or `"silu"`.
        image_encoder_hidden_size (`int`, *optional*, defaults to 1280):
            Width of the ViT's hidden states, F_p's input (ViT-H/14: 1280).
        image_encoder_size (`int`, *optional*, defaults to 224):
            Side in pixels of the square image the ViT sees; x̂_f is resized to it (bicubic).
        image_encoder_mean (`Tuple[float]`, *optional*, defaults to CLIP's):
            Per-channel mean subtracted from the ViT's input on the [0, 1] scale.
        image_encoder_std (`Tuple[float]`, *optional*, defaults to CLIP's):
            Per-channel standard deviation the ViT's input is divided by.
        cross_attention_dim (`int`, *optional*, defaults to 1024):
            Width of c_g: the UNet's `cross_attention_dim`.
        num_tokens (`int`, *optional*, defaults to 77):
            Number of guidance tokens in c_g (the learned queries of F_p).
        projection_num_attention_heads (`int`, *optional*, defaults to 8):
            Attention heads of F_p's transformer blocks (must divide `cross_attention_dim`).
        projection_num_layers (`int`, *optional*, defaults to 1):
            Transformer blocks of F_p.
        decoder_output_activation (`str`, *optional*):
            `"tanh"`: D_a ends with (tanh + 1) / 2 (HiFiC's `-norm` models); `None`: a linear output.
        decoder_type (`str`, *optional*, defaults to `"hific"`):
            D_a's layout: `"hific"` (HiFiC's generator) or `"gdn"` (four stride-2 transposed convolutions with
            inverse GDN, compressai's `g_s`).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 220,
        decoder_block_out_channels: Sequence[int] = (960, 480, 240, 120, 60),
        decoder_num_residual_blocks: int = 9,
        channel_norm: bool = True,
        activation: str = "relu",
        image_encoder_hidden_size: int = 1280,
        image_encoder_size: int = 224,
        image_encoder_mean: Sequence[float] = CLIP_IMAGE_MEAN,
        image_encoder_std: Sequence[float] = CLIP_IMAGE_STD,
        cross_attention_dim: int = 1024,
        num_tokens: int = 77,
        projection_num_attention_heads: int = 8,
        projection_num_layers: int = 1,
        decoder_output_activation: Optional[str] = None,
        decoder_type: str = "hific",
    ):
        super().__init__()
        self.fidelity_decoder = make_fidelity_decoder(
            latent_channels,
            decoder_block_out_channels,
            decoder_num_residual_blocks,
            channel_norm,
            activation,
            decoder_output_activation,
            decoder_type,
        )
        self.guidance_projection = GuidanceProjection(
            image_encoder_hidden_size,
            cross_attention_dim,
            num_tokens,
            projection_num_attention_heads,
            projection_num_layers,
        )
        self.register_buffer("image_mean", torch.tensor(image_encoder_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_encoder_std).view(1, 3, 1, 1), persistent=False)

    @apply_forward_hook
    def decode(self, y_hat: torch.Tensor) -> torch.Tensor:
        """D_a: ŷ → x̂_f on the [0, 1] scale (not clamped, so that training sees the raw output)."""
        return self.fidelity_decoder(y_hat.to(self.dtype))

    @apply_forward_hook
    def prepare_image_encoder_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (B, 3, H, W) → normalised ``pixel_values`` of the ViT's input size."""
        size = self.config.image_encoder_size
        images = images.float().clamp(0, 1)  # antialiased bicubic has no bf16/fp16 CPU kernel
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        return (images - self.image_mean.float()) / self.image_std.float()

    @apply_forward_hook
    def project(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """F_p: the ViT's hidden states (B, L, hidden) → c_g (B, num_tokens, cross_attention_dim)."""
        return self.guidance_projection(image_embeds.to(self.dtype))
