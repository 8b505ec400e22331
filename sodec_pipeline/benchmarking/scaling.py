"""How a SODEC round trip scales with image size and with batching (``sodec benchmark --scaling`` and
``--batch-speedup``).

- :func:`measure_round_trip`: one ``pipe.compress`` and one ``pipe.decompress(output_type="pt")`` of a
  synthetic image of the given size, each timed once, with the peak memory of each phase (on CPU the
  process's peak RSS, reset before the phase; on CUDA ``max_memory_allocated``). Both include the
  weights and the input image.
- :func:`measure_batching`: ``num_images`` different same-size streams decoded with ``batch_size=1``
  and with ``batch_size=N`` (the order alternates over ``rounds`` rounds), the median times, the speed-up,
  and the largest difference between the two decodes (batched convolutions round differently).
"""

import statistics
import time
from typing import Callable, List, Optional

import torch

from .benchmark import PeakMemory, _synchronize


def banded_synthetic_image(height: int, width: int, seed: int = 0, band_rows: int = 1024) -> torch.Tensor:
    """A deterministic photo-like image (3, H, W) in [0, 1] (smooth colour field plus fine texture),
    built band by band so that a 16384² image needs one image's worth of memory, not three."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 32), max(2, width // 32), generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[0]
    for top in range(0, height, band_rows):
        band = image[:, top : top + band_rows]
        band.add_(torch.randn(band.shape, generator=generator), alpha=0.08).clamp_(0, 1)
    return image


def measure_round_trip(pipe, height: int, width: int, batch_size: int = 1, log: Callable = print) -> dict:
    device = pipe._execution_device
    memory = PeakMemory(device)
    image = banded_synthetic_image(height, width)
    log(f"{width}×{height}: compress")
    memory.reset()
    _synchronize(device)
    start = time.perf_counter()
    streams = pipe.compress(image)
    _synchronize(device)
    encode_s = time.perf_counter() - start
    encode_peak = memory.peak_mib()
    del image
    log(f"{width}×{height}: decompress ({len(streams[0])} bytes)")
    memory.reset()
    start = time.perf_counter()
    decoded = pipe.decompress(streams, output_type="pt", batch_size=batch_size, max_pixels=height * width).images
    _synchronize(device)
    decode_s = time.perf_counter() - start
    decode_peak = memory.peak_mib()
    finite = bool(torch.isfinite(decoded).all())
    shape = list(decoded.shape)
    del decoded
    specs = pipe.tile_specs
    from ..pipelines.tiling import tile_layout

    latent = (height + 63) // 64 * 8, (width + 63) // 64 * 8
    return {
        "size": [height, width],
        "megapixels": height * width / 1e6,
        "batch_size": batch_size,
        "bytes": len(streams[0]),
        "bpp": 8.0 * len(streams[0]) / (height * width),
        "encode_s": encode_s,
        "decode_s": decode_s,
        "encode_peak_mib": encode_peak,
        "decode_peak_mib": decode_peak,
        "memory_kind": memory.kind,
        "decoded_shape": shape,
        "decoded_finite": finite,
        "tiles": {
            "unet": len(tile_layout(*latent, specs.unet)),
            "vae": len(tile_layout(*latent, specs.vae)),
            "fidelity": len(tile_layout(latent[0] // 2, latent[1] // 2, specs.fidelity)),
            "analysis": len(tile_layout(latent[0] * 8, latent[1] * 8, specs.analysis)),
        },
    }


def measure_batching(
    pipe, height: int, width: int, num_images: int = 8, batch_size: int = 8, rounds: int = 2, log: Callable = print
) -> dict:
    device = pipe._execution_device
    images = torch.stack([banded_synthetic_image(height, width, seed=i) for i in range(num_images)])
    streams = pipe.compress(images)
    times = {1: [], batch_size: []}
    outputs = {}
    for r in range(rounds):
        order = (1, batch_size) if r % 2 == 0 else (batch_size, 1)
        for b in order:
            log(f"batching {width}×{height} x{num_images}: round {r + 1}/{rounds}, batch_size={b}")
            _synchronize(device)
            start = time.perf_counter()
            outputs[b] = pipe.decompress(streams, output_type="pt", batch_size=b).images
            _synchronize(device)
            times[b].append(time.perf_counter() - start)
    difference = (outputs[1] - outputs[batch_size]).abs()
    single, batched = statistics.median(times[1]), statistics.median(times[batch_size])
    return {
        "size": [height, width],
        "num_images": num_images,
        "batch_size": batch_size,
        "rounds": rounds,
        "decode_s_batch_1": times[1],
        f"decode_s_batch_{batch_size}": times[batch_size],
        "median_s_batch_1": single,
        f"median_s_batch_{batch_size}": batched,
        "speedup": single / batched,
        "max_abs_difference": float(difference.max()),
        "mean_abs_difference": float(difference.mean()),
        "uint8_pixels_differing": int(((outputs[1] * 255).round() != (outputs[batch_size] * 255).round()).sum()),
        "bytes_identical": streams == [pipe.compress(images[i])[0] for i in range(num_images)],
    }


def format_scaling(results: List[dict], batching: Optional[dict] = None) -> str:
    lines = [
        f"{'size':>12}{'Mpx':>8}{'encode s':>10}{'decode s':>10}{'enc peak MiB':>14}{'dec peak MiB':>14}{'tiles unet/vae':>16}"
    ]
    for r in results:
        h, w = r["size"]
        tiles = f"{r['tiles']['unet']}/{r['tiles']['vae']}"
        lines.append(
            f"{f'{w}×{h}':>12}{r['megapixels']:>8.1f}{r['encode_s']:>10.1f}{r['decode_s']:>10.1f}"
            f"{r['encode_peak_mib']:>14.0f}{r['decode_peak_mib']:>14.0f}{tiles:>16}"
        )
    if batching:
        b = batching["batch_size"]
        lines.append(
            f"batching {batching['num_images']} images {batching['size'][1]}×{batching['size'][0]}: batch 1 "
            f"{batching['median_s_batch_1']:.2f} s, batch {b} {batching[f'median_s_batch_{b}']:.2f} s, speed-up "
            f"{batching['speedup']:.2f}x; max |Δ| {batching['max_abs_difference']:.2e}, uint8 pixels differing "
            f"{batching['uint8_pixels_differing']}, bytes identical {batching['bytes_identical']}"
        )
    return "\n".join(lines)
