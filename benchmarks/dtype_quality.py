#!/usr/bin/env python
"""What a dtype does to the decodes on a set of photos: the shipped model in float32 and in another dtype (the same
weights), each photo compressed by both (the bytes must be identical) and decoded with both decoders in both
dtypes; PSNR and DISTS of every decode against the photo, and the change against float32 (issue 31, item 4).

    taskset -c 1 python benchmarks/dtype_quality.py --images kodak/ --dtype bfloat16 --threads 1 \\
        --out benchmarks/results/compute-floor/kodak_bfloat16_vs_float32.json

The numerics of bf16 do not depend on whether the CPU computes it natively or emulates it (both round the same
products to bf16); only the time does, so this runs anywhere, slowly where bf16 is emulated.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from sodec_pipeline import SODECPipeline
from sodec_pipeline.evaluation.evaluate import find_images, load_image
from sodec_pipeline.metrics import load_dists, psnr
from sodec_pipeline.metrics.perceptual import PerceptualMetric
from sodec_pipeline.pipelines.pipeline_sodec import DECODERS


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True)
    parser.add_argument("--model", default="sodec-small")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipes = {
        "float32": SODECPipeline.from_pretrained(args.model).enable_channels_last(),
        args.dtype: SODECPipeline.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).enable_channels_last(),
    }
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    dists = PerceptualMetric("dists", load_dists())
    paths = find_images(args.images)[: args.limit]
    rows = []
    for path in paths:
        image = load_image(path)
        streams = {name: pipe.compress(image)[0] for name, pipe in pipes.items()}
        row = {"image": Path(path).name, "bytes": len(streams["float32"]),
               "bytes_identical": len(set(streams.values())) == 1}  # fmt: skip
        for decoder in DECODERS:
            for name, pipe in pipes.items():
                start = time.perf_counter()
                decoded = np.asarray(pipe.decompress(streams["float32"], decoder=decoder).images[0])
                seconds = time.perf_counter() - start
                row[f"{decoder}_{name}"] = {
                    "psnr": psnr(image, decoded),
                    "dists": dists(image, decoded),
                    "seconds": seconds,
                }
        print(json.dumps(row), flush=True)
        rows.append(row)
    summary = {"bytes_identical": all(r["bytes_identical"] for r in rows)}
    for decoder in DECODERS:
        for metric in ("psnr", "dists", "seconds"):
            reference = [r[f"{decoder}_float32"][metric] for r in rows]
            other = [r[f"{decoder}_{args.dtype}"][metric] for r in rows]
            changes = [b - a for a, b in zip(reference, other)]
            summary[f"{decoder}_{metric}"] = {
                "float32_mean": statistics.fmean(reference),
                f"{args.dtype}_mean": statistics.fmean(other),
                "change_mean": statistics.fmean(changes),
                "change_largest": max(changes, key=abs),
            }
    result = {"model": args.model, "dtype": args.dtype, "threads": args.threads, "images": len(rows),
              "summary": summary, "per_image": rows}  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
