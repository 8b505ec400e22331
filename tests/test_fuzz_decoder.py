"""Hostile streams: each decoded in a child process (tests/fuzz_decoder.py) with a time and memory limit.
Only a BitstreamError or an image of the announced size may come out: no signal, hang or other exception."""

import pytest
from fuzz_decoder import _Worker, fuzz, join_stream, split_stream

from sodec_pipeline.codec.bitstream import DEFAULT_MAX_PIXELS


FUZZ_STREAMS = 2500


@pytest.fixture(scope="module")
def base_streams(tiny_pipeline, photos):
    images = list(photos.values())[:3]
    return tiny_pipeline.compress(images + [images[0].crop((0, 0, 1, 1))])


@pytest.fixture(scope="module")
def worker(tiny_pipeline_dir):
    worker = _Worker(str(tiny_pipeline_dir), DEFAULT_MAX_PIXELS, 2048, start_timeout=300)
    yield worker
    worker.kill()


def test_well_formed_streams_decode_in_the_worker(worker, base_streams):
    for stream in base_streams:
        assert worker.decode(stream, diffusion=True, time_limit=120)["outcome"] == "image"


def test_more_symbols_announced_than_the_strings_hold(worker, base_streams):
    """Issue 10's crash: a valid checksum, a header announcing a larger image than the strings were coded
    for (compressai's decoder read past the string and the process died of a segmentation fault)."""
    fields = split_stream(base_streams[0])
    fields["height"], fields["width"] = 2048, 2048
    result = worker.decode(join_stream(fields), diffusion=True, time_limit=120)
    assert result["outcome"] == "bitstream_error", result


def test_the_decompression_bomb_is_refused_quickly(worker, base_streams):
    """Issue 10's bomb: a stream of a few hundred bytes announcing 16384 × 548 pixels (inside the format's
    limits and the default budget) kept the old decoder busy for minutes."""
    fields = split_stream(base_streams[0])
    fields["height"], fields["width"] = 16384, 548
    fields["y"] = fields["y"][:8]
    stream = join_stream(fields)
    assert len(stream) < 300
    result = worker.decode(stream, diffusion=True, time_limit=30)
    assert result["outcome"] == "bitstream_error", result
    fields["height"], fields["width"] = 16384, 4096  # above the default budget: refused from the header
    result = worker.decode(join_stream(fields), diffusion=True, time_limit=30)
    assert result["outcome"] == "bitstream_error" and "max_pixels" in result["detail"], result


def test_fuzzed_streams_give_bitstream_errors_or_images(tiny_pipeline_dir, base_streams):
    report = fuzz(FUZZ_STREAMS, seed=0, time_limit=60, model_dir=str(tiny_pipeline_dir), base_streams=base_streams)
    assert report["failures"] == [], report["failures"][:3]
    assert sum(report["outcomes"].values()) == FUZZ_STREAMS
    assert report["outcomes"].get("image", 0) > 0
    errors = report["bitstream_errors"]
    # the mutations reach the entropy decoder and the entropy check, not only the checksum
    assert errors.get("entropy decoder", 0) > FUZZ_STREAMS // 20
    assert errors.get("entropy check", 0) > FUZZ_STREAMS // 100
