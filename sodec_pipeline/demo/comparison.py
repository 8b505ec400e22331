"""What the demo page shows for one photo, without any UI: the SODEC stream, both of its decodes, and JPEG,
WebP and AVIF each at its best variant at or under the stream's bytes, with their figures.

The baselines are chosen as ``sodec eval`` chooses them (:mod:`sodec_pipeline.evaluation.baselines`): every
quality setting × downscale factor × upscale filter, the highest PSNR at ≤ the SODEC stream's bpp.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import PIL.Image

from ..evaluation import baselines as baselines_lib
from ..orientation import upright_size
from ..pipelines.coding import DECODERS


#: The classical codecs the demo shows beside SODEC.
DEMO_CODECS = ("jpeg", "webp", "avif")
#: The largest photo the demo takes, in pixels (about 1920 × 1080); the page states it.
DEMO_MAX_PIXELS = 1920 * 1080


class DemoInputError(ValueError):
    """A photo or stream the demo cannot take; the message is shown in the page."""


@dataclass
class Decode:
    """One decoded image and its figures (PSNR in dB; LPIPS and DISTS when their weights are installed)."""

    name: str
    image: PIL.Image.Image
    num_bytes: int
    bpp: float
    metrics: Dict[str, float] = field(default_factory=dict)


@dataclass
class Comparison:
    """The SODEC stream of a photo and every decode shown for it, SODEC's first."""

    stream: bytes
    width: int
    height: int
    decodes: List[Decode]
    notes: List[str] = field(default_factory=list)

    def table(self) -> List[List]:
        """One row per decode: name, bytes, bpp, then each metric (rounded for display)."""
        names = self.metric_names()
        return [
            [d.name, d.num_bytes, round(d.bpp, 4)] + [round(d.metrics[m], 3 if m != "psnr" else 2) for m in names]
            for d in self.decodes
        ]

    def metric_names(self) -> List[str]:
        """The figures of every decode, in order: ``psnr``, then ``lpips`` and ``dists`` when they are loaded."""
        return list(self.decodes[0].metrics) if self.decodes else []


def check_photo_size(width: int, height: int, max_pixels: int = DEMO_MAX_PIXELS) -> None:
    """Raises :class:`DemoInputError` for a photo above the demo's pixel budget."""
    if width * height > max_pixels:
        raise DemoInputError(
            f"the photo is {width}×{height} ({width * height / 1e6:.1f} Mpx); this demo takes photos up to "
            f"{max_pixels / 1e6:.1f} Mpx (sodec compress has no such limit)"
        )


def check_photo_size_from_header(path: Union[str, Path], max_pixels: int = DEMO_MAX_PIXELS) -> None:
    """Refuses a photo above the budget from its header, before its pixels are decoded (an unreadable file
    is left to :func:`read_photo`, which says why). The size is the photo's as seen, the right way up."""
    try:
        with PIL.Image.open(path) as image:
            size = upright_size(image)
    except Exception:  # noqa: BLE001
        return
    check_photo_size(*size, max_pixels)


def read_photo(path: Union[str, Path], max_pixels: int = DEMO_MAX_PIXELS) -> np.ndarray:
    """An uploaded photo's pixels, uint8 RGB (H, W, 3), the right way up, read as ``sodec eval`` reads images;
    :class:`DemoInputError` for a photo above ``max_pixels`` (from its header first), and
    :class:`~sodec_pipeline.image_files.UnreadableImageError` for a file that is no readable image."""
    from ..evaluation.evaluate import load_image

    check_photo_size_from_header(path, max_pixels)
    return load_image(Path(path))


def figures(reference: np.ndarray, decoded: np.ndarray, perceptual: Dict[str, Callable]) -> Dict[str, float]:
    from ..metrics import psnr

    values = {"psnr": psnr(reference, decoded)}
    for name, metric in perceptual.items():
        values[name] = metric(reference, decoded)
    return values


def sodec_decode_name(decoder: str, realism: Optional[float] = None) -> str:
    """A SODEC decode's name in the demo: "SODEC diffusion", "SODEC fidelity", or "SODEC realism β"."""
    return f"SODEC {decoder}" if realism is None else f"SODEC realism {realism:g}"


def compare(
    pipe,
    reference: np.ndarray,
    perceptual: Optional[Dict[str, Callable]] = None,
    codecs=DEMO_CODECS,
    progress: Callable[[float, str], None] = lambda fraction, what: None,
    max_pixels: int = DEMO_MAX_PIXELS,
    quality: Optional[int] = None,
    realism: Optional[float] = None,
) -> Comparison:
    """Compresses ``reference`` (uint8 RGB, H × W × 3) at quality level ``quality`` (``None``: the model's
    default), decodes the stream both ways (the diffusion decode at ``realism``, ``None``: the model's default;
    named "SODEC realism β" when β is given), and runs each baseline codec at ≤ the stream's bytes.
    ``progress(fraction, what)`` is called before each step; a photo of more than ``max_pixels`` raises
    :class:`DemoInputError`."""
    perceptual = perceptual or {}
    height, width = reference.shape[:2]
    check_photo_size(width, height, max_pixels)
    progress(0.0, "compressing")
    (stream,) = pipe.compress(PIL.Image.fromarray(reference), quality=quality)
    bpp = 8.0 * len(stream) / (width * height)
    decodes, notes = [], []
    for i, decoder in enumerate(DECODERS):
        progress(0.1 + 0.2 * i, f"{decoder} decode")
        decoder_realism = realism if decoder == "diffusion" else None
        image = pipe.decompress(stream, decoder=decoder, realism=decoder_realism).images[0]
        name = sodec_decode_name(decoder, decoder_realism)
        decodes.append(Decode(name, image, len(stream), bpp, figures(reference, np.asarray(image), perceptual)))
    available = baselines_lib.codec_availability()
    for i, name in enumerate(codecs):
        progress(0.5 + 0.5 * i / len(codecs), f"{name.upper()} at the same bytes")
        if not available.get(name):
            notes.append(f"{name}: not available in this Pillow build")
            continue
        variants = baselines_lib.run_codec(reference, baselines_lib.CODECS[name])
        best = baselines_lib.select_best(variants, bpp)
        if best is None:
            notes.append(f"{name}: no setting fits in {len(stream)} bytes")
            continue
        decoded = baselines_lib.reconstruct(reference, best)
        decodes.append(
            Decode(name.upper() if name != "webp" else "WebP", PIL.Image.fromarray(decoded), best.num_bytes, best.bpp,
                   figures(reference, decoded, perceptual))
        )  # fmt: skip
    progress(1.0, "done")
    return Comparison(stream, width, height, decodes, notes)
