"""``sodec benchmark (--model PATH_OR_ID | --config CONFIG_DIR) --size WxH``: latency, stages, memory, and
the N-step DDIM baseline, in one run. :mod:`sodec_pipeline.cli.dispatch` lists this module as the
``benchmark`` subcommand; torch comes in :func:`run` (``sodec benchmark --help`` stays fast)."""

import argparse
import json
import os
import re
import time
from pathlib import Path

from ..hardware import dtype_help
from .errors import CLIError
from .model_loading import DTYPES, check_device, load_pipeline, torch_dtype, use_default_cpu_threads


def parse_size(text: str):
    """``WxH``, width first as Pillow and the rest of the CLI write sizes (or one number for a square)
    → (H, W)."""
    from ..codec.bitstream import check_image_size

    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*", text or "")
    if not match:
        raise CLIError(f"--size must be WxH, e.g. 768x512; got {text!r}")
    width = int(match.group(1))
    height = int(match.group(2)) if match.group(2) else width
    try:
        check_image_size(height, width)
    except ValueError as e:
        raise CLIError(f"--size {text}: {e}") from e
    return height, width


def add_arguments(p) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="saved SODEC pipeline folder or Hub repo id")
    source.add_argument(
        "--config", help="hub config folder or name (e.g. hub_configs/sodec-sd21-base): random weights"
    )
    p.add_argument(
        "--size",
        required=True,
        help="image size WxH (width first), e.g. 768x512 (with --scaling: a comma-separated list)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help=dtype_help())
    p.add_argument(
        "--versus-float32",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="where --dtype is not float32, also decode with a float32 copy, alternating, and show both side by "
        "side per stage with the bytes and PSNR of each (default on)",
    )
    p.add_argument("--baseline-steps", type=int, default=4, help="steps of the DDIM baseline decode (default 4)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before each timed phase (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per phase (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights with --config (default 0)")
    p.add_argument("--image", help="benchmark on this image, resized to --size (default: a synthetic image)")
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: OMP_NUM_THREADS, else one per physical core this process may use)",
    )
    p.add_argument("--out", help="write the results as JSON to this file")
    p.add_argument(
        "--scaling",
        action="store_true",
        help="instead of the stage benchmark: one timed round trip per --size with its peak memory (tiled decode)",
    )
    p.add_argument(
        "--batch-size", type=int, default=1, help="decompress batch_size (tiles per network call) with --scaling"
    )
    p.add_argument(
        "--batch-speedup",
        type=int,
        metavar="N",
        help="with --scaling: also decode N different images of the first --size with batch_size 1 and N",
    )


def _check_args(args):
    if args.scaling:
        sizes = [parse_size(s) for s in args.size.split(",") if s.strip()]
        if not sizes:
            raise CLIError("--size: give at least one size")
        if args.batch_size < 1 or (args.batch_speedup is not None and args.batch_speedup < 2):
            raise CLIError("--batch-size must be at least 1 and --batch-speedup at least 2")
    size = parse_size(args.size.split(",")[0] if args.scaling else args.size)
    if args.baseline_steps < 1 or args.baseline_steps > 1000:
        raise CLIError("--baseline-steps must be between 1 and 1000")
    if args.repeats < 1:
        raise CLIError("--repeats must be at least 1")
    if args.warmup < 0:
        raise CLIError("--warmup must be 0 or more")
    if args.threads is not None and args.threads < 1:
        raise CLIError("--threads must be at least 1")
    check_device(args.device)
    if args.out:
        folder = Path(args.out).resolve().parent
        if not folder.is_dir():
            raise CLIError(f"--out {args.out}: folder {folder} does not exist")
    return size


def _load_image(path, size):
    import numpy as np
    import PIL.Image
    import torch

    from ..evaluation.evaluate import load_image
    from ..image_files import UnreadableImageError

    if not os.path.isfile(path):
        raise CLIError(f"{path}: no such file")
    try:
        rgb = PIL.Image.fromarray(load_image(path))
    except UnreadableImageError as e:
        raise CLIError(str(e)) from e
    rgb = rgb.resize((size[1], size[0]), PIL.Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)


