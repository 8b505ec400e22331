"""SODECCodecPipeline (sodec_pipeline/pipelines/coding.py): the codec and D_a of a saved pipeline loaded without
diffusers, as `sodec compress` and `sodec decompress --fidelity` run them. The same bytes and pixels as
SODECPipeline, and neither diffusers nor transformers nor compressai imported."""

import inspect
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from sodec_pipeline.cli import model_loading
from sodec_pipeline.models.fidelity_decoder import make_fidelity_decoder
from sodec_pipeline.pipelines.coding import CodecPipelineUnsupported, SODECCodecPipeline


@pytest.fixture(scope="module")
def codec_pipeline(tiny_pipeline_dir):
    """Stored as the session's ``tiny_pipeline`` is (not channels-last)."""
    return SODECCodecPipeline.from_pretrained(tiny_pipeline_dir, fidelity_decoder=True)


def test_same_bytes_and_fidelity_pixels_as_the_pipeline(codec_pipeline, tiny_pipeline, photos):
    """Every level, a size budget, and the fidelity decode: identical to SODECPipeline's (the codec is the same
    modules and weights: the same fingerprint)."""
    full = tiny_pipeline
    assert codec_pipeline.compression_vae.fingerprint() == full.compression_vae.fingerprint()
    assert codec_pipeline.tile_specs == full.tile_specs
    for image in photos.values():
        for quality in range(1, full.compression_vae.num_qualities + 1):
            (stream,) = codec_pipeline.compress(image, quality=quality)
            assert stream == full.compress(image, quality=quality)[0]
        budget = len(stream) - 1
        assert codec_pipeline.compress(image, max_bytes=budget) == full.compress(image, max_bytes=budget)
        ours = codec_pipeline.decompress(stream, output_type="np", decoder="fidelity")
        theirs = full.decompress(stream, output_type="np", decoder="fidelity")
        assert np.array_equal(ours.images, theirs.images) and ours.bpp == theirs.bpp


def test_shipped_model_same_bytes_and_pixels(photos):
    """sodec-small (GDN transforms): the codec pipeline's streams and fidelity decode are the pipeline's."""
    from sodec_pipeline import SODECPipeline
    from sodec_pipeline.shipped_models import resolve_model_path

    folder = resolve_model_path("sodec-small")
    full = SODECPipeline.from_pretrained(folder, dtype=torch.float32).enable_channels_last()
    full.set_progress_bar_config(disable=True)
    light = SODECCodecPipeline.from_pretrained(folder, fidelity_decoder=True, dtype=torch.float32)
    light.enable_channels_last()
    image = photos["bsds_481x321.jpg"]
    for quality in (1, 9):
        (stream,) = full.compress(image, quality=quality)
        assert light.compress(image, quality=quality) == [stream]
        ours = light.decompress(stream, output_type="np", decoder="fidelity").images
        assert np.array_equal(ours, full.decompress(stream, output_type="np", decoder="fidelity").images)


def test_fidelity_pixels_in_bfloat16_as_the_pipeline(tiny_pipeline_dir, small_photo):
    """D_a cast as SODECPipeline.from_pretrained(dtype=...) casts it, channels-last as `sodec` stores it."""
    from sodec_pipeline import SODECPipeline

    full = SODECPipeline.from_pretrained(tiny_pipeline_dir, dtype=torch.bfloat16).enable_channels_last()
    full.set_progress_bar_config(disable=True)
    light = SODECCodecPipeline.from_pretrained(tiny_pipeline_dir, fidelity_decoder=True, dtype=torch.bfloat16)
    light.enable_channels_last()
    assert light.fidelity_guidance.dtype == full.fidelity_guidance.dtype == torch.bfloat16
    (stream,) = full.compress(small_photo)
    assert light.compress(small_photo) == [stream]
    ours = light.decompress(stream, output_type="np", decoder="fidelity").images
    assert np.array_equal(ours, full.decompress(stream, output_type="np", decoder="fidelity").images)


