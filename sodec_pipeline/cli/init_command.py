"""``sodec init LAYOUT OUT_DIR [--seed N]``: a randomly initialised pipeline from a hub config layout."""

import json
from pathlib import Path

from ..model_folder_checks import ModelFolderError, check_model_folder
from .errors import CLIError
from .files import prepare_output_folder
from .progress import Progress


def add_arguments(p) -> None:
    p.add_argument(
        "config_dir",
        metavar="LAYOUT",
        help="a hub config layout: a shipped one's name (sodec-tiny, sodec-sd21-base) or a folder",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="where to save the randomly initialised pipeline")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisation (default 0)")


def _check_out_dir(out_dir: str) -> None:
    """OUT_DIR is new, empty, or a pipeline folder (replaced); anything else is refused before building."""
    folder = Path(out_dir)
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "model_index.json").is_file():
        raise CLIError(f"{out_dir} is a folder that is not empty and holds no pipeline: choose a new folder")
    prepare_output_folder(folder)


def run(args) -> int:
    from ..hub_configs import resolve_hub_config

    try:
        layout = resolve_hub_config(args.config_dir)
    except FileNotFoundError as e:
        raise CLIError(str(e)) from None
    try:
        json.loads((layout / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CLIError(f"{args.config_dir}: model_index.json is unreadable ({e})") from None
    try:
        check_model_folder(layout, allow_pickle=True)  # absurd sizes, refused before anything is built
    except ModelFolderError as e:
        raise CLIError(f"{args.config_dir}: {e}") from None
    _check_out_dir(args.out_dir)

    progress = Progress(args.show_progress, "init")
    with progress.steps(str(args.config_dir), (("building random weights", None), ("saving", None))) as steps:
        from ..pipelines import build_pipeline_from_config

        pipe = build_pipeline_from_config(layout, seed=args.seed)
        steps.start("saving")
        pipe.save_pretrained(args.out_dir)
    progress.echo(
        f"saved a randomly initialised SODEC pipeline ({args.config_dir}, seed {args.seed}) to {args.out_dir}"
    )
    return 0
