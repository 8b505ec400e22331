"""The ``sodec`` command line (also ``python -m sodec_pipeline``).

    sodec init LAYOUT OUT_DIR [--seed N]
    sodec compress IMAGE... --model MODEL [-o OUT]
    sodec decompress FILE.sodec... --model MODEL [-o OUT] [--fidelity]
    sodec eval --model MODEL --images DIR --out DIR
    sodec benchmark (--model MODEL | --config LAYOUT) --size WxH

One file per responsibility: :mod:`.dispatch` (parsing, dispatch, exit status), :mod:`.errors`,
:mod:`.model_loading` (``--model``), :mod:`.files` (inputs and outputs, checked before compute),
:mod:`.progress` (bars on stderr), :mod:`.batch` (one bad file does not stop the others), and one
module per command (``*_command``), over the libraries they drive (``pipelines``, ``evaluation``,
``benchmarking``), none of which imports the CLI.
"""

from .dispatch import COMMANDS, build_parser, main
from .errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK, CLIError
from .model_loading import DEFAULT_MODEL, DTYPES, load_pipeline, resolve_model, torch_dtype


__all__ = [
    "COMMANDS",
    "CLIError",
    "DEFAULT_MODEL",
    "DTYPES",
    "EXIT_BAD_INPUT",
    "EXIT_ERROR",
    "EXIT_OK",
    "build_parser",
    "load_pipeline",
    "main",
    "resolve_model",
    "torch_dtype",
]
