"""``auto``: bfloat16 decoder networks where the CPU computes bfloat16 natively, float32 elsewhere; the bytes
never depend on the choice (sodec_pipeline.hardware, ``--dtype``, ``from_pretrained(dtype="auto")``)."""

import pytest
import torch

from sodec_pipeline import hardware
from sodec_pipeline.pipelines import SODECPipeline


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma", "avx512f"}))
    monkeypatch.setattr(hardware.platform, "machine", lambda: "x86_64")


@pytest.fixture
def cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    monkeypatch.setattr(hardware.platform, "machine", lambda: "x86_64")


def test_auto_is_float32_without_native_bfloat16(cpu_without_bf16):
    assert hardware.auto_dtype_name("cpu") == "float32"
    assert hardware.resolve_dtype_name("auto") == "float32"
    assert "auto: float32" in hardware.dtype_help() and "no native bfloat16" in hardware.dtype_help()


def test_auto_is_bfloat16_with_native_bfloat16(cpu_with_bf16):
    assert hardware.auto_dtype_name("cpu") == "bfloat16"
    assert "auto: bfloat16" in hardware.dtype_help()
    assert hardware.resolve_dtype_name("float32") == "float32"  # an explicit choice is kept


def test_arm_cpus_and_unknown_choices(monkeypatch):
    monkeypatch.setattr(hardware.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"bf16"}))
    assert hardware.auto_dtype_name("cpu") == "float32"
    with pytest.raises(ValueError, match="dtype must be one of"):
        hardware.resolve_dtype_name("float64")


def test_cpu_flags_reads_this_machine():
    flags = hardware.cpu_flags()
    assert isinstance(flags, frozenset)  # empty off Linux; on Linux the first CPU's flags


def test_from_pretrained_auto_follows_the_cpu(tiny_pipeline_dir, small_photo, tiny_pipeline, cpu_with_bf16):
    pipe = SODECPipeline.from_pretrained(tiny_pipeline_dir, dtype="auto")
    assert pipe.dtype == torch.bfloat16 and pipe.compression_vae.dtype == torch.float32
    streams = pipe.compress(small_photo)
    assert streams == tiny_pipeline.compress(small_photo)  # the bytes do not depend on the dtype
    for decoder in ("diffusion", "fidelity"):
        fast = pipe.decompress(streams, decoder=decoder, output_type="pt").images
        exact = tiny_pipeline.decompress(streams, decoder=decoder, output_type="pt").images
        # bfloat16 keeps 8 bits of mantissa: decoded pixels within 4/255 on average, 32/255 at worst
        assert (fast - exact).abs().mean() < 4 / 255 and (fast - exact).abs().max() < 32 / 255


def test_from_pretrained_auto_without_native_bfloat16(tiny_pipeline_dir, cpu_without_bf16):
    assert SODECPipeline.from_pretrained(tiny_pipeline_dir, torch_dtype="auto").dtype == torch.float32


def test_cli_help_says_what_auto_picks(cpu_without_bf16, capsys):
    from sodec_pipeline.cli import main

    with pytest.raises(SystemExit):
        main(["decompress", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "{auto,float32,bfloat16,float16}" in out and "auto: float32" in out


def test_channels_last_decoders_keep_the_bytes_and_the_pixels(tiny_pipeline_dir, small_photo, tiny_pipeline):
    pipe = SODECPipeline.from_pretrained(tiny_pipeline_dir).enable_channels_last()
    assert pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert pipe.compression_vae.analysis_transform is not None
    streams = pipe.compress(small_photo)
    assert streams == tiny_pipeline.compress(small_photo)
    for decoder in ("diffusion", "fidelity"):
        fast = pipe.decompress(streams, decoder=decoder, output_type="pt").images
        exact = tiny_pipeline.decompress(streams, decoder=decoder, output_type="pt").images
        assert (fast - exact).abs().max() < 1e-4
