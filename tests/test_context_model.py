"""The checkerboard context model (``CompressionVAE(entropy_model_type="checkerboard")``, codec/entropy_models.py):
round trips against the training pass, rate estimate against real bytes, its second pass in exact fixed point (as P,
tests/test_entropy_parameters.py), the conversion of a hyperprior codec, and its streams (version 4) in the pipeline.

g_ep's last layer starts at zero (the context then changes nothing); the fixtures give it random weights so that
the non-anchors' parameters depend on the anchors and every test below would see a mismatch.
"""

import json
import struct
import zlib

import pytest
import torch
from torch.nn import functional as F

from sodec_pipeline import BitstreamError, CompressionVAE, SODECPipeline, decode_bitstream
from sodec_pipeline.codec import entropy_models
from sodec_pipeline.codec.fixed_point_context import FixedPointCheckerboardContext, anchor_mask
from sodec_pipeline.codec.fixed_point_hyper_synthesis import quantise_weights
from sodec_pipeline.hub_configs import resolve_hub_config
from sodec_pipeline.pipelines import build_pipeline_from_config


TINY_CHECKERBOARD = resolve_hub_config("sodec-tiny-checkerboard")
LEVELS = 64
#: test_entropy_parameters.py's fixture layout (σ spanning the scale table) with the context model.
WIDE = dict(
    block_out_channels=(4, 8, 8, 8, 8),
    latent_channels=LEVELS,
    hyper_channels=16,
    latent_synthesis_channels=8,
    latent_transform_channels=8,
    latent_transform_num_blocks=1,
    scale_table_levels=LEVELS,
    scale_bias_init=(0.09, 300.0),
    entropy_model_type="checkerboard",
    context_channels=16,
    entropy_parameters_channels=32,
)


def randomise_context(codec, std: float = 0.1, seed: int = 0):
    """Random weights for g_ep's last layer (zero at initialisation), so that the context matters."""
    generator = torch.Generator().manual_seed(seed)
    conv3 = codec.entropy_parameters.conv3
    with torch.no_grad():
        conv3.weight.copy_(torch.randn(conv3.weight.shape, generator=generator) * std)
        conv3.bias.copy_(torch.randn(conv3.bias.shape, generator=generator) * std)
    return codec


def tiny_codec(**overrides) -> CompressionVAE:
    config = json.loads((TINY_CHECKERBOARD / "compression_vae" / "config.json").read_text())
    torch.manual_seed(0)
    codec = randomise_context(CompressionVAE.from_config({**config, **overrides}), std=0.3)
    codec.update(force=True)
    return codec.eval()


def wide_codec(arithmetic: str = "fixed_point", state=None) -> CompressionVAE:
    torch.manual_seed(0)
    codec = CompressionVAE(**WIDE, entropy_parameter_arithmetic=arithmetic).eval()
    if state is None:
        randomise_context(codec, std=0.05)
        codec.update(force=True)
    else:
        codec.load_state_dict(state)
    return codec


@pytest.fixture(scope="module")
def tiny():
    return tiny_codec()


@pytest.fixture(scope="module")
def wide():
    return wide_codec()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    smooth = F.interpolate(torch.rand(2, 3, 16, 24), size=(128, 192), mode="bilinear", align_corners=False)
    return (smooth + 0.05 * torch.rand_like(smooth)).clamp(0, 1)


def _code(codec, images, quality=None):
    coded = codec.compress(images, quality)
    decoded = codec.decompress(coded["strings"], coded["shape"], coded["entropy_checks"], quality=coded["quality"])
    return coded, decoded


def _second_pass_indexes(codec, images):
    """The CDF indexes of every position as the coder derives them (fixed point, or float32 networks)."""
    model = codec.entropy_model
    y = codec.encode(images)
    medians = model.z_medians()
    z_hat = torch.round(model.hyper_analysis(y) - medians) + medians
    means, scales = model.entropy_parameters(z_hat)
    anchors = anchor_mask(*y.shape[-2:])
    y_hat_anchors = (torch.round(y - means) + means) * anchors
    _, scales = model.context_entropy_parameters(y_hat_anchors, means, scales)
    return codec.gaussian_conditional.build_indexes(scales), anchors


