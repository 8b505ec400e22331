"""SODECPipeline: image → bytes → one-step diffusion decode (Chen et al., AAAI 2026, arXiv 2508.04979).

The coding (``compress``, the streams' checks and entropy decoding, the fidelity decode) is ``CodingMixin``'s
(``coding.py``, no diffusers), shared with ``SODECCodecPipeline``, which the command line loads when it only codes;
this module adds diffusers' pipeline machinery and the diffusion decode."""

import json
import logging
import os
from fractions import Fraction
from typing import Optional, Tuple, Union

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from transformers import PreTrainedModel

from ..hardware import auto_dtype_name
from ..image_processing import ImageInput
from ..model_folder_checks import check_model_folder
from ..models.compression_vae import PADDING_MULTIPLE, CompressionVAE
from ..models.fidelity_guidance_encoder import FidelityGuidanceEncoder
from ..schedulers.scheduling_sodec import SODECScheduler
from ..shipped_models import resolve_model_path
from .assembly import FromPretrainedPartsMixin
from .coding import (  # noqa: F401  (the names other modules import from here: re-exported)
    DECODE_STAGES,
    DECODERS,
    EXAMPLE_DOC_STRING,
    OUTPUT_TYPES,
    CodingMixin,
    DecodeOptions,
    DecoderScaleError,
    StageWrapper,
    _untimed,
    batch_groups,
    check_decode_inputs,
    check_realism,
    padded_size,
    realign_cpu_tensors,
    with_examples,
)
from .colour_correction import block_means, correct_colours
from .diffusers_registration import register_with_diffusers
from .hub_code import hub_class_name, installed_model_index, write_code_files
from .pipeline_output import SODECPipelineOutput
from .tiling import TileSpec, TileSpecs, run_tiled, tile_specs_for
from .weight_variants import missing_variant_files, unsuffixed_weights_are_variant


logger = logging.getLogger(__name__)


