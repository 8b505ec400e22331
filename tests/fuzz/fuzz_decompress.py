"""Fuzzing ``SODECPipeline.decompress`` end to end with the tests' tiny pipelines (seed 0): hub_configs/sodec-tiny,
and hub_configs/sodec-tiny-checkerboard for inputs whose version byte is 4 (the checkerboard context model):
parse, fingerprint, pixel budget, entropy decoding, H_s/T_s, D_a, the image encoder, the UNet step, the VAE
decoder, the colour correction, the crop.

An input is a stream, its CRC made right, decoded with the diffusion decoder (which runs the fidelity decoder
too) under a budget of :data:`MAX_PIXELS`. The rules: a ``BitstreamError`` (``PixelBudgetError`` included) in one
line, or one image of the size the header announces, its values in [0, 1].

Inputs are mutated field by field (``harness.mutate_stream``), so that most of them reach the entropy decoder.

    python tests/fuzz/fuzz_decompress.py -max_total_time=3600 corpus/decompress    # a campaign
"""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    REGRESSIONS,
    SEEDS,
    TINY_CHECKERBOARD_CONFIG,
    build_tiny_pipeline,
    check_message,
    ensure_repository_on_path,
    fix_checksum,
    fuzz,
    mutate_stream,
    rule,
)


NAME = "decompress"
#: The decode budget (256 × 256): each accepted stream takes at most about 0.5 s on one core.
MAX_PIXELS = 1 << 16
OPTIONS = {"rss_limit_mb": "2048"}


def corpus():
    return [SEEDS / "streams", REGRESSIONS / NAME]


def load(pipe=None, checkerboard_pipe=None):
    """Builds the tiny pipelines (or takes them: ``pipe``, the hyperprior's, and ``checkerboard_pipe``) and returns
    ``check(data) -> outcome``."""
    import numpy as np

    from sodec_pipeline.codec.bitstream import CHECKERBOARD_FORMAT_VERSION, decode_bitstream
    from sodec_pipeline.codec.errors import BitstreamError, PixelBudgetError

    pipe = pipe if pipe is not None else build_tiny_pipeline()
    checkerboard_pipe = checkerboard_pipe or build_tiny_pipeline(TINY_CHECKERBOARD_CONFIG)

    def check(data: bytes) -> str:
        stream = fix_checksum(data)
        model = checkerboard_pipe if data[2:3] == bytes([CHECKERBOARD_FORMAT_VERSION]) else pipe
        try:
            images = model.decompress(stream, output_type="np", max_pixels=MAX_PIXELS).images
        except BitstreamError as e:
            check_message(e)
            return "over the budget" if isinstance(e, PixelBudgetError) else "refused"
        header = decode_bitstream(stream, max_pixels=MAX_PIXELS)
        rule(images.shape == (1, header.height, header.width, 3), f"{images.shape[1:3]} decoded from a {header.height}×"
             f"{header.width} (H×W) stream")  # fmt: skip
        rule(bool(np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1), "values outside [0, 1]")
        return "decoded"

    for seed in sorted((SEEDS / "streams").glob("tiny*.sodec")):  # the first decode builds the coding state
        check(seed.read_bytes())
    return check


if __name__ == "__main__":
    ensure_repository_on_path()
    import torch  # noqa: F401 - imported before the instrumented modules, and not instrumented itself

    fuzz(sys.argv, load, corpus(), OPTIONS, mutator=mutate_stream)
