import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from sodec_pipeline import SODECScheduler


SD = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)


def test_defaults_and_timesteps():
    s = SODECScheduler()
    assert s.config.timestep == 999 and s.order == 1 and len(s) == 1000
    s.set_timesteps(1)
    assert s.timesteps.tolist() == [999]
    with pytest.raises(ValueError, match="one-step"):
        s.set_timesteps(4)
    x = torch.randn(1, 4, 2, 2)
    assert s.scale_model_input(x, 999) is x


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_closed_form(prediction_type):
    s = SODECScheduler(prediction_type=prediction_type)
    sample, out = _inputs()
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    a = torch.cumprod(1 - betas, 0)[999]
    x, e = sample.double(), out.double()
    expected = {
        "epsilon": (x - (1 - a).sqrt() * e) / a.sqrt(),
        "v_prediction": a.sqrt() * x - (1 - a).sqrt() * e,
        "sample": e,
    }[prediction_type]
    result = s.step(out, 999, sample)
    assert torch.equal(result.prev_sample, result.pred_original_sample)
    torch.testing.assert_close(result.prev_sample.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_equals_ddpm_and_ddim_with_trailing_spacing(prediction_type):
    sample, out = _inputs(1)
    ours = SODECScheduler(prediction_type=prediction_type).step(out, 999, sample).prev_sample

    ddpm = DDPMScheduler(**SD, prediction_type=prediction_type, timestep_spacing="trailing", clip_sample=False)
    ddpm.set_timesteps(1)
    assert ddpm.timesteps.tolist() == [999]
    r = ddpm.step(out, ddpm.timesteps[0], sample, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(r.pred_original_sample, ours, rtol=0, atol=1e-5)
    torch.testing.assert_close(r.prev_sample, ours, rtol=0, atol=1e-4)  # DDPM adds ~1e-10·noise

    ddim = DDIMScheduler(
        **SD, prediction_type=prediction_type, timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False
    )
    ddim.set_timesteps(1)
    assert ddim.timesteps.tolist() == [999]
    r = ddim.step(out, ddim.timesteps[0], sample)
    torch.testing.assert_close(r.prev_sample, ours, rtol=0, atol=1e-5)


def test_add_noise_inverts_step():
    s = SODECScheduler()
    x0, noise = _inputs(2)
    t = torch.tensor([999, 999])
    x_t = s.add_noise(x0, noise, t)
    torch.testing.assert_close(s.step(noise, 999, x_t).prev_sample, x0, rtol=1e-4, atol=1e-3)
    v = s.get_velocity(x0, noise, t)
    torch.testing.assert_close(
        SODECScheduler(prediction_type="v_prediction").step(v, 999, x_t).prev_sample, x0, rtol=1e-4, atol=1e-4
    )


def test_other_timestep_and_bf16():
    s = SODECScheduler(timestep=500)
    sample, out = _inputs(3)
    a = s.alphas_cumprod[500]
    torch.testing.assert_close(s.step(out, 500, sample).prev_sample, (sample - (1 - a).sqrt() * out) / a.sqrt())
    r = s.step(out.bfloat16(), 500, sample.bfloat16()).prev_sample
    assert r.dtype == torch.bfloat16


def test_config_round_trip(tmp_path):
    s = SODECScheduler(prediction_type="v_prediction", timestep=900)
    s.save_pretrained(tmp_path)
    assert (tmp_path / "scheduler_config.json").is_file()
    loaded = SODECScheduler.from_pretrained(tmp_path)
    assert loaded.config.prediction_type == "v_prediction" and loaded.config.timestep == 900


def test_bad_arguments():
    with pytest.raises(ValueError):
        SODECScheduler(prediction_type="flow")
    with pytest.raises(ValueError):
        SODECScheduler(timestep=1000)
    with pytest.raises(ValueError):
        SODECScheduler(beta_schedule="cosine")
