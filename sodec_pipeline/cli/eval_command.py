"""``sodec eval --model PATH_OR_ID --images DIR --out DIR``: SODEC and the Pillow baselines, side by side.

:mod:`sodec_pipeline.cli.dispatch` lists this module as the ``eval`` subcommand. Nothing heavy is imported
at module level (``sodec eval --help`` stays fast): torch and the models come in :func:`run`.
"""

import importlib.util
import sys
import time
from pathlib import Path

from ..evaluation import baselines as baselines_lib
from . import model_loading
from .errors import CLIError
from .files import prepare_output_folder
from .model_loading import add_device_arguments, add_model_argument, load_pipeline, resolve_model
from .processes import Processes


def _float_list(text: str, what: str):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"{what} must be a comma-separated list of numbers; got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise CLIError(f"{what} must be positive numbers; got {text!r}")
    return values


def add_arguments(p) -> None:
    add_model_argument(p)
    p.add_argument("--images", required=True, help="folder of images (png, jpg, ...; not recursive)")
    p.add_argument("--out", required=True, help="output folder: .sodec files, decoded PNGs, CSV, JSON, rd.png")
    add_device_arguments(p)
    p.add_argument(
        "--codecs",
        default=",".join(baselines_lib.CODECS),
        help=f"baselines to run, comma-separated (default: all of {', '.join(baselines_lib.CODECS)})",
    )
    p.add_argument(
        "--targets",
        default=",".join(f"{t:g}" for t in baselines_lib.DEFAULT_TARGETS),
        help="target bitrates (bpp) at which each baseline's best variant is chosen; SODEC's own bpp per image "
        "is always added (default: %(default)s)",
    )
    p.add_argument(
        "--lpips-net", default="alex", choices=["alex", "vgg"], help="LPIPS backbone (default: %(default)s)"
    )
    p.add_argument(
        "--lpips-weights",
        metavar="PATH",
        help="full lpips.LPIPS state_dict (.pth or .safetensors) instead of the weights found on the machine",
    )
    p.add_argument(
        "--dists-weights",
        metavar="PATH",
        help="full DISTS_pytorch.DISTS state_dict instead of the weights found on the machine",
    )
    p.add_argument("--no-perceptual", action="store_true", help="PSNR and MS-SSIM only (no LPIPS, no DISTS)")
    p.add_argument(
        "--quality",
        default=None,
        metavar="Q",
        help="SODEC's quality level(s): 'all', or comma-separated levels such as 1,3,6 (default: the model's "
        "default level); several levels draw SODEC's RD curves and give BD-rates against each baseline",
    )
    p.add_argument("--limit", type=int, help="evaluate only the first N images (sorted by name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (as --quiet)")
    p.add_argument(
        "--batch-size", type=int, default=1, help="tiles per network call when decoding (pipe.decompress batch_size)"
    )


def load_perceptual_metrics(args):
    """LPIPS and DISTS as ``{name: PerceptualMetric}`` plus a message for each one left out (none with
    ``--no-perceptual``); a weights file given on the line must load."""
    from ..metrics import load_perceptual_metrics as load

    if args.no_perceptual:
        return {}, []
    return load(args.lpips_net, args.lpips_weights, args.dists_weights, args.device)


