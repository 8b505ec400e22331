import json

import pytest
import torch

from sodec_pipeline import CompressionVAE, FidelityGuidanceEncoder
from sodec_pipeline.hub_configs import resolve_hub_config
from sodec_pipeline.models import ChannelNorm2d


TINY = resolve_hub_config("sodec-tiny")


def _config(name):
    return json.loads((TINY / name / "config.json").read_text())


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    model = CompressionVAE.from_config(_config("compression_vae"))
    model.update(force=True)
    return model.eval()


def test_channel_norm_normalises_over_channels():
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    y = ChannelNorm2d(6)(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 5, 7), atol=1e-5, rtol=0)
    assert set(dict(ChannelNorm2d(6).named_parameters())) == {"gamma", "beta"}


def test_forward_shapes_rate_and_gradients(vae):
    x = torch.rand(2, 3, 128, 192)
    vae.train()
    out = vae(x)
    vae.eval()
    c = vae.config.latent_channels
    assert out.y_hat.shape == (2, c, 8, 12)
    assert out.z_hat.shape == (2, vae.config.hyper_channels, 2, 3)
    assert out.latents.shape == (2, 4, 16, 24)
    assert out.bpp.shape == (2,) and torch.isfinite(out.bpp).all() and (out.bpp > 0).all()
    loss = out.bpp.mean() + out.latents.square().mean() + vae.aux_loss()
    loss.backward()
    grad = vae.analysis_transform.conv_block1[1].weight.grad
    assert grad is not None and grad.abs().sum() > 0
    vae.zero_grad()


def test_compress_decompress_matches_quantised_latents(vae):
    x = torch.rand(1, 3, 64, 128)
    coded = vae.compress(x)
    y_strings, z_strings = coded["strings"]
    assert len(y_strings) == len(z_strings) == 1 and isinstance(y_strings[0], bytes)
    dec = vae.decompress(coded["strings"], coded["shape"])
    y = vae.encode(x)
    z_hat = dec["z_hat"]
    means, _ = vae.hyper_synthesis(z_hat)
    torch.testing.assert_close(dec["y_hat"], torch.round(y - means) + means, atol=1e-5, rtol=0)
    z = vae.hyper_analysis(y)
    medians = vae.entropy_bottleneck.medians()
    torch.testing.assert_close(z_hat, torch.round(z - medians) + medians, atol=1e-5, rtol=0)


def test_cdf_tables_survive_save_and_load_byte_for_byte(vae, tmp_path):
    vae.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = CompressionVAE.from_pretrained(tmp_path)
    for module in ("entropy_bottleneck", "gaussian_conditional"):
        for name in ("_quantized_cdf", "_offset", "_cdf_length"):
            a = getattr(getattr(vae, module), name)
            b = getattr(getattr(loaded, module), name)
            assert a.numel() > 0 and a.dtype == b.dtype and torch.equal(a, b), (module, name)
    assert torch.equal(vae.gaussian_conditional.scale_table, loaded.gaussian_conditional.scale_table)
    assert loaded.fingerprint() == vae.fingerprint()
    x = torch.rand(1, 3, 64, 64)
    assert loaded.compress(x)["strings"] == vae.compress(x)["strings"]


def test_stays_float32(vae):
    for call in (
        lambda m: m.to(torch.bfloat16),
        lambda m: m.to("cpu", torch.float16),
        lambda m: m.half(),
        lambda m: m.bfloat16(),
    ):
        assert call(vae) is vae
        assert {p.dtype for p in vae.parameters()} == {torch.float32}
        assert vae.gaussian_conditional.scale_table.dtype == torch.float32


def test_to_keeps_memory_format_and_device_but_not_dtype():
    torch.manual_seed(0)
    model = CompressionVAE.from_config(_config("compression_vae"))
    assert model.to(torch.float16, memory_format=torch.channels_last) is model
    weights = [p for p in model.parameters() if p.ndim == 4 and p.shape[-1] > 1]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert not all(p.is_contiguous() for p in weights)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.to("meta").entropy_bottleneck.quantiles.device.type == "meta"