def test_what_it_does_not_decode(codec_pipeline, tiny_pipeline_dir, small_photo):
    (stream,) = codec_pipeline.compress(small_photo)
    with pytest.raises(ValueError, match="decoder='fidelity' only"):
        codec_pipeline.decompress(stream, decoder="diffusion")
    codec_only = SODECCodecPipeline.from_pretrained(tiny_pipeline_dir)
    assert codec_only.compress(small_photo) == [stream]
    with pytest.raises(ValueError, match="without D_a"):
        codec_only.decompress(stream, decoder="fidelity")


def test_fidelity_decoder_defaults_are_the_encoders():
    """StandaloneFidelityDecoder builds D_a with make_fidelity_decoder from FidelityGuidanceEncoder's config: a
    key missing from a config must mean the same default in both."""
    from sodec_pipeline.models.fidelity_guidance_encoder import FidelityGuidanceEncoder

    encoder = inspect.signature(FidelityGuidanceEncoder.__init__).parameters
    for name, parameter in inspect.signature(make_fidelity_decoder).parameters.items():
        assert encoder[name].default == parameter.default, name


@pytest.mark.parametrize(
    "change",
    [
        lambda folder: _edit(folder / "model_index.json", compression_vae=["my_package", "MyCodec"]),
        lambda folder: _edit(folder / "vae" / "config.json", sample_size=None),
        lambda folder: _edit(folder / "unet" / "config.json", sample_size=None),
    ],
    ids=["another codec class", "vae config without sample_size", "unet config without sample_size"],
)
def test_a_folder_it_does_not_load_falls_back_to_the_pipeline(tiny_pipeline_dir, tmp_path, change):
    folder = tmp_path / "pipeline"
    shutil.copytree(tiny_pipeline_dir, folder)
    change(folder)
    with pytest.raises(CodecPipelineUnsupported):
        SODECCodecPipeline.from_pretrained(folder)
    if json.loads((folder / "model_index.json").read_text())["compression_vae"][0] == "sodec_pipeline":
        from sodec_pipeline import SODECPipeline

        assert isinstance(model_loading.load_coding_pipeline(str(folder)), SODECPipeline)


def _edit(path, **changes):
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def test_load_coding_pipeline_of_a_folder_is_the_codec_pipeline(tiny_pipeline_dir):
    pipe = model_loading.load_coding_pipeline(str(tiny_pipeline_dir), fidelity_decoder=True)
    assert isinstance(pipe, SODECCodecPipeline) and pipe.fidelity_guidance is not None
    weights = [p for p in pipe.fidelity_guidance.parameters() if p.ndim == 4]
    assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)  # as load_pipeline


def test_compress_and_fidelity_decompress_import_no_diffusers(tiny_pipeline_dir, photo_paths, tmp_path):
    """`sodec compress` and `sodec decompress --fidelity` in a fresh interpreter: diffusers, transformers and
    compressai stay out of sys.modules, and the files are those of the pipeline as `sodec` loads it."""
    photo = photo_paths[0]
    stream, png = tmp_path / "photo.sodec", tmp_path / "photo.fidelity.png"
    probe = (
        "import json, sys\n"
        "from sodec_pipeline.cli import main\n"
        f"assert main(['compress', {str(photo)!r}, '--model', {str(tiny_pipeline_dir)!r}, '-o', {str(stream)!r}]) == 0\n"
        f"assert main(['decompress', {str(stream)!r}, '--model', {str(tiny_pipeline_dir)!r}, '--fidelity',"
        f" '-o', {str(png)!r}]) == 0\n"
        "heavy = ('diffusers', 'transformers', 'compressai', 'torchvision', 'accelerate', 'scipy', 'torch._dynamo')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    import PIL.Image

    pipe = model_loading.load_pipeline(str(tiny_pipeline_dir))  # channels-last on the CPU, as `sodec` runs it
    (expected,) = pipe.compress(PIL.Image.open(photo))
    assert stream.read_bytes() == expected
    decoded = pipe.decompress(expected, decoder="fidelity").images[0]
    assert np.array_equal(np.asarray(PIL.Image.open(png)), np.asarray(decoded))
