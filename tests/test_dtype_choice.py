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


def _fake_topology(root, cores):
    """sysfs under ``root``: logical CPU i on (package 0, core cores[i])."""
    for cpu, core in enumerate(cores):
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{core}\n")
    return root


def test_physical_cores_count_smt_siblings_once(tmp_path):
    sysfs = _fake_topology(tmp_path, [0, 0, 1, 1])  # two cores, two SMT threads each
    assert hardware.physical_core_count(range(4), sysfs) == 2
    assert hardware.physical_core_count([0, 1], sysfs) == 1  # an affinity mask on one core's two threads
    assert hardware.physical_core_count([1, 2], sysfs) == 2
    assert hardware.physical_core_count([0, 7], sysfs) == 2  # no topology for cpu7: the CPU count
    assert hardware.physical_core_count() >= 1  # this machine


def test_default_threads_leave_omp_num_threads_alone(monkeypatch):
    monkeypatch.setattr(hardware, "physical_core_count", lambda: 3)
    assert hardware.default_cpu_threads({"OMP_NUM_THREADS": "1"}) is None
    assert hardware.default_cpu_threads({"OMP_NUM_THREADS": " "}) == 3
    assert hardware.default_cpu_threads({}) == 3


def test_the_cli_loader_gives_torch_one_thread_per_physical_core(tiny_pipeline_dir, monkeypatch):
    from sodec_pipeline.cli import model_loading

    threads = torch.get_num_threads()
    monkeypatch.setattr(model_loading, "default_cpu_threads", lambda: 1 if threads > 1 else 2)
    try:
        model_loading.load_coding_pipeline(str(tiny_pipeline_dir))
        assert torch.get_num_threads() == (1 if threads > 1 else 2)
        monkeypatch.setattr(model_loading, "default_cpu_threads", lambda: None)  # OMP_NUM_THREADS set: untouched
        model_loading.load_pipeline(str(tiny_pipeline_dir))
        assert torch.get_num_threads() == (1 if threads > 1 else 2)
    finally:
        torch.set_num_threads(threads)
