#!/usr/bin/env python
"""Streams written on a GPU decode on the CPU to the symbols the GPU encoder coded (issue 18, item 7).

For each image: the pipeline on ``--device`` (CUDA) compresses it; the same model on the CPU entropy-decodes
that stream (its entropy check included) and the decoded symbols are compared, element by element, with the
encoder's own: z symbols = round(H_a(y) − medians) and y symbols = round(y − μ), where y = E(x) was computed
on the GPU and μ comes from P in exact fixed point. It also records whether the CPU writes the same bytes for
the same image (E runs in float32 on both devices, so a y near a rounding boundary may be coded differently;
either stream decodes anywhere) and the PSNR of the CPU's fidelity decode of the GPU's stream.

    python benchmarks/cross_device_check.py --model sodec-small --images photos/ --out cross_device.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from sodec_pipeline import SODECPipeline
from sodec_pipeline.metrics import batch_psnr


def image_files(paths):
    files = []
    for entry in map(Path, paths):
        files.extend(
            sorted(p for p in entry.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
            if entry.is_dir()
            else [entry]
        )
    return files


@torch.no_grad()
def encoder_symbols(pipe: SODECPipeline, image: torch.Tensor):
    """(z symbols, y on the CPU) as the encoder on ``pipe``'s device computes them: E and H_a in float32."""
    codec = pipe.compression_vae
    y = pipe.analyze(image.to(pipe._execution_device)).float()
    with torch.autocast(device_type=y.device.type, enabled=False):
        z = codec.hyper_analysis(y)
        medians = codec.entropy_model.z_medians().to(z.device)
        return torch.round(z - medians).cpu(), y.cpu()


@torch.no_grad()
def check(model: str, files, device: str) -> dict:
    gpu = SODECPipeline.from_pretrained(model).to(device)
    cpu = SODECPipeline.from_pretrained(model)
    for pipe in (gpu, cpu):
        pipe.set_progress_bar_config(disable=True)
    rows = []
    for path in files:
        pil = PIL.Image.open(path).convert("RGB")
        image = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
        stream = gpu.compress(pil)[0]
        cpu_stream = cpu.compress(pil)[0]
        (parsed,) = cpu.parse_bitstreams(stream)
        y_hat, z_hat = cpu.entropy_decode(parsed)  # raises if the entropy check fails
        means, _ = cpu.compression_vae.entropy_model.entropy_parameters(z_hat)
        z_symbols, y = encoder_symbols(gpu, image)
        medians = cpu.compression_vae.entropy_model.z_medians()
        z_decoded = torch.round(z_hat - medians)
        y_encoded, y_decoded = torch.round(y - means), torch.round(y_hat - means)
        fidelity = cpu.decompress(stream, decoder="fidelity", output_type="pt").images.float()
        rows.append(
            {
                "image": path.name,
                "bytes": len(stream),
                "z_symbols_equal": bool(torch.equal(z_symbols, z_decoded)),
                "y_symbols_equal": bool(torch.equal(y_encoded, y_decoded)),
                "y_symbols": int(y_encoded.numel()),
                "cpu_writes_same_bytes": stream == cpu_stream,
                "max_abs_y_difference_gpu_cpu_encoder": float((y - cpu.analyze(image)).abs().max()),
                "fidelity_psnr_cpu_decode_of_gpu_stream": float(batch_psnr(fidelity, image[None]).item()),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return {
        "model": model,
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else device,
        "torch": torch.__version__,
        "images": len(rows),
        "all_symbols_equal": all(r["z_symbols_equal"] and r["y_symbols_equal"] for r in rows),
        "same_bytes_on_both": sum(r["cpu_writes_same_bytes"] for r in rows),
        "rows": rows,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sodec-small")
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="cross_device.json")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = check(args.model, image_files(args.images), args.device)
    result["seconds"] = round(time.perf_counter() - start, 1)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(
        f"all symbols equal: {result['all_symbols_equal']} ({result['images']} images); "
        f"same bytes from both encoders: {result['same_bytes_on_both']}/{result['images']}"
    )
    return 0 if result["all_symbols_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
