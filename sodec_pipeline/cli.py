"""The ``sodec`` command line (also ``python -m sodec_pipeline``).

    sodec init CONFIG_DIR OUT_DIR [--seed N]
    sodec compress IMAGE... --model PATH_OR_ID [-o OUT_DIR]
    sodec decompress FILE.sodec... --model PATH_OR_ID [-o OUT_DIR] [--fidelity]

Every error is reported as one line on stderr with a non-zero exit status (2 for bad input or
arguments, 1 for anything unexpected); ``--debug`` shows the traceback instead.
"""

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
DTYPES = ("float32", "bfloat16", "float16")


def torch_dtype(name: str):
    """The torch dtype of a ``--dtype`` choice."""
    import torch

    return getattr(torch, name)


class CLIError(Exception):
    """An error the CLI reports as one line."""


# Subcommands register here: name → (add_arguments(parser), run(args) -> int).
# Other modules (evaluation, benchmarks) add theirs with `register_command`.
COMMANDS: Dict[str, tuple] = {}


def register_command(name: str, help: str, add_arguments: Callable, run: Callable) -> None:
    COMMANDS[name] = (help, add_arguments, run)


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    disable_progress_bars()


def load_pipeline(model: str, device: str = "cpu", dtype: str = "float32"):
    """Loads a saved SODEC pipeline from a folder or Hub id; any failure becomes a one-line CLIError."""

    from .pipelines import SODECPipeline

    if os.path.isdir(model) and not os.path.isfile(os.path.join(model, "model_index.json")):
        raise CLIError(f"{model} is not a SODEC pipeline folder (no model_index.json)")
    if not os.path.isdir(model) and (os.path.exists(model) or model.count("/") != 1):
        raise CLIError(f"model {model!r} is neither a pipeline folder nor a Hub repo id (owner/name)")
    try:
        pipe = SODECPipeline.from_pretrained(model, dtype=torch_dtype(dtype))
    except Exception as e:  # noqa: BLE001 - the loader raises many kinds; report one line
        raise CLIError(f"cannot load a SODEC pipeline from {model!r}: {_first_line(e)}") from e
    if not isinstance(pipe, SODECPipeline):
        raise CLIError(f"{model!r} holds a {type(pipe).__name__}, not a SODECPipeline")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _output_path(source: Path, out_dir: Optional[str], suffix: str) -> Path:
    folder = Path(out_dir) if out_dir else source.parent
    folder.mkdir(parents=True, exist_ok=True)
    return folder / (source.stem + suffix)


# ---------------------------------------------------------------------- init
def _add_init(p: argparse.ArgumentParser) -> None:
    p.add_argument("config_dir", help="a hub config folder (hub_configs/<name>) or the name of a shipped one")
    p.add_argument("out_dir", help="where to save the randomly initialised pipeline")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisation (default 0)")


def _run_init(args) -> int:
    from .hub_configs import build_pipeline_from_config

    try:
        pipe = build_pipeline_from_config(args.config_dir, seed=args.seed)
    except FileNotFoundError as e:
        raise CLIError(str(e)) from e
    pipe.save_pretrained(args.out_dir)
    print(f"saved a randomly initialised SODEC pipeline ({args.config_dir}, seed {args.seed}) to {args.out_dir}")
    return 0


# ---------------------------------------------------------------------- compress
def _add_compress(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files (any format Pillow reads)")
    p.add_argument("--model", required=True, help="pipeline folder or Hub repo id")
    p.add_argument("-o", "--output", help="output folder (default: next to each image)")
    p.add_argument("--device", default="cpu")


def _open_image(path: str):
    import PIL.Image

    if not os.path.isfile(path):
        raise CLIError(f"{path}: no such file")
    try:
        with PIL.Image.open(path) as image:
            image.load()
            return image.copy()
    except (PIL.UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise CLIError(f"{path}: not a readable image ({_first_line(e)})") from e


def _run_compress(args) -> int:
    images = [_open_image(path) for path in args.images]  # fail before loading the model
    pipe = load_pipeline(args.model, args.device)
    for path, image in zip(args.images, images):
        try:
            (stream,) = pipe.compress(image)
        except ValueError as e:
            raise CLIError(f"{path}: {_first_line(e)}") from e
        out = _output_path(Path(path), args.output, ".sodec")
        out.write_bytes(stream)
        bpp = 8.0 * len(stream) / (image.width * image.height)
        print(f"{out}\t{len(stream)} bytes\t{image.width}x{image.height}\t{bpp:.4f} bpp")
    return 0


# ---------------------------------------------------------------------- decompress
def _add_decompress(p: argparse.ArgumentParser) -> None:
    p.add_argument("streams", nargs="+", help=".sodec files")
    p.add_argument("--model", required=True, help="pipeline folder or Hub repo id")
    p.add_argument("-o", "--output", help="output folder (default: next to each stream)")
    p.add_argument("--fidelity", action="store_true", help="write the fidelity decoder's image x̂_f (no diffusion step)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    p.add_argument(
        "--max-pixels", type=int, default=None,
        help="decode budget: refuse streams announcing more pixels (default 16777216 = 4096×4096; "
        "sodec_pipeline.bitstream.DEFAULT_MAX_PIXELS)",
    )


def _run_decompress(args) -> int:
    from .bitstream import BitstreamError

    streams: List[bytes] = []
    for path in args.streams:
        if not os.path.isfile(path):
            raise CLIError(f"{path}: no such file")
        streams.append(Path(path).read_bytes())
    pipe = load_pipeline(args.model, args.device, args.dtype)
    decoder = "fidelity" if args.fidelity else "diffusion"
    for path, stream in zip(args.streams, streams):
        try:
            output = pipe.decompress(stream, output_type="pil", decoder=decoder, max_pixels=args.max_pixels)
        except BitstreamError as e:
            raise CLIError(f"{path}: {e}") from e
        image = output.images[0]
        out = _output_path(Path(path), args.output, ".png")
        image.save(out)
        print(f"{out}\t{image.width}x{image.height}\t{output.bpp[0]:.4f} bpp\t{decoder}")
    return 0


register_command("init", "build a randomly initialised pipeline from a hub config", _add_init, _run_init)
register_command("compress", "compress images to .sodec files", _add_compress, _run_compress)
register_command("decompress", "decode .sodec files to PNG", _add_decompress, _run_decompress)


def _load_plugin_commands() -> None:
    """Imports the modules that register further subcommands (evaluation, benchmark)."""
    import importlib

    for module in ("sodec_pipeline.evaluation.cli", "sodec_pipeline.benchmarking.cli"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is None or not module.startswith(e.name):
                raise


def build_parser() -> argparse.ArgumentParser:
    _load_plugin_commands()
    parser = argparse.ArgumentParser(prog="sodec", description="SODEC image codec (one-step diffusion decoding)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _run) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--debug" not in argv:
        _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    run = COMMANDS[args.command][2]
    try:
        return run(args)
    except CLIError as e:
        if args.debug:
            raise
        print(f"sodec {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"sodec {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - never a bare traceback
        if args.debug:
            raise
        print(f"sodec {args.command}: error: {type(e).__name__}: {_first_line(e)} (run with --debug for details)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