def run(args) -> int:
    from ..evaluation.evaluate import EvaluationInputError, evaluate, find_images, load_image, merge_results
    from ..evaluation.report import write_report
    from ..image_files import UnreadableImageError
    from ..metrics import MetricWeightsError

    resolve_model(args.model)  # a wrong --model is reported before anything else is read
    if args.model is None:
        args.model = model_loading.DEFAULT_MODEL  # the report and the plot name the model that ran
    if importlib.util.find_spec("matplotlib") is None:
        raise CLIError("sodec eval draws its RD plot with matplotlib, which is not installed: pip install matplotlib")
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    unknown = [c for c in codecs if c not in baselines_lib.CODECS]
    if unknown or not codecs:
        raise CLIError(
            f"unknown codec(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(baselines_lib.CODECS)}"
        )
    targets = _float_list(args.targets, "--targets")
    processes = Processes()  # several under accelerate launch: each takes its share of the images
    args.device = processes.device(args.device)
    if args.batch_size < 1:
        raise CLIError("--batch-size must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise CLIError("--limit must be at least 1")
    # Everything the user gave is checked before the (slow) model load.
    try:
        paths = find_images(args.images)[: args.limit]
        for path in paths:
            load_image(path)
    except (EvaluationInputError, UnreadableImageError) as e:
        raise CLIError(str(e)) from e
    try:
        perceptual, missing = load_perceptual_metrics(args)
    except MetricWeightsError as e:
        raise CLIError(str(e)) from e
    for message in missing:
        print(f"note: {message}", file=sys.stderr)
    qualities = parse_qualities(args.quality, model_loading.quality_levels_of(resolve_model(args.model)))
    prepare_output_folder(Path(args.out), args.out)
    pipe = load_pipeline(args.model, args.device, args.dtype, debug=args.debug)
    levels = (pipe.compression_vae.num_qualities, pipe.compression_vae.default_quality)
    qualities = parse_qualities(args.quality, levels)

    start = time.time()
    progress = args.show_progress and not args.no_progress and processes.is_main_process
    result = evaluate(
        pipe,
        processes.share(paths),
        args.out,
        codecs=codecs,
        targets=targets,
        perceptual=perceptual,
        progress=progress,
        batch_size=args.batch_size,
        qualities=qualities,
    )
    result = merge_results(processes.gather(result))  # every process's rows, in the order of one process
    if not processes.is_main_process:
        return 0  # the main process alone writes the report
    settings = {
        "arguments": {k: v for k, v in vars(args).items() if not callable(v)},
        "model": args.model,
        "images_dir": args.images,
        "num_images": len(paths),
        "device": args.device,
        "processes": processes.num_processes,
        "dtype": args.dtype,
        "codecs": codecs,
        "targets_bpp": targets,
        "qualities": qualities,
        "downscale_factors": list(baselines_lib.DOWNSCALE_FACTORS),
        "perceptual_weights": {name: metric.source for name, metric in perceptual.items()},
        "perceptual_missing": missing,
        "seconds": round(time.time() - start, 2),
        "title": f"SODEC ({args.model}) vs. Pillow baselines on {len(paths)} image(s)",
    }
    files, summary = write_report(result, args.out, settings)
    _print_summary(result, summary, files)
    return 0


def parse_qualities(text, levels):
    """``--quality`` → the list of levels (``None``: the model's default alone). ``levels``: the model's (count,
    default), or ``None`` while unknown (a Hub model before loading: only the syntax is checked)."""
    if text is None:
        return None
    if text.strip().lower() == "all":
        return None if levels is None else list(range(1, levels[0] + 1))
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CLIError(f"--quality must be 'all' or comma-separated levels such as 1,3,6; got {text!r}") from None
    if not values:
        raise CLIError(f"--quality must be 'all' or comma-separated levels such as 1,3,6; got {text!r}")
    for value in values:
        model_loading.check_quality_level(value, levels)
    return sorted(set(values))


def _print_summary(result, summary, files) -> None:
    metrics = result.metrics
    header = f"{'method':<16}{'target':>8}{'quality':>8}{'bpp':>9}" + "".join(f" {m:>11}" for m in metrics)
    print(header)
    for e in summary:
        print(
            f"{e['method']:<16}{e['target'] or '-':>8}{e.get('quality') or '-':>8}{e['bpp']:>9.4f}"
            + "".join(f" {e[m]:>11.4f}" for m in metrics)
        )
    from ..evaluation.report import bd_rates

    for metric, values in bd_rates(summary, metrics).items():
        for pair, value in values.items():
            print(f"BD-rate ({metric}) {pair}: {value:+.1f}%")
    for note in result.notes:
        if "skipped variant" not in note:
            print(f"note: {note}")
    skipped = sum("skipped variant" in n for n in result.notes)
    if skipped:
        print(f"note: {skipped} baseline variants were refused by their encoder (listed in results.json)")
    for kind, path in files.items():
        print(f"{kind}: {path}")
