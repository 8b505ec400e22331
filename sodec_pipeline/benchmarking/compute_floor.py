"""How far each decode stage is from its compute floor: the arithmetic the stage does, at the rate this device
reaches on a large matrix product in the stage's dtype with the same threads.

- **FLOPs per stage** (:func:`count_stage_flops`): one ``decompress`` under torch's ``FlopCounterMode``, which
  counts 2 FLOPs per multiply-add of every convolution, matrix product and attention (``aten`` level; the
  element-wise work, normalisations and the entropy coder count nothing). The stage boundaries come from the
  pipeline's ``stage_timer`` hook, as for the timings.
- **The device's rate** (:func:`matmul_flops_per_second`): the best of a few ``torch.mm`` of two N×N matrices in
  that dtype (N up to 1024 on the CPU, 4096 on CUDA). A measured peak, not the datasheet's: what a well-blocked kernel
  reaches on these cores, this memory and this thread count.
- **Floor** of a stage: its FLOPs at that rate. ``times_floor`` = the stage's median time / its floor: 1 would
  be every multiply-add at GEMM speed; convolutions with few channels, attention and memory-bound layers sit
  above it.
"""

import time
from contextlib import contextmanager
from typing import Dict

import torch


#: The network of each stage: its parameters' dtype is the dtype the stage computes in.
STAGE_MODULES = {
    "entropy_decoding": "compression_vae",
    "hs_ts": "compression_vae",
    "d_a": "fidelity_guidance",
    "vit": "image_encoder",
    "f_p": "fidelity_guidance",
    "unet": "unet",
    "vae_decode": "vae",
}


class StageFlops:
    """A ``stage_timer`` for ``decompress`` that counts each stage's FLOPs on a running ``FlopCounterMode``."""

    def __init__(self, counter):
        self.counter = counter
        self.flops: Dict[str, int] = {}

    @contextmanager
    def __call__(self, name: str):
        before = self.counter.get_total_flops()
        try:
            yield
        finally:
            self.flops[name] = self.flops.get(name, 0) + self.counter.get_total_flops() - before


@torch.no_grad()
def count_stage_flops(pipe, stream: bytes, decoder: str = "diffusion") -> Dict[str, int]:
    """FLOPs of each stage of ``pipe.decompress(stream, decoder=decoder)`` (stages without any: 0)."""
    from torch.utils.flop_counter import FlopCounterMode

    # FlopCounterMode's module tracker hooks the gradients of every module input that requires them, and fails
    # under no_grad on a parameter handed on as an input: count with none requiring gradients, then restore.
    parameters = [p for module in _networks(pipe) for p in module.parameters() if p.requires_grad]
    try:
        for p in parameters:
            p.requires_grad_(False)
        with FlopCounterMode(display=False) as counter:
            stages = StageFlops(counter)
            pipe.decompress(stream, output_type="pt", decoder=decoder, stage_timer=stages)
    finally:
        for p in parameters:
            p.requires_grad_(True)
    return {name: int(flops) for name, flops in stages.flops.items()}


def _networks(pipe):
    return [m for m in (getattr(pipe, name, None) for name in set(STAGE_MODULES.values())) if m is not None]


def stage_dtypes(pipe) -> Dict[str, torch.dtype]:
    """The dtype each network stage computes in (its network's parameters')."""
    return {
        stage: next(getattr(pipe, module).parameters()).dtype
        for stage, module in STAGE_MODULES.items()
        if getattr(pipe, module, None) is not None
    }


@torch.no_grad()
def matmul_flops_per_second(dtype: torch.dtype, device="cpu", max_size: int = None, repeats: int = 3) -> float:
    """The best rate (FLOP/s) of ``repeats`` products of two N×N matrices in ``dtype``: N doubles from 256 up to
    ``max_size`` (1024 on the CPU, 4096 on CUDA) while one product takes under 0.1 s (a dtype the CPU emulates
    is measured small and quickly)."""
    device = torch.device(device)
    max_size = max_size or (4096 if device.type == "cuda" else 1024)
    size, rate = 256, 0.0
    while True:
        seconds = _best_matmul_seconds(size, dtype, device, repeats)
        rate = 2.0 * size**3 / seconds
        if size * 2 > max_size or seconds > 0.1:
            return rate
        size *= 2


def _best_matmul_seconds(size: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up: kernel selection, packing buffers
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def stage_floors(pipe, stream: bytes, stage_medians: Dict[str, float], decoder: str = "diffusion") -> dict:
    """Per network stage of ``decoder``: FLOPs, dtype, the device's matmul rate in it, the floor and how far the
    stage's median time (``stage_medians``, seconds) is from it; the rates measured once per dtype."""
    device = pipe._execution_device
    flops = count_stage_flops(pipe, stream, decoder)
    dtypes = stage_dtypes(pipe)
    rates = {}
    stages = {}
    for stage, dtype in dtypes.items():
        if stage not in stage_medians or not flops.get(stage):
            continue
        if dtype not in rates:
            rates[dtype] = matmul_flops_per_second(dtype, device)
        floor_s = flops[stage] / rates[dtype]
        stages[stage] = {
            "gflop": flops[stage] / 1e9,
            "dtype": str(dtype).replace("torch.", ""),
            "floor_s": floor_s,
            "median_s": stage_medians[stage],
            "times_floor": stage_medians[stage] / floor_s,
        }
    total_floor = sum(s["floor_s"] for s in stages.values())
    total_median = sum(s["median_s"] for s in stages.values())
    return {
        "decoder": decoder,
        "definition": "FLOPs (FlopCounterMode: 2 per multiply-add of convolutions, matrix products, attention) at "
        "the rate of a large torch.mm in the stage's dtype on the same device and threads",
        "matmul_gflop_per_s": {str(d).replace("torch.", ""): r / 1e9 for d, r in rates.items()},
        "stages": stages,
        "networks_floor_s": total_floor,
        "networks_median_s": total_median,
        "networks_times_floor": total_median / total_floor if total_floor > 0 else None,
    }