# ---------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("quality", [1, 2, 3])
def test_bytes_decode_to_the_training_time_quantised_latents(tiny, images, quality):
    coded, decoded = _code(tiny, images, quality)
    assert coded["quality"] == quality and len(coded["strings"][0]) == 2
    with torch.no_grad():
        trained = tiny(images, quantization_step=tiny.quantization_step(quality))  # eval mode: ŷ as training has it
    torch.testing.assert_close(decoded["z_hat"], trained.z_hat, atol=1e-5, rtol=0)
    # the same symbols: the coder's fixed-point parameters are within ~1e-4 of the float networks', Δ ≥ 0.5
    assert (decoded["y_hat"] - trained.y_hat).abs().max() < 1e-3


def test_estimated_bits_are_close_to_the_real_bytes(tiny):
    torch.manual_seed(3)
    x = F.interpolate(torch.rand(1, 3, 32, 48), size=(256, 384), mode="bilinear", align_corners=False)
    for quality in (1, 2, 3):
        coded = tiny.compress(x, quality)
        actual = sum(len(s[0]) for s in coded["strings"])
        with torch.no_grad():
            estimated = float(tiny(x, quantization_step=tiny.quantization_step(quality)).bpp) * 256 * 384 / 8
        assert abs(actual - estimated) <= 0.05 * estimated + 16, (quality, actual, estimated)


def test_the_context_decides_the_second_pass(tiny, images):
    """The same codec with another g_ep codes the anchors alike and the rest with other parameters; and the two
    passes share one string: the first decodes without the second's symbols only as far as the anchors."""
    other = randomise_context(tiny_codec(), std=0.3, seed=1)
    a, decoded_a = _code(tiny, images)
    b, decoded_b = _code(other, images)
    anchors = anchor_mask(*decoded_a["y_hat"].shape[-2:])
    assert torch.equal(decoded_a["y_hat"][..., anchors], decoded_b["y_hat"][..., anchors])
    assert not torch.equal(decoded_a["y_hat"][..., ~anchors], decoded_b["y_hat"][..., ~anchors])
    assert a["strings"][0] != b["strings"][0] and a["strings"][1] == b["strings"][1]
    with pytest.raises(BitstreamError):  # b's parameters disagree with a's string from the second pass on
        other.decompress(a["strings"], a["shape"], a["entropy_checks"])


def test_training_pass_trains_the_context_networks(tiny):
    tiny.train()
    try:
        out = tiny(torch.rand(2, 3, 64, 128), quantization_step=torch.tensor([2.0, 0.5]))
        out.bpp.mean().backward()
        for module in (tiny.context_prediction, tiny.entropy_parameters.conv1, tiny.entropy_parameters.conv3):
            assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
        masked = tiny.context_prediction.weight.grad * (1 - tiny.context_prediction.mask)
        assert masked.abs().max() == 0  # the non-anchor taps never learn
    finally:
        tiny.zero_grad()
        tiny.eval()


def test_save_and_load_keep_the_model_and_its_streams(tiny, images, tmp_path):
    tiny.save_pretrained(tmp_path)
    loaded = CompressionVAE.from_pretrained(tmp_path)
    assert loaded.config.entropy_model_type == "checkerboard" and loaded.stream_version == 4
    assert "context_prediction.weight" in loaded.state_dict() and "context_prediction.mask" not in loaded.state_dict()
    assert loaded.fingerprint() == tiny.fingerprint()
    assert loaded.compress(images)["strings"] == tiny.compress(images)["strings"]


def test_a_converted_hyperprior_codec_codes_the_same_latents_and_rate(tiny_pipeline, images):
    """``with_entropy_model``: every weight kept, g_ep at zero, so ŷ and the estimated rate are the hyperprior's;
    the streams are version 4's (two passes), of about the same length."""
    hyperprior = tiny_pipeline.compression_vae
    converted = hyperprior.with_entropy_model("checkerboard", context_channels=4)
    assert converted.stream_version == 4 and hyperprior.stream_version == 3
    assert converted.context_prediction.out_channels == 4 and converted.fingerprint() != hyperprior.fingerprint()
    shared = hyperprior.state_dict()
    assert all(torch.equal(v, shared[k]) for k, v in converted.state_dict().items() if k in shared)
    a, decoded_a = _code(hyperprior, images)
    b, decoded_b = _code(converted, images)
    assert torch.equal(decoded_a["y_hat"], decoded_b["y_hat"]) and torch.equal(decoded_a["z_hat"], decoded_b["z_hat"])
    assert a["entropy_checks"] == b["entropy_checks"]  # the same indexes and μ, in both passes
    for y_a, y_b in zip(a["strings"][0], b["strings"][0]):
        assert abs(len(y_a) - len(y_b)) <= 8
    with torch.no_grad():
        assert torch.allclose(hyperprior(images).bpp, converted(images).bpp, rtol=1e-5)
    back = converted.with_entropy_model("hyperprior")
    assert back.fingerprint() == hyperprior.fingerprint() and not hasattr(back, "context_prediction")


