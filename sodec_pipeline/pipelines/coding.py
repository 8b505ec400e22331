"""The coding half of a SODEC pipeline, without diffusers: ``compress`` and the fidelity decode.

:class:`CodingMixin` holds what ``SODECPipeline`` (``pipeline_sodec.py``) does between images and streams and back
to x̂_f: the padding, E tile by tile, the quality levels and size budgets, the container, the checks of a stream, the
entropy decoding, D_a tile by tile and the conversion of the outputs. ``SODECPipeline`` adds the diffusion decode.

:class:`SODECCodecPipeline` is the same mixin over the codec alone (``HyperpriorCodec``) and, for the fidelity
decode, D_a alone (``StandaloneFidelityDecoder``), loaded from a saved pipeline folder without diffusers or
transformers, which cost seconds to import. ``sodec compress`` and ``sodec decompress --fidelity`` run it: the same
code on the same weights, so the same bytes and pixels as ``SODECPipeline`` (``tests/test_codec_pipeline.py``).
Only torch, numpy, Pillow, safetensors and constriction are imported here.
"""

import json
import numbers
import os
from contextlib import nullcontext
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, ContextManager, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
import torch

from ..codec.bitstream import SODECBitstream, bits_per_pixel, check_image_size, decode_bitstream, encode_bitstream
from ..codec.errors import SizeBudgetError
from ..image_processing import ImageInput, pad_to_multiple, postprocess, to_image_tensors
from ..model_folder_checks import check_model_folder
from ..models.fidelity_decoder import StandaloneFidelityDecoder
from ..models.hyperprior_codec import PADDING_MULTIPLE, HyperpriorCodec
from .hub_code import COMPONENT_LIBRARY
from .tiling import TileSpecs, run_tiled, tile_specs_for


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
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def _untimed(_stage: str) -> ContextManager:
    return nullcontext()


def with_examples(method):
    """Puts :data:`EXAMPLE_DOC_STRING` in place of the line ``Examples:`` of a method's docstring (what diffusers'
    ``replace_example_docstring`` does, without importing diffusers)."""
    lines = (method.__doc__ or "").split("\n")
    method.__doc__ = "\n".join(EXAMPLE_DOC_STRING if line.strip() == "Examples:" else line for line in lines)
    return method


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
        realism (`float` or `torch.Tensor`, *optional*):
            The diffusion decode's realism β in (0, 1], or one per image (training draws them); ``None``: the
            pipeline's ``default_realism``.
    """

    stage_timer: Optional[StageWrapper] = None
    noisy_latents: Optional[torch.Tensor] = None
    fidelity_image: Optional[torch.Tensor] = None
    return_fidelity_image: bool = True
    colour_correction_block_size: Optional[int] = None
    realism: Optional[Union[float, torch.Tensor]] = None


class DecoderScaleError(ValueError):
    """The VAE decoder's output is not 8× its input tile (``scale``: (rows, columns) relative to 8×)."""

    def __init__(self, scale):
        super().__init__(f"the VAE decoder's scale factor is not 8 (output/expected: {scale[0]}, {scale[1]})")
        self.scale = scale


def realign_cpu_tensors(module: torch.nn.Module, alignment: int = 64) -> None:
    """Copies CPU parameters and buffers that are not ``alignment``-byte aligned into fresh memory.

    Weights loaded from safetensors can sit at unaligned addresses (memory-mapped files), and CPU GEMM
    kernels then take other code paths with different rounding: the same weights would decode to
    slightly different pixels. Re-homing them makes decoding bit-exact across save/load and processes.
    """
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.device.type == "cpu" and tensor.numel() and tensor.data_ptr() % alignment:
            tensor.data = tensor.data.clone()


