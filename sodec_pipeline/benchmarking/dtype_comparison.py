"""The benchmarked dtype beside float32, stage by stage, in one run (``sodec benchmark`` with ``--dtype auto``
where ``auto`` is not float32, or any other ``--dtype``).

Two pipelines with the same weights, one in the chosen dtype and one in float32, each compress the image (the
bytes must be identical: the codec always runs in float32) and decode the stream with both decoders, alternating
run by run (``warmup`` untimed rounds, then ``repeats`` timed rounds, each round one decode of each pipeline), so
that a change in the machine's load hits both alike. Per decoder: each stage's median in both dtypes and their
ratio, the end-to-end ratio, the PSNR of each decode against the image and its change, and the largest pixel
difference between the two decodes.
"""

import time
from typing import Callable, Dict, Optional

import numpy as np
import torch

from ..metrics import psnr
from ..pipelines.coding import DECODERS
from .benchmark import StageTimer, _synchronize, summarize_times


def psnr_db(decoded: torch.Tensor, image: torch.Tensor) -> float:
    """PSNR (dB) of a decode in [0, 1] against the image, both (3, H, W), on the 8-bit scale the files hold."""
    return psnr(_uint8(image), _uint8(decoded))


def _uint8(image: torch.Tensor) -> np.ndarray:
    return (image.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


@torch.no_grad()
def compare_with_float32(
    pipe, reference, image: torch.Tensor, warmup: int = 1, repeats: int = 5, log: Optional[Callable] = None
) -> dict:
    """``pipe`` (any dtype) against ``reference`` (the same weights in float32): bytes, per-stage times of both
    decoders, PSNR. See the module docstring."""
    log = log or (lambda message: None)
    (stream,) = pipe.compress(image)
    (reference_stream,) = reference.compress(image)
    result = {
        "dtype": str(pipe.dtype).replace("torch.", ""),
        "reference_dtype": str(reference.dtype).replace("torch.", ""),
        "bytes": len(stream),
        "bytes_identical": stream == reference_stream,
        "decoders": {},
    }
    for decoder in DECODERS:
        log(f"{result['dtype']} against float32, {decoder} decode: {warmup} warm-up + {repeats} timed rounds")
        result["decoders"][decoder] = _compare_decoder(pipe, reference, stream, image, decoder, warmup, repeats)
    return result


def _compare_decoder(pipe, reference, stream: bytes, image: torch.Tensor, decoder: str, warmup: int, repeats: int):
    pipes = {"dtype": pipe, "float32": reference}
    totals: Dict[str, list] = {kind: [] for kind in pipes}
    stages: Dict[str, list] = {kind: [] for kind in pipes}
    decoded = {}
    for i in range(warmup + repeats):
        for kind, p in pipes.items():
            timer = StageTimer(p._execution_device)
            _synchronize(timer.device)
            start = time.perf_counter()
            decoded[kind] = p.decompress(stream, output_type="pt", decoder=decoder, stage_timer=timer).images[0]
            _synchronize(timer.device)
            if i >= warmup:
                totals[kind].append(time.perf_counter() - start)
                stages[kind].append(dict(timer.seconds))
    names = [s for s in stages["dtype"][0] if s in stages["float32"][0]]
    by_stage = {}
    for name in names:
        median = summarize_times([r[name] for r in stages["dtype"]])["median_s"]
        reference_median = summarize_times([r[name] for r in stages["float32"]])["median_s"]
        by_stage[name] = {
            "median_s": median,
            "float32_median_s": reference_median,
            "ratio": median / reference_median if reference_median > 0 else None,
        }
    total = summarize_times(totals["dtype"])
    reference_total = summarize_times(totals["float32"])
    psnr, reference_psnr = psnr_db(decoded["dtype"], image), psnr_db(decoded["float32"], image)
    return {
        "decode": total,
        "float32_decode": reference_total,
        "ratio": total["median_s"] / reference_total["median_s"],
        "stages": by_stage,
        "psnr_db": psnr,
        "float32_psnr_db": reference_psnr,
        "psnr_change_db": psnr - reference_psnr,
        "max_abs_difference": (decoded["dtype"].float() - decoded["float32"].float()).abs().max().item(),
    }


def format_comparison(comparison: dict, labels: Dict[str, str]) -> str:
    """The side-by-side table for the terminal (medians in ms)."""
    dtype = comparison["dtype"]
    lines = [
        f"{dtype} beside float32 (alternating run by run): bytes "
        f"{'identical' if comparison['bytes_identical'] else 'DIFFERENT'} ({comparison['bytes']} bytes)",
        f"{'':34}{dtype + ' ms':>14}{'float32 ms':>12}{'ratio':>8}",
    ]
    for decoder, c in comparison["decoders"].items():
        lines.append(
            f"{decoder + ' decode':<34}{1000 * c['decode']['median_s']:>14.1f}"
            f"{1000 * c['float32_decode']['median_s']:>12.1f}{c['ratio']:>8.2f}"
        )
        for name, s in c["stages"].items():
            ratio = f"{s['ratio']:.2f}" if s["ratio"] is not None else "-"
            lines.append(
                f"{'  ' + labels.get(name, name):<34}{1000 * s['median_s']:>14.1f}"
                f"{1000 * s['float32_median_s']:>12.1f}{ratio:>8}"
            )
        lines.append(
            f"{'  PSNR (dB)':<34}{c['psnr_db']:>14.3f}{c['float32_psnr_db']:>12.3f}"
            f"{c['psnr_change_db']:>+8.3f}   max |Δpixel| {c['max_abs_difference']:.4f}"
        )
    return "\n".join(lines)
