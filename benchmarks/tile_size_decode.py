#!/usr/bin/env python
"""Decode time and quality of the shipped sodec-small with the VAE decoder's and D_a's tiles at other sizes (the
UNet's tiles unchanged), alternating in one process: the time of each decode and its PSNR, LPIPS-alex, DISTS,
flat-window excess and texture recall against the original, per tile size, as means over the photos.

At 768×512 the default tiles (the VAE decoder's from ``vae.config.sample_size`` = 256 px, D_a's the same area)
cut the image into 12 overlapping tiles of 256 px: twice the pixels the image has.

    taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/tile_size_decode.py kodak/kodim04.png kodak/kodim23.png \\
        --vae-tiles 32,64,96 --quality 5 --out tile_sizes.json
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from sodec_pipeline import SODECPipeline
from sodec_pipeline.evaluation.evaluate import load_image
from sodec_pipeline.metrics import load_perceptual_metrics, psnr, texture_statistics
from sodec_pipeline.pipelines.pipeline_sodec import DECODERS
from sodec_pipeline.pipelines.tiling import TileSpec, tile_specs_for


def specs_with_vae_tile(pipe, vae_tile: int):
    """The pipeline's tile layout with the VAE decoder's tiles of ``vae_tile`` latents and D_a's of the same area."""
    base = tile_specs_for(pipe.unet.config, pipe.vae.config)
    fidelity_tile = max(2, vae_tile * 8 // 16)
    return dataclasses.replace(
        base,
        vae=TileSpec(vae_tile, max(1, vae_tile // 4), 1),
        fidelity=TileSpec(fidelity_tile, max(1, fidelity_tile // 4), 1),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+")
    parser.add_argument("--model", default="sodec-small")
    parser.add_argument("--vae-tiles", default="32,64,96", help="VAE decoder tile sides in latents")
    parser.add_argument("--quality", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = SODECPipeline.from_pretrained(args.model).enable_channels_last()
    perceptual, missing = load_perceptual_metrics("alex")
    if missing:
        raise SystemExit("; ".join(missing))
    tiles = [int(t) for t in args.vae_tiles.split(",")]
    rows = []
    for path in args.images:
        reference = load_image(Path(path))
        (stream,) = pipe.compress(reference, quality=args.quality)
        for round_ in range(args.rounds):
            for tile in tiles:
                specs = specs_with_vae_tile(pipe, tile)
                type(pipe).tile_specs = property(lambda self, specs=specs: specs)
                for decoder in DECODERS:
                    start = time.perf_counter()
                    decoded = np.asarray(pipe.decompress(stream, decoder=decoder).images[0].convert("RGB"))
                    seconds = time.perf_counter() - start
                    if round_ + 1 < args.rounds:
                        continue
                    excess, recall = texture_statistics(reference, decoded)
                    row = {
                        "image": Path(path).name,
                        "vae_tile": tile,
                        "decoder": decoder,
                        "seconds": seconds,
                        "psnr": psnr(reference, decoded),
                        "flat_excess": excess,
                        "texture_recall": recall,
                    }
                    row.update({name: metric(reference, decoded) for name, metric in perceptual.items()})
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    summary = {}
    for tile in tiles:
        for decoder in DECODERS:
            group = [r for r in rows if r["vae_tile"] == tile and r["decoder"] == decoder]
            summary[f"{decoder} vae_tile={tile}"] = {
                k: float(np.mean([r[k] for r in group]))
                for k in ("seconds", "psnr", "lpips", "dists", "flat_excess", "texture_recall")
            }
    for name, figures in summary.items():
        print(f"{name:28s} " + "  ".join(f"{k} {v:.4f}" for k, v in figures.items()))
    args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "summary": summary, "rows": rows},
                                   indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
