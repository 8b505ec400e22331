"""Entropy parameters that every machine derives alike: P in exact fixed point, checked by the stream.

The fixture model's scales span the whole scale table (checked), unlike an untrained model's, whose σ
all fall below the scale bound (every CDF index 0) and hide any mismatch.
"""

import pytest
import torch
from torch.nn import functional as F

from sodec_pipeline import BitstreamError, CompressionVAE
from sodec_pipeline.codec.fixed_point_hyper_synthesis import FixedPointHyperSynthesis


LEVELS = 64
CONFIG = dict(
    block_out_channels=(4, 8, 8, 8, 8),
    latent_channels=LEVELS,
    hyper_channels=16,
    latent_synthesis_channels=8,
    latent_transform_channels=8,
    latent_transform_num_blocks=1,
    scale_table_levels=LEVELS,
    scale_bias_init=(0.09, 300.0),
)


def build(arithmetic: str = "fixed_point", state=None) -> CompressionVAE:
    torch.manual_seed(0)
    model = CompressionVAE(**CONFIG, entropy_parameter_arithmetic=arithmetic).eval()
    if state is None:
        model.update(force=True)
    else:
        model.load_state_dict(state)
    return model


@pytest.fixture(scope="module")
def realistic():
    return build()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    smooth = F.interpolate(torch.rand(2, 3, 16, 24), size=(128, 192), mode="bilinear", align_corners=False)
    return (smooth + 0.05 * torch.rand_like(smooth)).clamp(0, 1)


def indexes_of(model, images):
    y = model.encode(images)
    z = model.hyper_analysis(y)
    medians = model.entropy_model.z_medians()
    z_hat = torch.round(z - medians) + medians
    return model.gaussian_conditional.build_indexes(model.entropy_model.entropy_parameters(z_hat)[1])


def test_fixture_indexes_span_the_scale_table(realistic, images):
    indexes = indexes_of(realistic, images)
    used = indexes.unique()
    assert used.numel() >= 0.9 * LEVELS, f"only {used.numel()} of {LEVELS} CDF tables used"
    assert used.min() == 0 and used.max() == LEVELS - 1


def test_tiny_model_is_not_degenerate(tiny_pipeline, small_photo):
    from sodec_pipeline.image_processing import pad_to_multiple, to_image_tensors

    x = pad_to_multiple(to_image_tensors(small_photo)[0][None], 64)
    indexes = indexes_of(tiny_pipeline.compression_vae, x)
    assert indexes.unique().numel() >= 4