def test_loading_resizes_entropy_tables_that_are_already_built():
    """A checkpoint's CDF tables load into a model whose own tables have other shapes (resuming training)."""
    torch.manual_seed(0)
    source = CompressionVAE.from_config(_config("compression_vae"))
    with torch.no_grad():
        source.entropy_bottleneck.quantiles[:, :, 0] -= 20  # wider tails: longer z tables
    source.update(force=True)
    torch.manual_seed(1)
    target = CompressionVAE.from_config(_config("compression_vae"))
    target.update(force=True)
    assert target.entropy_bottleneck._quantized_cdf.shape != source.entropy_bottleneck._quantized_cdf.shape
    target.load_state_dict(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert target.fingerprint() == source.fingerprint()


def test_fingerprint_tracks_weights(tmp_path):
    torch.manual_seed(1)
    model = CompressionVAE.from_config(_config("compression_vae"))
    model.update(force=True)
    first = model.fingerprint()
    assert len(first) == 4 and model.fingerprint() == first
    with torch.no_grad():
        model.hyper_synthesis_scale.conv3.bias.add_(1e-3)
    assert model.fingerprint() != first


def test_the_entropy_model_codes_with_its_own_codecs_modules_after_a_deep_copy(vae):
    """``entropy_model`` is not a registered module (the state-dict names and the fingerprint stay the codec's):
    it refers to the codec's modules, and a deep copy's entropy model to the copy's. A codec that has coded
    (its coding cache holds constriction's models, which do not pickle) copies and pickles."""
    import copy
    import pickle

    assert not any("entropy_model" in name for name in vae.state_dict())
    vae.compress(torch.rand(1, 3, 64, 64))
    assert pickle.loads(pickle.dumps(vae)).fingerprint() == vae.fingerprint()
    twin = copy.deepcopy(vae)
    for name in ("hyper_analysis", "hyper_synthesis_mean", "hyper_synthesis_scale", "entropy_bottleneck"):
        assert getattr(twin.entropy_model, name) is getattr(twin, name) is not getattr(vae, name)
    x = torch.rand(1, 3, 64, 64)
    assert twin.compress(x)["strings"] == vae.compress(x)["strings"] and twin.fingerprint() == vae.fingerprint()
    with torch.no_grad():
        twin.hyper_synthesis_mean.conv3.bias.add_(0.5)
    assert twin.compress(x)["entropy_checks"] != vae.compress(x)["entropy_checks"]


def test_compress_without_tables_and_bad_shapes_are_clear():
    model = CompressionVAE.from_config(_config("compression_vae"))
    with pytest.raises(RuntimeError, match="update"):
        model.compress(torch.rand(1, 3, 64, 64))
    model.update(force=True)
    with pytest.raises(ValueError, match="multiples of 64"):
        model.compress(torch.rand(1, 3, 64, 65))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.compress(torch.rand(3, 64, 64))


def test_fidelity_guidance_shapes():
    cfg = _config("fidelity_guidance")
    torch.manual_seed(0)
    model = FidelityGuidanceEncoder.from_config(cfg).eval()
    y_hat = torch.randn(2, cfg["latent_channels"], 4, 6)
    x_f = model.decode(y_hat)
    assert x_f.shape == (2, 3, 64, 96)
    pixels = model.prepare_image_encoder_input(torch.rand(2, 3, 64, 96))
    assert pixels.shape == (2, 3, cfg["image_encoder_size"], cfg["image_encoder_size"])
    # the normalisation is the configured one: a mid-grey image maps to (0.5 - mean) / std
    grey = model.prepare_image_encoder_input(torch.full((1, 3, 64, 64), 0.5))
    expected = (0.5 - torch.tensor(cfg["image_encoder_mean"])) / torch.tensor(cfg["image_encoder_std"])
    torch.testing.assert_close(grey[0, :, 3, 3], expected)
    tokens = torch.randn(2, 17, cfg["image_encoder_hidden_size"])
    assert model.project(tokens).shape == (2, cfg["num_tokens"], cfg["cross_attention_dim"])


def test_entropy_coding_ignores_autocast(vae):
    x = torch.rand(1, 3, 64, 64)
    coded = vae.compress(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert vae.compress(x)["strings"] == coded["strings"]
        under = vae.decompress(coded["strings"], coded["shape"])
    plain = vae.decompress(coded["strings"], coded["shape"])
    assert under["y_hat"].dtype == torch.float32 and torch.equal(under["y_hat"], plain["y_hat"])


def test_gdn_layout_codes_and_decodes_at_stride_16(tmp_path):
    """analysis_type="gdn" / decoder_type="gdn" (the sodec-small layout): Ballé's transforms with GDN and
    inverse GDN as E and D_a, stride 16 both ways; the codec round-trips its quantised latents, saves and
    reloads; configs that do not fit are refused."""
    from sodec_pipeline.models.layers import GDN

    cfg = dict(_config("compression_vae"), analysis_type="gdn", block_out_channels=[8, 8, 8])
    torch.manual_seed(0)
    codec = CompressionVAE.from_config(cfg)
    assert sum(isinstance(m, GDN) for m in codec.analysis_transform.modules()) == 3
    codec.update(force=True)
    codec.eval()
    x = torch.rand(1, 3, 64, 128)
    y = codec.encode(x)
    assert y.shape == (1, cfg["latent_channels"], 4, 8)
    coded = codec.compress(x)
    decoded = codec.decompress(coded["strings"], coded["shape"], entropy_checks=coded["entropy_checks"])
    means, _ = codec.entropy_model.entropy_parameters(decoded["z_hat"])
    torch.testing.assert_close(decoded["y_hat"], torch.round(y - means) + means)
    codec.save_pretrained(tmp_path / "codec")
    reloaded = CompressionVAE.from_pretrained(tmp_path / "codec")
    assert reloaded.config.analysis_type == "gdn" and reloaded.fingerprint() == codec.fingerprint()

    guidance_cfg = dict(_config("fidelity_guidance"), decoder_type="gdn", decoder_block_out_channels=[8, 8, 8])
    guidance = FidelityGuidanceEncoder.from_config(guidance_cfg).eval()
    assert sum(isinstance(m, GDN) and m.inverse for m in guidance.fidelity_decoder.modules()) == 3
    assert guidance.decode(decoded["y_hat"]).shape == (1, 3, 64, 128)

    with pytest.raises(ValueError, match="analysis_type"):
        CompressionVAE.from_config(dict(cfg, analysis_type="ballé"))
    with pytest.raises(ValueError, match="3 entries"):
        CompressionVAE.from_config(dict(cfg, block_out_channels=[8, 8, 8, 8, 8]))
    with pytest.raises(ValueError, match="decoder_type"):
        FidelityGuidanceEncoder.from_config(dict(guidance_cfg, decoder_type="hifi"))
    with pytest.raises(ValueError, match="no output activation"):
        FidelityGuidanceEncoder.from_config(dict(guidance_cfg, decoder_output_activation="tanh"))


def test_library_internals_still_work(vae, tmp_path):
    """The private torch and diffusers functions of ``library_internals.py`` still behave as
    the codec relies on; an upgrade that changes one fails here."""
    from sodec_pipeline import library_internals as internals

    parse = internals.parse_module_to_arguments
    assert parse("cpu") == (torch.device("cpu"), None, False, None)
    assert parse(torch.float16) == (None, torch.float16, False, None)
    assert parse(torch.zeros(1, dtype=torch.bfloat16)) == (torch.device("cpu"), torch.bfloat16, False, None)
    assert parse("cpu", torch.float16, non_blocking=True) == (torch.device("cpu"), torch.float16, True, None)
    assert parse(memory_format=torch.channels_last) == (None, None, False, torch.channels_last)

    vae.save_pretrained(tmp_path / "codec")
    path = internals.model_weights_file(str(tmp_path), "codec", None)
    assert path == str(tmp_path / "codec" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(EnvironmentError):
        internals.model_weights_file(str(tmp_path), "codec", "fp16")
