"""The ``sodec`` command line (also ``python -m sodec_pipeline``): parsing, dispatch, exit status.

Start-up is cheap: only the chosen command's module is imported, and commands import torch, diffusers
and the models inside ``run``, after their inputs are checked; ``sodec --help`` and
``sodec COMMAND --help`` import none of them.

A user mistake is one line on stderr and exit status 2; anything unexpected is one line and exit 1;
``--debug`` (anywhere on the line) shows the traceback and the libraries' warnings instead.
"""

import argparse
import importlib
import sys
from typing import List, Optional

from ..messages import first_line
from .errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_INTERRUPTED, CLIError
from .model_loading import quiet_libraries
from .progress import progress_enabled


#: Subcommand → (module defining ``add_arguments(parser)`` and ``run(args) -> int``, one-line help).
COMMANDS = {
    "init": (
        "sodec_pipeline.cli.init_command",
        "make a randomly initialised pipeline from a layout (sodec-tiny, ...)",
    ),
    "compress": ("sodec_pipeline.cli.compress_command", "compress images to .sodec files"),
    "decompress": ("sodec_pipeline.cli.decompress_command", "decode .sodec files to PNG"),
    "eval": (
        "sodec_pipeline.cli.eval_command",
        "evaluate SODEC against JPEG/WebP/AVIF/JPEG 2000 (CSV, JSON, RD plot)",
    ),
    "benchmark": (
        "sodec_pipeline.cli.benchmark_command",
        "encode/decode latency by stage and peak memory, with an N-step DDIM decode",
    ),
    "demo": (
        "sodec_pipeline.cli.demo_command",
        "a demo page in the browser: a photo beside JPEG, WebP, AVIF (Gradio)",
    ),
}

_EPILOG = """\
first run (sodec-small, a trained model, ships with the package and is the default --model):
  sodec compress photo.png -o streams/
  sodec decompress streams/photo.sodec -o decoded/
  sodec compress photo.png -o - | sodec decompress - -o - > decoded.png

Existing files are replaced only with --overwrite. `sodec COMMAND --help` describes a command."""


def _add_common_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    """``--debug`` and ``--quiet``, accepted before and after the subcommand."""
    # In a subparser the default is "not set", so that it does not undo the same flag given before it.
    default = False if top_level else argparse.SUPPRESS
    parser.add_argument("--debug", action="store_true", default=default, help="show tracebacks and library warnings")
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress bars")


def _command_in(argv: List[str]) -> Optional[str]:
    """The subcommand named on the line (the first word that is not an option), if it is one."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to add its arguments."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="sodec",
        description="SODEC image codec: images to a few hundred bytes, decoded by one diffusion step.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sodec {__version__}")
    _add_common_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        _add_common_options(command_parser, top_level=False)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
            command_parser.set_defaults(run=module.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser(_command_in(argv)).parse_args(argv)
    if not args.debug:
        quiet_libraries()
    args.show_progress = progress_enabled(args.quiet)
    try:
        return args.run(args)
    except CLIError as e:
        if args.debug:
            raise
        print(f"sodec {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"sodec {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - never a bare traceback
        if args.debug:
            raise
        message = f"{type(e).__name__}: {first_line(e)} (run with --debug for details)"
        print(f"sodec {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
