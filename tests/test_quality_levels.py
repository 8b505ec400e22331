"""Quality levels (docs/bitstream.md, version 3): one model, several quantisation steps Δ, the level in the
stream; size budgets (``max_bytes``/``target_bpp``, ``--max-bytes``/``--target-bpp``); BD-rate."""

import json
import struct
import zlib

import pytest
import torch
from PIL import Image

from sodec_pipeline import CompressionVAE, SizeBudgetError, SODECPipeline, decode_bitstream
from sodec_pipeline.cli import main
from sodec_pipeline.codec.bitstream import encode_bitstream
from sodec_pipeline.codec.errors import BitstreamError
from sodec_pipeline.codec.quality_levels import check_quantization_steps, resolve_default_quality
from sodec_pipeline.evaluation.bd_rate import bd_rate
from sodec_pipeline.hub_configs import resolve_hub_config


TINY = resolve_hub_config("sodec-tiny")


def _codec(steps, default=None):
    config = json.loads((TINY / "compression_vae" / "config.json").read_text())
    config.update(quantization_steps=steps, default_quality=default)
    torch.manual_seed(0)
    model = CompressionVAE.from_config(config)
    model.update(force=True)
    return model.eval()


@pytest.fixture(scope="module")
def codec():
    return _codec([4.0, 2.0, 1.0, 0.5, 0.25])


def test_levels_code_finer_with_the_level_and_decode_to_the_step_grid(codec):
    torch.manual_seed(1)
    x = torch.rand(1, 3, 128, 128)
    y = codec.encode(x)
    sizes = []
    for quality, step in enumerate([4.0, 2.0, 1.0, 0.5, 0.25], start=1):
        coded = codec.compress(x, quality=quality)
        assert coded["quality"] == quality
        sizes.append(len(coded["strings"][0][0]))
        decoded = codec.decompress(coded["strings"], coded["shape"], coded["entropy_checks"], quality=quality)
        means, _ = codec.entropy_model.entropy_parameters(decoded["z_hat"])
        expected = torch.round((y - means) / step) * step + means
        torch.testing.assert_close(decoded["y_hat"], expected, atol=1e-4, rtol=0)
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_the_level_of_step_1_codes_as_the_single_rate_codec_and_levels_change_the_fingerprint(codec):
    single = codec.with_quality_levels([1.0])
    assert single.num_qualities == 1 and single.default_quality == 1
    x = torch.rand(1, 3, 64, 64)
    assert single.compress(x)["strings"] == codec.compress(x, quality=3)["strings"]
    assert codec.default_quality == 3  # the level whose Δ is 1
    assert len({codec.fingerprint(), single.fingerprint(), codec.with_quality_levels([4.0, 1.0]).fingerprint()}) == 3
    assert codec.with_quality_levels(default_quality=1).default_quality == 1
    # a model without levels keeps the fingerprint it had before levels existed
    plain = _codec(None)
    assert plain.fingerprint() == _codec(None).fingerprint() and plain.num_qualities == 1


def test_a_decoder_with_other_steps_refuses_the_stream(codec):
    x = torch.rand(1, 3, 64, 64)
    coded = codec.compress(x, quality=1)
    other = codec.with_quality_levels([3.0, 2.0, 1.0, 0.5, 0.25])
    with pytest.raises(BitstreamError, match="entropy parameters"):
        other.decompress(coded["strings"], coded["shape"], coded["entropy_checks"], quality=1)
    with pytest.raises(BitstreamError, match="quality level this model does not have"):
        codec.decompress(coded["strings"], coded["shape"], coded["entropy_checks"], quality=6)


@pytest.mark.parametrize("bad", [0, 6, -1, 1.5, True, "2", None])
def test_levels_outside_the_range_are_refused_clearly(codec, bad):
    if bad is None:
        assert codec.check_quality(None) == codec.default_quality
        return
    with pytest.raises(ValueError, match="quality must be .*level"):
        codec.check_quality(bad)


def test_quantization_steps_must_be_positive_and_decreasing():
    assert check_quantization_steps(None) == (1.0,)
    for bad in ([], [1.0, 2.0], [1.0, 1.0], [2.0, 0.0], [float("nan")], [1.0] * 256):
        with pytest.raises(ValueError, match="quantization_steps"):
            check_quantization_steps(bad)
    assert resolve_default_quality((4.0, 2.0, 0.5), None) == 2  # no Δ = 1: the middle level
    with pytest.raises(ValueError, match="default_quality"):
        resolve_default_quality((2.0, 1.0), 3)


def test_training_forward_quantises_each_image_with_its_own_step(codec):
    torch.manual_seed(2)
    x = torch.rand(3, 3, 64, 64)
    codec.train()
    try:
        out = codec(x, quantization_step=torch.tensor([4.0, 1.0, 0.25]))
        unit = codec(x)
    finally:
        codec.eval()
    assert out.bpp[0] < out.bpp[1] < out.bpp[2]
    torch.testing.assert_close(out.y_hat[1], unit.y_hat[1])
    y = codec.encode(x)
    z_hat = out.z_hat
    means, _ = codec.hyper_synthesis(z_hat)
    torch.testing.assert_close(out.y_hat[0], torch.round((y[0] - means[0]) / 4.0) * 4.0 + means[0])