class SODECPipeline(DiffusionPipeline, CodingMixin, FromPretrainedPartsMixin):
    r"""SODEC: a generative image codec for 0.02–0.07 bpp with a one-step diffusion decoder.

    Components:
        compression_vae ([`CompressionVAE`]): E, H_a, P, entropy models, H_s, T_s (always float32).
        fidelity_guidance ([`FidelityGuidanceEncoder`]): fidelity decoder D_a and guidance projection F_p.
        image_encoder ([`~transformers.PreTrainedModel`]): the frozen ViT F (``CLIPVisionModel``).
        unet ([`UNet2DConditionModel`]): the (LoRA-fused) SD 2.1 UNet, run once.
        vae ([`AutoencoderKL`]): the SD VAE; its decoder D_m turns ŷ_0 into the image.
        scheduler ([`SODECScheduler`]): the single step at ``timestep`` (999).

    Args:
        colour_correction_block_size (`int`, *optional*, defaults to 0):
            Side in pixels of the blocks whose means the diffusion decode takes from the fidelity decode x̂_f
            (:mod:`sodec_pipeline.pipelines.colour_correction`): a power of two up to 64, or 0 for no correction.
            Stored in ``model_index.json``.
        default_realism (`float`, *optional*, defaults to 1.0):
            The realism β of a diffusion decode that does not name one (``decompress(realism=None)``): 1 is the full
            diffusion decode; a β in (0, 1) needs a UNet trained with a realism control (the scheduler's
            ``realism_control``). Stored in ``model_index.json``.

    Use :meth:`compress` for bytes, :meth:`decompress` for images (``decoder="diffusion"``, or
    ``decoder="fidelity"`` for the fast x̂_f preview without a diffusion step), and ``pipe(image=...)``
    for the round trip. :meth:`decode_latents` is the decode itself, differentiable: training runs it too.
    :meth:`from_pretrained_parts` (:mod:`sodec_pipeline.pipelines.assembly`) builds one from published parts.
    """

    model_cpu_offload_seq = "compression_vae->fidelity_guidance->image_encoder->unet->vae"

    def __init__(
        self,
        compression_vae: CompressionVAE,
        fidelity_guidance: FidelityGuidanceEncoder,
        image_encoder: PreTrainedModel,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler: SODECScheduler,
        colour_correction_block_size: int = 0,
        default_realism: float = 1.0,
    ):
        super().__init__()
        self.register_modules(
            compression_vae=compression_vae,
            fidelity_guidance=fidelity_guidance,
            image_encoder=image_encoder,
            unet=unet,
            vae=vae,
            scheduler=scheduler,
        )
        check_colour_correction_block_size(colour_correction_block_size)
        self.register_to_config(colour_correction_block_size=colour_correction_block_size)
        if check_realism(default_realism) == 0:
            raise ValueError(
                "default_realism must be in (0, 1]: realism 0 is the fidelity decode, not a diffusion one"
            )
        if default_realism != 1:
            self.realism_steps(default_realism)  # a β but 1 needs the scheduler's realism_control
        self.register_to_config(default_realism=float(default_realism))
        for module in (compression_vae, fidelity_guidance, image_encoder, unet, vae):
            if isinstance(module, torch.nn.Module):
                realign_cpu_tensors(module)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained`` (a folder or a Hub repo id), plus the short names of the pipelines
        shipped with this package (``"sodec-small"``; see ``sodec_pipeline.shipped_models``).

        ``dtype`` is the dtype of the decoder networks, as in diffusers; ``dtype="auto"`` picks bfloat16 where the
        CPU computes it natively (AVX512-BF16 or AMX) and float32 elsewhere (:mod:`sodec_pipeline.hardware`). The
        codec and its entropy models stay float32 whatever the choice, so the bytes never depend on it.

        Weights are read from ``.safetensors`` files only: a folder with a component whose weights are only a pickle
        (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, which can run code when loaded) raises ``ModelFolderError``, and so
        does a component config with absurd sizes, before anything is built. ``use_safetensors=False`` (for trusted
        files) lets such a component load its pickle; the others still load their safetensors.

        The classes come from this installed package: the code files of a saved folder (``pipeline_sodec.py``,
        ``<component>/sodec_pipeline.py``, for plain diffusers' ``trust_remote_code=True``; see
        :mod:`sodec_pipeline.pipelines.hub_code`) are never run, and no ``trust_remote_code`` is needed.

        ``variant="fp16"`` (or ``"bf16"``) of a folder that has no ``*.fp16.safetensors`` files but whose weights are
        stored in float16 under the default names (``sodec-small``: see its model card) loads those default files,
        the same weights as ``variant=None``, instead of raising (:mod:`sodec_pipeline.pipelines.weight_variants`)."""
        for key in ("dtype", "torch_dtype"):
            if isinstance(kwargs.get(key), str) and kwargs[key] == "auto":
                kwargs[key] = getattr(torch, auto_dtype_name("cpu"))
        path = resolve_model_path(pretrained_model_name_or_path)
        # Safetensors only (diffusers' default, None, falls back to pickles) unless the caller passes False, which
        # here means None: pickles allowed, safetensors still preferred (diffusers' False would want pickles for all).
        allow_pickle = kwargs.get("use_safetensors") is False
        kwargs["use_safetensors"] = None if allow_pickle else True
        variant = kwargs.get("variant")
        if os.path.isdir(path):
            check_model_folder(path, allow_pickle=allow_pickle)  # before anything in it is built
            if variant is not None and unsuffixed_weights_are_variant(path, variant):
                logger.info(f"{path}: no {variant} files; its default weight files are {variant}: loading those")
                kwargs["variant"] = None
            return super().from_pretrained(path, **kwargs)
        try:
            return super().from_pretrained(path, **kwargs)
        except ValueError as error:
            # A Hub repo without the variant's files: diffusers refuses before downloading anything. Download the
            # default files, and load them if they are stored in the variant's dtype.
            if variant is None or not missing_variant_files(error):
                raise
            folder = cls.download(path, **{k: v for k, v in kwargs.items() if k != "variant"})
            if not unsuffixed_weights_are_variant(folder, variant):
                raise
        check_model_folder(folder, allow_pickle=allow_pickle)
        logger.info(f"{path}: no {variant} files; its default weight files are {variant}: loading those")
        pipe = super().from_pretrained(folder, **{**kwargs, "variant": None})
        pipe.register_to_config(_name_or_path=path)
        return pipe

    @classmethod
    def _dict_from_json_file(cls, json_file):
        """A model_index.json as :meth:`from_pretrained` reads it: classes from the installed package, never from the
        folder's code files (:func:`~sodec_pipeline.pipelines.hub_code.installed_model_index`)."""
        return installed_model_index(super()._dict_from_json_file(json_file), cls)

    def to_json_string(self) -> str:
        """model_index.json's text: diffusers', with ``_class_name`` naming the folder's code file too,
        ``["pipeline_sodec", "SODECPipeline"]``, as diffusers' custom pipelines do."""
        config = json.loads(super().to_json_string())
        config["_class_name"] = hub_class_name(type(self))
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    def save_config(self, save_directory: Union[str, os.PathLike], push_to_hub: bool = False, **kwargs):
        """diffusers' ``save_config`` (model_index.json, last step of ``save_pretrained``, before any upload), after
        writing the code files model_index.json names: ``pipeline_sodec.py`` and ``<component>/sodec_pipeline.py``,
        a few imports of this installed package each (:mod:`sodec_pipeline.pipelines.hub_code`). With them the folder,
        or a Hub repo made from it (``push_to_hub``), loads with plain ``diffusers.DiffusionPipeline.from_pretrained(
        folder_or_repo_id, trust_remote_code=True)`` without ``import sodec_pipeline``."""
        if not os.path.isfile(save_directory):  # diffusers' save_config refuses a file in its own words
            os.makedirs(save_directory, exist_ok=True)
            write_code_files(save_directory, self)
        return super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)

    def enable_channels_last(self) -> "SODECPipeline":
        """Stores the convolutional decoders (D_a, the UNet, the VAE) channels-last, which oneDNN's CPU convolutions
        run faster (kodim23's diffusion decode in 0.89× of the time on this project's AVX2 machine: README.md,
        ``benchmarks/channels_last_decode.py``); decoded pixels move by about 1e-6. The codec (E, H_a, P, H_s, T_s) stays as it
        is, so that the bytes of a stream never depend on the memory format. ``sodec`` does this on the CPU."""
        for module in (self.fidelity_guidance, self.unet, self.vae):
            module.to(memory_format=torch.channels_last)
        return self

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the decoder networks run in (the codec itself stays float32)."""
        return self.unet.dtype

    @property
    def tile_specs(self) -> TileSpecs:
        """The tile layout of E, D_a, the UNet step and the VAE decoder: a function of the configs only
        (see :mod:`sodec_pipeline.pipelines.tiling`)."""
        return tile_specs_for(self.unet.config, self.vae.config)

    # ------------------------------------------------------------------ decoding
    def synthesize_latents(self, y_hat: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
        """H_s and T_s: (ŷ, ẑ) → ŷ_t, the UNet's input."""
        return self.compression_vae.synthesize_latents(y_hat, z_hat)

    def encode_guidance(self, x_f: torch.Tensor, stage_timer: Optional[StageWrapper] = None) -> torch.Tensor:
        """x̂_f → c_g: the whole x̂_f resized to the ViT's input, the frozen ViT F (stage ``vit``), then F_p
        (stage ``f_p``)."""
        stage = stage_timer or _untimed
        with stage("vit"):
            pixel_values = self.fidelity_guidance.prepare_image_encoder_input(x_f).to(self.image_encoder.dtype)
            tokens = self.image_encoder(pixel_values=pixel_values).last_hidden_state
        with stage("f_p"):
            return self.fidelity_guidance.project(tokens)

    def denoise(
        self,
        noisy_latents: torch.Tensor,
        guidance: torch.Tensor,
        batch_size: int = 1,
        tiles: Optional[TileSpec] = None,
        realism: Optional[Union[float, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """The scheduler's steps from ŷ_t with the guidance c_g (SODEC's scheduler: one step at t = 999):
        at each step the UNet's prediction ε = UNet(x_t, t, c_g), then the scheduler's step on the whole
        latent. With ``tiles`` the UNet runs on overlapping latent tiles of that spec, each with its image's
        guidance and at most ``batch_size`` tiles per call, and ε is blended across the overlaps; without,
        on the whole latent at once. With ``realism`` (a β, or one per image) the one step is at the scheduler's
        timestep for it (``SODECScheduler.realism_timesteps``) instead of its ``timesteps``."""
        latents = noisy_latents.to(self.unet.dtype)
        guidance = guidance.to(self.unet.dtype)
        for t in self.realism_steps(realism):
            t = t.to(latents.device)
            unet_timesteps = t.expand(latents.shape[0])  # one per image
            sample = self.scheduler.scale_model_input(latents, t)

            def predict_noise(x: torch.Tensor, sample_index) -> torch.Tensor:
                t_tiles = unet_timesteps[sample_index]
                return self.unet(x, t_tiles, encoder_hidden_states=guidance[sample_index]).sample

            if tiles is None:
                model_output = predict_noise(sample, slice(None))
            else:
                model_output = run_tiled(predict_noise, sample, tiles, 1, tiles_per_batch=batch_size)
            latents = self.scheduler.step(model_output, t, latents).prev_sample
        return latents

    def realism_steps(self, realism: Optional[Union[float, torch.Tensor]] = None):
        """The timesteps of a diffusion decode at ``realism`` (a β, or one per image): the scheduler's ``timesteps``
        for ``None`` or 1, else the one step at ``SODECScheduler.realism_timesteps(realism)``. Raises ``ValueError``
        for a β the scheduler does not take (a model trained without a realism control takes 1 only)."""
        if realism is None or (not isinstance(realism, torch.Tensor) and realism == 1):
            return self.scheduler.timesteps
        if not hasattr(self.scheduler, "realism_timesteps"):
            raise ValueError(
                f"realism {realism} needs SODECScheduler with realism_control; this pipeline's scheduler is "
                f"{type(self.scheduler).__name__}"
            )
        return [self.scheduler.realism_timesteps(realism)]

    def denoise_tiled(
        self,
        noisy_latents: torch.Tensor,
        guidance: torch.Tensor,
        batch_size: int = 1,
        realism: Optional[Union[float, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """:meth:`denoise` on the UNet's tiles (:attr:`tile_specs`), as decoding runs it. Equals the untiled
        :meth:`denoise` when the latent is a single tile."""
        return self.denoise(noisy_latents, guidance, batch_size, tiles=self.tile_specs.unet, realism=realism)

    def decode_vae(self, latents: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
        """The VAE decoder D_m tile by tile: ŷ_0 → x̂ (B, 3, H, W) on the [0, 1] scale, float32, unclamped."""
        scaling_factor = self.vae.config.scaling_factor

        def decode(tiles: torch.Tensor, _) -> torch.Tensor:
            out = self.vae.decode(tiles.to(self.vae.dtype) / scaling_factor).sample.float()
            if tuple(out.shape[-2:]) != (tiles.shape[-2] * 8, tiles.shape[-1] * 8):
                raise DecoderScaleError(
                    (Fraction(out.shape[-2], tiles.shape[-2] * 8), Fraction(out.shape[-1], tiles.shape[-1] * 8))
                )
            return out

        image = run_tiled(decode, latents, self.tile_specs.vae, 8, tiles_per_batch=batch_size).float()
        if image.requires_grad:
            return (image + 1.0) / 2.0
        return image.add_(1.0).div_(2.0)  # in place: at 16384² the image is 3 GiB

    def decode_latents(
        self,
        y_hat: torch.Tensor,
        z_hat: torch.Tensor,
        decoder: str = "diffusion",
        batch_size: int = 1,
        output_type: str = "pt",
        options: Optional[DecodeOptions] = None,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The decode: (ŷ, ẑ) → (x̂, x̂_f), both (B, 3, H, W) float32 on the [0, 1] scale (unclamped), every
        large network tile by tile with at most ``batch_size`` tiles per call.

        H_s/T_s → ŷ_t; D_a → x̂_f; ViT and F_p → c_g; the UNet step → ŷ_0; the VAE decoder → x̂. With
        ``decoder="fidelity"`` only D_a runs and x̂ is x̂_f; with ``output_type="latent"`` x̂ is ŷ_0
        (B, 4, H/8, W/8), before the VAE decoder. ``options`` ([`DecodeOptions`]): a stage timer, ŷ_t or x̂_f
        computed already, and overrides (training and the benchmark use them). ``decoder``, ``output_type`` and
        ``batch_size`` are checked as :meth:`decompress` checks them (:func:`check_decode_inputs`).
        Differentiable (no ``no_grad`` here): training runs this decode.
        """
        check_decode_inputs(decoder, output_type, batch_size)
        return self._decode_latents(y_hat, z_hat, decoder, batch_size, output_type, options or DecodeOptions())

    def _decode_latents(
        self,
        y_hat: torch.Tensor,
        z_hat: torch.Tensor,
        decoder: str,
        batch_size: int,
        output_type: str,
        options: DecodeOptions,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """:meth:`decode_latents` on arguments checked already: the fidelity decode is the coding mixin's."""
        if decoder == "fidelity":
            return super()._decode_latents(y_hat, z_hat, decoder, batch_size, output_type, options)
        stage = options.stage_timer or _untimed
        noisy_latents = options.noisy_latents
        if noisy_latents is None:
            with stage("hs_ts"):
                noisy_latents = self.synthesize_latents(y_hat, z_hat)
        x_f = options.fidelity_image
        if x_f is None:
            with stage("d_a"):
                x_f = self.decode_fidelity(y_hat, batch_size)
        guidance = self.encode_guidance(x_f, options.stage_timer)
        block_size = self.config.colour_correction_block_size
        if options.colour_correction_block_size is not None:
            block_size = check_colour_correction_block_size(options.colour_correction_block_size)
        reference_means = block_means(x_f, block_size) if block_size and output_type != "latent" else None
        if not options.return_fidelity_image:
            x_f = None
        realism = options.realism if options.realism is not None else self.config.default_realism
        with stage("unet"):
            latents = self.denoise_tiled(noisy_latents, guidance, batch_size, realism)
        if output_type == "latent":
            return latents, x_f
        with stage("vae_decode"):
            image = self.decode_vae(latents, batch_size)
        if reference_means is not None:
            with stage("colour_correction"):
                image = correct_colours(image, reference_means, block_size)
        return image, x_f

    def _decoder_for_realism(self, decoder: str, realism: Optional[float]) -> str:
        """As the coding mixin's (realism 0 is the fidelity decode), and a realism in (0, 1] is a diffusion decode
        that this model's scheduler must take (:meth:`SODECScheduler.realism_timesteps`), checked before any
        stream is decoded."""
        if realism is None or realism == 0:
            return super()._decoder_for_realism(decoder, realism)
        if decoder != "diffusion":
            raise ValueError(f"realism {realism} is a diffusion decode; decoder={decoder!r} is realism 0")
        self.realism_steps(realism)
        return decoder

    def _decompress_output(self, images, bitstreams, bpp) -> SODECPipelineOutput:
        return SODECPipelineOutput(images=images, bitstreams=bitstreams, bpp=bpp)

    @torch.no_grad()
    @with_examples
    def __call__(
        self,
        image: ImageInput,
        output_type: str = "pil",
        decoder: str = "diffusion",
        return_dict: bool = True,
        batch_size: int = 1,
        max_pixels: Optional[int] = None,
        quality: Optional[int] = None,
        max_bytes: Optional[int] = None,
        target_bpp: Optional[float] = None,
        realism: Optional[float] = None,
    ):
        """Round trip: compresses ``image`` to real bytes, then decodes them.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                As in :meth:`compress`.
            quality, max_bytes, target_bpp:
                The level or size budget, as in :meth:`compress`.
            output_type, decoder, batch_size, max_pixels, realism:
                As in :meth:`decompress`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Return a [`SODECPipelineOutput`] instead of a tuple.

        Returns:
            [`SODECPipelineOutput`] or `tuple`: ``images``, ``bitstreams`` (equal to :meth:`compress`'s) and
            ``bpp`` computed from their lengths; as a tuple ``(images, bitstreams, bpp)`` with
            ``return_dict=False``.

        Examples:
        """
        decoder = self._decoder_for_realism(decoder, check_realism(realism))  # before the image is compressed
        streams = self.compress(image, quality=quality, max_bytes=max_bytes, target_bpp=target_bpp)
        output = self.decompress(
            streams,
            output_type=output_type,
            decoder=decoder,
            batch_size=batch_size,
            max_pixels=max_pixels,
            realism=realism,
        )
        if not return_dict:
            return (output.images, output.bitstreams, output.bpp)
        return output


def check_colour_correction_block_size(block_size: int) -> int:
    """``block_size`` when it is 0 or a power of two that divides the padding multiple (64); else ``ValueError``."""
    if not isinstance(block_size, int) or block_size < 0 or (block_size and PADDING_MULTIPLE % block_size):
        raise ValueError(f"colour_correction_block_size must be 0 or a power of two up to 64; got {block_size!r}")
    return block_size


register_with_diffusers(SODECPipeline)
