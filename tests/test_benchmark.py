"""`sodec benchmark`: the staged decode is the real decode, the DDIM baseline is the right one, and the
command writes a JSON with every field (on the tiny layout)."""

import json
import math
from pathlib import Path

import pytest
import torch

from sodec_pipeline.benchmarking.benchmark import (
    FLOOR_STAGES,
    STAGE_LABELS,
    STAGES,
    StageTimer,
    decode_by_stage,
    make_ddim_scheduler,
    summarize_times,
    synthetic_image,
    with_scheduler,
)
from sodec_pipeline.cli import main


TINY_CONFIG = Path(__file__).resolve().parent.parent / "hub_configs" / "sodec-tiny"

STAT_FIELDS = {"median_s", "min_s", "max_s", "mean_s", "std_s", "iqr_s", "spread_pct", "runs_s"}


def test_summarize_times():
    stats = summarize_times([3.0, 1.0, 2.0, 10.0])
    assert stats["median_s"] == 2.5 and stats["min_s"] == 1.0 and stats["max_s"] == 10.0
    assert stats["mean_s"] == 4.0 and stats["runs_s"] == [3.0, 1.0, 2.0, 10.0]
    assert stats["spread_pct"] == pytest.approx(100 * 9 / 2.5)
    assert set(stats) == STAT_FIELDS
    assert summarize_times([5.0])["std_s"] == 0.0


@pytest.mark.parametrize("size", [(64, 96), (50, 70)])
def test_staged_decode_is_the_pipeline_decode(tiny_pipeline, size):
    image = synthetic_image(*size, seed=3)
    (stream,) = tiny_pipeline.compress(image)
    expected = tiny_pipeline.decompress(stream, output_type="pt").images[0]
    timer = StageTimer("cpu")
    staged = decode_by_stage(tiny_pipeline, stream, timer)
    assert staged.shape == (3, *size)
    assert torch.equal(staged, expected)
    timed = set(STAGES) - ({"colour_correction"} if not tiny_pipeline.config.colour_correction_block_size else set())
    assert set(timer.seconds) == timed and all(t > 0 for t in timer.seconds.values())


def test_ddim_baseline_starts_at_999_and_one_step_equals_the_sodec_step(tiny_pipeline):
    scheduler = make_ddim_scheduler(tiny_pipeline, 4)
    assert [int(t) for t in scheduler.timesteps] == [999, 749, 499, 249]
    assert scheduler.config.timestep_spacing == "trailing" and scheduler.config.set_alpha_to_one
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert (scheduler.config.beta_start, scheduler.config.beta_end) == (0.00085, 0.012)

    torch.manual_seed(0)
    noisy = torch.randn(1, 4, 8, 12)
    guidance = torch.randn(
        1, tiny_pipeline.fidelity_guidance.config.num_tokens, tiny_pipeline.unet.config.cross_attention_dim
    )
    with torch.no_grad():
        one_step = tiny_pipeline.denoise(noisy, guidance)
        ddim_1 = with_scheduler(tiny_pipeline, make_ddim_scheduler(tiny_pipeline, 1)).denoise(noisy, guidance)
        ddim_4 = with_scheduler(tiny_pipeline, scheduler).denoise(noisy, guidance)
    torch.testing.assert_close(ddim_1, one_step, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ddim_4, one_step, atol=1e-3)

    image = synthetic_image(64, 64)
    (stream,) = tiny_pipeline.compress(image)
    timer = StageTimer("cpu")
    staged_ddim_1 = decode_by_stage(tiny_pipeline, stream, timer, scheduler=make_ddim_scheduler(tiny_pipeline, 1))
    torch.testing.assert_close(
        staged_ddim_1, tiny_pipeline.decompress(stream, output_type="pt").images[0], rtol=1e-4, atol=1e-4
    )


def _check_stats(stats, runs):
    assert set(stats) == STAT_FIELDS
    assert len(stats["runs_s"]) == runs
    assert all(t > 0 for t in stats["runs_s"])
    assert stats["min_s"] <= stats["median_s"] <= stats["max_s"]


