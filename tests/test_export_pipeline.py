"""Tests of training/export_pipeline.py: a checkpoint of train_sodec.py, or modules of other pipelines, into a
pipeline folder with its model card."""

import shutil

import pytest
import torch
from training_runs import front_matter, torch_threads


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with torch_threads(1):
        yield


def test_export_pipeline_writes_a_model_card(tiny_pipeline_dir, tmp_path):
    """export_pipeline.py writes README.md with front matter; the licence comes from the base pipeline's card
    (or --license), a local base is no base_model."""
    import export_pipeline

    base = tmp_path / "base"
    shutil.copytree(tiny_pipeline_dir, base)
    (base / "README.md").write_text("---\nlicense: openrail++\n---\n# base\n")
    out = tmp_path / "exported"
    export_pipeline.main(["--pipeline", str(base), "--output", str(out), "--dataset_tag", "someone/bsds500"])
    text = (out / "README.md").read_text()
    data = front_matter(text)
    assert data["license"] == "openrail++" and data["pipeline_tag"] == "image-to-image"
    assert data["library_name"] == "diffusers" and "sodec" in data["tags"] and "base_model" not in data
    assert data["datasets"] == ["someone/bsds500"]
    assert "# SODEC — exported" in text and "## Quality levels" in text and "float32" in text
    export_pipeline.main(["--pipeline", str(base), "--output", str(tmp_path / "other"), "--license", "mit"])
    assert front_matter((tmp_path / "other" / "README.md").read_text())["license"] == "mit"


def test_export_pipeline_from_a_checkpoint_in_float16(tiny_pipeline_dir, tmp_path, small_photo):
    """training/export_pipeline.py: a checkpoint's networks into a pipeline folder, parameters in fp16,
    buffers (the entropy tables) untouched; the folder loads in fp32 and round-trips an image."""
    import export_pipeline
    from safetensors.torch import load_file, save_file

    from sodec_pipeline import SODECPipeline

    base = SODECPipeline.from_pretrained(tiny_pipeline_dir)
    checkpoint = tmp_path / "checkpoint-7"
    for name in ("compression_vae", "unet"):
        module = getattr(base, name)
        state = {
            k: (v + 0.01 if v.is_floating_point() and k in dict(module.named_parameters()) else v)
            for k, v in module.state_dict().items()
        }
        (checkpoint / name).mkdir(parents=True)
        save_file(
            {k: v.contiguous() for k, v in state.items()},
            str(checkpoint / name / "diffusion_pytorch_model.safetensors"),
        )
    out = tmp_path / "exported"
    export_pipeline.main(
        ["--pipeline", str(tiny_pipeline_dir), "--checkpoint", str(checkpoint), "--output", str(out),
         "--weights_dtype", "float16"]
    )  # fmt: skip
    saved = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in saved.values()} == {torch.float16}
    codec_file = load_file(str(out / "compression_vae" / "diffusion_pytorch_model.safetensors"))
    assert codec_file["gaussian_conditional.scale_table"].dtype == torch.float32  # buffers keep their dtype
    configs = sorted(out.glob("*.json")) + sorted(out.glob("*/*.json"))
    assert len(configs) >= 7 and not [p for p in configs if "_name_or_path" in p.read_text()]  # no source paths
    loaded = SODECPipeline.from_pretrained(out)
    expected = base.unet.state_dict()["conv_out.weight"] + 0.01
    assert loaded.unet.conv_out.weight.dtype == torch.float32
    assert torch.equal(loaded.unet.conv_out.weight, expected.half().float())
    assert torch.equal(loaded.vae.decoder.conv_out.weight, base.vae.decoder.conv_out.weight.half().float())
    output = loaded(image=small_photo)
    assert output.images[0].size == small_photo.size and output.bpp[0] > 0
    card = (out / "README.md").read_text()
    assert front_matter(card)["pipeline_tag"] == "image-to-image"
    assert "checkpoint-7" in card and "compression_vae, unet" in card and "float16" in card
    with pytest.raises(FileNotFoundError, match="not a train_sodec.py checkpoint"):
        export_pipeline.main(
            ["--pipeline", str(tiny_pipeline_dir), "--checkpoint", str(tmp_path), "--output", str(tmp_path / "x")]
        )


def test_export_takes_modules_from_another_pipeline(tiny_pipeline_dir, tmp_path):
    """export_pipeline.py --take MODULE=PIPELINE copies a component or a submodule's weights, nothing else."""
    import export_pipeline

    from sodec_pipeline import SODECPipeline

    other = SODECPipeline.from_pretrained(tiny_pipeline_dir)
    with torch.no_grad():
        for p in list(other.unet.parameters()) + list(other.compression_vae.latent_transform.parameters()):
            p.add_(0.25)
        other.compression_vae.analysis_transform.conv_block1[1].weight.add_(1.0)
    other.save_pretrained(tmp_path / "other")
    out = tmp_path / "merged"
    export_pipeline.main(
        ["--pipeline", str(tiny_pipeline_dir), "--output", str(out), "--take", f"unet={tmp_path / 'other'}",
         "--take", f"compression_vae.latent_transform={tmp_path / 'other'}"]
    )  # fmt: skip
    base, merged = SODECPipeline.from_pretrained(tiny_pipeline_dir), SODECPipeline.from_pretrained(out)
    assert torch.equal(merged.unet.conv_out.weight, other.unet.conv_out.weight)
    assert torch.equal(
        merged.compression_vae.latent_transform.conv_out.weight, other.compression_vae.latent_transform.conv_out.weight
    )
    assert torch.equal(
        merged.compression_vae.analysis_transform.conv_block1[1].weight,
        base.compression_vae.analysis_transform.conv_block1[1].weight,
    )
    with pytest.raises(SystemExit):
        export_pipeline.main(["--pipeline", str(tiny_pipeline_dir), "--output", str(out), "--take", "codec=x"])
