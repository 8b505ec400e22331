#!/usr/bin/env python
"""Issue 11, item 5, as one prepared GPU run: the full-size layout (random weights) trained and decoded.

    PYTHONUNBUFFERED=1 python benchmarks/full_size_gpu.py --out "$OUT"        # on a CUDA machine

1. Training: seconds per optimisation step and peak GPU memory of ``train_sodec.py``'s model in stage 3
   (everything the paper trains: the codec, D_a, F_p and the UNet LoRA + conv_in; the ViT and the SD VAE
   frozen, gradients passing through them), MSE + λ·bpp + α·alignment, bf16 autocast, AdamW, for each
   crop size × batch size, with and without ``--gradient_checkpointing``. A setting that runs out of
   memory is recorded as such.
2. Decoding: ``sodec benchmark``'s measurements (``run_benchmark``: per-stage times, end-to-end decode,
   the DDIM-4 baseline, peak memory) at 512×512 in float16 and bfloat16, eager and with the UNet and the
   VAE decoder under ``torch.compile`` (inductor), against the paper's 227.9 ms decode.

Writes ``training.json`` and ``decode.json`` to ``--out`` as it goes (a run cut short keeps what it
measured). The weights are built once (``build_pipeline_from_config``, seed 0). A check on the CPU with
the tiny layout, before spending GPU time::

    python benchmarks/full_size_gpu.py --config hub_configs/sodec-tiny --device cpu --resolutions 64 \
        --batch-sizes 2 --train-steps 3 --decode-size 128 --dtypes float32 --batch-speedup 2 --out /tmp/gpu-check
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "training"))

from sodec_pipeline.benchmarking.benchmark import run_benchmark  # noqa: E402
from sodec_pipeline.benchmarking.scaling import measure_batching  # noqa: E402
from sodec_pipeline.pipelines import build_pipeline_from_config  # noqa: E402
from sodec_training.losses import DistortionLoss  # noqa: E402
from sodec_training.modeling import (  # noqa: E402
    SODECTrainingModel,
    add_unet_lora,
    enable_gradient_checkpointing,
    fuse_unet_lora,
)


PAPER_DECODE_MS = 227.9
LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")  # train_sodec.py's default


def _csv(kind):
    return lambda text: [kind(v) for v in text.split(",") if v.strip()]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def _write(out: Path, name: str, data) -> None:
    with open(out / name, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def measure_training(pipe, args, device, log) -> list:
    """Seconds per step and peak memory of stage 3 for every (checkpointing, crop, batch) setting."""
    add_unet_lora(pipe.unet, args.lora_rank, None, LORA_TARGETS)
    model = SODECTrainingModel(pipe, DistortionLoss(), "lora").set_train_mode()
    optimizer = torch.optim.AdamW(model.main_parameters(), lr=1e-5)
    trainable = sum(p.numel() for p in model.main_parameters())
    results = []
    for checkpointing in args.checkpointing:
        if checkpointing:
            enable_gradient_checkpointing(pipe)
            model.set_train_mode()
        for resolution in args.resolutions:
            for batch_size in args.batch_sizes:
                setting = {"gradient_checkpointing": checkpointing, "resolution": resolution, "batch_size": batch_size,
                           "precision": "bf16 autocast", "stage": 3, "unet_training": f"lora rank {args.lora_rank}",
                           "trainable_parameters": trainable}  # fmt: skip
                x = torch.rand(batch_size, 3, resolution, resolution, generator=torch.Generator().manual_seed(0)).to(
                    device
                )
                _reset_peak(device)
                times = []
                try:
                    for _ in range(args.train_steps):
                        _sync(device)
                        start = time.perf_counter()
                        with torch.autocast(device.type, dtype=torch.bfloat16):
                            out = model(x, 3, rate_weight=0.01, alignment_weight=1.0)
                        out["loss"].backward()
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                        _sync(device)
                        times.append(time.perf_counter() - start)
                    timed = times[1:] or times  # the first step (allocation, autotuning) not counted
                    setting.update(seconds_per_step=statistics.median(timed), steps_per_second=1 / statistics.median(timed),
                                   steps_timed=len(timed), peak_memory_gib=_peak_gib(device),
                                   finite_loss=bool(torch.isfinite(out["loss"]).item()))  # fmt: skip
                except RuntimeError as e:
                    if not _is_out_of_memory(e):
                        raise
                    setting.update(out_of_memory=True, peak_memory_gib=_peak_gib(device))
                optimizer.zero_grad(set_to_none=True)
                out = None
                results.append(setting)
                log(json.dumps(setting))
                _write(args.out, "training.json", results)
    fuse_unet_lora(pipe.unet)
    return results


def measure_decoding(pipe, args, device, log) -> list:
    """``run_benchmark`` at ``--decode-size`` per dtype, eager and compiled."""
    for name in ("compression_vae", "fidelity_guidance", "image_encoder", "unet", "vae"):
        getattr(pipe, name).eval().requires_grad_(False)
    results = []
    for dtype_name in args.dtypes:
        pipe.to(dtype=getattr(torch, dtype_name))
        for compiled in [False, True] if args.compile else [False]:
            if compiled:
                torch._dynamo.reset()
                pipe.unet.compile()
                pipe.vae.decoder.compile()
            log(f"decode {args.decode_size}² {dtype_name} {'compiled' if compiled else 'eager'}")
            result = run_benchmark(pipe, args.decode_size, args.decode_size, warmup=args.decode_warmup,
                                   repeats=args.decode_repeats, baseline_steps=4, log=log)  # fmt: skip
            result["torch_compile"] = "unet and vae.decoder, inductor" if compiled else None
            result["paper_decode_ms"] = PAPER_DECODE_MS
            results.append(result)
            _write(args.out, "decode.json", results)
            if compiled:
                for module in (pipe.unet, pipe.vae.decoder):
                    module._compiled_call_impl = None  # back to eager for the next dtype
        if args.batch_speedup and dtype_name == args.dtypes[0]:
            log(
                f"batching: {args.batch_speedup} images of {args.decode_size}², batch 1 and {args.batch_speedup}, {dtype_name}"
            )
            batching = measure_batching(pipe, args.decode_size, args.decode_size, num_images=args.batch_speedup,
                                        batch_size=args.batch_speedup, rounds=3, log=log)  # fmt: skip
            batching["dtype"] = dtype_name
            results.append({"batching": batching})
            _write(args.out, "decode.json", results)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "hub_configs" / "sodec-sd21-base"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--resolutions", type=_csv(int), default=[256, 512])
    parser.add_argument("--batch-sizes", type=_csv(int), default=[4, 8])
    parser.add_argument(
        "--checkpointing",
        type=_csv(lambda v: v == "on"),
        default=[False, True],
        help="comma-separated on/off (default: off,on)",
    )
    parser.add_argument("--train-steps", type=int, default=4, help="per setting; the first is not timed")
    parser.add_argument("--lora-rank", type=int, default=4)
    parser.add_argument("--decode-size", type=int, default=512)
    parser.add_argument("--dtypes", type=_csv(str), default=["float16", "bfloat16"])
    parser.add_argument("--decode-warmup", type=int, default=3)
    parser.add_argument("--decode-repeats", type=int, default=10)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--batch-speedup", type=int, default=8, help="images decoded with batch 1 and N (0: skip)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    log = lambda m: print(f"[full_size_gpu] {m}", flush=True)  # noqa: E731
    start = time.perf_counter()
    pipe = build_pipeline_from_config(args.config, seed=0)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    log(f"built {args.config} on {device} in {time.perf_counter() - start:.0f} s")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as users' training would; decode runs in fp16/bf16
        torch.backends.cudnn.allow_tf32 = True
        log(torch.cuda.get_device_name(device))
    if not args.skip_training:
        measure_training(pipe, args, device, log)
    measure_decoding(pipe, args, device, log)
    log(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
