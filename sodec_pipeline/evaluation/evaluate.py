"""``sodec eval``: SODEC (both decodes) and the Pillow baselines on the same images in one run.

For every image of the folder:

1. SODEC: ``pipe.compress`` → ``streams/<stem>.sodec`` on disk → the file is read back and decoded
   twice (``decoder="diffusion"`` and ``decoder="fidelity"``) → ``decoded/<stem>.<decoder>.png``.
   bpp = 8 · (size of the .sodec file) / (H · W).
2. Baselines: every variant of every available Pillow codec (see :mod:`.baselines`), then for each
   target bitrate the best variant at ≤ target (highest PSNR). The targets are the fixed grid
   ``targets`` and ``"sodec"``: the bpp SODEC spent on that very image (rate-matched comparison).
3. Metrics on uint8 RGB at the original size (:mod:`sodec_pipeline.metrics`): PSNR, MS-SSIM, the
   block-mean colour PSNR (PSNR of 16×16 block means), and LPIPS-alex and DISTS whenever their weights
   are on the machine (lower is better for both).

The per-image rows, the means, the full baseline grid and the notes are written by :mod:`.report`.
"""

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import PIL.Image

from ..image_files import IMAGE_EXTENSIONS, read_image
from ..image_processing import pil_to_rgb_array
from ..metrics import chroma_excess, colour_psnr, ms_ssim, ms_ssim_scales, peak_power_ratio, psnr, texture_statistics
from ..metrics.texture import PEAK_POWER_TILE
from ..pipelines.coding import DECODERS
from . import baselines as baselines_lib


DEFAULT_TARGETS = baselines_lib.DEFAULT_TARGETS
SODEC_TARGET = "sodec"


class EvaluationInputError(ValueError):
    """The images folder cannot be used (an image in it that cannot be read raises
    :class:`~sodec_pipeline.image_files.UnreadableImageError`)."""


def find_images(folder: str) -> List[Path]:
    """The image files directly inside ``folder`` (sorted by name), by extension."""
    path = Path(folder)
    if not path.exists():
        raise EvaluationInputError(f"{folder}: no such directory")
    if not path.is_dir():
        raise EvaluationInputError(f"{folder}: not a directory")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise EvaluationInputError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this directory")
    return files


def load_image(path: Path) -> np.ndarray:
    """An image file → uint8 RGB (H, W, 3), the right way up (:func:`sodec_pipeline.image_files.read_image`), by
    the pipeline's own conversion rules. Raises :class:`~sodec_pipeline.image_files.UnreadableImageError`."""
    return pil_to_rgb_array(read_image(path))


@dataclass
class EvaluationResult:
    rows: List[dict] = field(default_factory=list)  # one per image × method × target
    grid: List[dict] = field(default_factory=list)  # every baseline variant tried, per image
    notes: List[str] = field(default_factory=list)
    metrics: List[str] = field(default_factory=list)
    codecs: Dict[str, bool] = field(default_factory=dict)
    targets: List[float] = field(default_factory=list)
    images: List[dict] = field(default_factory=list)
    qualities: List[int] = field(default_factory=list)  # the SODEC levels evaluated


#: what every row has, whatever else was asked for: the fidelity metrics (higher is better, BD-rates are taken
#: of them) and where the decode puts texture (:mod:`sodec_pipeline.metrics.texture`)
RATE_DISTORTION_METRICS = ("psnr", "ms_ssim", "colour_psnr")
TEXTURE_METRICS = ("flat_excess", "texture_recall", "chroma_excess", "peak_power_ratio")
BUILTIN_METRICS = RATE_DISTORTION_METRICS + TEXTURE_METRICS


def _quality(reference: np.ndarray, decoded: np.ndarray, perceptual: Dict) -> dict:
    out = {
        "psnr": psnr(reference, decoded),
        "ms_ssim": ms_ssim(reference, decoded),
        "ms_ssim_scales": ms_ssim_scales(*reference.shape[:2]),
        "colour_psnr": colour_psnr(reference, decoded),
    }
    out["flat_excess"], out["texture_recall"] = texture_statistics(reference, decoded)
    out["chroma_excess"] = chroma_excess(reference, decoded)
    # a hatching's spectral line; NaN (no mean, no point) for an image with no whole tile
    whole_tile = min(reference.shape[:2]) >= PEAK_POWER_TILE
    out["peak_power_ratio"] = peak_power_ratio(reference, decoded)[0] if whole_tile else float("nan")
    for name, metric in perceptual.items():
        out[name] = metric(reference, decoded)
    return out


