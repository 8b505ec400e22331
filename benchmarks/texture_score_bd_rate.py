#!/usr/bin/env python
"""Two decodes of `benchmarks/texture_pilot.py` runs compared at their own bytes: per level, the mean bytes and
metrics of each, then the BD-rate of the test against the anchor over the levels for DISTS, LPIPS-alex (both
lower is better: taken of their negatives) and PSNR (negative: the test needs fewer bytes for the same figure).

    python benchmarks/texture_score_bd_rate.py --test score_new.json:new --anchor score_shipped.json:shipped
"""

import argparse
import json
from pathlib import Path

import numpy as np

from sodec_pipeline.evaluation.bd_rate import bd_rate


METRICS = ("bytes", "flat_excess", "texture_recall", "chroma_excess", "dists", "lpips", "psnr")
#: the BD-rate's metrics, each with the sign that makes higher better
BD_METRICS = (("dists", -1), ("lpips", -1), ("psnr", 1))


def level_means(spec: str) -> dict:
    """``FILE:METHOD`` → {level: {metric: mean over the images}} of that method's rows."""
    path, _, method = spec.rpartition(":")
    rows = [r for r in json.loads(Path(path).read_text())["rows"] if r["method"] == method]
    if not rows:
        raise SystemExit(f"no rows of {method!r} in {path}")
    levels = sorted({r["quality"] for r in rows})
    return {
        q: {m: float(np.mean([r[m] for r in rows if r["quality"] == q])) for m in METRICS if m in rows[0]}
        for q in levels
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", required=True, metavar="FILE:METHOD")
    parser.add_argument("--anchor", required=True, metavar="FILE:METHOD")
    args = parser.parse_args()
    test, anchor = level_means(args.test), level_means(args.anchor)
    levels = sorted(set(test) & set(anchor))
    for q in levels:
        shared = [m for m in METRICS if m in test[q] and m in anchor[q]]
        print(f"level {q}: " + ", ".join(f"{m} {test[q][m]:.4f} / {anchor[q][m]:.4f}" for m in shared))
    for metric, sign in BD_METRICS:
        value = bd_rate(
            [anchor[q]["bytes"] for q in levels],
            [sign * anchor[q][metric] for q in levels],
            [test[q]["bytes"] for q in levels],
            [sign * test[q][metric] for q in levels],
        )
        print(f"BD-rate ({metric}) of the test against the anchor: " + ("n/a" if value is None else f"{value:+.1f} %"))


if __name__ == "__main__":
    main()