class _Perturb:
    """Multiplies P's float32 outputs by 1 ± ``relative`` (uniform, seeded): another device simulated."""

    def __init__(self, model, relative: float, seed: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.relative = relative
        self.handles = [
            head.register_forward_hook(self.hook) for head in (model.hyper_synthesis_mean, model.hyper_synthesis_scale)
        ]

    def hook(self, module, inputs, output):
        noise = torch.rand(output.shape, generator=self.generator) * 2 - 1
        return output * (1 + self.relative * noise)

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _code(model, images):
    coded = model.compress(images)
    decoded = model.decompress(coded["strings"], coded["shape"], coded["entropy_checks"])
    return coded, decoded


def test_another_device_gives_the_same_bytes_and_latents(realistic, images):
    reference, reference_latents = _code(realistic, images)
    perturb = _Perturb(realistic, 1e-3, seed=0)
    try:
        coded, _ = _code(realistic, images)
        assert coded["strings"] == reference["strings"] and coded["entropy_checks"] == reference["entropy_checks"]
        decoded = realistic.decompress(reference["strings"], reference["shape"], reference["entropy_checks"])
    finally:
        perturb.remove()
    assert torch.equal(decoded["y_hat"], reference_latents["y_hat"])
    assert torch.equal(decoded["z_hat"], reference_latents["z_hat"])


def test_without_fixed_point_a_mismatch_is_an_error_not_garbage(realistic, images):
    floating = build("float32", realistic.state_dict())
    coded, _ = _code(floating, images)
    perturb = _Perturb(floating, 1e-3, seed=0)
    try:
        with pytest.raises(BitstreamError, match="other entropy parameters"):
            floating.decompress(coded["strings"], coded["shape"], coded["entropy_checks"])
    finally:
        perturb.remove()
    # how many indexes such a difference flips: what the fixed point protects against
    indexes = indexes_of(floating, images)
    perturb = _Perturb(floating, 1e-3, seed=1)
    try:
        flipped = (indexes_of(floating, images) != indexes).sum().item()
    finally:
        perturb.remove()
    assert flipped > 0


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count_and_bf16_autocast_change_nothing(realistic, images, threads):
    reference = realistic.compress(images)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            coded = realistic.compress(images)
            decoded = realistic.decompress(coded["strings"], coded["shape"], coded["entropy_checks"])
    finally:
        torch.set_num_threads(previous)
    assert coded["strings"] == reference["strings"]
    assert decoded["y_hat"].dtype == torch.float32


def test_bf16_pipeline_writes_and_reads_the_same_streams(tiny_pipeline_dir, tiny_pipeline, small_photo):
    from sodec_pipeline import SODECPipeline

    pipe = SODECPipeline.from_pretrained(tiny_pipeline_dir, torch_dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    (stream,) = tiny_pipeline.compress(small_photo)
    assert pipe.compress(small_photo) == [stream]
    assert pipe.decompress(stream).images[0].size == small_photo.size


def _exact_reference(head, z_hat, fixed: FixedPointHyperSynthesis) -> torch.Tensor:
    """The fixed-point network in int64 with an independent transposed convolution (a scatter of
    products): what the float64 convolutions must equal bit for bit."""
    x = torch.round(z_hat.double() * 2.0**fixed.fraction_bits).to(torch.int64)
    x = x.clamp(-(2 ** fixed.layers[0].input_bits), 2 ** fixed.layers[0].input_bits)
    for number, layer in enumerate(fixed.layers):
        weight = layer.weight.to(torch.int64)
        batch, _, height, width = x.shape
        kh, kw = weight.shape[-2:]
        (sh, sw), (ph, pw), (oh, ow) = layer.stride, layer.padding, layer.output_padding
        full = torch.zeros(
            batch, weight.shape[1], (height - 1) * sh + kh + oh, (width - 1) * sw + kw + ow, dtype=torch.int64
        )
        for i in range(kh):
            for j in range(kw):
                contribution = torch.einsum("bchw,cd->bdhw", x, weight[:, :, i, j])
                full[:, :, i : i + (height - 1) * sh + 1 : sh, j : j + (width - 1) * sw + 1 : sw] += contribution
        out_h, out_w = (height - 1) * sh - 2 * ph + kh + oh, (width - 1) * sw - 2 * pw + kw + ow
        accumulator = full[:, :, ph : ph + out_h, pw : pw + out_w] + layer.bias.to(torch.int64).view(1, -1, 1, 1)
        if number == len(fixed.layers) - 1:
            return (accumulator.double() * 2.0 ** -(fixed.fraction_bits + layer.weight_shift)).float()
        shift = layer.weight_shift
        rounded = torch.div(accumulator.clamp_min(0) + (1 << (shift - 1)), 1 << shift, rounding_mode="floor")
        x = rounded.clamp_max(2 ** fixed.layers[number + 1].input_bits)


def test_fixed_point_is_exact_integer_arithmetic(realistic, images):
    y = realistic.encode(images)
    z = realistic.hyper_analysis(y)
    medians = realistic.entropy_model.z_medians()
    z_hat = torch.round(z - medians) + medians
    for head in (realistic.hyper_synthesis_mean, realistic.hyper_synthesis_scale):
        fixed = FixedPointHyperSynthesis(head)
        assert all(layer.weight_shift > 0 for layer in fixed.layers)
        assert torch.equal(fixed(z_hat), _exact_reference(head, z_hat, fixed))
        # close to the float network it stands for
        assert torch.allclose(fixed(z_hat), head(z_hat), rtol=1e-3, atol=1e-3)


def test_fixed_point_in_bands_gives_the_same_bits(realistic, monkeypatch):
    """P runs on bands of ẑ rows (bounded memory for any image size); exact arithmetic makes the banded
    result bit-identical to the whole one, whatever the band height (down to one row of ẑ)."""
    import sodec_pipeline.codec.fixed_point_hyper_synthesis as fixed_point

    torch.manual_seed(2)
    z_hat = torch.round(torch.randn(2, CONFIG["hyper_channels"], 23, 7) * 3)
    for head in (realistic.hyper_synthesis_mean, realistic.hyper_synthesis_scale):
        fixed = FixedPointHyperSynthesis(head)
        assert fixed.bandable and fixed.upsampling == 4 and fixed.halo == 3
        whole = fixed(z_hat)
        assert whole.shape == (2, CONFIG["latent_channels"], 92, 28)
        monkeypatch.setattr(fixed_point, "BAND_ELEMENTS", 1)  # bands of 4·halo = 12 rows of ẑ: 2 bands
        assert torch.equal(fixed(z_hat), whole)
        for halo in (1, 2):  # one row of context fewer than computed still works, none does not
            fixed.halo = halo
            assert torch.equal(fixed(z_hat), whole) == (halo == 2), halo
        monkeypatch.undo()
