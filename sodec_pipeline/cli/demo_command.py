"""``sodec demo [--model MODEL] [--host 127.0.0.1] [--port 7860]``: the Gradio demo page in a browser.

:mod:`sodec_pipeline.cli.dispatch` lists this module as the ``demo`` subcommand. The pipeline and the metrics
load once, before the server starts; requests queue one at a time, at most 32 waiting
(:data:`sodec_pipeline.demo.app.DEMO_MAX_QUEUE`). The page listens on 127.0.0.1 unless
``--host 0.0.0.0`` is given (every machine that can reach this one can then use it).
"""

import importlib.util
import sys
from pathlib import Path

from ..messages import first_line
from .errors import CLIError
from .model_loading import add_model_argument, load_pipeline, resolve_model


def add_arguments(p) -> None:
    add_model_argument(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, this machine only; 0.0.0.0 opens it to the network)",
    )
    p.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda[:N] or mps (default cpu)")
    p.add_argument("--no-perceptual", action="store_true", help="PSNR only (no LPIPS, no DISTS: faster)")


def model_card(source: str):
    """The model card's Markdown (front matter removed) of a pipeline folder, if it has one."""
    path = Path(source) / "README.md"
    if not path.is_file():
        return None
    from huggingface_hub import ModelCard

    return ModelCard.load(path).text


def run(args) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise CLIError("sodec demo needs Gradio, which is not installed: pip install 'sodec-pipeline[demo]'")
    if not 0 < args.port < 65536:
        raise CLIError(f"--port must be between 1 and 65535; got {args.port}")
    source = resolve_model(args.model)
    from ..metrics import load_perceptual_metrics

    perceptual, missing = ({}, []) if args.no_perceptual else load_perceptual_metrics(device=args.device)
    print(f"loading the model {args.model or source} ...", file=sys.stderr)
    pipe = load_pipeline(args.model, args.device, debug=args.debug)
    from ..demo.app import build_demo

    demo = build_demo(pipe, args.model or Path(source).name, perceptual, card=model_card(source), notes=missing)
    try:
        demo.launch(server_name=args.host, server_port=args.port, show_error=True, quiet=args.quiet)
    except OSError as e:
        raise CLIError(f"cannot serve on {args.host}:{args.port}: {first_line(e)}") from e
    return 0
