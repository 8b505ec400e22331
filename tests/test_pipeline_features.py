"""diffusers conventions and batching on the tiny layout: batch_size, enable_model_cpu_offload (accelerate
hooks on CPU), variant save/load, the progress bar, AutoencoderTiny as vae, torch.compile with
fullgraph=True, output_type="latent"."""

import io

import numpy as np
import pytest
import torch

from sodec_pipeline import SODECPipeline


@pytest.fixture(scope="module")
def fresh_pipeline(tiny_pipeline_dir):
    """A pipeline this module may modify (hooks, compiled modules)."""

    def load():
        pipe = SODECPipeline.from_pretrained(tiny_pipeline_dir)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return load


# ---------------------------------------------------------------------- batching
def test_batched_decode_matches_one_at_a_time(tiny_pipeline, photos, small_photo):
    photo = photos["bsds_481x321.jpg"]
    flipped = photo.transpose(0)  # same size, other content
    images = [photo, small_photo, flipped, small_photo]
    streams = tiny_pipeline.compress(images)
    assert streams == [tiny_pipeline.compress(image)[0] for image in images]  # bytes: per image, always
    single = tiny_pipeline.decompress(streams, output_type="pt").images
    for batch_size in (4,):
        batched = tiny_pipeline.decompress(streams, output_type="pt", batch_size=batch_size)
        assert batched.bitstreams == streams
        for a, b in zip(single, batched.images):
            assert a.shape == b.shape
            # batched convolutions round differently from single ones on CPU (PyTorch runs oneDNN for a
            # batch, its own kernel for one small input): equal to float rounding, not bit for bit
            torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    round_trip = tiny_pipeline(image=[small_photo] * 3, output_type="pt", batch_size=2)
    assert round_trip.bitstreams == streams[1:2] * 3 and round_trip.images.shape == (3, 3, 64, 96)
    with pytest.raises(ValueError, match="batch_size"):
        tiny_pipeline.decompress(streams, batch_size=0)


def test_batch_groups_keep_order():
    from sodec_pipeline.pipelines.pipeline_sodec import batch_groups

    assert batch_groups([(64, 64), (128, 64), (64, 64), (64, 64)], 2) == [[0, 2], [3], [1]]
    assert batch_groups([(64, 64)] * 3, 1) == [[0], [1], [2]]


# ---------------------------------------------------------------------- offload
def test_model_cpu_offload_moves_each_component_in_turn(fresh_pipeline, small_photo, monkeypatch):
    from accelerate.hooks import CpuOffload

    reference = fresh_pipeline()  # not the session fixture: another test round-trips it through bf16
    pipe = fresh_pipeline()
    names = {id(getattr(pipe, n)): n for n in ("compression_vae", "fidelity_guidance", "image_encoder", "unet", "vae")}
    onloaded = []
    original = CpuOffload.pre_forward

    def recording_pre_forward(self, module, *args, **kwargs):
        onloaded.append(names[id(module)])
        return original(self, module, *args, **kwargs)

    monkeypatch.setattr(CpuOffload, "pre_forward", recording_pre_forward)
    pipe.enable_model_cpu_offload(device="cpu")
    assert all(hasattr(getattr(pipe, n), "_hf_hook") for n in names.values())
    streams = pipe.compress(small_photo)
    assert set(onloaded) == {"compression_vae"}  # the hook fires at each decorated call (E, then the coding)
    assert streams == reference.compress(small_photo)
    onloaded.clear()
    out = pipe.decompress(streams, output_type="pt").images
    first_use = list(dict.fromkeys(onloaded))
    assert first_use == [
        "compression_vae",
        "fidelity_guidance",
        "image_encoder",
        "unet",
        "vae",
    ]  # model_cpu_offload_seq
    assert torch.equal(out, reference.decompress(streams, output_type="pt").images)


# ---------------------------------------------------------------------- variant
def test_variant_save_and_load(tiny_pipeline_dir, tiny_pipeline, small_photo, tmp_path):
    pipe = SODECPipeline.from_pretrained(tiny_pipeline_dir, torch_dtype=torch.float16)
    pipe.save_pretrained(tmp_path / "fp16", variant="fp16")
    for sub in ("compression_vae", "fidelity_guidance", "unet", "vae"):
        assert (tmp_path / "fp16" / sub / "diffusion_pytorch_model.fp16.safetensors").is_file(), sub
        assert not (tmp_path / "fp16" / sub / "diffusion_pytorch_model.safetensors").exists(), sub
    with pytest.raises(OSError):
        SODECPipeline.from_pretrained(tmp_path / "fp16")  # no default variant saved
    loaded = SODECPipeline.from_pretrained(tmp_path / "fp16", variant="fp16", torch_dtype=torch.float16)
    assert loaded.unet.dtype == torch.float16 and loaded.compression_vae.dtype == torch.float32
    assert loaded.compress(small_photo) == tiny_pipeline.compress(small_photo)  # the codec stays float32