def evaluate(
    pipe,
    image_paths: Sequence[Path],
    out_dir: str,
    codecs: Sequence[str] = tuple(baselines_lib.CODECS),
    targets: Sequence[float] = DEFAULT_TARGETS,
    perceptual: Optional[Dict] = None,
    downscale_factors: Sequence[float] = baselines_lib.DOWNSCALE_FACTORS,
    progress: bool = True,
    batch_size: int = 1,
    qualities: Optional[Sequence[int]] = None,
) -> EvaluationResult:
    """Runs the evaluation and returns the rows; :func:`.report.write_report` writes the files.

    ``qualities``: the levels SODEC codes each image at (``None``: the model's default level alone). Every
    SODEC row has its ``quality``; each baseline gets a row rate-matched to each level (target ``"sodec"``,
    the level in ``quality``)."""
    from tqdm.auto import tqdm

    perceptual = perceptual or {}
    out = Path(out_dir)
    (out / "streams").mkdir(parents=True, exist_ok=True)
    (out / "decoded").mkdir(parents=True, exist_ok=True)
    result = EvaluationResult(
        metrics=list(BUILTIN_METRICS) + list(perceptual), targets=sorted(float(t) for t in targets)
    )
    levels = [pipe.compression_vae.check_quality(q) for q in (qualities or [None])]
    result.qualities = levels
    active = _available_codecs(codecs, result)
    small_sides = []
    for path in tqdm(image_paths, desc="sodec eval", unit="image", disable=not progress):
        reference = load_image(path)
        height, width = reference.shape[:2]
        result.images.append({"image": path.name, "width": width, "height": height})
        if ms_ssim_scales(height, width) < 5:
            small_sides.append(f"{path.name} ({width}x{height}: {ms_ssim_scales(height, width)} scales)")
        image_targets = [(f"{t:g}", float(t), "") for t in result.targets]
        for quality in levels:
            name = path.stem if len(levels) == 1 else f"{path.stem}.q{quality}"
            sodec_bpp = _evaluate_sodec(pipe, path, name, quality, reference, out, perceptual, batch_size, result)
            image_targets.append((SODEC_TARGET, sodec_bpp, quality))
        for codec in active:
            _evaluate_baseline(codec, path, reference, image_targets, downscale_factors, perceptual, result)
    if small_sides:
        result.notes.append(SMALL_SIDES_NOTE + ", ".join(small_sides))
    return result


SMALL_SIDES_NOTE = (
    "MS-SSIM needs a smaller side above 160 px for its 5 scales; these images used fewer scales "
    "(the first M standard weights, renormalised; NaN below 11 px): "
)


def _available_codecs(codecs: Sequence[str], result: EvaluationResult) -> List[baselines_lib.Codec]:
    """The baseline codecs this Pillow build has; a note for each one left out."""
    available = baselines_lib.codec_availability()
    active = []
    for name in codecs:
        codec = baselines_lib.CODECS[name]
        result.codecs[name] = available[name]
        if available[name]:
            active.append(codec)
        else:
            result.notes.append(f"{name}: not available in this Pillow build, left out ({codec.install_hint})")
    return active


def _evaluate_sodec(
    pipe,
    path: Path,
    name: str,
    quality: int,
    reference: np.ndarray,
    out: Path,
    perceptual: Dict,
    batch_size: int,
    result: EvaluationResult,
) -> float:
    """SODEC on one image at one level: a real file (``streams/<name>.sodec``), read back, decoded both ways;
    adds a row per decoder, returns the bpp."""
    height, width = reference.shape[:2]
    (stream,) = pipe.compress(PIL.Image.fromarray(reference), quality=quality)
    stream_path = out / "streams" / f"{name}.sodec"
    stream_path.write_bytes(stream)
    file_bytes = os.path.getsize(stream_path)
    data = stream_path.read_bytes()
    sodec_bpp = 8.0 * file_bytes / (height * width)
    for decoder in DECODERS:
        decoded_image = pipe.decompress(data, output_type="pil", decoder=decoder, batch_size=batch_size).images[0]
        decoded_image.save(out / "decoded" / f"{name}.{decoder}.png")
        decoded = np.asarray(decoded_image, dtype=np.uint8)
        result.rows.append({
            "image": path.name, "width": width, "height": height, "method": f"sodec-{decoder}",
            "target": "", "quality": quality, "setting": "", "downscale": 1.0, "upscale_filter": "none",
            "bytes": file_bytes, "bpp": sodec_bpp, "file": str(stream_path.relative_to(out)),
            **_quality(reference, decoded, perceptual),
        })  # fmt: skip
    return sodec_bpp


