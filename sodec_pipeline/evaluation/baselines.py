"""Classical baselines through Pillow — JPEG, WebP, AVIF, JPEG 2000, and JPEG XL where the pillow-jxl-plugin
package is installed — pushed down to SODEC's bitrates.

At 0.02–0.1 bpp even the lowest quality setting of these codecs spends too many bits at full
resolution, so every codec is run over a grid of *variants*:

    quality setting (its lowest few)  ×  downscale factor d  ×  upscale filter

The image is downscaled by 1/d (Lanczos, antialiased), encoded to bytes in memory, decoded, and
upscaled back to the original size (bicubic or Lanczos). The encoding's size is counted at the
ORIGINAL resolution: ``bpp = 8·(bytes + side) / (H·W)`` with ``side = 4`` bytes for any downscaled variant
(the original height and width, 2 × uint16, which the decoder needs to upscale; d = 1 has side = 0).
The two upscale filters share one encoding.

Choosing the "best variant" at a bitrate (rule used by :func:`select_best`): for each image, codec and
target T, among every variant of that codec whose bpp on that image is ≤ T, take the one with the highest
PSNR (ties: lower bpp). This is a per-image oracle choice over the variant grid, so it favours the
baselines. If no variant of a codec fits under T on an image, that codec has no point at T for that image.
MS-SSIM (and LPIPS/DISTS when enabled) are reported for the encoding chosen by PSNR.
"""

import importlib
import io
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import PIL.features
import PIL.Image


#: Target bitrates (bpp) at which each baseline's best variant is chosen, unless others are given.
DEFAULT_TARGETS = (0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2)
#: Downscale factors d (the image is coded at 1/d of its size).
DOWNSCALE_FACTORS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
#: Upscale filters tried after decoding (both on the same encoding).
UPSCALE_FILTERS = {"bicubic": PIL.Image.Resampling.BICUBIC, "lanczos": PIL.Image.Resampling.LANCZOS}
#: Bytes charged to a downscaled variant for the original size (2 × uint16).
RESAMPLE_SIDE_INFO_BYTES = 4


@dataclass(frozen=True)
class Codec:
    """A Pillow codec, its lowest quality settings and how one setting becomes ``Image.save`` options.

    ``feature``: the ``PIL.features`` name of a codec built into Pillow; ``plugin``: instead, the module of a
    Pillow plugin package that registers ``pil_format`` when imported (JPEG XL: ``pillow_jxl``)."""

    name: str
    pil_format: str
    feature: Optional[str]
    settings: Tuple
    setting_label: str
    options: Callable[[object, Tuple[int, int]], dict]
    install_hint: str
    plugin: Optional[str] = None

    def available(self) -> bool:
        if self.plugin is None:
            return bool(PIL.features.check(self.feature))
        try:
            self.load_plugin()
        except ImportError:
            return False
        return self.pil_format in PIL.Image.SAVE and self.pil_format in PIL.Image.OPEN

    def load_plugin(self) -> None:
        """Imports the plugin package (a no-op for codecs built into Pillow); ImportError when it is missing."""
        if self.plugin is not None:
            importlib.import_module(self.plugin)


def _jpeg_options(quality, size):
    return {"quality": int(quality), "optimize": True, "subsampling": "4:2:0"}


def _webp_options(quality, size):
    return {"quality": int(quality), "method": 6}


def _avif_options(quality, size):
    # One encoder thread: libaom's output depends on its thread count, which Pillow otherwise takes from the
    # process's CPU affinity, so that the bytes would change with the machine and with taskset or accelerate.
    return {"quality": int(quality), "speed": 6, "subsampling": "4:2:0", "max_threads": 1}


def _jpegxl_options(quality, size):
    # libjxl's quality (0-100, mapped to a Butteraugli distance: 0 is the largest distance, 25); effort 7 (the
    # default); one thread, as for AVIF; never the lossless recompression of a JPEG file (the image is pixels here).
    return {"quality": int(quality), "effort": 7, "num_threads": 1, "lossless_jpeg": False}


def _jpeg2000_options(coded_bpp, size):
    # The rate is set as a compression ratio of the 24-bit image at its coded size; a raw codestream
    # (no JP2 boxes); the irreversible 9/7 wavelet; as many resolution levels (≤ 6) as the size allows.
    levels = max(1, min(6, int(math.floor(math.log2(max(1, min(size))))) + 1))
    return {
        "quality_mode": "rates",
        "quality_layers": [24.0 / float(coded_bpp)],
        "irreversible": True,
        "no_jp2": True,
        "num_resolutions": levels,
    }


CODECS: Dict[str, Codec] = {
    "jpeg": Codec(
        "jpeg", "JPEG", "jpg", (1, 2, 3, 5, 8, 12, 20, 30, 50), "quality", _jpeg_options,
        "Pillow built with libjpeg (every Pillow wheel has it)",
    ),
    "webp": Codec(
        "webp", "WEBP", "webp", (0, 5, 10, 20, 30, 50, 70), "quality", _webp_options,
        "Pillow built with libwebp (the PyPI Pillow wheels have it; from source: apt-get install libwebp-dev)",
    ),
    "avif": Codec(
        "avif", "AVIF", "avif", (0, 5, 10, 20, 30, 45, 60), "quality", _avif_options,
        "Pillow >= 11.2 wheels from PyPI include libavif; older Pillow: pip install pillow-avif-plugin",
    ),
    "jpeg2000": Codec(
        "jpeg2000", "JPEG2000", "jpg_2000", (0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.2, 1.6), "coded_bpp", _jpeg2000_options,
        "Pillow built with OpenJPEG (the PyPI Pillow wheels have it; from source: apt-get install libopenjp2-7-dev)",
    ),
    "jpegxl": Codec(
        "jpegxl", "JXL", None, (0, 5, 10, 20, 30, 45, 60), "quality", _jpegxl_options,
        "pip install pillow-jxl-plugin; in a checkout the [jpegxl] and [test] extras have it", "pillow_jxl",
    ),
}  # fmt: skip


