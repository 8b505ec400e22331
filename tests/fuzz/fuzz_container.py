"""Fuzzing the container parser (sodec_pipeline/codec/bitstream.py): magic, version, fingerprint, entropy check,
quality byte, the varints of the size and the z length, the string lengths, the CRC, the pixel budget.

Every input is parsed as it is and with its CRC made right (so that mutations get past the checksum), by
``decode_bitstream`` under the default budget and a small one, with an expected fingerprint and without, and
with the versions of a hyperprior model (3) and of a checkerboard context model (4). The rules: each parse gives
a stream or a ``BitstreamError`` (``PixelBudgetError`` included) in one line; a stream keeps what the header
promises (sizes within the limits and the budget, word-aligned strings, a known version, the decoding model's
when it is given, and a quality level ≥ 1) and packs back (``encode_bitstream``) into a stream that parses to the
same fields. No torch is imported.

    python tests/fuzz/fuzz_container.py -max_total_time=3600 corpus/container      # a campaign
    python tests/fuzz/fuzz_container.py crash-1234abcd                             # replays one input
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import REGRESSIONS, SEEDS, check_message, ensure_repository_on_path, fix_checksum, fuzz, rule  # noqa: E402


NAME = "container"
#: The small budget each input is also parsed under (the default is DEFAULT_MAX_PIXELS, 16 Mpx).
SMALL_BUDGET = 4096
#: libFuzzer's options for this harness (the parser allocates nothing beyond the input's size).
OPTIONS = {"rss_limit_mb": "512"}


def corpus():
    return [SEEDS / "streams", REGRESSIONS / NAME]


def load():
    """Imports the parser and returns ``check(data) -> outcome``."""
    from sodec_pipeline.codec.bitstream import (
        CHECKERBOARD_FORMAT_VERSION,
        FORMAT_VERSION,
        MAX_IMAGE_PIXELS,
        MAX_IMAGE_SIDE,
        READABLE_VERSIONS,
        WORD_SIZE,
        decode_bitstream,
        encode_bitstream,
    )
    from sodec_pipeline.codec.errors import BitstreamError, PixelBudgetError

    seed = next(iter(sorted((SEEDS / "streams").glob("tiny_*.sodec"))), None)
    fingerprint = seed.read_bytes()[3:7] if seed is not None else b"\x00" * 4

    def parse(data: bytes, expected_fingerprint, max_pixels, model_versions=None) -> str:
        try:
            stream = decode_bitstream(data, expected_fingerprint, max_pixels, model_versions)
        except BitstreamError as e:
            check_message(e)
            return "budget" if isinstance(e, PixelBudgetError) else "refused"
        budget = max_pixels if max_pixels is not None else MAX_IMAGE_PIXELS
        rule(1 <= stream.height <= MAX_IMAGE_SIDE and 1 <= stream.width <= MAX_IMAGE_SIDE, "a size out of limits")
        rule(stream.num_pixels <= min(budget, MAX_IMAGE_PIXELS), "a stream above the pixel budget was accepted")
        rule(stream.version in READABLE_VERSIONS and 1 <= stream.quality <= 255, "an unknown version or level")
        rule(stream.version >= 3 or stream.quality == 1, "a version 2 stream with a quality level")
        rule(model_versions is None or stream.version in model_versions, "a stream of another entropy model")
        rule(len(stream.z_string) > 0 and len(stream.z_string) % WORD_SIZE == 0, "a z string of partial words")
        rule(len(stream.y_string) % WORD_SIZE == 0, "a y string of partial words")
        rule(expected_fingerprint is None or stream.fingerprint == expected_fingerprint, "a foreign fingerprint")
        packed = encode_bitstream(
            stream.fingerprint, stream.height, stream.width, stream.z_string, stream.y_string,
            stream.entropy_check, stream.quality, max(stream.version, 3),
        )  # fmt: skip
        again = decode_bitstream(packed, max_pixels=max_pixels)
        fields = ("fingerprint", "height", "width", "z_string", "y_string", "entropy_check", "quality")
        rule(
            all(getattr(again, f) == getattr(stream, f) for f in fields) and again.version == max(stream.version, 3),
            "the parsed fields do not pack back into the same stream",
        )
        return "parsed"

    def check(data: bytes) -> str:
        outcomes = []
        for candidate in {data, fix_checksum(data)}:
            for expected in (None, fingerprint):
                for budget in (None, SMALL_BUDGET):
                    outcomes.append(parse(candidate, expected, budget))
            outcomes.append(parse(candidate, None, None, (FORMAT_VERSION,)))  # a hyperprior model's versions
            outcomes.append(parse(candidate, None, None, (CHECKERBOARD_FORMAT_VERSION,)))
        return "parsed" if "parsed" in outcomes else max(outcomes)

    return check


if __name__ == "__main__":
    ensure_repository_on_path()
    fuzz(sys.argv, load, corpus(), OPTIONS)
