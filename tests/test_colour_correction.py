"""The diffusion decode's colour correction (sodec_pipeline.pipelines.colour_correction) and its config."""

import json
import shutil

import pytest
import torch

from sodec_pipeline import SODECPipeline
from sodec_pipeline.pipelines import DecodeOptions, colour_correction
from sodec_pipeline.pipelines.colour_correction import block_means, correct_colours


def test_a_colour_cast_is_removed_exactly():
    torch.manual_seed(0)
    reference = torch.rand(2, 3, 64, 96)
    cast = reference + torch.tensor([0.2, -0.1, 0.05]).view(1, 3, 1, 1)
    corrected = correct_colours(cast.clone(), block_means(reference, 8), 8)
    assert torch.allclose(corrected, reference, atol=1e-6)


def test_detail_is_kept_and_block_means_move_to_the_reference():
    torch.manual_seed(1)
    detail = torch.rand(1, 3, 128, 128) - 0.5
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4), size=(128, 128), mode="bilinear")
    reference = smooth
    image = detail * 0.2 + 0.5
    corrected = correct_colours(image.clone(), block_means(reference, 8), 8)
    before = (block_means(image, 8) - block_means(reference, 8)).abs().mean()
    after = (block_means(corrected, 8) - block_means(reference, 8)).abs().mean()
    assert after < before / 10
    high_pass = lambda t: t - torch.nn.functional.avg_pool2d(t, 3, 1, 1)  # noqa: E731
    assert torch.allclose(high_pass(corrected)[..., 8:-8, 8:-8], high_pass(image)[..., 8:-8, 8:-8], atol=0.02)


def test_banded_in_place_correction_equals_the_differentiable_one(monkeypatch):
    monkeypatch.setattr(colour_correction, "BAND_ROWS", 32)  # 200 rows of 8-px blocks: 7 bands
    torch.manual_seed(2)
    image, reference = torch.rand(1, 3, 200, 64), torch.rand(1, 3, 200, 64)
    means = block_means(reference, 8)
    expected = correct_colours(image.clone().requires_grad_(True), means, 8).detach()
    assert torch.allclose(correct_colours(image.clone(), means, 8), expected, rtol=0, atol=1e-6)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="not made of"):
        block_means(torch.zeros(1, 3, 60, 64), 8)
    with pytest.raises(ValueError, match="do not fit"):
        correct_colours(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 4, 4), 8)


def test_decode_applies_the_configured_correction(tiny_pipeline, small_photo):
    stream = tiny_pipeline.compress(small_photo)[0]
    y_hat, z_hat = tiny_pipeline.entropy_decode(tiny_pipeline.parse_bitstreams(stream)[0])
    with torch.no_grad():
        plain, x_f = tiny_pipeline.decode_latents(y_hat, z_hat)
        corrected, _ = tiny_pipeline.decode_latents(
            y_hat, z_hat, options=DecodeOptions(colour_correction_block_size=8)
        )
    assert tiny_pipeline.config.colour_correction_block_size == 0
    assert torch.equal(corrected, correct_colours(plain.clone(), block_means(x_f, 8), 8))
    assert (block_means(corrected, 8) - block_means(x_f, 8)).abs().mean() < (
        block_means(plain, 8) - block_means(x_f, 8)
    ).abs().mean()
    with pytest.raises(ValueError, match="power of two"):
        tiny_pipeline.decode_latents(y_hat, z_hat, options=DecodeOptions(colour_correction_block_size=12))


def test_block_size_is_saved_in_model_index_and_loaded(tiny_pipeline_dir, tmp_path, small_photo):
    folder = tmp_path / "pipeline"
    shutil.copytree(tiny_pipeline_dir, folder)
    pipe = SODECPipeline.from_pretrained(folder)
    pipe.register_to_config(colour_correction_block_size=16)
    pipe.save_pretrained(folder)
    assert json.loads((folder / "model_index.json").read_text())["colour_correction_block_size"] == 16
    loaded = SODECPipeline.from_pretrained(folder)
    assert loaded.config.colour_correction_block_size == 16
    loaded.set_progress_bar_config(disable=True)
    stream = loaded.compress(small_photo)[0]
    y_hat, z_hat = loaded.entropy_decode(loaded.parse_bitstreams(stream)[0])
    decoded = loaded.decompress(stream, output_type="pt").images
    with torch.no_grad():
        expected, _ = loaded.decode_latents(y_hat, z_hat, options=DecodeOptions(colour_correction_block_size=16))
    assert torch.equal(decoded[0], expected[0, :, : small_photo.height, : small_photo.width].clamp(0, 1))


def test_an_invalid_block_size_is_refused(tiny_pipeline):
    with pytest.raises(ValueError, match="colour_correction_block_size"):
        SODECPipeline(**tiny_pipeline.components, colour_correction_block_size=3)
