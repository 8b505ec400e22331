#!/usr/bin/env python
"""Scores diffusion decodes for the texture pilot (issue 29): for each pipeline folder and each photograph, at
each quality level, the diffusion decode's flat-window excess, texture recall, chroma excess, peak power ratio (a
hatching's spectral line: ``benchmarks/periodic_grain.py``), DISTS, LPIPS-alex and PSNR (real streams; the
metrics of ``sodec_pipeline.metrics``), means per level, and the fidelity decode once (the pilots freeze the codec
and D_a, so it is the same for every pipeline).

    python benchmarks/texture_pilot.py --images pilotset/ --levels 1,5,9 \
        --pipeline shipped=pretrained/sodec-small --pipeline gan=runs/gan ... --out scores.json

``--realism 0.25,0.5,1`` scores the diffusion decodes of pipelines trained with a realism control at each β (rows
named ``NAME@β``); pipelines without one keep their single decode.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sodec_pipeline import SODECPipeline
from sodec_pipeline.evaluation.evaluate import find_images, load_image
from sodec_pipeline.metrics import (
    chroma_excess,
    load_perceptual_metrics,
    peak_power_ratio,
    psnr,
    texture_statistics,
)


def decode_uint8(pipe, stream: bytes, decoder: str, realism=None) -> np.ndarray:
    image = pipe.decompress(stream, decoder=decoder, realism=realism).images[0]
    return np.asarray(image.convert("RGB"))


def score(reference: np.ndarray, decoded: np.ndarray, perceptual) -> dict:
    excess, recall = texture_statistics(reference, decoded)
    row = {
        "flat_excess": excess,
        "texture_recall": recall,
        "chroma_excess": chroma_excess(reference, decoded),
        "peak_power_ratio": peak_power_ratio(reference, decoded)[0],
        "psnr": psnr(reference, decoded),
    }
    for name, metric in perceptual.items():
        row[name] = metric(reference, decoded)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True)
    parser.add_argument("--pipeline", action="append", required=True, help="NAME=FOLDER (repeatable)")
    parser.add_argument("--levels", default="1,5,9")
    parser.add_argument("--no-fidelity", action="store_true", help="skip the fidelity decode's row")
    parser.add_argument("--realism", help="realisms β to score a realism-control pipeline at (comma-separated)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    levels = [int(q) for q in args.levels.split(",")]
    images = find_images(args.images)
    perceptual, missing = load_perceptual_metrics("alex")
    if missing:
        raise SystemExit("; ".join(missing))
    results = {"images": [p.name for p in images], "levels": levels, "rows": []}
    for index, spec in enumerate(args.pipeline):
        name, folder = spec.split("=", 1)
        pipe = SODECPipeline.from_pretrained(folder)
        decodes = [(name, "diffusion", None)]
        if args.realism and pipe.scheduler.config.get("realism_control", False):
            decodes = [(f"{name}@{float(b):g}", "diffusion", float(b)) for b in args.realism.split(",")]
        if index == 0 and not args.no_fidelity:
            decodes.append(("fidelity", "fidelity", None))
        for path in images:
            reference = load_image(path)
            for quality in levels:
                (stream,) = pipe.compress(reference, quality=quality)
                for method, decoder, realism in decodes:
                    row = score(reference, decode_uint8(pipe, stream, decoder, realism), perceptual)
                    results["rows"].append(
                        {"method": method, "image": path.name, "quality": quality, "bytes": len(stream), **row}
                    )
    metrics = ["flat_excess", "texture_recall", "chroma_excess", "peak_power_ratio", "dists", "lpips", "psnr"]
    summary = []
    for method in dict.fromkeys(r["method"] for r in results["rows"]):
        for quality in levels:
            rows = [r for r in results["rows"] if r["method"] == method and r["quality"] == quality]
            summary.append(
                {"method": method, "quality": quality, **{m: float(np.mean([r[m] for r in rows])) for m in metrics}}
            )
    results["summary"] = summary
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"{'method':<16} {'q':>2} " + " ".join(f"{m:>14}" for m in metrics))
    for row in summary:
        print(f"{row['method']:<16} {row['quality']:>2} " + " ".join(f"{row[m]:>14.4f}" for m in metrics))


if __name__ == "__main__":
    main()