# ---------------------------------------------------------------------------------------------- the stream
def test_version_3_carries_the_level_and_version_2_reads_as_level_1():
    fp, check = b"\x01\x02\x03\x04", b"\xaa\xbb"
    stream = encode_bitstream(fp, 10, 20, b"zzzz", b"yyyyyyyy", check, quality=7)
    assert stream[2] == 3 and stream[9] == 7
    parsed = decode_bitstream(stream)
    assert (parsed.quality, parsed.version, parsed.height, parsed.width) == (7, 3, 10, 20)
    body = b"S\xdc\x02" + fp + check + bytes([10, 20, 4]) + b"zzzz" + b"yyyyyyyy"
    old = decode_bitstream(body + struct.pack("<I", zlib.crc32(body)))
    assert (old.quality, old.version, old.y_string) == (1, 2, b"yyyyyyyy")
    zero = bytearray(stream[:-4])
    zero[9] = 0
    with pytest.raises(BitstreamError, match="quality"):
        decode_bitstream(bytes(zero) + struct.pack("<I", zlib.crc32(bytes(zero))))
    for bad in (0, 256):
        with pytest.raises(ValueError, match="quality"):
            encode_bitstream(fp, 10, 20, b"zzzz", b"yyyy", check, quality=bad)


# ---------------------------------------------------------------------------------------------- the pipeline
@pytest.fixture(scope="module")
def levels_pipe(tiny_pipeline):
    """The tiny pipeline (levels Δ = 2, 1, 0.5; default 2)."""
    assert tiny_pipeline.compression_vae.num_qualities == 3
    return tiny_pipeline


def test_pipeline_levels_round_trip_without_a_quality_argument(levels_pipe, photos):
    image = photos["bsds_481x321.jpg"]
    streams = [levels_pipe.compress(image, quality=q)[0] for q in (1, 2, 3)]
    assert [decode_bitstream(s).quality for s in streams] == [1, 2, 3]
    assert len(streams[0]) < len(streams[1]) < len(streams[2])
    assert levels_pipe.compress(image)[0] == streams[1]  # the default level
    decoded = levels_pipe.decompress(streams[2], decoder="fidelity", output_type="pt").images[0]
    assert decoded.shape == (3, 321, 481)
    output = levels_pipe(image, quality=1, decoder="fidelity")
    assert output.bitstreams[0] == streams[0]
    with pytest.raises(ValueError, match="quality must be a level from 1 to 3"):
        levels_pipe.compress(image, quality=4)


def test_size_budgets_choose_the_highest_level_that_fits(levels_pipe, photos):
    image = photos["bsds_481x321.jpg"]
    sizes = [len(levels_pipe.compress(image, quality=q)[0]) for q in (1, 2, 3)]
    for budget, level in ((sizes[2], 3), (sizes[2] - 1, 2), (sizes[1], 2), (sizes[0], 1)):
        (stream,) = levels_pipe.compress(image, max_bytes=budget)
        assert len(stream) <= budget and decode_bitstream(stream).quality == level
    (stream,) = levels_pipe.compress(image, target_bpp=8.0 * sizes[1] / (481 * 321))
    assert decode_bitstream(stream).quality == 2
    with pytest.raises(SizeBudgetError, match=f"does not fit in {sizes[0] - 1} bytes.*quality 1\\) is {sizes[0]}"):
        levels_pipe.compress(image, max_bytes=sizes[0] - 1)
    with pytest.raises(ValueError, match="at most one"):
        levels_pipe.compress(image, quality=1, max_bytes=10_000)
    for bad in ({"max_bytes": 0}, {"max_bytes": 1.5}, {"target_bpp": -1.0}, {"target_bpp": float("nan")}):
        with pytest.raises(ValueError, match="positive"):
            levels_pipe.compress(image, **bad)


def test_a_stream_announcing_a_level_the_model_lacks_is_refused(levels_pipe, small_photo):
    (stream,) = levels_pipe.compress(small_photo)
    body = bytearray(stream[:-4])
    body[9] = 9
    forged = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    with pytest.raises(BitstreamError, match="quality level this model does not have.*1 to 3, got 9"):
        levels_pipe.decompress(forged)