def test_anchors_beyond_the_escape_range_are_coded_as_the_decoder_sees_them(monkeypatch):
    """An anchor far beyond its table is clamped by the coder; the encoder computes the context from the clamped
    value, as the decoder will (float32 networks here: the fixed point clamps such inputs anyway)."""
    codec = tiny_codec(entropy_parameter_arithmetic="float32", quantization_steps=[0.01], default_quality=None)
    y = torch.randn(1, 8, 8, 8)
    y[0, 3, 2, 4] = 1e5  # an anchor (2 + 4 even): symbol 1e7, beyond ±2^15
    coded = codec.compress_latent(y)
    decoded = codec.decompress(coded["strings"], coded["shape"], coded["entropy_checks"])
    assert decoded["y_hat"][0, 3, 2, 4] < 400
    anchors = anchor_mask(8, 8)
    assert (decoded["y_hat"] - y)[..., ~anchors].abs().max() <= 0.005 + 1e-6
    monkeypatch.setattr(entropy_models, "codable_symbols", lambda symbols, *_: symbols)
    coded = codec.compress_latent(y)
    with pytest.raises(BitstreamError, match="other entropy parameters"):
        codec.decompress(coded["strings"], coded["shape"], coded["entropy_checks"])


# ---------------------------------------------------------------------------------------------- exactness
def test_fixture_second_pass_spans_the_scale_table(wide, images):
    indexes, anchors = _second_pass_indexes(wide, images)
    used = indexes[..., ~anchors].unique()
    assert used.numel() >= 0.6 * LEVELS, f"only {used.numel()} of {LEVELS} CDF tables used by the second pass"
    assert used.max() == LEVELS - 1
    hyperprior = wide.with_entropy_model("checkerboard")  # g_ep at zero: P's indexes everywhere
    p_indexes, _ = _second_pass_indexes(hyperprior, images)
    assert (p_indexes != indexes)[..., ~anchors].float().mean() > 0.2  # the context moves most of them


