import shutil
import struct
import subprocess
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

import sodec_pipeline
from sodec_pipeline import BitstreamError, SODECPipeline, SODECPipelineOutput
from sodec_pipeline.codec.bitstream import MAX_IMAGE_SIDE, _write_varint, decode_bitstream
from sodec_pipeline.image_processing import _to_uint8


def _bpp(stream, image):
    return 8 * len(stream) / (image.width * image.height)


def test_round_trip_on_real_photographs(tiny_pipeline, photos):
    images = list(photos.values())
    out = tiny_pipeline(image=images)
    assert isinstance(out, SODECPipelineOutput)
    assert out.bitstreams == tiny_pipeline.compress(images)
    for image, decoded, stream, bpp in zip(images, out.images, out.bitstreams, out.bpp):
        assert decoded.size == image.size and decoded.mode == "RGB"
        assert bpp == _bpp(stream, image)
    assert photos["bsds_481x321.jpg"].size == (481, 321)


@pytest.mark.parametrize("size", [(1, 1), (33, 17), (64, 64), (481, 321), (65, 64)])
def test_sizes_survive(tiny_pipeline, size):
    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    (stream,) = tiny_pipeline.compress(image)
    parsed = decode_bitstream(stream)
    assert (parsed.width, parsed.height) == size
    for decoder in ("diffusion", "fidelity"):
        assert tiny_pipeline.decompress(stream, decoder=decoder).images[0].size == size


def test_pil_modes(tiny_pipeline, small_photo):
    grey = small_photo.convert("L")
    rgba = small_photo.convert("RGBA")
    sixteen = PIL.Image.fromarray((np.asarray(grey, dtype=np.uint16) * 257)).convert("I;16")
    palette = small_photo.convert("P")
    streams = tiny_pipeline.compress([grey, rgba, sixteen, palette])
    # RGBA drops alpha: same stream as the RGB image; 16-bit is scaled to 8 bits: same as the grey image
    assert streams[1] == tiny_pipeline.compress(small_photo)[0]
    assert streams[2] == streams[0]
    for image in tiny_pipeline.decompress(streams).images:
        assert image.size == small_photo.size and image.mode == "RGB"


def test_array_and_tensor_inputs_agree(tiny_pipeline, small_photo, photos):
    array = np.asarray(small_photo)
    tensor = torch.from_numpy(array).permute(2, 0, 1).float()[None] / 255.0
    expected = tiny_pipeline.compress(small_photo)
    assert tiny_pipeline.compress(array) == expected
    assert tiny_pipeline.compress(array[None].repeat(2, 0)) == expected * 2
    assert tiny_pipeline.compress(tensor) == expected
    assert tiny_pipeline.compress(array.astype(np.float32) / 255.0) == expected
    mixed = tiny_pipeline.compress([small_photo, photos["bsds_481x321.jpg"], array])
    assert mixed[0] == mixed[2] == expected[0]


def test_output_types(tiny_pipeline, small_photo, photos):
    streams = tiny_pipeline.compress([small_photo, small_photo])
    np_out = tiny_pipeline.decompress(streams, output_type="np").images
    pt_out = tiny_pipeline.decompress(streams, output_type="pt").images
    assert np_out.shape == (2, 64, 96, 3) and np_out.dtype == np.float32
    assert pt_out.shape == (2, 3, 64, 96) and 0 <= pt_out.min() and pt_out.max() <= 1
    np.testing.assert_array_equal(np_out, pt_out.permute(0, 2, 3, 1).numpy())
    mixed = tiny_pipeline.decompress(
        tiny_pipeline.compress([small_photo, photos["bsds_481x321.jpg"]]), output_type="pt"
    )
    assert [tuple(t.shape) for t in mixed.images] == [(3, 64, 96), (3, 321, 481)]
    with pytest.raises(ValueError, match="output_type"):
        tiny_pipeline.decompress(streams, output_type="jpeg")


def test_pil_output_is_the_rounded_float_output(tiny_pipeline, photos):
    """The 8-bit output, converted 256 rows at a time, is round(255·x) of the whole float image; a single
    image comes back as (1, 3, H, W)."""
    (stream,) = tiny_pipeline.compress(photos["bsds_481x321.jpg"])
    pt = tiny_pipeline.decompress(stream, output_type="pt").images
    assert pt.shape == (1, 3, 321, 481)
    pil = tiny_pipeline.decompress(stream, output_type="pil").images[0]
    expected = np.round(pt[0].permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(pil), expected)
    np.testing.assert_array_equal(_to_uint8(pt[0].permute(1, 2, 0).numpy(), band_rows=7), expected)


