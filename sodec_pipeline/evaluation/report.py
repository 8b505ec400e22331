"""Writing an evaluation: CSV, JSON and the rate–distortion plot.

Files in the output folder:

- ``per_image.csv``: one row per image × method × target (SODEC's two decodes, then each baseline at each
  target bitrate with the variant chosen), with bytes, bpp, PSNR, MS-SSIM (+ the number of MS-SSIM
  scales) and LPIPS/DISTS when enabled.
- ``summary.csv``: means over the images per method and target.
- ``baseline_grid.csv``: every baseline variant tried on every image (bpp and PSNR), to audit the choice.
- ``results.json``: all of the above plus the settings, the codecs available and the notes.
- ``rd.png``: PSNR and MS-SSIM against bpp, SODEC's two decodes and every baseline.
- ``compressai/<method>.json``: one file per method (``sodec-diffusion``, ``sodec-fidelity``, each baseline) in
  CompressAI's results format, for ``python -m compressai.utils.plot -f eval-out/compressai/*.json`` and beside
  CompressAI's own published curves (:func:`write_compressai_results`).
"""

import csv
import json
import math
from pathlib import Path
from typing import Dict, List, Tuple

import PIL

from ..pipelines.coding import DECODERS
from . import baselines as baselines_lib
from .bd_rate import bd_rate
from .evaluate import BUILTIN_METRICS, RATE_DISTORTION_METRICS, SODEC_TARGET, EvaluationResult, summarize


ROW_FIELDS = [
    "image", "width", "height", "method", "target", "quality", "setting", "downscale", "upscale_filter",
    "bytes", "bpp", "psnr", "ms_ssim", "ms_ssim_scales", "colour_psnr", "flat_excess", "texture_recall",
    "chroma_excess", "peak_power_ratio",
]  # fmt: skip


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return _finite_or_none(obj)


def _write_csv(path: Path, rows: List[dict], fields: List[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})


