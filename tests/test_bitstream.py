import struct
import zlib

import pytest

from sodec_pipeline import (
    DEFAULT_MAX_PIXELS,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    BitstreamError,
    PixelBudgetError,
    decode_bitstream,
    encode_bitstream,
)
from sodec_pipeline.codec.bitstream import MAGIC, _write_varint, bits_per_pixel


FP = b"\x01\x02\x03\x04"
CHECK = b"\xab\xcd"
V2 = b"\x02"


def _stream(height=321, width=481, z=b"zzzz", y=b"y" * 40, fp=FP):
    return encode_bitstream(fp, height, width, z, y, CHECK)


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_round_trip_and_overhead():
    s = _stream()
    parsed = decode_bitstream(s, expected_fingerprint=FP)
    assert (
        parsed.height,
        parsed.width,
        parsed.z_string,
        parsed.y_string,
        parsed.fingerprint,
        parsed.entropy_check,
    ) == (321, 481, b"zzzz", b"y" * 40, FP, CHECK)
    # magic 2 + version 1 + fingerprint 4 + entropy check 2 + quality 1 + varints (2 + 2 + 1) + crc 4 = 19 bytes
    assert len(s) - 44 == 19 and parsed.quality == 1
    assert bits_per_pixel(s, 321, 481) == 8 * len(s) / (321 * 481)


def test_error_is_a_value_error():
    assert issubclass(BitstreamError, ValueError)


@pytest.mark.parametrize("cut", range(0, 62))
def test_every_truncation_is_detected(cut):
    s = _stream()
    with pytest.raises(BitstreamError):
        decode_bitstream(s[:cut])


