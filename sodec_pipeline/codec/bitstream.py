"""The SODEC bitstream: one image per stream, specified in docs/bitstream.md.

Layout (versions 3 and 4)::

    magic            2 bytes   b"S\\xdc"
    version          1 byte    3 (mean-scale hyperprior) or 4 (checkerboard context model)
    fingerprint      4 bytes   CompressionVAE.fingerprint() of the model that wrote it (stream_checks.py)
    entropy check    2 bytes   the entropy check of the image's entropy parameters (stream_checks.py)
    quality          1 byte    the quality level the image was coded at, 1 … 255 (the model's
                               quantization_steps[quality - 1] is Δ)
    height           varint    original image height, 1 … MAX_IMAGE_SIDE
    width            varint    original image width,  1 … MAX_IMAGE_SIDE, height·width ≤ MAX_IMAGE_PIXELS
    z_length         varint    length of the z string in bytes
    z string         z_length bytes (a whole number of 32-bit words)
    y string         the bytes up to the checksum (a whole number of 32-bit words)
    crc32            4 bytes   CRC-32 (zlib) of every byte before it, little-endian

The version says how the strings are coded, i.e. which entropy model wrote them (``entropy_models.py``): 3 the
mean-scale hyperprior, 4 the checkerboard context model, whose y string holds its two passes (anchors, then the
other half). Version 2 (no quality byte, hyperprior) is still read, as quality 1. Every check happens before
anything proportional to the announced image size is allocated, and :func:`decode_bitstream` refuses images above
the caller's pixel budget (``max_pixels``) and, given the versions the decoding model reads, streams of another
entropy model.
"""

import struct
import zlib
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

from .errors import BitstreamError, PixelBudgetError
from .stream_checks import ENTROPY_CHECK_SIZE, FINGERPRINT_SIZE
from .stream_versions import (  # noqa: F401  (FORMAT_VERSION and CHECKERBOARD_FORMAT_VERSION are read from here too)
    CHECKERBOARD_FORMAT_VERSION,
    FORMAT_VERSION,
    READABLE_VERSIONS,
    VERSION_ENTROPY_MODELS,
    WRITABLE_VERSIONS,
)


MAGIC = b"S\xdc"
CHECKSUM_SIZE = 4
#: Words of the entropy coder: every z and y string is a whole number of them.
WORD_SIZE = 4
#: Largest height or width a stream may announce (and the pipeline will compress).
MAX_IMAGE_SIDE = 16384
#: Largest number of pixels a stream may announce (and the pipeline will compress): 16384², 256 Mpx.
MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE
#: Default decode budget (like Pillow's ``Image.MAX_IMAGE_PIXELS``): streams announcing more pixels are
#: refused before any network runs unless the caller raises ``max_pixels`` (API) / ``--max-pixels`` (CLI).
#: 4096 × 4096. Read at call time, so ``sodec_pipeline.codec.bitstream.DEFAULT_MAX_PIXELS = n`` changes it.
DEFAULT_MAX_PIXELS = 1 << 24
_MAX_VARINT_BYTES = 5
QUALITY_SIZE = 1
_MIN_STREAM_SIZE = len(MAGIC) + 1 + FINGERPRINT_SIZE + ENTROPY_CHECK_SIZE + 3 + CHECKSUM_SIZE  # version 2
_OLD_VERSIONS = {
    1: "version 1 streams (sodec-pipeline 0.1) were coded with compressai's rANS coder and float entropy "
    "parameters that other machines cannot reproduce; re-encode the image with this version",
}


@dataclass(frozen=True)
class SODECBitstream:
    """The parsed content of one stream."""

    fingerprint: bytes
    height: int
    width: int
    z_string: bytes
    y_string: bytes
    entropy_check: bytes = bytes(ENTROPY_CHECK_SIZE)
    version: int = FORMAT_VERSION
    quality: int = 1

    @property
    def num_pixels(self) -> int:
        return self.height * self.width


def check_image_size(height: int, width: int) -> None:
    """Raises ``ValueError`` if an image of this size cannot be represented in a stream."""
    if height < 1 or width < 1:
        raise ValueError(f"image of size {width}×{height} (W×H) is empty")
    if height > MAX_IMAGE_SIDE or width > MAX_IMAGE_SIDE or height * width > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"image of size {width}×{height} (W×H) is beyond the limits of the format "
            f"(sides ≤ {MAX_IMAGE_SIDE}, at most {MAX_IMAGE_PIXELS} pixels)"
        )


def _write_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: memoryview, pos: int, end: int, what: str) -> Tuple[int, int]:
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos >= end:
            raise BitstreamError(f"stream is truncated: it ends inside the header field '{what}'")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise BitstreamError(f"header field '{what}' is malformed (varint longer than {_MAX_VARINT_BYTES} bytes)")


def check_pixel_budget(height: int, width: int, max_pixels: Optional[int]) -> None:
    """Raises :class:`PixelBudgetError` when an image of ``height × width`` is above ``max_pixels``
    (``None``: :data:`DEFAULT_MAX_PIXELS`)."""
    budget = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    if height * width > budget:
        raise PixelBudgetError(
            f"stream announces a {width}×{height} image ({height * width} pixels), above this decoder's budget "
            f"of {budget} pixels; to decode it, raise the budget: max_pixels={height * width} "
            "(SODECPipeline.decompress) or --max-pixels (sodec decompress)"
        )


