"""Fuzzing the entropy decoding of ẑ and ŷ (sodec_pipeline/codec/entropy_models.py, entropy_coding.py) with the
tests' tiny models (seed 0): hub_configs/sodec-tiny (the mean-scale hyperprior) for streams of versions 2 and 3,
hub_configs/sodec-tiny-checkerboard (the checkerboard context model) for version 4.

An input is a stream: its CRC is made right, it is parsed without the fingerprint check under a budget of
:data:`MAX_PIXELS`, and its strings go through ``SODECPipeline.entropy_decode``: the ANS decoding of the z string
with the factorized prior's tables, P in fixed point, the entropy check, the ANS decoding of the y string at the
stream's quality level (the context model: the anchors, the context, the check, the other half); then the same strings without the entropy check (``CompressionVAE.decompress`` with no
checks), so that the y string of every input whose z string decodes is decoded too. The rules: a
``BitstreamError`` in one line, or (ŷ, ẑ) of the shapes the header's size gives, finite, which the encoder codes
back into the very same strings (and entropy check): the decoder accepts no string that the encoder would not
write.

Inputs are mutated field by field (``harness.mutate_stream``), so that most of them reach the entropy decoder.

    python tests/fuzz/fuzz_entropy.py -max_total_time=3600 corpus/entropy          # a campaign
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


NAME = "entropy"
#: The budget of the streams decoded (256 × 256): larger announced sizes are refused by the parser.
MAX_PIXELS = 1 << 16
OPTIONS = {"rss_limit_mb": "2048"}


def corpus():
    return [SEEDS / "streams", REGRESSIONS / NAME]


def load(pipe=None, checkerboard_pipe=None):
    """Imports the codec, builds the tiny pipelines (or takes them: ``pipe``, the hyperprior's, and
    ``checkerboard_pipe``) and returns ``check(data) -> outcome``."""
    import torch

    from sodec_pipeline.codec.bitstream import CHECKERBOARD_FORMAT_VERSION, decode_bitstream
    from sodec_pipeline.codec.errors import BitstreamError
    from sodec_pipeline.models.compression_vae import PADDING_MULTIPLE
    from sodec_pipeline.pipelines.pipeline_sodec import padded_size

    pipe = pipe if pipe is not None else build_tiny_pipeline()
    checkerboard_pipe = checkerboard_pipe or build_tiny_pipeline(TINY_CHECKERBOARD_CONFIG)

    def decode(stream, with_entropy_check: bool) -> str:
        """ŷ, ẑ of a parsed stream, with its entropy check verified (as the pipeline decodes) or not (so that the
        y string of every input whose z string decodes is decoded, whatever its check says)."""
        model = checkerboard_pipe if stream.version == CHECKERBOARD_FORMAT_VERSION else pipe
        codec = model.compression_vae
        entropy_model = codec.entropy_model
        latent_channels = codec.config.latent_channels
        hyper_channels = entropy_model.entropy_bottleneck.channels
        padded_h, padded_w = padded_size(stream.height, stream.width)
        try:
            if with_entropy_check:
                y_hat, z_hat = model.entropy_decode(stream)
            else:
                z_shape = (padded_h // PADDING_MULTIPLE, padded_w // PADDING_MULTIPLE)
                strings = [[stream.y_string], [stream.z_string]]
                latents = codec.decompress(strings, z_shape, quality=stream.quality)
                y_hat, z_hat = latents["y_hat"], latents["z_hat"]
        except BitstreamError as e:
            check_message(e)
            return "refused"
        rule(tuple(z_hat.shape) == (1, hyper_channels, padded_h // 64, padded_w // 64), f"ẑ of shape {z_hat.shape}")
        rule(tuple(y_hat.shape) == (1, latent_channels, padded_h // 16, padded_w // 16), f"ŷ of shape {y_hat.shape}")
        rule(bool(torch.isfinite(y_hat).all() and torch.isfinite(z_hat).all()), "ŷ or ẑ is not finite")
        state = entropy_model.coding_state()
        with torch.no_grad():
            y_string, z_string, check = entropy_model._compress_one(
                state, y_hat, z_hat, entropy_model.z_medians(), codec.quantization_step(stream.quality)
            )
        rule(z_string == stream.z_string, "the z string decodes to symbols that the encoder codes otherwise")
        rule(y_string == stream.y_string, "the y string decodes to symbols that the encoder codes otherwise")
        rule(not with_entropy_check or check == stream.entropy_check, "a stream passed the entropy check with another")
        return "decoded" if with_entropy_check else "decoded without the entropy check"

    def check(data: bytes) -> str:
        try:
            stream = decode_bitstream(fix_checksum(data), max_pixels=MAX_PIXELS)
        except BitstreamError as e:
            check_message(e)
            return "refused"
        checked = decode(stream, with_entropy_check=True)
        unchecked = decode(stream, with_entropy_check=False)
        rule(checked == "refused" or unchecked != "refused", "strings that decode only with the entropy check")
        return checked if checked == "decoded" else unchecked

    for seed in sorted((SEEDS / "streams").glob("tiny*.sodec")):  # the first decode builds the coding state
        check(seed.read_bytes())
    return check


if __name__ == "__main__":
    ensure_repository_on_path()
    import torch  # noqa: F401 - imported before the instrumented modules, and not instrumented itself

    fuzz(sys.argv, load, corpus(), OPTIONS, mutator=mutate_stream)