@dataclass
class Variant:
    """One baseline decode of one image: a codec setting, a downscale factor and an upscale filter."""

    codec: str
    setting: float
    downscale: float
    upscale_filter: str
    num_bytes: int
    bpp: float
    psnr: float
    coded_size: Tuple[int, int]  # (width, height) of the coded image

    def record(self) -> dict:
        return {
            "codec": self.codec,
            "setting": self.setting,
            "downscale": self.downscale,
            "upscale_filter": self.upscale_filter,
            "bytes": self.num_bytes,
            "bpp": self.bpp,
            "psnr": self.psnr,
            "coded_width": self.coded_size[0],
            "coded_height": self.coded_size[1],
        }


def coded_size(width: int, height: int, downscale: float) -> Tuple[int, int]:
    return max(1, int(round(width / downscale))), max(1, int(round(height / downscale)))


def encode_decode(image: PIL.Image.Image, codec: Codec, setting) -> Tuple[int, PIL.Image.Image]:
    """Encodes with Pillow into memory and decodes again: (number of bytes, decoded RGB image)."""
    codec.load_plugin()
    buffer = io.BytesIO()
    image.save(buffer, codec.pil_format, **codec.options(setting, image.size))
    data = buffer.getvalue()
    with PIL.Image.open(io.BytesIO(data)) as decoded:
        decoded.load()
        return len(data), decoded.convert("RGB")


def run_codec(
    reference: np.ndarray,
    codec: Codec,
    downscale_factors: Sequence[float] = DOWNSCALE_FACTORS,
    upscale_filters: Sequence[str] = tuple(UPSCALE_FILTERS),
    failures: Optional[List[str]] = None,
) -> List[Variant]:
    """Every variant of ``codec`` on one image (uint8 RGB, H×W×3), with bpp at the original size and PSNR.

    A variant that the codec refuses (e.g. an image too small for it) is skipped and described in
    ``failures`` if a list is given.
    """
    from ..metrics import psnr  # imports torch: not at module level, so that `sodec eval --help` is fast

    height, width = reference.shape[:2]
    original = PIL.Image.fromarray(reference)
    variants: List[Variant] = []
    for downscale in downscale_factors:
        size = coded_size(width, height, downscale)
        if downscale != 1.0 and size == (width, height):
            continue
        small = original if size == (width, height) else original.resize(size, PIL.Image.Resampling.LANCZOS)
        side = 0 if size == (width, height) else RESAMPLE_SIDE_INFO_BYTES
        for setting in codec.settings:
            try:
                num_bytes, decoded = encode_decode(small, codec, setting)
            except (OSError, ValueError, RuntimeError) as e:
                if failures is not None:
                    failures.append(
                        f"{codec.name} {codec.setting_label}={setting} at 1/{downscale:g} ({size[0]}x{size[1]}): {e}"
                    )
                continue
            bpp = 8.0 * (num_bytes + side) / (height * width)
            filters = upscale_filters if decoded.size != (width, height) else upscale_filters[:1]
            for name in filters:
                restored = (
                    decoded
                    if decoded.size == (width, height)
                    else decoded.resize((width, height), UPSCALE_FILTERS[name])
                )
                array = np.asarray(restored, dtype=np.uint8)
                variants.append(
                    Variant(codec.name, setting, downscale, name if decoded.size != (width, height) else "none",
                            num_bytes + side, bpp, psnr(reference, array), size)
                )  # fmt: skip
    return variants


def reconstruct(reference: np.ndarray, variant: Variant) -> np.ndarray:
    """The decoded image (uint8 RGB at the original size) of one variant, made again (the encoders are
    deterministic; the byte count is checked), so that the grid search keeps no images in memory."""
    height, width = reference.shape[:2]
    codec = CODECS[variant.codec]
    original = PIL.Image.fromarray(reference)
    small = (
        original
        if variant.coded_size == (width, height)
        else original.resize(variant.coded_size, PIL.Image.Resampling.LANCZOS)
    )
    num_bytes, decoded = encode_decode(small, codec, variant.setting)
    side = 0 if variant.coded_size == (width, height) else RESAMPLE_SIDE_INFO_BYTES
    if num_bytes + side != variant.num_bytes:
        raise RuntimeError(
            f"{codec.name} is not deterministic: {num_bytes + side} bytes now, {variant.num_bytes} before"
        )
    if decoded.size != (width, height):
        decoded = decoded.resize((width, height), UPSCALE_FILTERS[variant.upscale_filter])
    return np.asarray(decoded, dtype=np.uint8)


def select_best(variants: Sequence[Variant], target_bpp: float) -> Optional[Variant]:
    """The variant with the highest PSNR among those at ≤ ``target_bpp`` (ties: fewer bits); None if none fits."""
    fitting = [v for v in variants if v.bpp <= target_bpp + 1e-12]
    if not fitting:
        return None
    return max(fitting, key=lambda v: (v.psnr, -v.bpp))


def codec_availability() -> Dict[str, bool]:
    return {name: codec.available() for name, codec in CODECS.items()}
