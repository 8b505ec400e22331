#!/usr/bin/env python
"""Measure the memory and disk footprint of a SODEC pipeline layout on a randomly initialised instance.

    python training/measure_pipeline_footprint.py --config sodec-sd21-base

reports, per component: the number of parameters; the bytes on disk of ``save_pretrained`` (safetensors) in
float32 and in float16 (the codec, ``compression_vae``, always stays float32); and, in a fresh process, the
resident memory after building the pipeline and the peak resident memory (``ru_maxrss``) of compressing and
decompressing one ``--size``×``--size`` image with the diffusion decoder on the CPU in float32.

Random weights make no meaningful pictures but have exactly the sizes of the real ones.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


COMPONENTS = ("compression_vae", "fidelity_guidance", "image_encoder", "unet", "vae")


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _folder_bytes(folder: Path, suffix: str = ".safetensors") -> int:
    return sum(p.stat().st_size for p in folder.rglob(f"*{suffix}"))


def _build(config: str, threads: int):
    import torch

    torch.set_num_threads(threads)
    from sodec_pipeline.pipelines import build_pipeline_from_config

    pipe = build_pipeline_from_config(config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _test_image(size: int):
    """A deterministic synthetic photograph-like image (smooth gradients plus texture)."""
    import numpy as np
    import PIL.Image

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rng = np.random.default_rng(0)
    texture = rng.normal(0, 0.05, (size, size, 3)).astype(np.float32)
    image = np.stack([xx, yy, 0.5 + 0.5 * np.sin(6 * xx + 4 * yy)], axis=-1) * 0.8 + 0.1 + texture
    return PIL.Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))


def measure_round_trip(config: str, size: int, threads: int) -> dict:
    """Runs in a fresh process: build, then one compress + decompress; peak RSS covers both."""
    import torch

    from sodec_pipeline import SODECPipeline  # noqa: F401 - the whole stack, counted apart from the weights

    rss_imports = _rss_bytes()
    start = time.perf_counter()
    pipe = _build(config, threads)
    built = time.perf_counter()
    rss_built = _rss_bytes()
    image = _test_image(size)
    with torch.inference_mode():
        t0 = time.perf_counter()
        streams = pipe.compress(image)
        t1 = time.perf_counter()
        out = pipe.decompress(streams, output_type="np")
        t2 = time.perf_counter()
    assert out.images[0].shape == (size, size, 3)
    return {
        "image_size": size,
        "threads": threads,
        "rss_after_imports_bytes": rss_imports,
        "rss_after_build_bytes": rss_built,
        "peak_rss_bytes": _peak_rss_bytes(),
        "build_seconds": built - start,
        "compress_seconds": t1 - t0,
        "decompress_seconds": t2 - t1,
        "stream_bytes": len(streams[0]),
        "bpp": out.bpp[0],
    }


def measure_parameters_and_disk(config: str, threads: int, tmp_root: str, skip_disk: bool) -> dict:
    import torch

    pipe = _build(config, threads)
    result = {"parameters": {}, "fp32_bytes": {}, "fp16_bytes": {}}
    for name in COMPONENTS:
        result["parameters"][name] = sum(p.numel() for p in getattr(pipe, name).parameters())
    if skip_disk:
        return result
    for dtype_name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        if dtype is not torch.float32:
            pipe.to(dtype)  # the codec ignores the dtype: its entropy models stay float32
        folder = Path(tempfile.mkdtemp(prefix=f"sodec-footprint-{dtype_name}-", dir=tmp_root))
        try:
            pipe.save_pretrained(folder, safe_serialization=True)
            for name in COMPONENTS:
                result[f"{dtype_name}_bytes"][name] = _folder_bytes(folder / name)
            result[f"{dtype_name}_bytes"]["total_on_disk"] = sum(
                p.stat().st_size for p in folder.rglob("*") if p.is_file()
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return result


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def format_report(config: str, sizes: dict, trip: dict) -> str:
    lines = [f"SODEC footprint of `{config}` (random initialisation)", ""]
    lines.append("| component | parameters | safetensors fp32 | safetensors fp16 |")
    lines.append("| --- | ---: | ---: | ---: |")
    total = 0
    for name in COMPONENTS:
        n = sizes["parameters"][name]
        total += n
        fp32 = sizes["fp32_bytes"].get(name)
        fp16 = sizes["fp16_bytes"].get(name)
        lines.append(
            f"| {name} | {n:,} | {_mb(fp32) if fp32 is not None else '–'} | {_mb(fp16) if fp16 is not None else '–'} |"
        )
    fp32_total = sizes["fp32_bytes"].get("total_on_disk")
    fp16_total = sizes["fp16_bytes"].get("total_on_disk")
    lines.append(
        f"| **total** (all files) | {total:,} | {_mb(fp32_total) if fp32_total else '–'} | "
        f"{_mb(fp16_total) if fp16_total else '–'} |"
    )
    if trip:
        lines += [
            "",
            f"{trip['image_size']}×{trip['image_size']} round trip on the CPU, float32, {trip['threads']} threads, "
            "fresh process:",
            f"- resident memory after importing torch/diffusers/transformers/sodec_pipeline: {_gib(trip['rss_after_imports_bytes'])}",
            f"- resident memory after building the pipeline: {_gib(trip['rss_after_build_bytes'])}",
            f"- peak resident memory (ru_maxrss) of build + compress + decompress: {_gib(trip['peak_rss_bytes'])}",
            f"- compress {trip['compress_seconds']:.1f} s, decompress (diffusion decoder) {trip['decompress_seconds']:.1f} s "
            f"(build {trip['build_seconds']:.1f} s; shared CPU, indicative only)",
            f"- stream {trip['stream_bytes']} bytes ({trip['bpp']:.4f} bpp, random weights)",
        ]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="sodec-sd21-base", help="hub config name or folder")
    parser.add_argument("--size", type=int, default=512, help="side of the round-trip test image")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch CPU threads")
    parser.add_argument(
        "--tmp", default=None, help="where to save the temporary fp32/fp16 copies (deleted afterwards)"
    )
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--skip-disk", action="store_true", help="count parameters only, do not save")
    parser.add_argument("--skip-round-trip", action="store_true", help="do not run the round trip")
    parser.add_argument("--round-trip-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.round_trip_child:
        print(json.dumps(measure_round_trip(args.config, args.size, args.threads)))
        return 0
    trip = {}
    if not args.skip_round_trip:
        # first, in a fresh process, so that nothing of this one counts in its peak
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--round-trip-child",
            "--config",
            str(args.config),
            "--size",
            str(args.size),
            "--threads",
            str(args.threads),
        ]
        done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
        trip = json.loads(done.stdout.strip().splitlines()[-1])
    sizes = measure_parameters_and_disk(args.config, args.threads, args.tmp, args.skip_disk)
    report = format_report(str(args.config), sizes, trip)
    print(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"config": str(args.config), **sizes, "round_trip": trip}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
