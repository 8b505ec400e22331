"""The realism control: ``decompress(realism=β)`` (0: the fidelity decode, 1: the full diffusion decode, between: the
UNet at the scheduler's timestep for β, for a model trained with ``realism_control``), checked before anything is
decoded."""

import pytest
import torch

from sodec_pipeline import SODECPipeline
from sodec_pipeline.schedulers import SODECScheduler


@pytest.fixture(scope="module")
def realism_pipeline(tiny_pipeline):
    """The tiny pipeline with a scheduler that takes a realism (its UNet is random: the test is the wiring)."""
    scheduler = SODECScheduler.from_config({**tiny_pipeline.scheduler.config, "realism_control": True})
    return SODECPipeline(**{**tiny_pipeline.components, "scheduler": scheduler})


@pytest.fixture(scope="module")
def stream(tiny_pipeline, photos):
    return tiny_pipeline.compress(photos["bsds_481x321.jpg"].crop((0, 0, 96, 80)))[0]


def decoded(pipe, stream, **kwargs):
    return pipe.decompress(stream, output_type="pt", **kwargs).images[0]


def test_realism_timesteps_scale_the_one_timestep():
    scheduler = SODECScheduler(prediction_type="sample", realism_control=True)
    assert scheduler.realism_timesteps(1.0).tolist() == [999]
    assert scheduler.realism_timesteps(torch.tensor([0.0, 0.5, 0.25])).tolist() == [0, 500, 250]
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            scheduler.realism_timesteps(bad)


def test_a_model_without_the_control_takes_realism_1_only():
    scheduler = SODECScheduler(prediction_type="sample")
    assert scheduler.realism_timesteps(1).tolist() == [999]
    with pytest.raises(ValueError, match="without a realism control"):
        scheduler.realism_timesteps(0.5)


def test_realism_0_is_the_fidelity_decode_and_1_the_diffusion_decode(tiny_pipeline, stream):
    fidelity = decoded(tiny_pipeline, stream, decoder="fidelity")
    diffusion = decoded(tiny_pipeline, stream)
    assert torch.equal(decoded(tiny_pipeline, stream, realism=0), fidelity)
    assert torch.equal(decoded(tiny_pipeline, stream, realism=1.0), diffusion)
    assert not torch.equal(fidelity, diffusion)


def test_realism_between_is_refused_before_decoding_by_a_model_without_the_control(tiny_pipeline, stream, monkeypatch):
    monkeypatch.setattr(type(tiny_pipeline), "entropy_decode", lambda *a: pytest.fail("decoded before the check"))
    with pytest.raises(ValueError, match="without a realism control"):
        tiny_pipeline.decompress(stream, realism=0.5)
    for bad in (-1, 2, "high", True, float("nan")):
        with pytest.raises(ValueError, match=r"realism must be a number in \[0, 1\]"):
            tiny_pipeline.decompress(stream, realism=bad)
    with pytest.raises(ValueError, match="is a diffusion decode"):
        tiny_pipeline.decompress(stream, decoder="fidelity", realism=1)
    with pytest.raises(ValueError, match="without a realism control"):
        SODECPipeline(**tiny_pipeline.components, default_realism=0.5)


def test_the_unet_runs_at_the_timestep_of_the_realism(realism_pipeline, stream, monkeypatch):
    seen = []
    forward = type(realism_pipeline.unet).forward

    def spy(unet, sample, timestep, *args, **kwargs):
        seen.append(timestep.tolist())
        return forward(unet, sample, timestep, *args, **kwargs)

    monkeypatch.setattr(type(realism_pipeline.unet), "forward", spy)
    half = decoded(realism_pipeline, stream, realism=0.5)
    full = decoded(realism_pipeline, stream, realism=1)
    assert seen == [[500], [999]]
    assert not torch.equal(half, full)
    assert torch.equal(full, decoded(realism_pipeline, stream))  # default_realism 1
    default_half = SODECPipeline(**realism_pipeline.components, default_realism=0.5)
    assert torch.equal(decoded(default_half, stream), half)
    assert default_half.config.default_realism == 0.5


def test_per_image_realism_in_a_batch_of_latents(realism_pipeline, stream):
    """Training gives each image its own β: the batch decode equals each image's decode at its β."""
    parsed = realism_pipeline.parse_bitstreams([stream])
    y_hat, z_hat = realism_pipeline.entropy_decode(parsed[0])
    y2, z2 = torch.cat([y_hat, y_hat]), torch.cat([z_hat, z_hat])
    from sodec_pipeline.pipelines import DecodeOptions

    with torch.no_grad():
        both, _ = realism_pipeline.decode_latents(y2, z2, options=DecodeOptions(realism=torch.tensor([0.25, 1.0])))
        quarter, _ = realism_pipeline.decode_latents(y_hat, z_hat, options=DecodeOptions(realism=0.25))
        full, _ = realism_pipeline.decode_latents(y_hat, z_hat)
    assert torch.allclose(both[0], quarter[0], atol=1e-5)
    assert torch.allclose(both[1], full[0], atol=1e-5)


def test_the_round_trip_and_the_saved_folder_keep_the_realism(realism_pipeline, photos, tmp_path):
    photo = photos["bsds_481x321.jpg"].crop((0, 0, 96, 80))
    assert torch.equal(
        realism_pipeline(photo, output_type="pt", realism=0).images[0],
        realism_pipeline(photo, output_type="pt", decoder="fidelity").images[0],
    )
    pipe = SODECPipeline(**realism_pipeline.components, default_realism=0.75)
    pipe.save_pretrained(tmp_path / "p")
    loaded = SODECPipeline.from_pretrained(tmp_path / "p")
    assert loaded.config.default_realism == 0.75
    assert loaded.scheduler.config.realism_control is True