# ---------------------------------------------------------------------- progress bar
def test_progress_bar_over_images_follows_its_config(fresh_pipeline, small_photo):
    pipe = fresh_pipeline()
    streams = pipe.compress([small_photo] * 3)
    buffer = io.StringIO()
    pipe.set_progress_bar_config(file=buffer, disable=False, desc="decoding")
    pipe.decompress(streams, batch_size=2, decoder="fidelity")
    assert "decoding" in buffer.getvalue() and "3/3" in buffer.getvalue()
    buffer.truncate(0)
    pipe.set_progress_bar_config(file=buffer, disable=True)
    pipe.decompress(streams, decoder="fidelity")
    assert buffer.getvalue().strip("\x00") == ""


# ---------------------------------------------------------------------- AutoencoderTiny
def test_autoencoder_tiny_as_vae(fresh_pipeline, small_photo, photos, tmp_path):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    taesd = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1), latent_channels=4,
    ).eval()  # fmt: skip
    components = dict(fresh_pipeline().components, vae=taesd)
    pipe = SODECPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.tile_specs.vae.size == pipe.tile_specs.unet.size  # TAESD's config has no sample_size
    streams = pipe.compress([small_photo, photos["bsds_481x321.jpg"]])
    out = pipe.decompress(streams, output_type="pt").images
    assert [tuple(o.shape) for o in out] == [(3, 64, 96), (3, 321, 481)]
    assert all(torch.isfinite(o).all() for o in out)
    pipe.save_pretrained(tmp_path / "taesd")
    reloaded = SODECPipeline.from_pretrained(tmp_path / "taesd")
    assert isinstance(reloaded.vae, AutoencoderTiny)
    again = reloaded.decompress(streams[0], output_type="pt").images
    assert torch.equal(again[0], out[0])


# ---------------------------------------------------------------------- torch.compile
def test_torch_compile_fullgraph_of_unet_step_and_vae_decoder(fresh_pipeline, small_photo):
    """The UNet with the scheduler's step, and the VAE decoder, each trace into one graph (fullgraph=True
    raises on any graph break). The eager backend keeps the test fast; inductor compiles the same graphs."""
    import torch._dynamo

    torch._dynamo.reset()
    reference, pipe = fresh_pipeline(), fresh_pipeline()
    streams = pipe.compress(small_photo)
    expected = reference.decompress(streams, output_type="pt").images
    pipe.unet.compile(fullgraph=True, backend="eager")
    pipe.vae.decoder.compile(fullgraph=True, backend="eager")
    one_step = torch.compile(pipe.denoise, fullgraph=True, backend="eager")
    with torch.no_grad():
        latents = torch.randn(1, 4, 8, 12)
        guidance = torch.randn(1, pipe.fidelity_guidance.config.num_tokens, pipe.unet.config.cross_attention_dim)
        torch.testing.assert_close(one_step(latents, guidance), reference.denoise(latents, guidance))
    out = pipe.decompress(streams, output_type="pt").images
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    torch._dynamo.reset()


# ---------------------------------------------------------------------- output_type="latent"
def test_latent_output(tiny_pipeline, small_photo, photos):
    streams = tiny_pipeline.compress([small_photo, photos["bsds_481x321.jpg"]])
    latents = tiny_pipeline.decompress(streams, output_type="latent").images
    assert [tuple(t.shape) for t in latents] == [(4, 8, 16), (4, 48, 64)]  # the padded images / 8
    images = tiny_pipeline.decompress(streams, output_type="pt").images
    with torch.no_grad():
        decoded = tiny_pipeline.decode_vae(latents[1][None]).clamp(0, 1)[0, :, :321, :481]
    torch.testing.assert_close(decoded, images[1], rtol=0, atol=0)
    same_size = tiny_pipeline.decompress(streams[:1] * 2, output_type="latent").images
    assert isinstance(same_size, torch.Tensor) and same_size.shape == (2, 4, 8, 16)
    with pytest.raises(ValueError, match="latent"):
        tiny_pipeline.decompress(streams, output_type="latent", decoder="fidelity")
    assert np.isfinite(latents[0].numpy()).all()
