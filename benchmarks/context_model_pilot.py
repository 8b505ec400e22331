#!/usr/bin/env python
"""Scores the context-model pilot (issue 30): the fidelity decode of real streams (``SODECPipeline.compress``, bpp =
8 × stream bytes / pixels) of each pipeline on BSDS500 test photos outside the 20 held-out ones and outside the
texture pilot's 10, PSNR per level, and BD-rate (PSNR) of every curve against the first.

A curve is ``NAME=FOLDER[,FOLDER...]``: one pipeline's levels, or the runs of several λ pooled (then score one
level, e.g. ``--levels 5``: BD-rate over the λ). It also times, on ``--threads`` threads, the entropy decoding of
each stream (``entropy_decode``: ẑ, P, the context pass, the ANS decoding) and its whole fidelity decode (with D_a),
to see what the context model costs.

    python benchmarks/context_model_pilot.py --bsds-test bsds500/test --count 20 --levels 1,3,5,7,9 \\
        --curve hyperprior=runs/hyperprior-l0.03 --curve checkerboard=runs/checkerboard-l0.03 --out scores.json
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sodec_pipeline import SODECPipeline
from sodec_pipeline.evaluation.bd_rate import bd_rate
from sodec_pipeline.evaluation.evaluate import find_images, load_image
from sodec_pipeline.metrics import psnr


ROOT = Path(__file__).resolve().parent.parent
#: Photos no pilot scores on: the 20 held-out ones of the model card's tables and the texture pilot's 10.
EXCLUDED_LISTS = (
    ROOT / "benchmarks" / "results" / "bsds-test20-sodec-small" / "results.json",
    ROOT / "benchmarks" / "results" / "texture-pilot" / "score_shipped.json",
)


def excluded_names() -> set:
    names = set()
    for path in EXCLUDED_LISTS:
        for item in json.loads(path.read_text())["images"]:
            names.add(item["image"] if isinstance(item, dict) else item)
    return names


def pilot_images(folder: str, count: int) -> list:
    """``count`` photos of ``folder`` (BSDS500 test), evenly spaced in name order, none of :func:`excluded_names`."""
    excluded = excluded_names()
    candidates = [p for p in find_images(folder) if p.name not in excluded]
    if len(candidates) < count:
        raise SystemExit(f"{folder}: {len(candidates)} photos outside the excluded ones, fewer than {count}")
    picks = np.linspace(0, len(candidates) - 1, count).round().astype(int)
    return [candidates[i] for i in picks]


def score_stream(pipe, stream: bytes, reference: np.ndarray) -> dict:
    """PSNR of the fidelity decode; the seconds of the entropy decoding alone and of the whole fidelity decode
    (parsing, entropy decoding, D_a; best of two)."""
    parsed = pipe.parse_bitstreams(stream)[0]
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        y_hat, _ = pipe.entropy_decode(parsed)
        decoded = time.perf_counter()
        image = pipe.decompress(stream, decoder="fidelity").images[0]
        timings.append((decoded - started, time.perf_counter() - decoded))
    del y_hat
    height, width = reference.shape[:2]
    return {
        "bpp": 8.0 * len(stream) / (height * width),
        "bytes": len(stream),
        "psnr": psnr(reference, np.asarray(image.convert("RGB"))),
        "entropy_decode_s": min(t[0] for t in timings),
        "fidelity_decode_s": min(t[1] for t in timings),
    }


def score_curve(name: str, folders: list, images: list, levels: list) -> list:
    rows = []
    for folder in folders:
        pipe = SODECPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        codec = pipe.compression_vae
        for path in images:
            reference = load_image(path)
            for quality in levels:
                (stream,) = pipe.compress(reference, quality=quality)
                row = score_stream(pipe, stream, reference)
                rows.append(
                    {
                        "curve": name,
                        "pipeline": str(folder),
                        "entropy_model": codec.config.entropy_model_type,
                        "image": path.name,
                        "quality": quality,
                        **row,
                    }
                )
        print(f"{name}: {folder} scored", flush=True)
    return rows


def summarize(rows: list) -> list:
    """Mean bpp, PSNR and decode times per curve, pipeline and level."""
    keys = dict.fromkeys((r["curve"], r["pipeline"], r["quality"]) for r in rows)
    summary = []
    for curve, pipeline, quality in keys:
        group = [r for r in rows if (r["curve"], r["pipeline"], r["quality"]) == (curve, pipeline, quality)]
        means = {m: float(np.mean([r[m] for r in group])) for m in ("bpp", "psnr")}
        medians = {m: float(np.median([r[m] for r in group])) for m in ("entropy_decode_s", "fidelity_decode_s")}
        summary.append({"curve": curve, "pipeline": pipeline, "quality": quality, **means, **medians})
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bsds-test", required=True, help="BSDS500's test folder")
    parser.add_argument("--count", type=int, default=20, help="photos scored (outside the excluded ones)")
    parser.add_argument("--curve", action="append", required=True, help="NAME=FOLDER[,FOLDER...] (repeatable)")
    parser.add_argument("--levels", default="1,3,5,7,9")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    levels = [int(q) for q in args.levels.split(",")]
    images = pilot_images(args.bsds_test, args.count)
    curves = [(spec.split("=", 1)[0], spec.split("=", 1)[1].split(",")) for spec in args.curve]
    rows = [row for name, folders in curves for row in score_curve(name, folders, images, levels)]
    summary = summarize(rows)
    anchor = [s for s in summary if s["curve"] == curves[0][0]]
    bd = {}
    for name, _ in curves[1:]:
        test = [s for s in summary if s["curve"] == name]
        bd[name] = bd_rate([s["bpp"] for s in anchor], [s["psnr"] for s in anchor], [s["bpp"] for s in test],
                           [s["psnr"] for s in test])  # fmt: skip
    results = {
        "images": [p.name for p in images],
        "levels": levels,
        "curves": dict(curves),
        "threads": args.threads,
        "summary": summary,
        "bd_rate_psnr_vs_" + curves[0][0]: bd,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"{'curve':<16} {'q':>2} {'bpp':>8} {'PSNR':>7} {'entropy ms':>10} {'fidelity ms':>11}")
    for s in summary:
        print(
            f"{s['curve']:<16} {s['quality']:>2} {s['bpp']:>8.4f} {s['psnr']:>7.2f} "
            f"{1000 * s['entropy_decode_s']:>10.1f} {1000 * s['fidelity_decode_s']:>11.1f}"
        )
    for name, value in bd.items():
        print(f"BD-rate (PSNR) of {name} against {curves[0][0]}: {value if value is None else round(value, 2)} %")


if __name__ == "__main__":
    main()
