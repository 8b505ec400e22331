"""The seed inputs of the harnesses, made from the real photographs in tests/assets:

- ``seeds/streams/``: streams of the tiny pipeline (hub_configs/sodec-tiny, seed 0): the two 96×64 photo crops at
  each of its three quality levels, and odd sizes (1×1, 65×17, 130×70: padding, several latent columns); and the
  streams of earlier sodec-small models in tests/assets (other fingerprints, format versions 1 to 3); the same
  crops by the tiny checkerboard layout (hub_configs/sodec-tiny-checkerboard: version 4);
- ``seeds/images/``: a 16×12 crop of a photo in every format and mode the image path meets (PNG, JPEG, TIFF, BMP,
  GIF, WebP, AVIF, PPM/PGM, ICO, TGA; palette, grey, 16-bit, CMYK, alpha, EXIF orientation, animated, multi-page),
  headers announcing sizes beyond the demo's budget and the format's limits, and a text file.

    python tests/fuzz/seeds.py        # writes both folders anew (commit what changes)

The harnesses read these folders at start; a harness that decodes
with the tiny model also makes its streams afresh, in case this machine's tiny model differs from the one that
wrote ``seeds/streams/``.
"""

import io
import struct
import sys
import zlib
from pathlib import Path
from typing import Dict


FUZZ_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(FUZZ_DIR))

from harness import ASSETS, SEEDS, ensure_repository_on_path  # noqa: E402


#: Crops of the tests' photos that the stream seeds are made of: (photo, box, quality levels).
STREAM_CROPS = [
    ("bsds_crop0_96x64.png", None, (1, 2, 3)),
    ("bsds_crop1_96x64.png", None, (1, 2, 3)),
    ("bsds_crop0_96x64.png", (10, 10, 11, 11), (2,)),
    ("bsds_crop1_96x64.png", (3, 5, 68, 22), (2,)),
    ("bsds_481x321.jpg", (200, 100, 330, 170), (1,)),
]


def make_streams(pipe, prefix: str = "tiny") -> Dict[str, bytes]:
    """Streams of ``pipe`` (a tiny pipeline), named ``<prefix>_…``: each crop of :data:`STREAM_CROPS` at each of
    its levels."""
    import PIL.Image

    streams = {}
    for photo, box, levels in STREAM_CROPS:
        with PIL.Image.open(ASSETS / photo) as opened:
            image = opened.convert("RGB")
        if box is not None:
            image = image.crop(box)
        for level in levels:
            (stream,) = pipe.compress(image, quality=level)
            streams[f"{prefix}_{Path(photo).stem}_{image.width}x{image.height}_q{level}.sodec"] = stream
    return streams


def asset_streams() -> Dict[str, bytes]:
    """The streams of the earlier sodec-small models in tests/assets (versions 2 and 3 of the format, and 1)."""
    return {p.name: p.read_bytes() for p in sorted(ASSETS.glob("*.sodec"))}


def _png_announcing(width: int, height: int) -> bytes:
    """A PNG whose header announces ``width × height`` grey pixels and whose data holds one row of them: its
    size is read from the header, its pixels never fit."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(bytes(1 + min(width, 64)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def make_images() -> Dict[str, bytes]:
    """Small image files of many formats and modes (see the module docstring), from a crop of a real photo."""
    import PIL.Image
    import PIL.ImageOps

    with PIL.Image.open(ASSETS / "bsds_crop0_96x64.png") as opened:
        rgb = opened.convert("RGB").crop((40, 20, 56, 32))  # 16×12
    grey = rgb.convert("L")
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # Orientation: turn a quarter right
    variants = {
        "rgb.png": (rgb, "PNG", {}),
        "palette.png": (rgb.quantize(16), "PNG", {}),
        "palette_transparency.png": (rgb.quantize(8), "PNG", {"transparency": 0}),
        "grey.png": (grey, "PNG", {}),
        "grey_alpha.png": (PIL.Image.merge("LA", [grey, grey]), "PNG", {}),
        "rgba.png": (rgb.convert("RGBA"), "PNG", {}),
        "grey16.png": (grey.point(lambda v: v * 257).convert("I;16"), "PNG", {}),
        "bilevel.png": (grey.convert("1"), "PNG", {}),
        "orientation6.png": (rgb, "PNG", {"exif": exif}),
        "rgb.jpg": (rgb, "JPEG", {"quality": 80}),
        "progressive.jpg": (rgb, "JPEG", {"quality": 80, "progressive": True}),
        "grey.jpg": (grey, "JPEG", {}),
        "cmyk.jpg": (rgb.convert("CMYK"), "JPEG", {}),
        "orientation6.jpg": (rgb, "JPEG", {"exif": exif}),
        "rgb.tif": (rgb, "TIFF", {}),
        "lzw.tif": (rgb, "TIFF", {"compression": "tiff_lzw"}),
        "grey16.tif": (grey.point(lambda v: v * 257).convert("I;16"), "TIFF", {}),
        "cmyk.tif": (rgb.convert("CMYK"), "TIFF", {}),
        "float.tif": (grey.convert("F"), "TIFF", {}),
        "two_pages.tif": (rgb, "TIFF", {"save_all": True, "append_images": [grey.convert("RGB")]}),
        "rgb.bmp": (rgb, "BMP", {}),
        "palette.bmp": (rgb.quantize(16), "BMP", {}),
        "one_frame.gif": (rgb.quantize(16), "GIF", {}),
        "animated.gif": (rgb, "GIF", {"save_all": True, "append_images": [PIL.ImageOps.mirror(rgb)], "duration": 50}),
        "lossy.webp": (rgb, "WEBP", {"quality": 50}),
        "lossless.webp": (rgb, "WEBP", {"lossless": True}),
        "animated.webp": (rgb, "WEBP", {"save_all": True, "append_images": [grey.convert("RGB")]}),
        "rgb.avif": (rgb, "AVIF", {"quality": 50}),
        "rgb.ppm": (rgb, "PPM", {}),
        "grey.pgm": (grey, "PPM", {}),
        "icon.ico": (rgb.resize((16, 16)), "ICO", {"sizes": [(16, 16)]}),
        "rgb.tga": (rgb, "TGA", {}),
    }
    files = {}
    for name, (image, format_name, options) in variants.items():
        out = io.BytesIO()
        try:
            image.save(out, format=format_name, **options)
        except (KeyError, OSError, ValueError) as e:  # a format this Pillow build does not write
            print(f"seeds: {name} left out: {e}", file=sys.stderr)
            continue
        files[name] = out.getvalue()
    files["announces_4000x4000.png"] = _png_announcing(4000, 4000)  # above the demo's budget, within the format
    files["announces_16385x16.png"] = _png_announcing(16385, 16)  # beyond the format's limit of 16384 per side
    files["text.txt"] = b"not an image at all\n"
    return files


def write_seeds() -> None:
    ensure_repository_on_path()
    from harness import TINY_CHECKERBOARD_CONFIG, build_tiny_pipeline

    streams = {**make_streams(build_tiny_pipeline()), **asset_streams()}
    streams.update(make_streams(build_tiny_pipeline(TINY_CHECKERBOARD_CONFIG), "tiny-checkerboard"))

    for folder, files in (
        ("images", make_images()),
        ("streams", streams),
    ):
        out = SEEDS / folder
        out.mkdir(parents=True, exist_ok=True)
        for old in out.iterdir():
            old.unlink()
        for name, data in files.items():
            (out / name).write_bytes(data)
        print(f"{out}: {len(files)} files, {sum(map(len, files.values()))} bytes")


if __name__ == "__main__":
    write_seeds()