class CodingMixin:
    """``compress`` and the decoding of streams as far as x̂_f, for a pipeline with a ``compression_vae`` (a
    ``HyperpriorCodec``, ``CompressionVAE`` included), a ``fidelity_guidance`` whose ``decode`` is D_a, and
    :attr:`tile_specs`. The host provides ``_execution_device``, ``progress_bar``, ``maybe_free_model_hooks``,
    ``_decode_latents`` (the decodes it offers) and ``_decompress_output`` (its output class), as diffusers'
    ``DiffusionPipeline`` provides the first three to ``SODECPipeline``."""

    compression_vae: HyperpriorCodec
    tile_specs: TileSpecs

    # ------------------------------------------------------------------ encoding
    @torch.no_grad()
    @with_examples
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

    def decode_fidelity(self, y_hat: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
        """D_a tile by tile: ŷ → x̂_f (B, 3, H, W), [0, 1] scale, float32, unclamped."""
        decode = lambda tiles, _: self.fidelity_guidance.decode(tiles).float()  # noqa: E731
        return run_tiled(decode, y_hat.float(), self.tile_specs.fidelity, 16, tiles_per_batch=batch_size)

    def _decode_latents(
        self,
        y_hat: torch.Tensor,
        z_hat: torch.Tensor,
        decoder: str,
        batch_size: int,
        output_type: str,
        options: DecodeOptions,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(ŷ, ẑ) → (x̂, x̂_f) on arguments checked already; here the fidelity decode (x̂ is x̂_f)."""
        if decoder != "fidelity":
            raise ValueError(f"{type(self).__name__} decodes with decoder='fidelity' only; got {decoder!r}")
        with (options.stage_timer or _untimed)("d_a"):
            x_f = self.decode_fidelity(y_hat, batch_size)
        return x_f, x_f

    def _decompress_output(self, images, bitstreams: List[bytes], bpp: List[float]):
        return CodecPipelineOutput(images=images, bitstreams=bitstreams, bpp=bpp)

    @torch.no_grad()
    @with_examples
    def decompress(
        self,
        bitstreams: Union[bytes, Sequence[bytes]],
        output_type: str = "pil",
        decoder: str = "diffusion",
        batch_size: int = 1,
        max_pixels: Optional[int] = None,
        stage_timer: Optional[StageWrapper] = None,
        realism: Optional[float] = None,
    ):
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
            realism (`float`, *optional*):
                β in [0, 1]: 0 is the fidelity decode, 1 the full diffusion decode, and a β between is the diffusion
                decode the UNet was trained to make at that realism (its perceptual and adversarial losses weighed
                by β), for a model trained with a realism control (its scheduler's ``realism_control``); others
                take 0 or 1 only. ``None``: the pipeline's ``default_realism`` (1 unless its model card says
                otherwise) for `decoder="diffusion"`.

        Returns:
            [`SODECPipelineOutput`]: ``images`` (in `output_type`), ``bitstreams`` (the input streams) and
            ``bpp`` (8 × bytes / pixels of each stream).

        Raises:
            `BitstreamError`: a damaged, truncated or foreign stream (another model's fingerprint), before any
            network runs. `PixelBudgetError`: a stream larger than `max_pixels`.

        Examples:
        """
        decoder = self._decoder_for_realism(decoder, check_realism(realism))
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
                decoded = self._decode_group(
                    [parsed[i] for i in group], decoder, batch_size, output_type, stage, realism
                )
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
        return self._decompress_output(images, streams, bpp)

    def _decoder_for_realism(self, decoder: str, realism: Optional[float]) -> str:
        """The decoder that ``decompress(decoder=..., realism=...)`` runs: realism 0 is the fidelity decode; any other
        realism needs the diffusion decoder, which this mixin's pipeline does not have (``SODECPipeline`` has it)."""
        if realism is None:
            return decoder
        if realism == 0:
            check_decode_inputs(decoder, "pil", 1)
            return "fidelity"
        raise ValueError(
            f"realism {realism} needs the diffusion decoder: load a SODECPipeline (realism 0 is the fidelity decode)"
        )

    def _decode_group(
        self,
        group: List[SODECBitstream],
        decoder: str,
        batch_size: int,
        output_type: str,
        stage: StageWrapper,
        realism: Optional[float] = None,
    ) -> List[torch.Tensor]:
        """Parsed streams of one padded size → their decodes: images (3, h, w) cropped to each stream's size and
        clamped to [0, 1], or latents (4, H/8, W/8) with ``output_type="latent"``."""
        with stage("entropy_decoding"):
            decoded = [self.entropy_decode(stream) for stream in group]
        y_hat = torch.cat([y for y, _ in decoded])
        z_hat = torch.cat([z for _, z in decoded])
        padded_h, padded_w = padded_size(group[0].height, group[0].width)
        try:
            options = DecodeOptions(stage_timer=stage, return_fidelity_image=False, realism=realism)
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


@dataclass
class CodecPipelineOutput:
    """Output of ``SODECCodecPipeline.decompress``: ``SODECPipelineOutput``'s fields (``images``, ``bitstreams``,
    ``bpp``), without diffusers' ``BaseOutput``."""

    images: Union[List[PIL.Image.Image], np.ndarray, torch.Tensor, list]
    bitstreams: Optional[List[bytes]] = None
    bpp: Optional[List[float]] = None


class CodecPipelineUnsupported(ValueError):
    """A saved pipeline that :class:`SODECCodecPipeline` does not load on its own (another codec class, configs
    without the tile sizes): load it as a ``SODECPipeline``, which codes it the same way."""


class _NoProgressBar:
    def __init__(self, iterable=None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        pass


class SODECCodecPipeline(CodingMixin):
    r"""The coding half of a saved SODEC pipeline: :meth:`compress` and ``decompress(..., decoder="fidelity")``,
    from the codec (and D_a) alone, without diffusers (module docstring).

    Args:
        compression_vae ([`HyperpriorCodec`]): the codec (float32).
        tile_specs ([`TileSpecs`]): the pipeline's tile layout (``tile_specs_for`` of its UNet and VAE configs).
        fidelity_guidance ([`StandaloneFidelityDecoder`], *optional*): D_a, for the fidelity decode.
    """

    def __init__(
        self,
        compression_vae: HyperpriorCodec,
        tile_specs: TileSpecs,
        fidelity_guidance: Optional[StandaloneFidelityDecoder] = None,
    ):
        self.compression_vae = compression_vae
        self.fidelity_guidance = fidelity_guidance
        self._tile_specs = tile_specs

    @property
    def tile_specs(self) -> TileSpecs:
        return self._tile_specs

    @property
    def _execution_device(self) -> torch.device:
        return self.compression_vae.entropy_bottleneck.quantiles.device

    def components(self) -> Iterable[torch.nn.Module]:
        return [m for m in (self.compression_vae, self.fidelity_guidance) if m is not None]

    def progress_bar(self, iterable=None, total=None):
        return _NoProgressBar(iterable)

    def maybe_free_model_hooks(self) -> None:
        pass

    def _decode_latents(self, y_hat, z_hat, decoder, batch_size, output_type, options):
        if decoder == "fidelity" and self.fidelity_guidance is None:
            raise ValueError("this SODECCodecPipeline was loaded without D_a (fidelity_decoder=False)")
        return super()._decode_latents(y_hat, z_hat, decoder, batch_size, output_type, options)

    def to(self, device: Union[str, torch.device]) -> "SODECCodecPipeline":
        for module in self.components():
            module.to(device)
        return self

    def enable_channels_last(self) -> "SODECCodecPipeline":
        """D_a stored channels-last, as ``SODECPipeline.enable_channels_last`` stores it (the codec stays as it is)."""
        if self.fidelity_guidance is not None:
            self.fidelity_guidance.to(memory_format=torch.channels_last)
        return self

    @classmethod
    def from_pretrained(
        cls,
        folder: Union[str, os.PathLike],
        fidelity_decoder: bool = False,
        dtype: Optional[torch.dtype] = None,
    ) -> "SODECCodecPipeline":
        """The codec (and with ``fidelity_decoder``, D_a in ``dtype``) of a saved pipeline folder, as
        ``SODECPipeline.from_pretrained(folder, dtype=dtype)`` loads them: the folder checked first
        (``check_model_folder``), float32 codec, weights re-homed to aligned memory. Raises
        :class:`CodecPipelineUnsupported` for a folder it cannot load on its own (:func:`codec_pipeline_tile_specs`)."""
        folder = Path(folder)
        tile_specs = codec_pipeline_tile_specs(folder)
        check_model_folder(folder)
        codec = HyperpriorCodec.from_pretrained(folder, "compression_vae")
        realign_cpu_tensors(codec)
        decoder = None
        if fidelity_decoder:
            decoder = StandaloneFidelityDecoder.from_pretrained(folder, "fidelity_guidance")
            if dtype is not None:
                decoder.to(dtype)
            realign_cpu_tensors(decoder)
        return cls(codec, tile_specs, decoder)


def codec_pipeline_tile_specs(folder: Path) -> TileSpecs:
    """The tile layout of a saved pipeline from its UNet and VAE configs, read as JSON; raises
    :class:`CodecPipelineUnsupported` unless the folder's ``compression_vae`` and ``fidelity_guidance`` are this
    package's ``CompressionVAE`` and ``FidelityGuidanceEncoder`` and the configs state the sizes the tiles depend
    on (diffusers would fill a missing one with its class's default, which this loader does not know)."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
        vae = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CodecPipelineUnsupported(f"{folder}: unreadable pipeline configs ({e})") from None
    expected = {"compression_vae": "CompressionVAE", "fidelity_guidance": "FidelityGuidanceEncoder"}
    for name, class_name in expected.items():
        if list(index.get(name) or ()) != [COMPONENT_LIBRARY, class_name]:
            raise CodecPipelineUnsupported(f"{folder}: its {name} is {index.get(name)}, not sodec_pipeline's")
    if not all(key in unet for key in ("sample_size", "block_out_channels")):
        raise CodecPipelineUnsupported(f"{folder}: the UNet config does not state sample_size and block_out_channels")
    if "sample_size" not in vae and vae.get("_class_name") != "AutoencoderTiny":  # TAESD's config has none
        raise CodecPipelineUnsupported(f"{folder}: the VAE config does not state sample_size")
    return tile_specs_for(SimpleNamespace(**unet), vae)


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


def check_realism(realism) -> Optional[float]:
    """``realism`` as a float in [0, 1], or ``None``; ``ValueError`` for anything else."""
    if realism is None:
        return None
    if isinstance(realism, bool) or not isinstance(realism, numbers.Real) or not 0 <= realism <= 1:
        raise ValueError(
            f"realism must be a number in [0, 1] (0: the fidelity decode, 1: the full diffusion decode); got {realism!r}"
        )
    return float(realism)


def padded_size(height: int, width: int) -> Tuple[int, int]:
    """The size an image is padded to before coding (multiples of 64)."""
    return -(-height // PADDING_MULTIPLE) * PADDING_MULTIPLE, -(-width // PADDING_MULTIPLE) * PADDING_MULTIPLE


def batch_groups(sizes: Sequence[Tuple[int, int]], batch_size: int) -> List[List[int]]:
    """Indexes of same-size items, in groups of at most ``batch_size``, in order of first appearance."""
    by_size = {}
    for i, size in enumerate(sizes):
        by_size.setdefault(size, []).append(i)
    return [indexes[k : k + batch_size] for indexes in by_size.values() for k in range(0, len(indexes), batch_size)]