def write_report(result: EvaluationResult, out_dir: str, settings: Dict) -> Tuple[Dict[str, str], List[dict]]:
    """Writes every file of the evaluation (adding the summary's notes to ``result.notes``); returns
    ({kind: path}, summary)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary, summary_notes = summarize(result)
    result.notes.extend(summary_notes)
    perceptual = [m for m in result.metrics if m not in BUILTIN_METRICS]
    for message in settings.get("perceptual_missing", []):
        result.notes.append(message)
    fields = ROW_FIELDS + perceptual + ["file"]
    paths = {
        "per_image_csv": out / "per_image.csv",
        "summary_csv": out / "summary.csv",
        "grid_csv": out / "baseline_grid.csv",
        "json": out / "results.json",
        "plot": out / "rd.png",
        "compressai": out / COMPRESSAI_FOLDER,
    }
    _write_csv(paths["per_image_csv"], result.rows, fields)
    _write_csv(
        paths["summary_csv"], summary, ["method", "target", "quality", "images", "bytes", "bpp"] + result.metrics
    )
    grid_fields = [
        "image",
        "codec",
        "setting",
        "downscale",
        "upscale_filter",
        "coded_width",
        "coded_height",
        "bytes",
        "bpp",
        "psnr",
    ]
    _write_csv(paths["grid_csv"], result.grid, grid_fields)
    document = {
        "settings": settings,
        "metrics": result.metrics,
        "codecs_available": result.codecs,
        "targets_bpp": result.targets,
        "selection_rule": (
            "per image, codec and target T: among the codec's variants (quality x downscale factor x upscale filter) "
            "with bpp <= T, the one with the highest PSNR (ties: fewer bits); target 'sodec' is SODEC's own bpp on "
            "that image; bpp counts the encoded bytes (+4 bytes of original size for downscaled variants) at the "
            "original resolution"
        ),
        "baseline_grid": {
            name: {"settings": list(c.settings), "setting": c.setting_label}
            for name, c in baselines_lib.CODECS.items()
            if name in result.codecs
        },
        "downscale_factors": list(settings.get("downscale_factors", baselines_lib.DOWNSCALE_FACTORS)),
        "upscale_filters": list(baselines_lib.UPSCALE_FILTERS),
        "images": result.images,
        "qualities": result.qualities,
        "notes": result.notes,
        "summary": summary,
        "bd_rate": bd_rates(summary, result.metrics),
        "per_image": result.rows,
    }
    paths["json"].write_text(json.dumps(_clean(document), indent=2) + "\n", encoding="utf-8")
    plot_rd(summary, paths["plot"], title=settings.get("title", "SODEC vs. Pillow baselines"))
    write_compressai_results(summary, paths["compressai"], len(result.images), settings.get("model"))
    return {k: str(v) for k, v in paths.items()}, summary


#: The subfolder of the output with the CompressAI results files.
COMPRESSAI_FOLDER = "compressai"
#: This evaluation's metrics under CompressAI's names (``compressai.utils.plot -m psnr`` reads ``psnr-rgb``,
#: ``-m ms-ssim`` reads ``ms-ssim-rgb`` and shows it in dB); the others under their own, for ``-m colour-psnr`` etc.
COMPRESSAI_METRICS = {
    "psnr": "psnr-rgb", "ms_ssim": "ms-ssim-rgb", "colour_psnr": "colour-psnr", "lpips": "lpips", "dists": "dists",
}  # fmt: skip
#: The legend's name of each method.
COMPRESSAI_NAMES = {
    "sodec-diffusion": "SODEC (diffusion decode)", "sodec-fidelity": "SODEC (fidelity decode)", "jpeg": "JPEG",
    "webp": "WebP", "avif": "AVIF", "jpeg2000": "JPEG2000", "jpegxl": "JPEG XL",
}  # fmt: skip


def write_compressai_results(summary: List[dict], folder: Path, num_images: int, model=None) -> List[Path]:
    """One JSON file per method in ``folder`` (``<method>.json``), in the format of CompressAI's published results,
    which ``python -m compressai.utils.plot -f FILES`` reads: ``{"name", "description", "results": {"bpp": [...],
    "psnr-rgb": [...], "ms-ssim-rgb": [...], ...}}``, one point per entry of the summary (means over the images):
    SODEC's decodes one per quality level, each baseline one per target (the fixed ones and those rate-matched to
    each SODEC level), ordered by bpp. ``points`` names each point. A mean that is not a number (MS-SSIM of an image
    under 11 px) is written as ``NaN``, which Python's json (and so CompressAI) reads. Returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    methods = [f"sodec-{d}" for d in DECODERS] + list(baselines_lib.CODECS)
    methods += sorted({e["method"] for e in summary} - set(methods))
    for method in methods:
        entries = sorted((e for e in summary if e["method"] == method), key=lambda e: e["bpp"])
        if not entries:
            continue
        metrics = [m for m in COMPRESSAI_METRICS if all(m in e for e in entries)]
        results = {"bpp": [float(e["bpp"]) for e in entries]}
        results.update({COMPRESSAI_METRICS[m]: [float(e[m]) for e in entries] for m in metrics})
        if method.startswith("sodec-"):
            decoder = method[len("sodec-") :]
            description = (
                f"SODEC{f' ({model})' if model else ''}, {decoder} decode of real .sodec files (bpp from their "
                f"sizes), one point per quality level; means over {num_images} image(s); sodec eval"
            )
            points = [f"quality {e['quality']}" for e in entries]
        else:
            codec = baselines_lib.CODECS.get(method)
            library = codec.library if codec is not None else f"Pillow {PIL.__version__}"
            description = (
                f"{COMPRESSAI_NAMES.get(method, method)} through {library}: per image, the "
                "best variant (setting x downscale factor x upscale filter, highest PSNR) at or under each target bpp "
                f"(fixed targets, and SODEC's own bpp at each level); means over {num_images} image(s); sodec eval"
            )
            points = [
                f"SODEC's bpp at quality {e['quality']}"
                if e["target"] == SODEC_TARGET
                else f"target {e['target']} bpp"
                for e in entries
            ]
        document = {
            "name": COMPRESSAI_NAMES.get(method, method),
            "description": description,
            "results": results,
            "points": points,
        }
        path = folder / f"{method}.json"
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def bd_rates(summary: List[dict], metrics: List[str]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """{metric: {"<SODEC decode> vs <codec>": BD-rate %}} for the metrics where higher is better (PSNR,
    MS-SSIM, colour PSNR), when SODEC was measured at two levels or more. A baseline's curve is its means at
    every target (the fixed ones and those rate-matched to each level), by bpp."""
    out: Dict[str, Dict[str, float]] = {}
    for metric in (m for m in RATE_DISTORTION_METRICS if m in metrics):
        for decoder in DECODERS:
            test = [e for e in summary if e["method"] == f"sodec-{decoder}" and _is_finite(e.get(metric))]
            if len(test) < 2:
                continue
            for codec in baselines_lib.CODECS:
                anchor = [e for e in summary if e["method"] == codec and _is_finite(e.get(metric))]
                value = bd_rate(
                    [e["bpp"] for e in anchor],
                    [e[metric] for e in anchor],
                    [e["bpp"] for e in test],
                    [e[metric] for e in test],
                )
                if value is not None:
                    out.setdefault(metric, {})[f"sodec-{decoder} vs {codec}"] = value
    return out


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


PLOT_PANELS = (
    ("psnr", "PSNR (dB, RGB) — higher is better"),
    ("ms_ssim", "MS-SSIM (RGB) — higher is better"),
    ("colour_psnr", "colour PSNR (dB, 16×16 block means) — higher is better"),
    ("lpips", "LPIPS — lower is better"),
    ("dists", "DISTS — lower is better"),
    ("flat_excess", "flat-window excess (texture added where the photo is flat) — lower is better"),
    ("texture_recall", "texture recall (of the photo's texture where it has some) — nearer 1 is better"),
    ("chroma_excess", "chroma excess (colour speckle the photo does not have) — lower is better"),
    ("peak_power_ratio", "peak power ratio (a hatching's one frequency against the photo's) — near 1 is better"),
)


def plot_rd(summary: List[dict], path: Path, title: str = "") -> None:
    """Each metric of the summary against mean bpp, one panel per metric: each baseline's curve through its points
    at the fixed targets (dots) and rate-matched to SODEC (hollow markers), and SODEC's diffusion and fidelity
    decodes (stars; joined into a curve over the quality levels when there are several)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(m, label) for m, label in PLOT_PANELS if any(m in e for e in summary)] or list(PLOT_PANELS[:2])
    columns = 2
    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(12, 4.8 * rows), squeeze=False)
    axes = axes.flatten()
    for axis in axes[len(panels) :]:
        axis.set_visible(False)
    colors = {
        "jpeg": "tab:blue", "webp": "tab:orange", "avif": "tab:green", "jpeg2000": "tab:purple", "jpegxl": "tab:olive",
    }  # fmt: skip
    sodec_style = {"sodec-diffusion": ("tab:red", "*"), "sodec-fidelity": ("tab:brown", "P")}

    def finite(e, metric):
        return _is_finite(e.get(metric))

    for axis, (metric, label) in zip(axes, panels):
        for codec, color in colors.items():
            # one curve per codec through all its points: the fixed targets (dots) and those rate-matched to
            # SODEC (hollow markers), each a mean over the images of its best variant at or under the target
            curve = sorted((e for e in summary if e["method"] == codec and finite(e, metric)), key=lambda e: e["bpp"])
            if not curve:
                continue
            axis.plot([e["bpp"] for e in curve], [e[metric] for e in curve], "-", color=color, lw=1.5, label=codec)
            fixed = [e for e in curve if e["target"] != SODEC_TARGET]
            axis.plot([e["bpp"] for e in fixed], [e[metric] for e in fixed], "o", color=color, ms=4)
            matched = [e for e in curve if e["target"] == SODEC_TARGET]
            if matched:
                axis.plot(
                    [e["bpp"] for e in matched], [e[metric] for e in matched], "o", mfc="none", mec=color, ms=9,
                    label=f"{codec} @ SODEC's bytes",
                )  # fmt: skip
        for method, (color, marker) in sodec_style.items():
            points = sorted(
                (e for e in summary if e["method"] == method and finite(e, metric)), key=lambda e: e["bpp"]
            )
            if len(points) > 1:
                axis.plot(
                    [e["bpp"] for e in points], [e[metric] for e in points], "-", color=color, marker=marker, ms=9,
                    lw=2, label=f"{method} (quality {points[0]['quality']}–{points[-1]['quality']})",
                )  # fmt: skip
            for e in points[:1] if len(points) == 1 else []:
                axis.plot(e["bpp"], e[metric], marker, color=color, ms=13, label=method)
        axis.set_xlabel("bits per pixel (from file sizes)")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