def encode_bitstream(
    fingerprint: bytes,
    height: int,
    width: int,
    z_string: bytes,
    y_string: bytes,
    entropy_check: bytes,
    quality: int = 1,
    version: int = FORMAT_VERSION,
) -> bytes:
    """Packs one image's strings, coded at quality level ``quality`` (1 … 255) by the entropy model whose streams
    are ``version`` (:data:`WRITABLE_VERSIONS`; the codec's ``stream_version``), into a stream."""
    if len(fingerprint) != FINGERPRINT_SIZE:
        raise ValueError(f"fingerprint must be {FINGERPRINT_SIZE} bytes")
    if len(entropy_check) != ENTROPY_CHECK_SIZE:
        raise ValueError(f"entropy check must be {ENTROPY_CHECK_SIZE} bytes")
    if not z_string or len(z_string) % WORD_SIZE or len(y_string) % WORD_SIZE:
        raise ValueError(f"z and y strings must be whole numbers of {WORD_SIZE}-byte words (z non-empty)")
    if not 1 <= int(quality) <= 255:
        raise ValueError(f"quality must be a level from 1 to 255, got {quality}")
    if version not in WRITABLE_VERSIONS:
        raise ValueError(f"version must be one of {WRITABLE_VERSIONS}, got {version}")
    check_image_size(height, width)
    body = b"".join(
        [
            MAGIC,
            bytes([version]),
            fingerprint,
            entropy_check,
            bytes([int(quality)]),
            _write_varint(height),
            _write_varint(width),
            _write_varint(len(z_string)),
            z_string,
            y_string,
        ]
    )
    return body + struct.pack("<I", zlib.crc32(body))


def decode_bitstream(
    data: Union[bytes, bytearray, memoryview],
    expected_fingerprint: Optional[bytes] = None,
    max_pixels: Optional[int] = None,
    model_versions: Optional[Sequence[int]] = None,
) -> SODECBitstream:
    """Parses and verifies a stream. Raises :class:`BitstreamError` saying what is wrong, and
    :class:`PixelBudgetError` for an image above ``max_pixels`` (``None``: :data:`DEFAULT_MAX_PIXELS`).
    ``model_versions``: the versions the decoding model's entropy model reads (its ``readable_stream_versions``);
    a stream of another version was written by another entropy model and is refused saying which."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"a bitstream must be bytes, got {type(data).__name__}")
    data = memoryview(bytes(data))
    if len(data) < len(MAGIC) or bytes(data[: len(MAGIC)]) != MAGIC:
        if len(data) == 0:
            raise BitstreamError("stream is empty")
        raise BitstreamError("not a SODEC stream (bad magic bytes)")
    if len(data) < _MIN_STREAM_SIZE:
        raise BitstreamError(f"stream is truncated: {len(data)} bytes is shorter than the smallest header")
    version = data[len(MAGIC)]
    if version in _OLD_VERSIONS:
        raise BitstreamError(f"unsupported stream version {version}: {_OLD_VERSIONS[version]}")
    if version not in READABLE_VERSIONS:
        raise BitstreamError(
            f"unsupported stream version {version} (this package reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    end = len(data) - CHECKSUM_SIZE
    (stored_crc,) = struct.unpack("<I", data[end:])
    if zlib.crc32(data[:end]) != stored_crc:
        raise BitstreamError("stream is corrupted or truncated: checksum mismatch")
    pos = len(MAGIC) + 1
    fingerprint = bytes(data[pos : pos + FINGERPRINT_SIZE])
    pos += FINGERPRINT_SIZE
    entropy_check = bytes(data[pos : pos + ENTROPY_CHECK_SIZE])
    pos += ENTROPY_CHECK_SIZE
    quality = 1
    if version >= 3:
        quality = data[pos]
        pos += QUALITY_SIZE
        if quality == 0:
            raise BitstreamError("header field 'quality' is 0; levels start at 1")
    height, pos = _read_varint(data, pos, end, "height")
    width, pos = _read_varint(data, pos, end, "width")
    try:
        check_image_size(height, width)
    except ValueError as e:
        raise BitstreamError(f"header announces an unsupported image size: {e}") from None
    z_length, pos = _read_varint(data, pos, end, "z_length")
    if z_length == 0 or pos + z_length >= end:
        raise BitstreamError(
            f"header is inconsistent: z string of {z_length} bytes does not leave room for a y string "
            f"in a payload of {end - pos} bytes"
        )
    if z_length % WORD_SIZE or (end - pos - z_length) % WORD_SIZE:
        raise BitstreamError(
            f"header is inconsistent: the z string ({z_length} bytes) and the y string ({end - pos - z_length} "
            f"bytes) must be whole numbers of {WORD_SIZE}-byte words"
        )
    if model_versions is not None and version not in model_versions:
        raise BitstreamError(
            f"stream version {version} holds strings of {VERSION_ENTROPY_MODELS[version]}, and this model codes "
            f"with {VERSION_ENTROPY_MODELS[max(model_versions)]} (versions {', '.join(map(str, model_versions))}): "
            "decode it with the model that wrote it"
        )
    if expected_fingerprint is not None and fingerprint != expected_fingerprint:
        raise BitstreamError(
            f"stream was written by another model (fingerprint {fingerprint.hex()}, "
            f"this model is {expected_fingerprint.hex()})"
        )
    check_pixel_budget(height, width, max_pixels)
    z_string = bytes(data[pos : pos + z_length])
    y_string = bytes(data[pos + z_length : end])
    return SODECBitstream(fingerprint, height, width, z_string, y_string, entropy_check, version, quality)


def bits_per_pixel(stream: bytes, height: int, width: int) -> float:
    """8 × len(stream) / (height × width): the rate of a stream, from its length."""
    return 8.0 * len(stream) / (height * width)
