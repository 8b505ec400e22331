"""Classical baselines through Pillow — JPEG, WebP, AVIF, JPEG 2000, and JPEG XL where the pillow-jxl-plugin
package is installed — pushed down to SODEC's bitrates.

A :class:`Codec` is its settings and an encode and a decode function, so a codec outside Pillow (another
library, a learned codec) fits as well: add it to :data:`CODECS` and ``sodec eval --codecs`` offers it.

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
    """A baseline codec: its lowest settings, and the two functions that code an image at one of them.

    ``encode(image, setting)`` turns an RGB PIL image into the bytes the codec writes at ``setting``;
    ``decode(data)`` turns them back into an image (any mode: it is converted to RGB). Any codec fits: a format
    of Pillow or of a Pillow plugin (:func:`pillow_codec`), or one with its own library or networks.
    ``available()``: whether it can run here (otherwise it is left out with ``install_hint``); ``library``:
    what codes it, as the report names it (``Pillow 11.3.0``)."""

    name: str
    settings: Tuple
    setting_label: str
    encode: Callable[[PIL.Image.Image, object], bytes]
    decode: Callable[[bytes], PIL.Image.Image]
    available: Callable[[], bool]
    install_hint: str
    library: str


def pillow_codec(
    name: str,
    pil_format: str,
    settings: Tuple,
    setting_label: str,
    options: Callable[[object, Tuple[int, int]], dict],
    install_hint: str,
    feature: Optional[str] = None,
    plugin: Optional[str] = None,
) -> Codec:
    """A :class:`Codec` through Pillow's ``Image.save`` and ``Image.open``: ``options(setting, size)`` gives the
    save options of one setting. ``feature``: the ``PIL.features`` name of a codec built into Pillow; ``plugin``:
    instead, the module of a Pillow plugin package that registers ``pil_format`` when imported (JPEG XL:
    ``pillow_jxl``); it is imported when the codec first runs."""

    def load_plugin() -> None:
        if plugin is not None:
            importlib.import_module(plugin)

    def available() -> bool:
        if plugin is None:
            return bool(PIL.features.check(feature))
        try:
            load_plugin()
        except ImportError:
            return False
        return pil_format in PIL.Image.SAVE and pil_format in PIL.Image.OPEN

    def encode(image: PIL.Image.Image, setting) -> bytes:
        load_plugin()
        buffer = io.BytesIO()
        image.save(buffer, pil_format, **options(setting, image.size))
        return buffer.getvalue()

    def decode(data: bytes) -> PIL.Image.Image:
        load_plugin()
        with PIL.Image.open(io.BytesIO(data)) as decoded:
            decoded.load()
            return decoded.convert("RGB")

    library = f"Pillow {PIL.__version__}" + (f" and its plugin {plugin}" if plugin else "")
    return Codec(name, settings, setting_label, encode, decode, available, install_hint, library)


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
    "jpeg": pillow_codec(
        "jpeg", "JPEG", (1, 2, 3, 5, 8, 12, 20, 30, 50), "quality", _jpeg_options,
        "Pillow built with libjpeg (every Pillow wheel has it)", feature="jpg",
    ),
    "webp": pillow_codec(
        "webp", "WEBP", (0, 5, 10, 20, 30, 50, 70), "quality", _webp_options,
        "Pillow built with libwebp (the PyPI Pillow wheels have it; from source: apt-get install libwebp-dev)",
        feature="webp",
    ),
    "avif": pillow_codec(
        "avif", "AVIF", (0, 5, 10, 20, 30, 45, 60), "quality", _avif_options,
        "Pillow >= 11.2 wheels from PyPI include libavif; older Pillow: pip install pillow-avif-plugin",
        feature="avif",
    ),
    "jpeg2000": pillow_codec(
        "jpeg2000", "JPEG2000", (0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.2, 1.6), "coded_bpp", _jpeg2000_options,
        "Pillow built with OpenJPEG (the PyPI Pillow wheels have it; from source: apt-get install libopenjp2-7-dev)",
        feature="jpg_2000",
    ),
    "jpegxl": pillow_codec(
        "jpegxl", "JXL", (0, 5, 10, 20, 30, 45, 60), "quality", _jpegxl_options,
        "pip install pillow-jxl-plugin; in a checkout the [jpegxl] and [test] extras have it", plugin="pillow_jxl",
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


def code_at_size(
    original: PIL.Image.Image, codec: Codec, setting, size: Tuple[int, int]
) -> Tuple[int, PIL.Image.Image]:
    """The downscale rule: ``original`` resized to ``size`` (Lanczos) unless that is its own size, coded at
    ``setting`` and decoded. Returns the bytes charged at the original size (the codec's, plus
    :data:`RESAMPLE_SIDE_INFO_BYTES` when downscaled) and the decoded RGB image at ``size``."""
    downscaled = size != original.size
    small = original.resize(size, PIL.Image.Resampling.LANCZOS) if downscaled else original
    data = codec.encode(small, setting)
    decoded = codec.decode(data)
    decoded = decoded if decoded.mode == "RGB" else decoded.convert("RGB")
    return len(data) + (RESAMPLE_SIDE_INFO_BYTES if downscaled else 0), decoded


def upscale(decoded: PIL.Image.Image, size: Tuple[int, int], upscale_filter: str) -> np.ndarray:
    """``decoded`` back at the original ``size`` (uint8 RGB) with one of :data:`UPSCALE_FILTERS` (not used when the
    sizes agree)."""
    restored = decoded if decoded.size == size else decoded.resize(size, UPSCALE_FILTERS[upscale_filter])
    return np.asarray(restored, dtype=np.uint8)


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
        for setting in codec.settings:
            try:
                num_bytes, decoded = code_at_size(original, codec, setting, size)
            except (OSError, ValueError, RuntimeError) as e:
                if failures is not None:
                    failures.append(
                        f"{codec.name} {codec.setting_label}={setting} at 1/{downscale:g} ({size[0]}x{size[1]}): {e}"
                    )
                continue
            bpp = 8.0 * num_bytes / (height * width)
            resized = decoded.size != (width, height)
            for name in upscale_filters if resized else upscale_filters[:1]:
                variants.append(
                    Variant(codec.name, setting, downscale, name if resized else "none", num_bytes, bpp,
                            psnr(reference, upscale(decoded, (width, height), name)), size)
                )  # fmt: skip
    return variants


def reconstruct(reference: np.ndarray, variant: Variant) -> np.ndarray:
    """The decoded image (uint8 RGB at the original size) of one variant, made again (the encoders are
    deterministic; the byte count is checked), so that the grid search keeps no images in memory."""
    height, width = reference.shape[:2]
    codec = CODECS[variant.codec]
    num_bytes, decoded = code_at_size(PIL.Image.fromarray(reference), codec, variant.setting, variant.coded_size)
    if num_bytes != variant.num_bytes:
        raise RuntimeError(f"{codec.name} is not deterministic: {num_bytes} bytes now, {variant.num_bytes} before")
    return upscale(decoded, (width, height), variant.upscale_filter)


def select_best(variants: Sequence[Variant], target_bpp: float) -> Optional[Variant]:
    """The variant with the highest PSNR among those at ≤ ``target_bpp`` (ties: fewer bits); None if none fits."""
    fitting = [v for v in variants if v.bpp <= target_bpp + 1e-12]
    if not fitting:
        return None
    return max(fitting, key=lambda v: (v.psnr, -v.bpp))


def codec_availability() -> Dict[str, bool]:
    return {name: codec.available() for name, codec in CODECS.items()}