def _evaluate_baseline(
    codec,
    path: Path,
    reference: np.ndarray,
    image_targets: Sequence[Tuple[str, float, object]],
    downscale_factors: Sequence[float],
    perceptual: Dict,
    result: EvaluationResult,
) -> None:
    """One baseline codec on one image: its whole grid, then a row for its best variant at each target (label,
    bpp, SODEC level it is rate-matched to or "")."""
    height, width = reference.shape[:2]
    failures: List[str] = []
    variants = baselines_lib.run_codec(reference, codec, downscale_factors, failures=failures)
    result.notes.extend(f"{path.name}: skipped variant {f}" for f in failures)
    result.grid.extend({"image": path.name, **v.record()} for v in variants)
    cache: Dict[int, dict] = {}
    for label, target, quality in image_targets:
        best = baselines_lib.select_best(variants, target)
        if best is None:
            continue
        if id(best) not in cache:
            cache[id(best)] = _quality(reference, baselines_lib.reconstruct(reference, best), perceptual)
        result.rows.append({
            "image": path.name, "width": width, "height": height, "method": codec.name,
            "target": label, "quality": quality, "setting": best.setting, "downscale": best.downscale,
            "upscale_filter": best.upscale_filter, "bytes": best.num_bytes, "bpp": best.bpp, "file": "",
            **cache[id(best)],
        })  # fmt: skip


def merge_results(parts: Sequence[EvaluationResult]) -> EvaluationResult:
    """The results of consecutive shares of the images (in order) as one result, as one run over all of them
    would have made it: rows, grid, images and notes joined in order (the MS-SSIM notes of the shares as one)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    merged = EvaluationResult(
        metrics=list(first.metrics),
        codecs=dict(first.codecs),
        targets=list(first.targets),
        qualities=list(first.qualities),
    )
    codec_notes = {n for n in first.notes if "not available in this Pillow build" in n}  # every share has them
    small_sides = []
    for part in parts:
        merged.rows.extend(part.rows)
        merged.grid.extend(part.grid)
        merged.images.extend(part.images)
        for note in part.notes:
            if note.startswith(SMALL_SIDES_NOTE):
                small_sides.append(note[len(SMALL_SIDES_NOTE) :])
            elif part is first or note not in codec_notes:
                merged.notes.append(note)
    if small_sides:
        merged.notes.append(SMALL_SIDES_NOTE + ", ".join(small_sides))
    return merged


def summarize(result: EvaluationResult) -> Tuple[List[dict], List[str]]:
    """Means over images per method, target and SODEC level, and notes on the targets left out. A baseline's mean
    at a target is given only when every image has a variant at or under it (otherwise the target is out of
    that codec's reach on some image and a mean would compare different image sets)."""
    num_images = len(result.images)
    groups: Dict[tuple, List[dict]] = {}
    for row in result.rows:
        groups.setdefault((row["method"], row["target"], row.get("quality", "")), []).append(row)
    summary, notes = [], []
    partial: Dict[str, List[str]] = {}
    for (method, target, quality), rows in groups.items():
        if len(rows) < num_images:
            label = f"{target}@q{quality}" if target == SODEC_TARGET and len(result.qualities) > 1 else target
            partial.setdefault(method, []).append(f"{label} ({len(rows)}/{num_images})")
            continue
        entry = {"method": method, "target": target, "quality": quality, "images": len(rows)}
        for key in ["bytes", "bpp"] + result.metrics:
            values = [float(r[key]) for r in rows]
            entry[key] = float(np.mean(values)) if all(math.isfinite(v) for v in values) else float("nan")
        summary.append(entry)
    labels = [f"{t:g}" for t in result.targets] + [SODEC_TARGET]
    for codec in (name for name, ok in result.codecs.items() if ok):
        reached = {(method, target) for method, target, _ in groups}
        unreached = [label for label in labels if (codec, label) not in reached]
        if unreached:
            notes.append(
                f"{codec}: no variant at or under target(s) {', '.join(unreached)} bpp on any image (no point)"
            )
        if codec in partial:
            notes.append(
                f"{codec}: target(s) {', '.join(partial[codec])} reached on only some images (images reached/all); "
                "no mean reported there"
            )
    order = {m: i for i, m in enumerate([f"sodec-{d}" for d in DECODERS] + list(baselines_lib.CODECS))}
    summary.sort(key=lambda e: (order.get(e["method"], 99), e["target"] != SODEC_TARGET, e["bpp"]))
    return summary, notes