def _build_from_config(config, seed, device, dtype):
    from ..pipelines import build_pipeline_from_config

    try:
        pipe = build_pipeline_from_config(config, seed=seed)
    except FileNotFoundError as e:
        raise CLIError(str(e)) from e
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device=device, dtype=torch_dtype(dtype, device))
    if check_device(device).type == "cpu":
        use_default_cpu_threads()
    return pipe


def _load(args, dtype):
    """The benchmarked pipeline in ``dtype`` (random weights of ``--config``, or ``--model``); ``--threads`` set."""
    import torch

    if args.config:
        pipe = _build_from_config(args.config, args.seed, args.device, dtype)
    else:
        pipe = load_pipeline(args.model, args.device, dtype, debug=args.debug)
    if args.threads:
        torch.set_num_threads(args.threads)
    return pipe


def run(args) -> int:
    from ..benchmarking.benchmark import format_table, run_benchmark

    height, width = _check_args(args)
    if args.scaling:
        return _run_scaling(args)
    image = _load_image(args.image, (height, width)) if args.image else None
    start = time.perf_counter()
    pipe = _load(args, args.dtype)
    load_seconds = time.perf_counter() - start
    result = {"model": args.model, "config": args.config, "seed": args.seed if args.config else None}
    result.update(
        run_benchmark(
            pipe, height, width, warmup=args.warmup, repeats=args.repeats, baseline_steps=args.baseline_steps,
            image=image, log=lambda m: print(f"[sodec benchmark] {m}", flush=True),
        )
    )  # fmt: skip
    result["load_s"] = load_seconds
    result["image"] = args.image or "synthetic (sodec_pipeline.benchmarking.benchmark.synthetic_image, seed 0)"
    result["arguments"] = {k: v for k, v in vars(args).items() if not callable(v)}
    print(format_table(result))
    result["versus_float32"] = _versus_float32(args, pipe, image, height, width, result["notes"])
    if args.out:
        _write(args.out, result)
        print(f"wrote {args.out}")
    return 0


def _versus_float32(args, pipe, image, height, width, notes):
    """The chosen dtype beside float32 (:mod:`sodec_pipeline.benchmarking.dtype_comparison`), printed; ``None``
    where the chosen dtype is float32 (a note says why) or ``--no-versus-float32``."""
    import torch

    from ..benchmarking.benchmark import STAGE_LABELS, synthetic_image
    from ..benchmarking.dtype_comparison import compare_with_float32, format_comparison

    if not args.versus_float32:
        return None
    if pipe.dtype == torch.float32:
        why = " (this CPU has no native bfloat16: AVX512-BF16 or AMX)" if args.dtype == "auto" else ""
        notes.append(f"--dtype {args.dtype} is float32 here{why}: no other dtype to set beside float32")
        print(f"note: {notes[-1]}")
        return None
    reference = _load(args, "float32")
    image = synthetic_image(height, width) if image is None else image
    log = lambda m: print(f"[sodec benchmark] {m}", flush=True)  # noqa: E731
    comparison = compare_with_float32(pipe, reference, image, args.warmup, args.repeats, log)
    print(format_comparison(comparison, STAGE_LABELS))
    return comparison


def _run_scaling(args) -> int:
    import torch

    from ..benchmarking.benchmark import environment
    from ..benchmarking.scaling import format_scaling, measure_batching, measure_round_trip

    pipe = _load(args, args.dtype)
    log = lambda m: print(f"[sodec benchmark] {m}", flush=True)  # noqa: E731
    sizes = [parse_size(s) for s in args.size.split(",") if s.strip()]
    result = {"schema": "sodec-benchmark-scaling/1", "model": args.model, "config": args.config,
              "seed": args.seed if args.config else None, "device": args.device, "dtype": args.dtype,
              "tile_specs": {k: vars(v) for k, v in vars(pipe.tile_specs).items()},
              "environment": environment(torch.device(args.device)), "round_trips": []}  # fmt: skip
    for height, width in sizes:
        result["round_trips"].append(measure_round_trip(pipe, height, width, args.batch_size, log))
        _write(args.out, result)
    if args.batch_speedup:
        result["batching"] = measure_batching(
            pipe, *sizes[0], num_images=args.batch_speedup, batch_size=args.batch_speedup, log=log
        )
    result["arguments"] = {k: v for k, v in vars(args).items() if not callable(v)}
    print(format_scaling(result["round_trips"], result.get("batching")))
    _write(args.out, result)
    return 0


def _write(path, result) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