def test_every_single_byte_corruption_is_detected():
    s = bytearray(_stream())
    for i in range(len(s)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(s)
            bad[i] ^= flip
            with pytest.raises(BitstreamError):
                decode_bitstream(bytes(bad), expected_fingerprint=FP)


def test_appended_garbage_is_detected():
    with pytest.raises(BitstreamError, match="checksum"):
        decode_bitstream(_stream() + b"\x00")


def test_messages_say_what_is_wrong():
    s = _stream()
    with pytest.raises(BitstreamError, match="empty"):
        decode_bitstream(b"")
    with pytest.raises(BitstreamError, match="magic"):
        decode_bitstream(b"\x89PNG\r\n\x1a\n" + s)
    with pytest.raises(BitstreamError, match="version"):
        decode_bitstream(_with_crc(MAGIC + b"\x07" + s[3:-4]))
    with pytest.raises(BitstreamError, match="version 1 .*re-encode"):
        decode_bitstream(_with_crc(MAGIC + b"\x01" + s[3:-4]))
    with pytest.raises(BitstreamError, match="another model"):
        decode_bitstream(s, expected_fingerprint=b"\x00\x00\x00\x00")
    with pytest.raises(BitstreamError, match="must be bytes"):
        decode_bitstream("not bytes")


@pytest.mark.parametrize(
    "height,width",
    [
        (MAX_IMAGE_SIDE + 1, 10),
        (10, 1 << 30),
        (0, 5),
        (5, 0),
        (MAX_IMAGE_SIDE, MAX_IMAGE_PIXELS // MAX_IMAGE_SIDE + 1),
    ],
)
def test_absurd_sizes_with_valid_checksum_are_refused(height, width):
    body = (
        MAGIC + V2 + FP + CHECK + _write_varint(height) + _write_varint(width) + _write_varint(4) + b"zzzz" + b"yyyy"
    )
    with pytest.raises(BitstreamError, match="image size"):
        decode_bitstream(_with_crc(body), expected_fingerprint=FP)


def test_overlong_varint_and_inconsistent_lengths():
    body = MAGIC + V2 + FP + CHECK + b"\xff" * 8 + b"\x01" + b"payload"
    with pytest.raises(BitstreamError, match="varint"):
        decode_bitstream(_with_crc(body))
    body = MAGIC + V2 + FP + CHECK + _write_varint(8) + _write_varint(8) + _write_varint(500) + b"short"
    with pytest.raises(BitstreamError, match="inconsistent"):
        decode_bitstream(_with_crc(body))
    body = MAGIC + V2 + FP + CHECK + _write_varint(8) + _write_varint(8) + _write_varint(0) + b"short"
    with pytest.raises(BitstreamError, match="inconsistent"):
        decode_bitstream(_with_crc(body))
    body = MAGIC + V2 + FP + CHECK + _write_varint(8) + _write_varint(8) + _write_varint(3) + b"zzz" + b"yyyy"
    with pytest.raises(BitstreamError, match="words"):
        decode_bitstream(_with_crc(body))
    body = MAGIC + V2 + FP + CHECK + _write_varint(8) + _write_varint(8) + _write_varint(4) + b"zzzz" + b"yyyyy"
    with pytest.raises(BitstreamError, match="words"):
        decode_bitstream(_with_crc(body))


def test_encoder_refuses_what_the_decoder_would():
    with pytest.raises(ValueError):
        encode_bitstream(FP, MAX_IMAGE_SIDE + 1, 1, b"zzzz", b"yyyy", CHECK)
    with pytest.raises(ValueError):
        encode_bitstream(b"\x00", 1, 1, b"zzzz", b"yyyy", CHECK)
    with pytest.raises(ValueError):
        encode_bitstream(FP, 1, 1, b"zzzz", b"yyyy", b"\x00")
    with pytest.raises(ValueError):
        encode_bitstream(FP, 1, 1, b"zzz", b"yyyy", CHECK)


def test_pixel_budget_is_checked_from_the_header():
    s = _stream(height=321, width=481)
    assert decode_bitstream(s, max_pixels=321 * 481).height == 321
    with pytest.raises(PixelBudgetError, match=r"481×321 image \(154401 pixels\).*max_pixels=154401.*--max-pixels"):
        decode_bitstream(s, max_pixels=321 * 481 - 1)
    assert issubclass(PixelBudgetError, BitstreamError)
    # the default budget is 4096 × 4096; the format itself goes to 16384²
    big = encode_bitstream(FP, 4097, 4096, b"zzzz", b"yyyy", CHECK)
    assert DEFAULT_MAX_PIXELS == 4096 * 4096
    with pytest.raises(PixelBudgetError):
        decode_bitstream(big)
    assert decode_bitstream(big, max_pixels=MAX_IMAGE_PIXELS).width == 4096


def test_version_4_is_the_context_models_and_a_model_refuses_the_others():
    from sodec_pipeline.codec.bitstream import CHECKERBOARD_FORMAT_VERSION, FORMAT_VERSION

    s4 = encode_bitstream(FP, 321, 481, b"zzzz", b"y" * 40, CHECK, quality=3, version=CHECKERBOARD_FORMAT_VERSION)
    parsed = decode_bitstream(s4, expected_fingerprint=FP, model_versions=(4,))
    assert s4[2] == 4 and (parsed.version, parsed.quality, parsed.y_string) == (4, 3, b"y" * 40)
    assert len(s4) == len(_stream())  # version 3's layout
    s3 = _stream()
    assert decode_bitstream(s3, model_versions=(2, FORMAT_VERSION)).version == 3
    with pytest.raises(BitstreamError, match="version 4 holds strings of the checkerboard context model"):
        decode_bitstream(s4, expected_fingerprint=FP, model_versions=(2, 3))
    with pytest.raises(BitstreamError, match="version 3 holds strings of the mean-scale hyperprior"):
        decode_bitstream(s3, expected_fingerprint=FP, model_versions=(4,))
    v2 = _with_crc(
        MAGIC + V2 + FP + CHECK + _write_varint(8) + _write_varint(8) + _write_varint(4) + b"zzzz" + b"yyyy"
    )
    with pytest.raises(BitstreamError, match="version 2 holds strings of the mean-scale hyperprior"):
        decode_bitstream(v2, model_versions=(4,))
    with pytest.raises(BitstreamError, match="checksum"):  # the checksum is checked first, as for every field
        decode_bitstream(s4[:-1] + bytes([s4[-1] ^ 1]), model_versions=(2, 3))
    with pytest.raises(ValueError, match="version"):
        encode_bitstream(FP, 1, 1, b"zzzz", b"yyyy", CHECK, version=2)