def test_fidelity_decode_is_the_fidelity_decoder(tiny_pipeline, small_photo):
    (stream,) = tiny_pipeline.compress(small_photo)
    fidelity = tiny_pipeline.decompress(stream, output_type="pt", decoder="fidelity").images
    diffusion = tiny_pipeline.decompress(stream, output_type="pt").images
    assert fidelity.shape == diffusion.shape and not torch.equal(fidelity, diffusion)
    # x̂_f is D_a(ŷ), cropped and clamped (a 64×96 image is one D_a tile: the network itself)
    parsed = decode_bitstream(stream)
    latents = tiny_pipeline.compression_vae.decompress([[parsed.y_string], [parsed.z_string]], (1, 2))
    assert max(latents["y_hat"].shape[-2:]) <= tiny_pipeline.tile_specs.fidelity.size
    with torch.no_grad():
        x_f = tiny_pipeline.fidelity_guidance.decode(latents["y_hat"]).clamp(0, 1)[:, :, :64, :96]
    torch.testing.assert_close(fidelity, x_f, rtol=0, atol=0)
    with pytest.raises(ValueError, match="decoder"):
        tiny_pipeline.decompress(stream, decoder="gan")


def test_bad_inputs_are_clear(tiny_pipeline):
    with pytest.raises(TypeError, match="unsupported image type"):
        tiny_pipeline.compress("picture.png")
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        tiny_pipeline.compress(np.zeros((4, 4, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tiny_pipeline.compress(torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(ValueError, match="NaN"):
        tiny_pipeline.compress(torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="empty"):
        tiny_pipeline.compress(np.zeros((0, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="no images"):
        tiny_pipeline.compress([])
    with pytest.raises(ValueError, match="limits"):
        tiny_pipeline.compress(torch.zeros(1, 3, 1, MAX_IMAGE_SIDE + 1))


def test_decoding_bad_streams(tiny_pipeline, small_photo, tmp_path):
    (stream,) = tiny_pipeline.compress(small_photo)
    with pytest.raises(BitstreamError, match="checksum"):
        tiny_pipeline.decompress(stream[:-7] + stream[-6:])
    corrupted = bytearray(stream)
    corrupted[len(stream) // 2] ^= 0x10
    with pytest.raises(BitstreamError, match="corrupted"):
        tiny_pipeline.decompress(bytes(corrupted))
    with pytest.raises(BitstreamError, match="truncated"):
        tiny_pipeline.decompress(stream[:10])
    # a header announcing a huge image, checksum valid, this model's fingerprint: refused at once
    fp = tiny_pipeline.compression_vae.fingerprint()
    body = (
        b"S\xdc\x02"
        + fp
        + b"\x00\x00"
        + _write_varint(MAX_IMAGE_SIDE * 4)
        + _write_varint(MAX_IMAGE_SIDE * 4)
        + _write_varint(2)
        + b"zzyy"
    )
    huge = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(BitstreamError, match="image size"):
        tiny_pipeline.decompress(huge)
    # a stream from another model (same layout, other weights)
    from sodec_pipeline.pipelines import build_pipeline_from_config

    other = build_pipeline_from_config("sodec-tiny", seed=1)
    with pytest.raises(BitstreamError, match="another model"):
        other.decompress(stream)


def test_save_load_reproduces_streams_and_images(tiny_pipeline, tiny_pipeline_dir, photos, tmp_path):
    images = list(photos.values())
    streams = tiny_pipeline.compress(images)
    decoded = tiny_pipeline.decompress(streams, output_type="pt").images
    tiny_pipeline.save_pretrained(tmp_path / "again")
    index = (tmp_path / "again" / "model_index.json").read_text()
    assert '"sodec_pipeline"' in index and "sodec_pipeline.models" not in index
    for sub in ("compression_vae", "fidelity_guidance", "unet", "vae"):
        assert (tmp_path / "again" / sub / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "again" / "image_encoder" / "model.safetensors").is_file()
    assert (tmp_path / "again" / "scheduler" / "scheduler_config.json").is_file()
    reloaded = SODECPipeline.from_pretrained(tmp_path / "again")
    assert reloaded.compress(images) == streams
    again = reloaded.decompress(streams, output_type="pt").images
    assert all(torch.equal(a, b) for a, b in zip(decoded, again))


def test_plain_diffusion_pipeline_loads_a_sodec_pipeline(
    tiny_pipeline, tiny_pipeline_dir, small_photo, tmp_path, monkeypatch
):
    """A saved folder names its code file (pipeline_sodec.py, an import of this package), which diffusers runs only with
    trust_remote_code=True; tests/test_hub_folders.py loads it in a fresh interpreter, and old folders without it."""
    import diffusers.utils.dynamic_modules_utils as dynamic_modules_utils
    from diffusers import DiffusionPipeline

    monkeypatch.setattr(dynamic_modules_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # not ~/.cache
    pipe = DiffusionPipeline.from_pretrained(tiny_pipeline_dir, trust_remote_code=True)
    assert isinstance(pipe, SODECPipeline)
    assert pipe.compress(small_photo) == tiny_pipeline.compress(small_photo)


def test_bfloat16_pipeline_writes_the_same_streams(tiny_pipeline, tiny_pipeline_dir, small_photo):
    pipe = SODECPipeline.from_pretrained(tiny_pipeline_dir, torch_dtype=torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16 and pipe.compression_vae.dtype == torch.float32
    assert pipe.dtype == torch.bfloat16
    streams = pipe.compress(small_photo)
    assert streams == tiny_pipeline.compress(small_photo)
    out = pipe.decompress(streams, output_type="pt").images
    assert out.shape == (1, 3, 64, 96) and torch.isfinite(out).all()
    # a pipeline of its own: moving the session's tiny_pipeline to bf16 and back would round its weights for
    # every later test
    moved = SODECPipeline.from_pretrained(tiny_pipeline_dir).to(torch.bfloat16)
    assert moved.compression_vae.dtype == torch.float32
    assert moved.compress(small_photo) == streams


def test_load_from_a_hub_repo_id_with_the_download_faked(
    tiny_pipeline_dir, small_photo, tiny_pipeline, tmp_path, monkeypatch
):
    """The real diffusers Hub code path (model_info → hf_hub_download → snapshot_download) with the
    network layer replaced by copies from a local folder that plays the Hub repo."""
    import diffusers.pipelines.pipeline_utils as pipeline_utils

    repo_id, remote = "sodec-test/sodec-tiny", Path(tiny_pipeline_dir)
    snapshot = tmp_path / "cache" / "models--sodec-test--sodec-tiny" / "snapshots" / ("0" * 40)
    files = sorted(str(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file())
    calls = []

    def model_info(repo, **kwargs):
        calls.append(("model_info", repo))
        return types.SimpleNamespace(siblings=[types.SimpleNamespace(rfilename=f) for f in files], sha="0" * 40)

    def hf_hub_download(repo, filename, **kwargs):
        calls.append(("hf_hub_download", repo, filename))
        if kwargs.get("local_files_only"):
            raise AssertionError("offline path taken")
        (snapshot / filename).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(remote / filename, snapshot / filename)
        return str(snapshot / filename)

    def snapshot_download(repo, allow_patterns=None, **kwargs):
        import fnmatch

        calls.append(("snapshot_download", repo))
        for f in files:
            if allow_patterns is None or any(fnmatch.fnmatch(f, p) for p in allow_patterns):
                (snapshot / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(remote / f, snapshot / f)
        return str(snapshot)

    monkeypatch.setattr(pipeline_utils, "model_info", model_info)
    monkeypatch.setattr(pipeline_utils, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(pipeline_utils, "snapshot_download", snapshot_download)
    pipe = SODECPipeline.from_pretrained(repo_id, cache_dir=str(tmp_path / "cache"))
    assert ("snapshot_download", repo_id) in calls and ("model_info", repo_id) in calls
    assert (snapshot / "compression_vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert pipe.compress(small_photo) == tiny_pipeline.compress(small_photo)


def test_streams_are_identical_across_processes(tiny_pipeline_dir, tiny_pipeline, photo_paths, tmp_path):
    path = next(p for p in photo_paths if p.name == "bsds_481x321.jpg")
    out = tmp_path / "stream.bin"
    code = (
        "import sys, PIL.Image; from sodec_pipeline import SODECPipeline; "
        "p = SODECPipeline.from_pretrained(sys.argv[1]); "
        "open(sys.argv[3], 'wb').write(p.compress(PIL.Image.open(sys.argv[2]).convert('RGB'))[0])"
    )
    subprocess.run([sys.executable, "-c", code, str(tiny_pipeline_dir), str(path), str(out)], check=True)
    assert out.read_bytes() == tiny_pipeline.compress(PIL.Image.open(path).convert("RGB"))[0]


def test_package_exports():
    import diffusers

    assert diffusers.SODECPipeline is SODECPipeline
    assert sodec_pipeline.BitstreamError.__mro__[1] is ValueError


def _copy_with_pickle_weights(source, folder, *components):
    """A copy of the pipeline ``source`` whose ``components`` hold their weights as a torch pickle only."""
    from safetensors.torch import load_file

    shutil.copytree(source, folder)
    for name in components:
        (safetensors,) = (folder / name).glob("*.safetensors")
        pickle_name = "pytorch_model.bin" if name == "image_encoder" else "diffusion_pytorch_model.bin"
        torch.save(load_file(safetensors), folder / name / pickle_name)
        safetensors.unlink()
    return folder


def test_a_folder_with_pickle_only_weights_is_refused_unless_the_caller_allows_it(
    tiny_pipeline_dir, tiny_pipeline, small_photo, tmp_path
):
    """A component whose weights are only a pickle (which can run code when loaded) is refused before anything is
    read, with one line naming the component and the file, by the Python API and the CLI; use_safetensors=False
    explicitly loads it."""
    from sodec_pipeline.cli.errors import CLIError
    from sodec_pipeline.cli.model_loading import load_pipeline
    from sodec_pipeline.model_folder_checks import ModelFolderError

    folder = _copy_with_pickle_weights(tiny_pipeline_dir, tmp_path / "pickled", "unet", "image_encoder")
    for kwargs in ({}, {"use_safetensors": True}, {"use_safetensors": None}):
        with pytest.raises(ModelFolderError) as refused:
            SODECPipeline.from_pretrained(folder, **kwargs)
        message = str(refused.value)
        assert "\n" not in message and "image_encoder/pytorch_model.bin" in message and "pickle" in message
        assert "use_safetensors=False" in message
    with pytest.raises(CLIError, match=r"image_encoder/pytorch_model\.bin") as refused:
        load_pipeline(str(folder), debug=True)
    assert "\n" not in str(refused.value)

    (folder / "image_encoder" / "pytorch_model.bin").unlink()  # only the UNet's pickle left
    shutil.copy(Path(tiny_pipeline_dir) / "image_encoder" / "model.safetensors", folder / "image_encoder")
    with pytest.raises(ModelFolderError, match=r"the unet component .* unet/diffusion_pytorch_model\.bin"):
        SODECPipeline.from_pretrained(folder)
    # a pickle that would run code when loaded: refused without being opened
    marker = tmp_path / "pickle-ran"
    shutil.copytree(folder, tmp_path / "hostile")

    class Hostile:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save(Hostile(), tmp_path / "hostile" / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelFolderError):
        SODECPipeline.from_pretrained(tmp_path / "hostile")
    assert not marker.exists()

    pipe = SODECPipeline.from_pretrained(folder, use_safetensors=False)  # the caller trusts the file
    assert pipe.compress(small_photo) == tiny_pipeline.compress(small_photo)
    assert torch.equal(pipe.unet.conv_in.weight, tiny_pipeline.unet.conv_in.weight)


@pytest.mark.parametrize(
    "component, key, value",
    [
        ("unet", "block_out_channels", [8, 2_000_000]),
        ("vae", "sample_size", 10_000_000),
        ("compression_vae", "latent_channels", 1_000_000),
        ("compression_vae", "scale_table_levels", 10**9),
        ("fidelity_guidance", "image_encoder_size", 1e9),
        ("image_encoder", "hidden_size", 3_000_000),
    ],
)
def test_configs_with_absurd_sizes_are_refused_before_anything_is_built(
    tiny_pipeline_dir, tmp_path, monkeypatch, capsys, component, key, value
):
    """A saved pipeline or a layout (random initialisation, ``sodec init``) whose config asks for a network that would
    allocate gigabytes: one line naming the config and the key, before any module is constructed."""
    import json

    from sodec_pipeline.cli import main
    from sodec_pipeline.model_folder_checks import ModelFolderError
    from sodec_pipeline.pipelines import build_pipeline_from_config

    folder = tmp_path / "absurd"
    shutil.copytree(tiny_pipeline_dir, folder)
    layout = tmp_path / "layout"
    shutil.copytree(Path(__file__).resolve().parent.parent / "hub_configs" / "sodec-tiny", layout)
    for root in (folder, layout):
        path = root / component / "config.json"
        config = json.loads(path.read_text())
        config[key] = value
        path.write_text(json.dumps(config))

    def no_module_may_be_built(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__} built before the config was checked")

    monkeypatch.setattr(torch.nn.Module, "__init__", no_module_may_be_built)
    with pytest.raises(ModelFolderError) as refused:
        SODECPipeline.from_pretrained(folder)
    message = str(refused.value)
    assert "\n" not in message and f"{component}/config.json" in message and f"{key} = " in message
    assert "absurd" in message
    with pytest.raises(ModelFolderError, match=f"{key} = .* is absurd"):
        build_pipeline_from_config(layout)
    assert main(["init", str(layout), str(tmp_path / "model")]) == 2  # `sodec init`: one line, exit status 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{component}/config.json" in err and f"{key} = " in err
    assert not (tmp_path / "model").exists()


def test_real_configs_are_within_the_size_limits():
    from sodec_pipeline.model_folder_checks import check_model_folder

    root = Path(__file__).resolve().parent.parent
    for folder in [root / "pretrained" / "sodec-small", *sorted((root / "hub_configs").iterdir())]:
        if (folder / "model_index.json").is_file():
            check_model_folder(folder)
