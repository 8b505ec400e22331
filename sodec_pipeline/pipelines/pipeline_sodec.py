"""SODECPipeline: image → bytes → one-step diffusion decode (Chen et al., AAAI 2026, arXiv 2508.04979)."""

from typing import List, Optional, Sequence, Tuple, Union

import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from transformers import PreTrainedModel

from ..bitstream import SODECBitstream, bits_per_pixel, check_image_size, decode_bitstream, encode_bitstream
from ..image_processing import ImageInput, pad_to_multiple, postprocess, to_image_tensors
from ..models.compression_vae import PADDING_MULTIPLE, CompressionVAE
from ..models.fidelity_guidance_encoder import FidelityGuidanceEncoder
from ..schedulers.scheduling_sodec import SODECScheduler
from .pipeline_output import SODECPipelineOutput

DECODERS = ("diffusion", "fidelity")


def realign_cpu_tensors(module: torch.nn.Module, alignment: int = 64) -> None:
    """Copies CPU parameters and buffers that are not ``alignment``-byte aligned into fresh memory.

    Weights loaded from safetensors can sit at unaligned addresses (memory-mapped files), and CPU GEMM
    kernels then take other code paths with different rounding: the same weights would decode to
    slightly different pixels. Re-homing them makes decoding bit-exact across save/load and processes.
    """
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.device.type == "cpu" and tensor.numel() and tensor.data_ptr() % alignment:
            tensor.data = tensor.data.clone()