class _Perturb:
    """Multiplies the float32 outputs of ``modules`` by 1 ± ``relative`` (seeded): another device simulated."""

    def __init__(self, modules, relative: float, seed: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.relative = relative
        self.handles = [module.register_forward_hook(self.hook) for module in modules]

    def hook(self, module, inputs, output):
        return output * (1 + self.relative * (torch.rand(output.shape, generator=self.generator) * 2 - 1))

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _networks(codec, with_p: bool = True):
    context = [codec.context_prediction, codec.entropy_parameters]
    return context + ([codec.hyper_synthesis_mean, codec.hyper_synthesis_scale] if with_p else [])


def test_another_device_gives_the_same_bytes_and_latents(wide, images):
    reference, reference_latents = _code(wide, images)
    perturb = _Perturb(_networks(wide), 1e-3, seed=0)
    try:
        coded, _ = _code(wide, images)
        decoded = wide.decompress(reference["strings"], reference["shape"], reference["entropy_checks"])
    finally:
        perturb.remove()
    assert coded["strings"] == reference["strings"] and coded["entropy_checks"] == reference["entropy_checks"]
    assert torch.equal(decoded["y_hat"], reference_latents["y_hat"])


def test_without_fixed_point_a_context_mismatch_is_an_error_not_garbage(wide, images):
    floating = wide_codec("float32", wide.state_dict())
    coded, _ = _code(floating, images)
    perturb = _Perturb(_networks(floating, with_p=False), 1e-3, seed=0)  # the context alone differs
    try:
        with pytest.raises(BitstreamError, match="other entropy parameters"):
            floating.decompress(coded["strings"], coded["shape"], coded["entropy_checks"])
    finally:
        perturb.remove()
    indexes, anchors = _second_pass_indexes(floating, images)
    perturb = _Perturb(_networks(floating, with_p=False), 1e-3, seed=1)
    try:
        perturbed, _ = _second_pass_indexes(floating, images)
    finally:
        perturb.remove()
    assert (perturbed != indexes)[..., ~anchors].sum() > 0 and torch.equal(
        perturbed[..., anchors], indexes[..., anchors]
    )


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count_and_bf16_autocast_change_nothing(wide, images, threads):
    reference = wide.compress(images)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            coded = wide.compress(images)
            decoded = wide.decompress(coded["strings"], coded["shape"], coded["entropy_checks"])
    finally:
        torch.set_num_threads(previous)
    assert coded["strings"] == reference["strings"] and decoded["y_hat"].dtype == torch.float32


def _exact_reference(codec, fixed: FixedPointCheckerboardContext, y_hat_anchors, means, scales):
    """g_cm and g_ep in int64, g_cm as a dense masked k×k correlation over every position (all k² taps, a sum of
    shifted products): what the gathered float64 matrix products must equal bit for bit at the non-anchors."""
    bits, frac = fixed.input_bits, fixed.fraction_bits

    def to_fixed(values, limit_bits):
        x = torch.round(values.double() * 2.0**frac).to(torch.int64)
        return x.clamp(-(2**limit_bits), 2**limit_bits)

    prediction = codec.context_prediction
    weight, bias, shift = quantise_weights(prediction.masked_weight(), prediction.bias, frac)
    weight, bias = weight.to(torch.int64), bias.to(torch.int64)
    anchors = anchor_mask(*means.shape[-2:])
    x = to_fixed(y_hat_anchors, bits[0]) * anchors
    k, r = weight.shape[-1], weight.shape[-1] // 2
    padded = F.pad(x, (r, r, r, r))
    height, width = x.shape[-2:]
    accumulator = bias.view(1, -1, 1, 1).expand(x.shape[0], -1, height, width).clone()
    for i in range(k):
        for j in range(k):
            window = padded[:, :, i : i + height, j : j + width]
            accumulator += torch.einsum("bchw,oc->bohw", window, weight[:, :, i, j])
    half = torch.div(accumulator + (1 << (shift - 1)), 1 << shift, rounding_mode="floor")
    context = half.clamp(-(2 ** bits[1]), 2 ** bits[1])
    h = torch.cat([to_fixed(means, bits[1]), to_fixed(scales, bits[1]), context], dim=1)
    convs = (codec.entropy_parameters.conv1, codec.entropy_parameters.conv2, codec.entropy_parameters.conv3)
    for number, conv in enumerate(convs):
        weight, bias, shift = quantise_weights(conv.weight, conv.bias, frac)
        accumulator = torch.einsum("bchw,oc->bohw", h, weight[:, :, 0, 0].to(torch.int64))
        accumulator = accumulator + bias.to(torch.int64).view(1, -1, 1, 1)
        if number < 2:
            rounded = torch.div(accumulator.clamp_min(0) + (1 << (shift - 1)), 1 << shift, rounding_mode="floor")
            h = rounded.clamp_max(2 ** bits[number + 2])
    delta = accumulator.double() * 2.0 ** -(frac + shift)
    c = means.shape[1]
    out_means = torch.where(anchors, means, (means.double() + delta[:, :c]).float())
    return out_means, torch.where(anchors, scales, (scales.double() + delta[:, c:]).float())


def _context_inputs(codec, images):
    model = codec.entropy_model
    y = codec.encode(images)
    medians = model.z_medians()
    means, scales = model.entropy_parameters(torch.round(model.hyper_analysis(y) - medians) + medians)
    y_hat_anchors = (torch.round(y - means) + means) * anchor_mask(*y.shape[-2:])
    return y_hat_anchors, means, scales


def test_fixed_point_context_is_exact_integer_arithmetic(wide, images):
    inputs = _context_inputs(wide, images)
    fixed = FixedPointCheckerboardContext(wide.context_prediction, wide.entropy_parameters)
    assert len(fixed.taps) == 12 and fixed.context_shift > 0 and all(shift > 0 for _, _, shift in fixed.layers)
    means, scales = fixed(*inputs)
    reference_means, reference_scales = _exact_reference(wide, fixed, *inputs)
    assert torch.equal(means, reference_means) and torch.equal(scales, reference_scales)
    float_means, float_scales = wide.entropy_model.context_parameters(*inputs)  # close to the float networks
    anchors = anchor_mask(*means.shape[-2:])
    assert torch.allclose(means[..., ~anchors], float_means[..., ~anchors], rtol=1e-3, atol=1e-3)
    assert torch.allclose(scales[..., ~anchors], float_scales[..., ~anchors], rtol=1e-3, atol=1e-3)


def test_fixed_point_context_in_bands_gives_the_same_bits(wide, images, monkeypatch):
    import sodec_pipeline.codec.fixed_point_hyper_synthesis as fixed_point

    inputs = _context_inputs(wide, images)
    fixed = FixedPointCheckerboardContext(wide.context_prediction, wide.entropy_parameters)
    whole = fixed(*inputs)
    monkeypatch.setattr(fixed_point, "BAND_ELEMENTS", 1)  # bands of one row of ŷ
    banded = fixed(*inputs)
    assert torch.equal(banded[0], whole[0]) and torch.equal(banded[1], whole[1])


# ---------------------------------------------------------------------------------------------- streams
@pytest.fixture(scope="module")
def checkerboard_pipeline():
    pipe = build_pipeline_from_config(TINY_CHECKERBOARD, seed=0)
    randomise_context(pipe.compression_vae, std=0.3)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_pipeline_streams_are_version_4_and_round_trip(checkerboard_pipeline, small_photo, tmp_path):
    pipe = checkerboard_pipeline
    streams = [pipe.compress(small_photo, quality=q)[0] for q in (1, 2, 3)]
    assert all(s[2] == 4 for s in streams) and len(set(streams)) == 3
    for quality, stream in zip((1, 2, 3), streams):
        parsed = decode_bitstream(stream, pipe.compression_vae.fingerprint(), model_versions=(4,))
        assert parsed.version == 4 and parsed.quality == quality
        assert pipe.decompress(stream, decoder="fidelity").images[0].size == small_photo.size
    pipe.save_pretrained(tmp_path / "saved")
    loaded = SODECPipeline.from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.compress(small_photo, quality=2) == [streams[1]]


def test_streams_of_the_other_entropy_model_are_refused_saying_so(checkerboard_pipeline, tiny_pipeline, small_photo):
    (context_stream,) = checkerboard_pipeline.compress(small_photo)
    (hyperprior_stream,) = tiny_pipeline.compress(small_photo)
    with pytest.raises(BitstreamError, match="version 4 holds strings of the checkerboard.*mean-scale hyperprior"):
        tiny_pipeline.decompress(context_stream)
    with pytest.raises(BitstreamError, match="version 3 holds strings of the mean-scale hyperprior.*checkerboard"):
        checkerboard_pipeline.decompress(hyperprior_stream)
    old = _with_crc(hyperprior_stream[:2] + b"\x02" + hyperprior_stream[3:9] + hyperprior_stream[10:-4])
    with pytest.raises(BitstreamError, match="version 2"):  # version 2: the hyperprior's, without a quality byte
        checkerboard_pipeline.decompress(old)
    with pytest.raises(BitstreamError, match="version 1 .*re-encode"):
        checkerboard_pipeline.decompress(_with_crc(context_stream[:2] + b"\x01" + context_stream[3:-4]))


def test_corrupt_streams_are_refused(checkerboard_pipeline, small_photo):
    (stream,) = checkerboard_pipeline.compress(small_photo)
    for cut in range(len(stream)):
        with pytest.raises(BitstreamError):
            checkerboard_pipeline.decompress(stream[:cut])
    for i in range(len(stream)):
        bad = bytearray(stream)
        bad[i] ^= 0x10
        with pytest.raises(BitstreamError):
            checkerboard_pipeline.decompress(bytes(bad))
    # with the checksum recomputed: refused by the entropy check or the coder, or an image of the announced size
    refused = 0
    for i in range(-12, -4):
        bad = bytearray(stream[:-4])
        bad[i] ^= 0x5A
        try:
            image = checkerboard_pipeline.decompress(_with_crc(bytes(bad)), decoder="fidelity").images[0]
        except BitstreamError:
            refused += 1
            continue
        assert image.size == small_photo.size
    assert refused >= 6
