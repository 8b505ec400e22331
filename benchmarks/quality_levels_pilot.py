#!/usr/bin/env python
"""Pilot for quality levels (issue 19): what a per-level quantisation step Δ does to a frozen trained model,
before any training of levels.

For each step Δ the latents y of each image are coded as the pipeline codes them, except that the symbols are
round((y − μ) / Δ) and their CDF tables are chosen by σ / Δ (IEEE division, the same on every machine, so a
decoder derives the same tables from the stream's Δ). Bytes are real (constriction's ANS coder: the z string, the
y string, and the stream's own header and checksum bytes); ŷ = Δ · symbols + μ goes through D_a (the fidelity
decode) and the diffusion path. JPEG's best variant at ≤ the same bytes, image by image, for comparison.

    python benchmarks/quality_levels_pilot.py --images kodak/ --steps 2.83,2,1.41,1,0.71,0.5 \
        --out benchmarks/results/quality-levels-pilot/kodak.json

Δ = 1 is the model as shipped (its bytes are the stream's, checked per image).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from sodec_pipeline import SODECPipeline
from sodec_pipeline.codec.entropy_coding import encode_symbols, table_indexes_of_channels
from sodec_pipeline.evaluation import baselines
from sodec_pipeline.evaluation.evaluate import find_images, load_image
from sodec_pipeline.metrics import colour_psnr, psnr


def to_uint8(image: torch.Tensor, height: int, width: int) -> np.ndarray:
    image = image[0, :, :height, :width].clamp(0, 1)
    return (image.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


@torch.no_grad()
def code_at_steps(pipe, reference: np.ndarray, steps):
    """{Δ: (bytes, fidelity uint8, diffusion uint8)} for one image."""
    height, width = reference.shape[:2]
    vae = pipe.compression_vae
    state = vae.entropy_model.coding_state()
    x = torch.from_numpy(reference).permute(2, 0, 1).float() / 255.0
    y = pipe.analyze(x).float()
    z = vae.hyper_analysis(y)
    medians = vae.entropy_model.z_medians()
    z_symbols = torch.round(z - medians)
    z_hat = z_symbols + medians
    z_string = encode_symbols(
        z_symbols.to(torch.int64), table_indexes_of_channels(z.shape[1], z.shape[-2:]), state["z_tables"]
    )
    means, scales = vae.entropy_model.entropy_parameters(z_hat)
    (stream,) = pipe.compress(PIL.Image.fromarray(reference))
    results = {}
    for step in steps:
        indexes = vae.gaussian_conditional.build_indexes(scales / step)
        symbols = torch.round((y - means) / step)
        y_string = encode_symbols(symbols.to(torch.int64), indexes, state["y_tables"])
        if step == 1.0:
            overhead = len(stream) - len(y_string) - len(z_string)
            assert 0 < overhead < 64, "Δ = 1 must code as the pipeline does"
        y_hat = symbols * step + means
        fidelity, _ = pipe.decode_latents(y_hat, z_hat, decoder="fidelity")
        diffusion, _ = pipe.decode_latents(y_hat, z_hat, decoder="diffusion")
        results[step] = (
            len(y_string) + len(z_string),
            to_uint8(fidelity, height, width),
            to_uint8(diffusion, height, width),
        )
    overhead = len(stream) - results[1.0][0] if 1.0 in results else 19
    return {step: (n + overhead, f, d) for step, (n, f, d) in results.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sodec-small")
    parser.add_argument("--images", required=True)
    parser.add_argument("--steps", default="2.83,2,1.41,1,0.71,0.5")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    steps = [float(s) for s in args.steps.split(",")]
    pipe = SODECPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    rows = []
    for path in find_images(args.images):
        reference = load_image(path)
        height, width = reference.shape[:2]
        jpeg = baselines.run_codec(reference, baselines.CODECS["jpeg"])
        for step, (num_bytes, fidelity, diffusion) in code_at_steps(pipe, reference, steps).items():
            bpp = 8.0 * num_bytes / (height * width)
            best = baselines.select_best(jpeg, bpp)
            jpeg_psnr = psnr(reference, baselines.reconstruct(reference, best)) if best else float("nan")
            row = {
                "image": path.name,
                "step": step,
                "bytes": num_bytes,
                "bpp": bpp,
                "psnr_fidelity": psnr(reference, fidelity),
                "psnr_diffusion": psnr(reference, diffusion),
                "colour_psnr_fidelity": colour_psnr(reference, fidelity),
                "psnr_jpeg_at_same_bytes": jpeg_psnr,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = []
    for step in steps:
        of_step = [r for r in rows if r["step"] == step]
        summary.append({k: float(np.mean([r[k] for r in of_step])) for k in of_step[0] if k != "image"})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "per_image": rows}, indent=1) + "\n")
    print("step     bpp   PSNR fidelity  PSNR diffusion  JPEG at ≤ bytes")
    for s in summary:
        print(
            f"{s['step']:5.2f} {s['bpp']:7.4f} {s['psnr_fidelity']:14.2f} {s['psnr_diffusion']:15.2f}"
            f" {s['psnr_jpeg_at_same_bytes']:16.2f}"
        )


if __name__ == "__main__":
    main()