class SODECPipeline(DiffusionPipeline):
    r"""SODEC: a generative image codec for 0.02–0.07 bpp with a one-step diffusion decoder.

    Components:
        compression_vae ([`CompressionVAE`]): E, H_a, P, entropy models, H_s, T_s (always float32).
        fidelity_guidance ([`FidelityGuidanceEncoder`]): fidelity decoder D_a and guidance projection F_p.
        image_encoder ([`~transformers.PreTrainedModel`]): the frozen ViT F (``CLIPVisionModel``).
        unet ([`UNet2DConditionModel`]): the (LoRA-fused) SD 2.1 UNet, run once.
        vae ([`AutoencoderKL`]): the SD VAE; its decoder D_m turns ŷ_0 into the image.
        scheduler ([`SODECScheduler`]): the single step at ``timestep`` (999).

    Use :meth:`compress` for bytes, :meth:`decompress` for images (``decoder="diffusion"``, or
    ``decoder="fidelity"`` for the fast x̂_f preview without a diffusion step), and ``pipe(image=...)``
    for the round trip.
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
        for module in (compression_vae, fidelity_guidance, image_encoder, unet, vae):
            if isinstance(module, torch.nn.Module):
                realign_cpu_tensors(module)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained`` (a folder or a Hub repo id), plus the short names of the pipelines
        shipped with this package (``"sodec-small"``; see ``sodec_pipeline.shipped_models``)."""
        from ..shipped_models import resolve_model_path

        return super().from_pretrained(resolve_model_path(pretrained_model_name_or_path), **kwargs)

    @classmethod
    def from_pretrained_parts(cls, sd_model, image_encoder, codec=None, config="sodec-sd21-base", **kwargs):
        """Assembles a pipeline from published parts (SD 2.1 ``unet``/``vae``, a CLIP ViT, optionally a
        converted HiFiC codec) and a hub config for the rest. See ``sodec_pipeline.pipelines.assembly``."""
        from .assembly import from_pretrained_parts

        return from_pretrained_parts(cls, sd_model, image_encoder, codec=codec, config=config, **kwargs)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the decoder networks run in (the codec itself stays float32)."""
        return self.unet.dtype

    # ------------------------------------------------------------------ encoding
    @torch.no_grad()
    def compress(self, images: ImageInput) -> List[bytes]:
        """Encodes images into SODEC streams, one ``bytes`` per image (format: docs/bitstream.md).

        Images of any size from 1×1 (up to the format's limits) and any PIL mode; see
        ``sodec_pipeline.image_processing`` for the accepted types. Deterministic: the same image and
        model give the same bytes in any process.
        """
        tensors = to_image_tensors(images)
        device = self._execution_device
        fingerprint = self.compression_vae.fingerprint()
        streams = []
        for image in tensors:
            height, width = image.shape[-2:]
            check_image_size(height, width)
            x = pad_to_multiple(image[None].to(device), PADDING_MULTIPLE)
            coded = self.compression_vae.compress(x)
            y_strings, z_strings = coded["strings"]
            check = coded["entropy_checks"][0]
            streams.append(encode_bitstream(fingerprint, height, width, z_strings[0], y_strings[0], check))
        return streams

    # ------------------------------------------------------------------ decoding
    def parse_bitstreams(
        self, bitstreams: Union[bytes, Sequence[bytes]], max_pixels: Optional[int] = None
    ) -> List[SODECBitstream]:
        """Verifies streams against this model and the pixel budget ``max_pixels`` (``None``:
        ``sodec_pipeline.bitstream.DEFAULT_MAX_PIXELS``); raises ``BitstreamError`` on any problem."""
        if isinstance(bitstreams, (bytes, bytearray, memoryview)):
            bitstreams = [bitstreams]
        fingerprint = self.compression_vae.fingerprint()
        return [decode_bitstream(s, expected_fingerprint=fingerprint, max_pixels=max_pixels) for s in bitstreams]

    def decode_latents(
        self, y_hat: torch.Tensor, z_hat: torch.Tensor, decoder: str = "diffusion"
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(ŷ, ẑ) → (x̂, x̂_f), both (B, 3, H, W) float32 on the [0, 1] scale (unclamped).

        Differentiable (no ``no_grad`` here): the training script uses it. With ``decoder="fidelity"``
        only D_a runs and x̂ is x̂_f.
        """
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}; got {decoder!r}")
        if decoder == "fidelity":
            x_f = self.fidelity_guidance.decode(y_hat).float()
            return x_f, x_f
        noisy_latents = self.compression_vae.synthesize_latents(y_hat, z_hat)
        x_f, guidance = self.fidelity_guidance(y_hat, self.image_encoder)
        latents = self.denoise(noisy_latents, guidance)
        image = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        return (image.float() + 1.0) / 2.0, x_f.float()

    def denoise(self, noisy_latents: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        """The one UNet step: ε = UNet(ŷ_t, t, c_g), then the scheduler's x0."""
        timestep = self.scheduler.config.timestep
        sample = self.scheduler.scale_model_input(noisy_latents.to(self.unet.dtype), timestep)
        t = torch.full((sample.shape[0],), timestep, device=sample.device, dtype=torch.long)
        model_output = self.unet(sample, t, encoder_hidden_states=guidance.to(self.unet.dtype)).sample
        return self.scheduler.step(model_output, timestep, sample).prev_sample

    @torch.no_grad()
    def decompress(
        self,
        bitstreams: Union[bytes, Sequence[bytes]],
        output_type: str = "pil",
        decoder: str = "diffusion",
        max_pixels: Optional[int] = None,
    ) -> SODECPipelineOutput:
        """Decodes SODEC streams to images of their original sizes.

        Args:
            bitstreams: one stream or a list of them.
            output_type: ``"pil"``, ``"np"`` or ``"pt"``.
            decoder: ``"diffusion"`` (the SODEC decode: one UNet step steered by x̂_f, then the SD VAE)
                or ``"fidelity"`` (x̂_f from the fidelity decoder D_a alone: fast, high PSNR, no diffusion).
            max_pixels: the decode budget: a stream announcing more pixels raises ``PixelBudgetError`` before
                anything is decoded (``None``: ``sodec_pipeline.bitstream.DEFAULT_MAX_PIXELS``, 4096 × 4096).
        """
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}; got {decoder!r}")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt'; got {output_type!r}")
        if isinstance(bitstreams, (bytes, bytearray, memoryview)):
            bitstreams = [bitstreams]
        streams = [bytes(s) for s in bitstreams]
        parsed = self.parse_bitstreams(streams, max_pixels=max_pixels)
        device = self._execution_device
        images = []
        for stream in parsed:
            padded_h = -(-stream.height // PADDING_MULTIPLE) * PADDING_MULTIPLE
            padded_w = -(-stream.width // PADDING_MULTIPLE) * PADDING_MULTIPLE
            z_shape = (padded_h // PADDING_MULTIPLE, padded_w // PADDING_MULTIPLE)
            latents = self.compression_vae.decompress(
                [[stream.y_string], [stream.z_string]], z_shape, entropy_checks=[stream.entropy_check]
            )
            y_hat, z_hat = latents["y_hat"].to(device), latents["z_hat"].to(device)
            image, _ = self.decode_latents(y_hat, z_hat, decoder=decoder)
            if tuple(image.shape[-2:]) != (padded_h, padded_w):
                raise ValueError(
                    f"the {decoder} decoder made a {image.shape[-1]}×{image.shape[-2]} image from a stream of a "
                    f"{stream.width}×{stream.height} image (padded {padded_w}×{padded_h}): this pipeline's parts "
                    "do not fit together (a VAE whose scale factor is not 8?)"
                )
            images.append(image[0, :, : stream.height, : stream.width].clamp(0, 1))
        bpp = [bits_per_pixel(s, p.height, p.width) for s, p in zip(streams, parsed)]
        return SODECPipelineOutput(images=postprocess(images, output_type), bitstreams=streams, bpp=bpp)

    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput,
        output_type: str = "pil",
        decoder: str = "diffusion",
        return_dict: bool = True,
        max_pixels: Optional[int] = None,
    ):
        """Round trip: compress to real bytes, then decompress them. The returned ``bitstreams`` equal
        :meth:`compress`'s and ``bpp`` is computed from their lengths."""
        streams = self.compress(image)
        output = self.decompress(streams, output_type=output_type, decoder=decoder, max_pixels=max_pixels)
        if not return_dict:
            return (output.images, output.bitstreams, output.bpp)
        return output