def test_benchmark_command_writes_every_field(tmp_path, capsys):
    out = tmp_path / "bench.json"
    # float32 named: --dtype auto is bfloat16 on a CPU with native bfloat16 (the next test's case)
    rc = main([
        "benchmark", "--config", str(TINY_CONFIG), "--size", "96x64", "--warmup", "1", "--repeats", "2",
        "--baseline-steps", "3", "--dtype", "float32", "--out", str(out),
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(out.read_text())
    expected = {
        "schema", "model", "config", "seed", "size", "device", "dtype", "environment", "parameters", "warmup",
        "repeats", "baseline_steps", "bitstream", "encode", "decode", "decode_stages", "decode_staged_total",
        "decode_stage_sum_median_s", "baseline", "speedup", "floor", "memory", "notes", "load_s", "image", "arguments",
        "compute_floor", "versus_float32",
    }  # fmt: skip
    assert expected <= set(result)
    # --size is W×H; the JSON keeps [H, W]
    assert result["size"] == [64, 96] and result["device"] == "cpu" and result["dtype"] == "float32"
    assert result["config"] == str(TINY_CONFIG) and result["model"] is None
    for key in ("encode", "decode", "decode_staged_total"):
        _check_stats(result[key], 2)
    timed = [s for s in STAGES if s != "colour_correction"]  # the tiny layout has no colour correction
    assert list(result["decode_stages"]) == timed
    for stage in timed:
        _check_stats(result["decode_stages"][stage], 2)
        _check_stats(result["baseline"]["decode_stages"][stage], 2)
    assert result["decode_stage_sum_median_s"] == pytest.approx(
        sum(result["decode_stages"][s]["median_s"] for s in timed)
    )
    assert result["floor"]["median_s"] == pytest.approx(
        sum(result["decode_stages"][s]["median_s"] for s in FLOOR_STAGES)
    )
    assert result["floor"]["median_s"] < result["decode_stage_sum_median_s"]

    baseline = result["baseline"]
    assert baseline["scheduler"] == "DDIMScheduler" and baseline["steps"] == 3
    assert baseline["timesteps"] == [999, 666, 332]  # trailing: round(1000 - k·1000/3) - 1
    assert baseline["config"]["timestep_spacing"] == "trailing" and baseline["config"]["set_alpha_to_one"] is True
    _check_stats(baseline["decode"], 2)
    assert baseline["unet_per_step_median_s"] == pytest.approx(baseline["decode_stages"]["unet"]["median_s"] / 3)
    speedup = result["speedup"]
    assert speedup["decode_end_to_end"] == pytest.approx(baseline["decode"]["median_s"] / result["decode"]["median_s"])
    assert speedup["unet"] == pytest.approx(
        baseline["decode_stages"]["unet"]["median_s"] / result["decode_stages"]["unet"]["median_s"]
    )
    assert set(baseline["extrapolation"]["predicted_decode_s"]) == {"1", "4", "20", "50"}

    memory = result["memory"]
    for key in ("after_load", "encode_peak", "decode_peak", "baseline_decode_peak"):
        assert memory[key] > 10, key  # MiB: at least the interpreter and torch
    assert memory["unit"] == "MiB" and "RSS" in memory["kind"]

    parameters = result["parameters"]
    assert parameters["total"] == sum(v for k, v in parameters.items() if k != "total") > 0
    assert result["bitstream"]["bpp"] == pytest.approx(8 * result["bitstream"]["bytes"] / (64 * 96))
    assert result["environment"]["torch"] == torch.__version__
    assert all(math.isfinite(v) for v in speedup.values())
    for stage in timed:
        assert STAGE_LABELS[stage] in captured.out
    assert "speed-up vs DDIM 3 steps" in captured.out

    floor = result["compute_floor"]
    assert floor["decoder"] == "diffusion" and floor["matmul_gflop_per_s"]["float32"] > 0
    assert {"d_a", "unet", "vae_decode"} <= set(floor["stages"])
    for stage, s in floor["stages"].items():
        assert (
            s["gflop"] > 0 and s["dtype"] == "float32" and s["median_s"] == result["decode_stages"][stage]["median_s"]
        )
        assert s["times_floor"] == pytest.approx(s["median_s"] / s["floor_s"])
    assert "compute floor" in captured.out
    # float32 alone: nothing beside it, and a note says so
    assert result["versus_float32"] is None and any("no other dtype" in n for n in result["notes"])


def test_benchmark_sets_bfloat16_beside_float32(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main([
        "benchmark", "--config", str(TINY_CONFIG), "--size", "64x48", "--warmup", "0", "--repeats", "1",
        "--baseline-steps", "1", "--dtype", "bfloat16", "--out", str(out),
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(out.read_text())
    assert result["dtype"] == "bfloat16"
    floor = result["compute_floor"]
    assert floor["stages"]["unet"]["dtype"] == "bfloat16" and floor["stages"]["hs_ts"]["dtype"] == "float32"
    assert set(floor["matmul_gflop_per_s"]) == {"bfloat16", "float32"}
    comparison = result["versus_float32"]
    assert comparison["dtype"] == "bfloat16" and comparison["reference_dtype"] == "float32"
    assert comparison["bytes_identical"] is True and comparison["bytes"] == result["bitstream"]["bytes"]
    for decoder in ("diffusion", "fidelity"):
        c = comparison["decoders"][decoder]
        assert c["ratio"] == pytest.approx(c["decode"]["median_s"] / c["float32_decode"]["median_s"])
        assert "d_a" in c["stages"] and ("unet" in c["stages"]) == (decoder == "diffusion")
        assert c["psnr_change_db"] == pytest.approx(c["psnr_db"] - c["float32_psnr_db"])
        assert 0 < c["max_abs_difference"] < 32 / 255  # bfloat16 differs from float32, a little
    assert "bfloat16 beside float32" in captured.out and "bytes identical" in captured.out


def test_stage_flops_add_up_and_leave_the_parameters_as_they_were(tiny_pipeline_dir):
    from torch.utils.flop_counter import FlopCounterMode

    from sodec_pipeline.benchmarking.compute_floor import count_stage_flops, matmul_flops_per_second
    from sodec_pipeline.pipelines import SODECPipeline

    pipe = SODECPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    pipe.unet.requires_grad_(True)
    pipe.vae.requires_grad_(False)
    (stream,) = pipe.compress(synthetic_image(64, 64))
    flops = count_stage_flops(pipe, stream)
    assert all(flops[s] > 0 for s in ("hs_ts", "d_a", "vit", "unet", "vae_decode")) and flops["parse"] == 0
    for name in ("compression_vae", "fidelity_guidance", "image_encoder", "unet"):
        getattr(pipe, name).requires_grad_(False)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        pipe.decompress(stream, output_type="pt")
    assert sum(flops.values()) == counter.get_total_flops()
    pipe.unet.requires_grad_(True)
    count_stage_flops(pipe, stream, decoder="fidelity")
    assert all(p.requires_grad for p in pipe.unet.parameters())
    assert not any(p.requires_grad for p in pipe.vae.parameters())
    assert 1e6 < matmul_flops_per_second(torch.float32, max_size=256) < 1e15


def test_benchmark_from_a_saved_model(tmp_path, tiny_pipeline_dir, capsys):
    out = tmp_path / "bench.json"
    rc = main([
        "benchmark", "--model", str(tiny_pipeline_dir), "--size", "64", "--warmup", "0", "--repeats", "1",
        "--baseline-steps", "1", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert (
        result["size"] == [64, 64]
        and result["model"] == str(tiny_pipeline_dir)
        and result["baseline"]["timesteps"] == [999]
    )


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--config", str(TINY_CONFIG), "--size", "big"], "--size"),
        (["--config", str(TINY_CONFIG), "--size", "0x64"], "--size"),
        (["--config", str(TINY_CONFIG), "--size", "64x64", "--baseline-steps", "0"], "--baseline-steps"),
        (["--config", str(TINY_CONFIG), "--size", "64x64", "--repeats", "0"], "--repeats"),
        (["--config", "no-such-config", "--size", "64x64"], "no-such-config"),
        (["--model", "/no/such/model", "--size", "64x64"], "/no/such/model"),
        (["--config", str(TINY_CONFIG), "--size", "64x64", "--out", "/no/such/dir/x.json"], "does not exist"),
        (["--config", str(TINY_CONFIG), "--size", "64x64", "--image", "/no/such.png"], "no such file"),
    ],
)
def test_benchmark_errors_are_one_line(extra, fragment, capsys):
    rc = main(["benchmark", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and fragment in err, err


def test_benchmark_model_and_config_are_exclusive(capsys):
    with pytest.raises(SystemExit) as info:
        main(["benchmark", "--model", "a/b", "--config", str(TINY_CONFIG), "--size", "64x64"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_scaling_benchmark_writes_round_trips_and_batching(tmp_path, capsys):
    out = tmp_path / "scaling.json"
    rc = main([
        "benchmark", "--config", str(TINY_CONFIG), "--size", "96x64,200x300", "--scaling", "--batch-speedup", "2",
        "--dtype", "float32", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert [r["size"] for r in result["round_trips"]] == [[64, 96], [300, 200]]
    for r in result["round_trips"]:
        assert r["encode_s"] > 0 and r["decode_s"] > 0 and r["decode_peak_mib"] > 10 and r["decoded_finite"]
        assert r["decoded_shape"] == [1, 3, *r["size"]]
    assert result["round_trips"][1]["tiles"]["vae"] > 1  # 320×256 padded: 40×32 latents, tiles of 32
    batching = result["batching"]
    assert batching["bytes_identical"] and batching["speedup"] > 0 and batching["max_abs_difference"] < 1e-3
    assert result["tile_specs"]["unet"] == {"size": 32, "overlap": 8, "align": 2}
    assert "speed-up" in capsys.readouterr().out


def test_scaling_image_is_deterministic():
    from sodec_pipeline.benchmarking.scaling import banded_synthetic_image

    a = banded_synthetic_image(100, 70, seed=1, band_rows=16)
    assert a.shape == (3, 100, 70) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, banded_synthetic_image(100, 70, seed=1, band_rows=16))
