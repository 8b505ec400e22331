#!/usr/bin/env python
"""Side-by-side crops of a `sodec eval` run: original | fidelity decode | diffusion decode | JPEG | AVIF, the
classical codecs at their best variant (by PSNR) within the SODEC stream's own bytes, as `sodec eval` picks them.

    python benchmarks/side_by_side.py --eval benchmarks/results/kodak-sodec-small --images kodak/ --quality 5 \
        --crop kodim04.png:200,120,256 --crop kodim23.png:260,80,256 --out side_by_side.png

Without an eval run, ``--pipeline NAME=FOLDER`` (repeatable) and ``--quality Q`` compress each image with each pipeline
and show the first one's fidelity decode and every pipeline's diffusion decode (e.g. two versions of a diffusion path
on one codec: the same bytes), then the codecs of ``--codecs`` at ≤ the first pipeline's bytes:

    python benchmarks/side_by_side.py --pipeline before=old_folder --pipeline after=sodec-small --quality 5 \
        --images kodak/ --crop kodim04.png:120,120,256 --codecs webp,avif --out portrait.png

Each ``--crop IMAGE:LEFT,TOP,SIZE`` is one row (a square of SIZE pixels, shown at 1×). The labels give each
panel's bytes and PSNR on the whole image. ``--quality Q`` picks one level of an eval run with several
(``sodec eval --quality all``); without it the run must have one.
"""

import argparse
import csv
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw

from sodec_pipeline.evaluation import baselines
from sodec_pipeline.evaluation.evaluate import load_image
from sodec_pipeline.metrics import psnr


LABEL_HEIGHT = 18


def panels_for(image_path: Path, eval_dir: Path, codecs=("jpeg", "avif"), quality=None):
    """[(label, uint8 image)] for one image: the original, SODEC's two decodes (at level ``quality`` of a run with
    several), each codec at ≤ its bytes."""
    reference = load_image(image_path)
    stem = image_path.stem if quality is None else f"{image_path.stem}.q{quality}"
    rows = {
        r["method"]: r
        for r in csv.DictReader(open(eval_dir / "per_image.csv"))
        if r["image"] == image_path.name
        and r["method"].startswith("sodec-")
        and (quality is None or r.get("quality") == str(quality))
    }
    nbytes = int(rows["sodec-fidelity"]["bytes"])
    panels = [("original", reference)]
    for decoder in ("fidelity", "diffusion"):
        decoded = np.asarray(PIL.Image.open(eval_dir / "decoded" / f"{stem}.{decoder}.png").convert("RGB"))
        panels.append((f"SODEC {decoder} {nbytes} B {psnr(reference, decoded):.2f} dB", decoded))
    return panels + codec_panels(reference, nbytes, codecs)


def codec_panels(reference: np.ndarray, nbytes: int, codecs) -> list:
    """Each codec's best variant (by PSNR) within ``nbytes``, as `sodec eval` picks it: [(label, uint8 image)]."""
    height, width = reference.shape[:2]
    panels = []
    for name in codecs:
        codec = baselines.CODECS[name]
        if not baselines.codec_availability()[name]:
            continue
        best = baselines.select_best(
            baselines.run_codec(reference, codec, baselines.DOWNSCALE_FACTORS), 8 * nbytes / (height * width)
        )
        if best is not None:
            decoded = baselines.reconstruct(reference, best)
            panels.append((f"{name.upper()} {best.num_bytes} B {psnr(reference, decoded):.2f} dB", decoded))
    return panels


def pipeline_panels(image_path: Path, pipelines, quality: int, codecs) -> list:
    """[(label, uint8 image)] for one image: the original, the first pipeline's fidelity decode of its stream, each
    pipeline's diffusion decode of its own stream, each codec at ≤ the first stream's bytes."""
    reference = load_image(image_path)
    first = pipelines[0][1]
    (stream,) = first.compress(PIL.Image.fromarray(reference), quality=quality)
    panels = [("original", reference)]
    fidelity = np.asarray(first.decompress(stream, decoder="fidelity").images[0].convert("RGB"))
    panels.append((f"SODEC fidelity {len(stream)} B {psnr(reference, fidelity):.2f} dB", fidelity))
    for i, (name, pipe) in enumerate(pipelines):  # each decodes its own stream: it carries its model's fingerprint
        (own,) = (stream,) if i == 0 else pipe.compress(PIL.Image.fromarray(reference), quality=quality)
        decoded = np.asarray(pipe.decompress(own).images[0].convert("RGB"))
        panels.append((f"{name} {len(own)} B {psnr(reference, decoded):.2f} dB", decoded))
    return panels + codec_panels(reference, len(stream), codecs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--eval", type=Path, help="a `sodec eval` output folder")
    source.add_argument("--pipeline", action="append", metavar="NAME=FOLDER", help="compress and decode here instead")
    parser.add_argument("--codecs", default="jpeg,avif", help="classical codecs at ≤ the bytes (default jpeg,avif)")
    parser.add_argument("--images", type=Path, required=True, help="the folder of the evaluated images")
    parser.add_argument("--crop", action="append", required=True, metavar="IMAGE:LEFT,TOP,SIZE")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quality", type=int, default=None, help="the SODEC level (eval runs with several)")
    args = parser.parse_args(argv)
    codecs = [c for c in args.codecs.split(",") if c]
    pipelines = []
    if args.pipeline:
        if args.quality is None:
            parser.error("--pipeline needs --quality")
        from sodec_pipeline import SODECPipeline

        for item in args.pipeline:
            name, _, folder = item.partition("=")
            pipe = SODECPipeline.from_pretrained(folder)
            pipe.set_progress_bar_config(disable=True)
            pipelines.append((name, pipe))
    rows = []
    for item in args.crop:
        name, _, box = item.partition(":")
        left, top, size = (int(v) for v in box.split(","))
        rows.append(
            [
                (label, image[top : top + size, left : left + size])
                for label, image in (
                    pipeline_panels(args.images / name, pipelines, args.quality, codecs)
                    if pipelines
                    else panels_for(args.images / name, args.eval, codecs, quality=args.quality)
                )
            ]
        )
    size = max(image.shape[0] for row in rows for _, image in row)
    columns = max(len(row) for row in rows)
    sheet = PIL.Image.new("RGB", (columns * size, len(rows) * (size + LABEL_HEIGHT)), "white")
    draw = PIL.ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        for c, (label, image) in enumerate(row):
            x, y = c * size, r * (size + LABEL_HEIGHT)
            draw.text((x + 3, y + 3), label, fill="black")
            sheet.paste(PIL.Image.fromarray(np.ascontiguousarray(image)), (x, y + LABEL_HEIGHT))
    sheet.save(args.out)
    print(f"wrote {args.out} ({len(rows)} rows × {columns} panels)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
