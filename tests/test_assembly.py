"""SODECPipeline.from_pretrained_parts: tiny Stable Diffusion, CLIP and HiFiC parts saved with the real
on-disk layouts (diffusers subfolders, transformers files, a HiFiC-port checkpoint), then assembled,
round-tripped, saved and reloaded."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from hific_port import make_port_model, save_port_checkpoint
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

from sodec_pipeline import SODECPipeline
from sodec_pipeline.conversion import convert_hific_checkpoint


REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO_ROOT / "hub_configs" / "sodec-tiny"
VIT_MEAN, VIT_STD = [0.5, 0.45, 0.4], [0.25, 0.26, 0.27]


def tiny_vision_config(hidden_size=48):
    return dict(
        hidden_size=hidden_size,
        image_size=32,
        patch_size=8,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        projection_dim=16,
    )


def _assert_same_weights(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    """Every tensor of ``expected``'s state dict is in ``actual``'s, equal to the bit."""
    state = actual.state_dict()
    for key, value in expected.state_dict().items():
        assert torch.equal(value, state[key]), key


def write_preprocessor(folder: Path, size=32):
    """preprocessor_config.json as CLIP repositories ship it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "crop_size": {"height": size, "width": size},
                "do_center_crop": True,
                "do_normalize": True,
                "do_resize": True,
                "image_mean": VIT_MEAN,
                "image_std": VIT_STD,
                "image_processor_type": "CLIPImageProcessor",
                "resample": 3,
                "rescale_factor": 0.00392156862745098,
                "size": {"shortest_edge": size},
            }
        )
    )


