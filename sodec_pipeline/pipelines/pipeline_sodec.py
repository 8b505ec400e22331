"""SODECPipeline: image → bytes → one-step diffusion decode (Chen et al., AAAI 2026, arXiv 2508.04979)."""

import json
import logging
import numbers
import os
from contextlib import nullcontext
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, ContextManager, List, Optional, Sequence, Tuple, Union

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.utils import replace_example_docstring
from transformers import PreTrainedModel

from ..codec.bitstream import SODECBitstream, bits_per_pixel, check_image_size, decode_bitstream, encode_bitstream
from ..codec.errors import SizeBudgetError
from ..hardware import auto_dtype_name
from ..image_processing import ImageInput, pad_to_multiple, postprocess, to_image_tensors
from ..model_folder_checks import check_model_folder
from ..models.compression_vae import PADDING_MULTIPLE, CompressionVAE
from ..models.fidelity_guidance_encoder import FidelityGuidanceEncoder
from ..schedulers.scheduling_sodec import SODECScheduler
from ..shipped_models import resolve_model_path
from .assembly import FromPretrainedPartsMixin
from .colour_correction import block_means, correct_colours
from .hub_code import hub_class_name, installed_model_index, write_code_files
from .pipeline_output import SODECPipelineOutput
from .tiling import TileSpec, TileSpecs, run_tiled, tile_specs_for
from .weight_variants import missing_variant_files, unsuffixed_weights_are_variant


logger = logging.getLogger(__name__)


EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from PIL import Image
        >>> from sodec_pipeline import SODECPipeline

        >>> pipe = SODECPipeline.from_pretrained("sodec-small")  # the shipped model; or a folder, or a Hub id
        >>> photo = Image.open("photo.png")
        >>> (stream,) = pipe.compress(photo)  # bytes: write them to photo.sodec
        >>> decoded = pipe.decompress(stream).images[0]  # the diffusion decode, a PIL image of photo's size
        >>> preview = pipe.decompress(stream, decoder="fidelity").images[0]  # the fast fidelity decode
        >>> output = pipe(image=photo)  # both at once: output.images, output.bitstreams, output.bpp
        ```
"""

#: The decodes of a stream: SODEC's one-step diffusion decode, and the fidelity decoder D_a's x̂_f alone.
DECODERS = ("diffusion", "fidelity")
#: The stages of a decode, as :meth:`SODECPipeline.decompress` names them to a ``stage_timer``: parsing
#: (header, CRC), entropy decoding (ẑ, P, ŷ), H_s/T_s → ŷ_t, D_a → x̂_f, the ViT (with its input
#: preparation), F_p → c_g, the UNet step(s) with the scheduler, the VAE decoder, the colour correction,
#: crop/clamp/conversion.
DECODE_STAGES = (
    "parse",
    "entropy_decoding",
    "hs_ts",
    "d_a",
    "vit",
    "f_p",
    "unet",
    "vae_decode",
    "colour_correction",
    "postprocess",
)
#: ``stage_timer(name)`` returns a context manager around the stage ``name`` of :data:`DECODE_STAGES`.
StageWrapper = Callable[[str], ContextManager]


def _untimed(_stage: str) -> ContextManager:
    return nullcontext()


@dataclass
class DecodeOptions:
    """What a caller other than :meth:`SODECPipeline.decompress` may hand :meth:`SODECPipeline.decode_latents`:
    the benchmark's timer, the tensors training has already computed, and per-call overrides.

    Args:
        stage_timer (`Callable[[str], ContextManager]`, *optional*):
            Wraps each stage of :data:`DECODE_STAGES` (the benchmark's timer).
        noisy_latents (`torch.Tensor`, *optional*):
            ŷ_t when the caller has it already (training: ``CompressionVAE.forward`` computes it), instead of
            running H_s/T_s again.
        fidelity_image (`torch.Tensor`, *optional*):
            x̂_f when the caller has it (training with D_a frozen computes it under ``no_grad``), instead of running
            D_a again.
        return_fidelity_image (`bool`, defaults to `True`):
            ``False``: x̂_f is freed once the guidance is made and ``None`` is returned in its place (a decode then
            never holds x̂_f and x̂ at once; ``decompress`` does this).
        colour_correction_block_size (`int`, *optional*):
            Overrides the pipeline's config value (the diffusion decode's low frequencies taken from x̂_f; 0: none).
    """

    stage_timer: Optional[StageWrapper] = None
    noisy_latents: Optional[torch.Tensor] = None
    fidelity_image: Optional[torch.Tensor] = None
    return_fidelity_image: bool = True
    colour_correction_block_size: Optional[int] = None


class DecoderScaleError(ValueError):
    """The VAE decoder's output is not 8× its input tile (``scale``: (rows, columns) relative to 8×)."""

    def __init__(self, scale):
        super().__init__(f"the VAE decoder's scale factor is not 8 (output/expected: {scale[0]}, {scale[1]})")
        self.scale = scale


OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def realign_cpu_tensors(module: torch.nn.Module, alignment: int = 64) -> None:
    """Copies CPU parameters and buffers that are not ``alignment``-byte aligned into fresh memory.

    Weights loaded from safetensors can sit at unaligned addresses (memory-mapped files), and CPU GEMM
    kernels then take other code paths with different rounding: the same weights would decode to
    slightly different pixels. Re-homing them makes decoding bit-exact across save/load and processes.
    """
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.device.type == "cpu" and tensor.numel() and tensor.data_ptr() % alignment:
            tensor.data = tensor.data.clone()


class SODECPipeline(DiffusionPipeline, FromPretrainedPartsMixin):
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

    # ------------------------------------------------------------------ encoding
    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def compress(
        self,
        images: ImageInput,
        quality: Optional[int] = None,
        max_bytes: Optional[int] = None,
        target_bpp: Optional[float] = None,
    ) -> List[bytes]:
        """Encodes images into SODEC streams, one per image (format: `docs/bitstream.md`).

        Deterministic: the same image, model and level give the same bytes in any process. E runs tile by tile
        (bounded memory), and each image is coded on its own, so that its bytes never depend on what else is
        compressed with it.

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The images, of any size from 1 × 1 to 16384 × 16384 and any PIL mode (converted to RGB);
                numpy arrays (H, W, 3), uint8 or floats in [0, 1]; tensors (B, 3, H, W) or (3, H, W), floats
                in [0, 1] (``sodec_pipeline.image_processing``).
            quality (`int`, *optional*):
                The quality level, 1 (smallest streams) to ``compression_vae.num_qualities``; default: the
                model's ``compression_vae.default_quality``. The level travels in the stream.
            max_bytes (`int`, *optional*):
                A size budget instead of a level: each image is coded at the highest level whose stream is at
                most ``max_bytes`` bytes. Raises [`SizeBudgetError`] for an image whose level-1 stream is larger.
            target_bpp (`float`, *optional*):
                The same budget in bits per pixel of each image: ``max_bytes = floor(target_bpp · H · W / 8)``.

        Returns:
            `List[bytes]`: one stream per image; bpp = 8 × its length / pixels.

        Examples:
        """
        if sum(v is not None for v in (quality, max_bytes, target_bpp)) > 1:
            raise ValueError("give at most one of quality, max_bytes and target_bpp")
        quality = self.compression_vae.check_quality(quality)
        if max_bytes is not None:
            _check_positive("max_bytes", max_bytes, integer=True)
        if target_bpp is not None:
            _check_positive("target_bpp", target_bpp)
        tensors = to_image_tensors(images)
        device = self._execution_device
        fingerprint = self.compression_vae.fingerprint()
        streams = []
        for image in self.progress_bar(tensors):
            height, width = image.shape[-2:]
            check_image_size(height, width)
            y = self.analyze(image.to(device))
            budget = max_bytes if target_bpp is None else int(target_bpp * height * width / 8.0)
            if budget is None:
                streams.append(self._code_latent(y, quality, fingerprint, height, width))
            else:
                streams.append(self._code_latent_within(y, budget, fingerprint, height, width))
        self.maybe_free_model_hooks()
        return streams

    def _code_latent(self, y: torch.Tensor, quality: int, fingerprint: bytes, height: int, width: int) -> bytes:
        """E's output of one image → its stream at ``quality``."""
        coded = self.compression_vae.compress_latent(y, quality)
        y_strings, z_strings = coded["strings"]
        check = coded["entropy_checks"][0]
        version = self.compression_vae.stream_version
        return encode_bitstream(fingerprint, height, width, z_strings[0], y_strings[0], check, quality, version)

    def _code_latent_within(self, y: torch.Tensor, budget: int, fingerprint: bytes, height: int, width: int) -> bytes:
        """The stream of the highest level that fits in ``budget`` bytes (levels tried from the top down)."""
        smallest = None
        for quality in range(self.compression_vae.num_qualities, 0, -1):
            stream = self._code_latent(y, quality, fingerprint, height, width)
            if len(stream) <= budget:
                return stream
            smallest = len(stream)
        raise SizeBudgetError(
            f"a {width}×{height} image does not fit in {budget} bytes ({8.0 * budget / (height * width):.4f} bpp): "
            f"its smallest stream (quality 1) is {smallest} bytes ({8.0 * smallest / (height * width):.4f} bpp)"
        )

    def analyze(self, image: torch.Tensor) -> torch.Tensor:
        """E of one image (3, H, W) in [0, 1], as :meth:`compress` codes it: padded to a multiple of 64, tile by
        tile, in float32 under any autocast (bit-exact). Returns y (1, C, H/16, W/16) on the image's device."""
        x = pad_to_multiple(image[None], PADDING_MULTIPLE)
        with torch.autocast(device_type=x.device.type, enabled=False):
            encode = lambda tiles, _: self.compression_vae.encode(tiles)  # noqa: E731
            return run_tiled(encode, x, self.tile_specs.analysis, Fraction(1, 16))

    # ------------------------------------------------------------------ decoding
    def parse_bitstreams(
        self, bitstreams: Union[bytes, Sequence[bytes]], max_pixels: Optional[int] = None
    ) -> List[SODECBitstream]:
        """Verifies streams against this model (its fingerprint and the stream versions of its entropy model) and the
        pixel budget ``max_pixels`` (``None``: ``sodec_pipeline.codec.bitstream.DEFAULT_MAX_PIXELS``); raises
        ``BitstreamError`` on any problem."""
        if isinstance(bitstreams, (bytes, bytearray, memoryview)):
            bitstreams = [bitstreams]
        fingerprint = self.compression_vae.fingerprint()
        versions = self.compression_vae.readable_stream_versions
        return [decode_bitstream(s, fingerprint, max_pixels, versions) for s in bitstreams]

    def entropy_decode(self, stream: SODECBitstream) -> Tuple[torch.Tensor, torch.Tensor]:
        """One parsed stream → (ŷ, ẑ) on the execution device (ANS decoding with the stream's entropy check;
        always one image at a time, so that the entropy parameters never depend on batching)."""
        padded_h, padded_w = padded_size(stream.height, stream.width)
        z_shape = (padded_h // PADDING_MULTIPLE, padded_w // PADDING_MULTIPLE)
        latents = self.compression_vae.decompress(
            [[stream.y_string], [stream.z_string]],
            z_shape,
            entropy_checks=[stream.entropy_check],
            quality=stream.quality,
        )
        device = self._execution_device
        return latents["y_hat"].to(device), latents["z_hat"].to(device)

    def synthesize_latents(self, y_hat: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
        """H_s and T_s: (ŷ, ẑ) → ŷ_t, the UNet's input."""
        return self.compression_vae.synthesize_latents(y_hat, z_hat)

    def decode_fidelity(self, y_hat: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
        """D_a tile by tile: ŷ → x̂_f (B, 3, H, W), [0, 1] scale, float32, unclamped."""
        decode = lambda tiles, _: self.fidelity_guidance.decode(tiles).float()  # noqa: E731
        return run_tiled(decode, y_hat.float(), self.tile_specs.fidelity, 16, tiles_per_batch=batch_size)

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
    ) -> torch.Tensor:
        """The scheduler's steps from ŷ_t with the guidance c_g (SODEC's scheduler: one step at t = 999):
        at each step the UNet's prediction ε = UNet(x_t, t, c_g), then the scheduler's step on the whole
        latent. With ``tiles`` the UNet runs on overlapping latent tiles of that spec, each with its image's
        guidance and at most ``batch_size`` tiles per call, and ε is blended across the overlaps; without,
        on the whole latent at once."""
        latents = noisy_latents.to(self.unet.dtype)
        guidance = guidance.to(self.unet.dtype)
        for t in self.scheduler.timesteps:
            t = t.to(latents.device)
            sample = self.scheduler.scale_model_input(latents, t)

            def predict_noise(x: torch.Tensor, sample_index) -> torch.Tensor:
                return self.unet(x, t.expand(x.shape[0]), encoder_hidden_states=guidance[sample_index]).sample

            if tiles is None:
                model_output = predict_noise(sample, slice(None))
            else:
                model_output = run_tiled(predict_noise, sample, tiles, 1, tiles_per_batch=batch_size)
            latents = self.scheduler.step(model_output, t, latents).prev_sample
        return latents

    def denoise_tiled(self, noisy_latents: torch.Tensor, guidance: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
        """:meth:`denoise` on the UNet's tiles (:attr:`tile_specs`), as decoding runs it. Equals the untiled
        :meth:`denoise` when the latent is a single tile."""
        return self.denoise(noisy_latents, guidance, batch_size, tiles=self.tile_specs.unet)

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
        """:meth:`decode_latents` on arguments checked already."""
        stage = options.stage_timer or _untimed
        if decoder == "fidelity":
            with stage("d_a"):
                x_f = self.decode_fidelity(y_hat, batch_size)
            return x_f, x_f
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
        with stage("unet"):
            latents = self.denoise_tiled(noisy_latents, guidance, batch_size)
        if output_type == "latent":
            return latents, x_f
        with stage("vae_decode"):
            image = self.decode_vae(latents, batch_size)
        if reference_means is not None:
            with stage("colour_correction"):
                image = correct_colours(image, reference_means, block_size)
        return image, x_f

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def decompress(
        self,
        bitstreams: Union[bytes, Sequence[bytes]],
        output_type: str = "pil",
        decoder: str = "diffusion",
        batch_size: int = 1,
        max_pixels: Optional[int] = None,
        stage_timer: Optional[StageWrapper] = None,
    ) -> SODECPipelineOutput:
        """Decodes SODEC streams to images of their original sizes. The stream says everything the decoder needs.

        Args:
            bitstreams (`bytes` or `List[bytes]`):
                One stream or a list of them, as :meth:`compress` wrote them.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"` (HWC float32 in [0, 1]), `"pt"` (CHW float32 in [0, 1]), or `"latent"` (the
                denoised latents ŷ_0 of the padded images, (4, H/8, W/8) each, before the VAE decoder;
                `decoder="diffusion"` only).
            decoder (`str`, *optional*, defaults to `"diffusion"`):
                `"diffusion"`: SODEC's decode, one UNet step steered by x̂_f, then the VAE decoder (and the
                colour correction when the pipeline's `colour_correction_block_size` is set). `"fidelity"`: x̂_f
                from the fidelity decoder D_a alone (fast, higher PSNR, no generated detail).
            batch_size (`int`, *optional*, defaults to 1):
                Images of the same padded size go through the networks together, and every network call takes
                up to this many tiles.
            max_pixels (`int`, *optional*):
                The decode budget: a stream announcing more pixels raises `PixelBudgetError` before anything is
                decoded (`None`: `sodec_pipeline.codec.bitstream.DEFAULT_MAX_PIXELS`, 4096 × 4096).
            stage_timer (`Callable[[str], ContextManager]`, *optional*):
                ``stage_timer(name)`` gives a context manager wrapped around each stage of
                :data:`DECODE_STAGES` (the benchmark's timer).

        Returns:
            [`SODECPipelineOutput`]: ``images`` (in `output_type`), ``bitstreams`` (the input streams) and
            ``bpp`` (8 × bytes / pixels of each stream).

        Raises:
            `BitstreamError`: a damaged, truncated or foreign stream (another model's fingerprint), before any
            network runs. `PixelBudgetError`: a stream larger than `max_pixels`.

        Examples:
        """
        check_decode_inputs(decoder, output_type, batch_size)
        if isinstance(bitstreams, (bytes, bytearray, memoryview)):
            bitstreams = [bitstreams]
        streams = [bytes(s) for s in bitstreams]
        stage = stage_timer or _untimed
        # 1. headers, CRCs, fingerprints and the pixel budget, before any network runs
        with stage("parse"):
            parsed = self.parse_bitstreams(streams, max_pixels=max_pixels)
        # 2. the decode, one group of same-size images at a time
        outputs: List[torch.Tensor] = [None] * len(parsed)
        with self.progress_bar(total=len(parsed)) as progress:
            for group in batch_groups([padded_size(p.height, p.width) for p in parsed], batch_size):
                decoded = self._decode_group([parsed[i] for i in group], decoder, batch_size, output_type, stage)
                for i, image in zip(group, decoded):
                    outputs[i] = image
                progress.update(len(group))
        self.maybe_free_model_hooks()
        # 3. conversion to the output type
        bpp = [bits_per_pixel(s, p.height, p.width) for s, p in zip(streams, parsed)]
        with stage("postprocess"):
            if output_type == "latent":
                images = torch.stack(outputs) if len({tuple(o.shape) for o in outputs}) == 1 else outputs
            else:
                images = postprocess(outputs, output_type)
        return SODECPipelineOutput(images=images, bitstreams=streams, bpp=bpp)

    def _decode_group(
        self, group: List[SODECBitstream], decoder: str, batch_size: int, output_type: str, stage: StageWrapper
    ) -> List[torch.Tensor]:
        """Parsed streams of one padded size → their decodes: images (3, h, w) cropped to each stream's size and
        clamped to [0, 1], or latents (4, H/8, W/8) with ``output_type="latent"``."""
        with stage("entropy_decoding"):
            decoded = [self.entropy_decode(stream) for stream in group]
        y_hat = torch.cat([y for y, _ in decoded])
        z_hat = torch.cat([z for _, z in decoded])
        padded_h, padded_w = padded_size(group[0].height, group[0].width)
        try:
            options = DecodeOptions(stage_timer=stage, return_fidelity_image=False)
            result, _ = self._decode_latents(y_hat, z_hat, decoder, batch_size, output_type, options)
            made_h, made_w = result.shape[-2:]
        except DecoderScaleError as e:  # a tiled decode stops at the first tile of the wrong size
            made_h, made_w = int(padded_h * e.scale[0]), int(padded_w * e.scale[1])
        if output_type == "latent":
            return list(result)
        if (made_h, made_w) != (padded_h, padded_w):
            stream = group[0]
            raise ValueError(
                f"the {decoder} decoder made a {made_w}×{made_h} image from a stream of a "
                f"{stream.width}×{stream.height} image (padded {padded_w}×{padded_h}): this pipeline's "
                "parts do not fit together (a VAE whose scale factor is not 8?)"
            )
        with stage("postprocess"):
            return [result[k, :, : stream.height, : stream.width].clamp_(0, 1) for k, stream in enumerate(group)]

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
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
    ):
        """Round trip: compresses ``image`` to real bytes, then decodes them.

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                As in :meth:`compress`.
            quality, max_bytes, target_bpp:
                The level or size budget, as in :meth:`compress`.
            output_type, decoder, batch_size, max_pixels:
                As in :meth:`decompress`.
            return_dict (`bool`, *optional*, defaults to `True`):
                Return a [`SODECPipelineOutput`] instead of a tuple.

        Returns:
            [`SODECPipelineOutput`] or `tuple`: ``images``, ``bitstreams`` (equal to :meth:`compress`'s) and
            ``bpp`` computed from their lengths; as a tuple ``(images, bitstreams, bpp)`` with
            ``return_dict=False``.

        Examples:
        """
        streams = self.compress(image, quality=quality, max_bytes=max_bytes, target_bpp=target_bpp)
        output = self.decompress(
            streams, output_type=output_type, decoder=decoder, batch_size=batch_size, max_pixels=max_pixels
        )
        if not return_dict:
            return (output.images, output.bitstreams, output.bpp)
        return output


def _check_positive(name: str, value, integer: bool = False) -> None:
    kinds = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0 or value != value:
        raise ValueError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value!r}")


def check_decode_inputs(decoder: str, output_type: str, batch_size: int) -> None:
    """``ValueError`` for a decoder, output type or batch size :meth:`SODECPipeline.decompress` does not take."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}; got {decoder!r}")
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}; got {output_type!r}")
    if output_type == "latent" and decoder != "diffusion":
        raise ValueError("output_type='latent' needs decoder='diffusion' (the fidelity decoder has no latent)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")


def check_colour_correction_block_size(block_size: int) -> int:
    """``block_size`` when it is 0 or a power of two that divides the padding multiple (64); else ``ValueError``."""
    if not isinstance(block_size, int) or block_size < 0 or (block_size and PADDING_MULTIPLE % block_size):
        raise ValueError(f"colour_correction_block_size must be 0 or a power of two up to 64; got {block_size!r}")
    return block_size


def padded_size(height: int, width: int) -> Tuple[int, int]:
    """The size an image is padded to before coding (multiples of 64)."""
    return -(-height // PADDING_MULTIPLE) * PADDING_MULTIPLE, -(-width // PADDING_MULTIPLE) * PADDING_MULTIPLE


def batch_groups(sizes: Sequence[Tuple[int, int]], batch_size: int) -> List[List[int]]:
    """Indexes of same-size items, in groups of at most ``batch_size``, in order of first appearance."""
    by_size = {}
    for i, size in enumerate(sizes):
        by_size.setdefault(size, []).append(i)
    return [indexes[k : k + batch_size] for indexes in by_size.values() for k in range(0, len(indexes), batch_size)]