# ---------------------------------------------------------------------------------------------- the CLI
def test_cli_quality_and_budgets(tiny_pipeline_dir, photo_paths, tmp_path, capsys):
    photo = next(p for p in photo_paths if p.name == "bsds_481x321.jpg")
    out = tmp_path / "q1.sodec"
    assert (
        main(["compress", str(photo), "--model", str(tiny_pipeline_dir), "-o", str(out), "-q", "--quality", "1"]) == 0
    )
    assert "quality 1" in capsys.readouterr().out and decode_bitstream(out.read_bytes()).quality == 1
    q3 = SODECPipeline.from_pretrained(tiny_pipeline_dir).compress(Image.open(photo), quality=3)[0]
    budget = tmp_path / "budget.sodec"
    args = ["compress", str(photo), "--model", str(tiny_pipeline_dir), "-o", str(budget), "-q"]
    assert main(args + ["--max-bytes", str(len(q3))]) == 0
    assert budget.read_bytes() == q3
    assert main(args + ["--target-bpp", f"{8.0 * len(q3) / (481 * 321) + 1e-6:.9f}", "--overwrite"]) == 0
    assert budget.read_bytes() == q3
    capsys.readouterr()
    assert main(["decompress", str(budget), "--model", str(tiny_pipeline_dir), "-o", str(tmp_path), "-q"]) == 0
    # a level out of range, and a budget too small: one line, exit 2, nothing written
    for extra, message in (
        (["--quality", "4"], "--quality 4: this model has quality levels 1 to 3 (default 2)"),
        (["--quality", "0"], "--quality 0: this model has quality levels 1 to 3"),
        (["--max-bytes", "20"], "does not fit in 20 bytes"),
        (["--target-bpp", "0"], "--target-bpp must be a positive"),
    ):
        target = tmp_path / "never.sodec"
        code = main(["compress", str(photo), "--model", str(tiny_pipeline_dir), "-o", str(target), "-q"] + extra)
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1 and not target.exists()
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--quality", "1", "--max-bytes", "100"])
    assert exit_info.value.code == 2


def test_eval_all_levels_draws_curves_and_gives_bd_rates(tiny_pipeline_dir, two_images, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(
        ["eval", "--model", str(tiny_pipeline_dir), "--images", str(two_images), "--out", str(out), "--codecs",
         "jpeg,webp", "--targets", "0.5,1,2,4", "--no-perceptual", "--quality", "all", "-q"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "results.json").read_text())
    assert report["qualities"] == [1, 2, 3]
    fidelity = sorted((e for e in report["summary"] if e["method"] == "sodec-fidelity"), key=lambda e: e["quality"])
    assert [e["quality"] for e in fidelity] == [1, 2, 3] and fidelity[0]["bpp"] < fidelity[2]["bpp"]
    matched = [e for e in report["summary"] if e["method"] == "webp" and e["target"] == "sodec"]
    assert matched and all(e["quality"] in (1, 2, 3) for e in matched)  # rate-matched to each level it reaches
    assert sorted(p.name for p in (out / "streams").iterdir())[:3] == [
        "bsds_crop0_96x64.q1.sodec", "bsds_crop0_96x64.q2.sodec", "bsds_crop0_96x64.q3.sodec",
    ]  # fmt: skip
    assert (out / "rd.png").stat().st_size > 0
    # a random model's PSNR (~10 dB) shares no range with the baselines': no BD-rate, rather than a made-up one
    assert report["bd_rate"] == {} and "BD-rate" not in printed
    assert main(["eval", "--model", str(tiny_pipeline_dir), "--images", str(two_images), "--out", str(tmp_path / "x"),
                 "--quality", "1,9", "-q"]) == 2  # fmt: skip
    assert "--quality 9: this model has quality levels 1 to 3" in capsys.readouterr().err


def test_bd_rates_of_a_summary_compare_each_decode_with_each_codec():
    from sodec_pipeline.evaluation.report import bd_rates

    summary = [
        {"method": "sodec-fidelity", "target": "", "quality": q, "bpp": b, "psnr": p}
        for q, b, p in ((1, 0.05, 30.0), (2, 0.1, 32.0), (3, 0.15, 33.5), (4, 0.2, 34.5))
    ] + [
        {"method": "jpeg", "target": t, "quality": "", "bpp": 2 * b, "psnr": p}
        for t, b, p in (("0.1", 0.05, 30.0), ("0.2", 0.1, 32.0), ("0.3", 0.15, 33.5), ("0.4", 0.2, 34.5))
    ]
    assert bd_rates(summary, ["psnr"]) == {"psnr": {"sodec-fidelity vs jpeg": pytest.approx(-50.0)}}
    assert bd_rates(summary[:1] + summary[4:], ["psnr"]) == {}  # one level: no curve


def test_bd_rate():
    anchor_bpp, anchor_psnr = [0.1, 0.2, 0.3, 0.4], [30.0, 32.0, 33.5, 34.5]
    assert bd_rate(anchor_bpp, anchor_psnr, anchor_bpp, anchor_psnr) == pytest.approx(0.0, abs=1e-9)
    half = [r / 2 for r in anchor_bpp]
    assert bd_rate(anchor_bpp, anchor_psnr, half, anchor_psnr) == pytest.approx(-50.0)
    assert bd_rate(half, anchor_psnr, anchor_bpp, anchor_psnr) == pytest.approx(100.0)
    assert bd_rate(anchor_bpp, anchor_psnr, [0.1, 0.2], [40.0, 41.0]) is None  # no overlap of qualities
    assert bd_rate(anchor_bpp, anchor_psnr, [0.1], [31.0]) is None