def save_sd_model(
    folder: Path,
    cross_attention_dim=24,
    unet_in=4,
    unet_out=4,
    vae_latent=4,
    prediction_type="v_prediction",
    seed=0,
    vae_blocks=(4, 4, 8, 8),
):
    """A Stable-Diffusion-2.1-like folder: model_index.json, unet/, vae/, scheduler/."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=unet_in,
        out_channels=unet_out,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=2,
        norm_num_groups=4,
        use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=vae_blocks,
        latent_channels=vae_latent,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * len(vae_blocks),
        up_block_types=("UpDecoderBlock2D",) * len(vae_blocks),
        norm_num_groups=2,
        sample_size=64,
        scaling_factor=0.13025,
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "_diffusers_version": "0.42.1",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "scheduler": ["diffusers", "PNDMScheduler"],
                "text_encoder": [None, None],
                "tokenizer": [None, None],
                "safety_checker": [None, None],
                "feature_extractor": [None, None],
            }
        )
    )
    return folder


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    sd = save_sd_model(root / "sd21-like")
    torch.manual_seed(1)
    vit = CLIPVisionModel(CLIPVisionConfig(**tiny_vision_config(48)))
    vit.save_pretrained(root / "clip-vision")
    write_preprocessor(root / "clip-vision")
    return {"sd": sd, "vit": root / "clip-vision", "root": root}


@pytest.fixture(scope="module")
def assembled(parts):
    pipe = SODECPipeline.from_pretrained_parts(parts["sd"], parts["vit"], config=TINY_CONFIG)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_components_are_sized_from_the_parts(parts, assembled):
    pipe = assembled
    fg = pipe.fidelity_guidance.config
    assert fg.cross_attention_dim == 24 == pipe.unet.config.cross_attention_dim  # sodec-tiny says 16
    assert fg.image_encoder_hidden_size == 48 == pipe.image_encoder.config.hidden_size  # sodec-tiny says 32
    assert pipe.fidelity_guidance.guidance_projection.proj_in.weight.shape == (24, 48)
    assert list(fg.image_encoder_mean) == VIT_MEAN and list(fg.image_encoder_std) == VIT_STD
    assert pipe.compression_vae.config.out_latent_channels == pipe.unet.config.in_channels
    assert pipe.vae.config.scaling_factor == 0.13025
    assert pipe.scheduler.config.prediction_type == "v_prediction"  # from sd/scheduler
    saved_unet = UNet2DConditionModel.from_pretrained(parts["sd"], subfolder="unet")
    _assert_same_weights(saved_unet, pipe.unet)
    saved_vit = CLIPVisionModel.from_pretrained(parts["vit"])
    _assert_same_weights(saved_vit, pipe.image_encoder)
    assert pipe.compression_vae.is_updated


def test_round_trip_save_and_reload(assembled, small_photo, tmp_path):
    out = assembled(small_photo, output_type="np")
    assert out.images[0].shape == (small_photo.height, small_photo.width, 3)
    assert out.bpp[0] == 8 * len(out.bitstreams[0]) / (small_photo.width * small_photo.height)
    assembled.save_pretrained(tmp_path / "pipe")
    reloaded = SODECPipeline.from_pretrained(tmp_path / "pipe")
    reloaded.set_progress_bar_config(disable=True)
    assert reloaded.compress(small_photo) == out.bitstreams
    again = reloaded.decompress(out.bitstreams, output_type="np")
    np.testing.assert_allclose(again.images[0], out.images[0], atol=1e-6)
    assert reloaded.fidelity_guidance.config.cross_attention_dim == 24
    assert reloaded.scheduler.config.prediction_type == "v_prediction"


def test_image_encoder_layouts(parts):
    """An IP-Adapter-style image_encoder subfolder (CLIPVisionModelWithProjection) and a full CLIP model
    (laion/CLIP-ViT-H-14 layout) both give their vision tower."""
    root = parts["root"]
    torch.manual_seed(2)
    with_projection = CLIPVisionModelWithProjection(CLIPVisionConfig(**tiny_vision_config(48)))
    with_projection.save_pretrained(root / "ip-adapter" / "models" / "image_encoder")
    pipe = SODECPipeline.from_pretrained_parts(
        parts["sd"], root / "ip-adapter", image_encoder_subfolder="models/image_encoder", config=TINY_CONFIG
    )
    assert torch.equal(
        pipe.image_encoder.embeddings.patch_embedding.weight,
        with_projection.vision_model.embeddings.patch_embedding.weight,
    )
    # no preprocessor_config.json there: the hub config's (OpenAI CLIP) normalisation is kept
    assert list(pipe.fidelity_guidance.config.image_encoder_mean)[0] == pytest.approx(0.48145466)

    torch.manual_seed(3)
    text = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37, vocab_size=99,
                max_position_embeddings=16, projection_dim=16)  # fmt: skip
    full = CLIPModel(CLIPConfig(text_config=text, vision_config=tiny_vision_config(40), projection_dim=16))
    full.save_pretrained(root / "laion-clip")
    write_preprocessor(root / "laion-clip")
    pipe = SODECPipeline.from_pretrained_parts(parts["sd"], root / "laion-clip", config=TINY_CONFIG)
    assert pipe.fidelity_guidance.config.image_encoder_hidden_size == 40
    assert torch.equal(
        pipe.image_encoder.embeddings.patch_embedding.weight, full.vision_model.embeddings.patch_embedding.weight
    )
    guidance = pipe.encode_guidance(pipe.decode_fidelity(torch.randn(1, 8, 4, 4)))
    assert guidance.shape == (1, pipe.fidelity_guidance.config.num_tokens, 24)


def test_codec_from_a_converted_hific_checkpoint(parts, tmp_path, small_photo):
    checkpoint = save_port_checkpoint(make_port_model(seed=5), tmp_path / "hific.pt")
    converted = convert_hific_checkpoint(checkpoint, config=TINY_CONFIG, output_dir=tmp_path / "codec")
    # the converted F_p is 32 → 16 (sodec-tiny); the parts need 48 → 24: F_p is untrained, so it is refitted
    pipe = SODECPipeline.from_pretrained_parts(parts["sd"], parts["vit"], codec=tmp_path / "codec", config=TINY_CONFIG)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.compression_vae.fingerprint() == converted.compression_vae.fingerprint()
    _assert_same_weights(converted.fidelity_guidance.fidelity_decoder, pipe.fidelity_guidance.fidelity_decoder)
    assert pipe.fidelity_guidance.guidance_projection.proj_in.weight.shape == (24, 48)
    streams = pipe.compress(small_photo)
    assert streams == [pipe.compress(small_photo)[0]]
    fast = pipe.decompress(streams, output_type="pt", decoder="fidelity").images
    full = pipe.decompress(streams, output_type="pt").images
    assert fast.shape == full.shape == (1, 3, small_photo.height, small_photo.width)
    # T_s is untrained in a converted codec too: a UNet with another input width refits its output layer
    sd8 = save_sd_model(tmp_path / "sd-in8", unet_in=8, unet_out=8, vae_latent=8)
    pipe8 = SODECPipeline.from_pretrained_parts(sd8, parts["vit"], codec=tmp_path / "codec", config=TINY_CONFIG)
    assert pipe8.compression_vae.config.out_latent_channels == 8
    assert pipe8.compression_vae.fingerprint() != converted.compression_vae.fingerprint()
    assert torch.equal(
        pipe8.compression_vae.analysis_transform.conv_block1[1].weight,
        converted.compression_vae.analysis_transform.conv_block1[1].weight,
    )
    assert pipe8(small_photo, output_type="pt").images.shape == (1, 3, small_photo.height, small_photo.width)


def test_codec_from_a_trained_pipeline(tiny_pipeline_dir, tiny_pipeline, parts, tmp_path, small_photo):
    # parts that fit sodec-tiny's codec: its trained F_p is kept as is
    sd16 = save_sd_model(tmp_path / "sd-cross16", cross_attention_dim=16, prediction_type="epsilon")
    torch.manual_seed(4)
    CLIPVisionModel(CLIPVisionConfig(**tiny_vision_config(32))).save_pretrained(tmp_path / "vit32")
    pipe = SODECPipeline.from_pretrained_parts(sd16, tmp_path / "vit32", codec=tiny_pipeline_dir, config=TINY_CONFIG)
    assert pipe.compression_vae.fingerprint() == tiny_pipeline.compression_vae.fingerprint()
    _assert_same_weights(tiny_pipeline.fidelity_guidance, pipe.fidelity_guidance)
    assert pipe.compress(small_photo) == tiny_pipeline.compress(small_photo)
    # a trained F_p that does not fit the parts is refused, naming both sides
    with pytest.raises(ValueError) as info:
        SODECPipeline.from_pretrained_parts(parts["sd"], parts["vit"], codec=tiny_pipeline_dir, config=TINY_CONFIG)
    message = str(info.value)
    assert (
        "width 32 to guidance of width 16" in message
        and "hidden_size 48" in message
        and "cross_attention_dim 24" in message
    )
    sd8 = save_sd_model(tmp_path / "sd-in8", unet_in=8, unet_out=8, vae_latent=8, cross_attention_dim=16)
    with pytest.raises(ValueError, match=r"T_s outputs 4 channels .* UNet takes 8"):
        SODECPipeline.from_pretrained_parts(sd8, tmp_path / "vit32", codec=tiny_pipeline_dir, config=TINY_CONFIG)


def test_parts_that_cannot_fit(parts, tmp_path):
    inpainting = save_sd_model(tmp_path / "in9", unet_in=9)
    with pytest.raises(ValueError, match=r"takes 9 input channels \(unet in_channels\) but predicts 4"):
        SODECPipeline.from_pretrained_parts(inpainting, parts["vit"], config=TINY_CONFIG)
    bad_vae = save_sd_model(tmp_path / "vae8", vae_latent=8)
    with pytest.raises(ValueError, match=r"predicts 4 channels \(unet out_channels\) but the VAE decodes 8"):
        SODECPipeline.from_pretrained_parts(bad_vae, parts["vit"], config=TINY_CONFIG)
    two_blocks = save_sd_model(tmp_path / "vae-x2", vae_blocks=(4, 8))
    with pytest.raises(ValueError, match=r"upsamples its latents ×2 \(2 blocks in vae block_out_channels\).*stride 8"):
        SODECPipeline.from_pretrained_parts(two_blocks, parts["vit"], config=TINY_CONFIG)
    odd = save_sd_model(tmp_path / "cross25", cross_attention_dim=25)
    with pytest.raises(
        ValueError, match=r"projection_num_attention_heads=2, which does not divide the UNet's cross_attention_dim=25"
    ):
        SODECPipeline.from_pretrained_parts(odd, parts["vit"], config=TINY_CONFIG)
    with pytest.raises(OSError, match=r"cannot load the UNet .* unet/ and vae/ subfolders"):
        SODECPipeline.from_pretrained_parts(parts["vit"], parts["vit"], config=TINY_CONFIG)
    with pytest.raises(OSError, match=r"cannot load the image encoder"):
        SODECPipeline.from_pretrained_parts(parts["sd"], parts["sd"], config=TINY_CONFIG)
    with pytest.raises(OSError, match=r"cannot load the codec .* compression_vae/ subfolder"):
        SODECPipeline.from_pretrained_parts(parts["sd"], parts["vit"], codec=parts["sd"], config=TINY_CONFIG)
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        SODECPipeline.from_pretrained_parts(parts["sd"], parts["vit"], config=tmp_path / "nowhere")
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        SODECPipeline.from_pretrained_parts(parts["sd"], parts["vit"], config=TINY_CONFIG, text_encoder="x")


def test_random_codec_follows_the_unet_input_width(parts, tmp_path, small_photo):
    sd8 = save_sd_model(tmp_path / "sd-in8", unet_in=8, unet_out=8, vae_latent=8)
    torch.manual_seed(6)
    vit = CLIPVisionModel(CLIPVisionConfig(**tiny_vision_config(40)))  # an already loaded model works too
    pipe = SODECPipeline.from_pretrained_parts(sd8, vit, config=TINY_CONFIG, torch_dtype=torch.bfloat16)
    assert pipe.image_encoder is vit and pipe.fidelity_guidance.config.image_encoder_hidden_size == 40
    assert pipe.compression_vae.config.out_latent_channels == 8
    assert (
        pipe.unet.dtype == pipe.vae.dtype == pipe.image_encoder.dtype == pipe.fidelity_guidance.dtype == torch.bfloat16
    )
    assert pipe.compression_vae.analysis_transform.conv_block1[1].weight.dtype == torch.float32
    out = pipe(small_photo, output_type="pt")
    assert out.images.shape == (1, 3, small_photo.height, small_photo.width)


def test_a_decode_never_returns_another_size_than_the_header(assembled, small_photo):
    """A pipeline put together by hand with a VAE of scale factor 2 (no assembly check in the way): decoding
    raises instead of returning a smaller image."""
    from diffusers import AutoencoderKL

    (stream,) = assembled.compress(small_photo)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 8),
        latent_channels=4,
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=2,
    ).eval()
    components = dict(assembled.components, vae=vae)
    wrong = SODECPipeline(**components)
    with pytest.raises(ValueError, match=r"made a 32×16 image from a stream of a 96×64 image \(padded 128×64\)"):
        wrong.decompress(stream)
    assert wrong.decompress(stream, decoder="fidelity").images[0].size == small_photo.size
