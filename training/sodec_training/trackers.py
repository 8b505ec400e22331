"""The trackers of ``--report_to`` and the run configuration they record; ``--report_to jsonl``, an accelerate
tracker that needs no extra package: scalars go to ``<logging_dir>/<project>/metrics.jsonl`` (one JSON object per
``log`` call, with its step), the run's configuration to ``config.json``, images to ``images/<name>_<step>.png``."""

import json
import math
import os
from pathlib import Path

import numpy as np
import PIL.Image
from accelerate.tracking import GeneralTracker, on_main_process
from diffusers.utils import is_wandb_available


#: What ``train_sodec.py``'s args hold besides the run's configuration: a secret, the command line (in the model
#: card), and what ``parse_args`` derives (the stages, the loaded distortion loss).
UNLOGGED_ARGUMENTS = ("hub_token", "command_line", "stages", "distortion_loss")


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class JSONLTracker(GeneralTracker):
    name = "jsonl"
    requires_logging_directory = True

    def __init__(self, run_name: str, logging_dir):
        # Nothing distributed here: the tracker is built before the Accelerator, and touching
        # PartialState now would fix the process group before accelerate sets it up.
        super().__init__()
        self.run_dir = Path(logging_dir) / run_name
        self.metrics_path = self.run_dir / "metrics.jsonl"

    @on_main_process
    def start(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)

    @property
    def tracker(self):
        return self.metrics_path

    @on_main_process
    def store_init_configuration(self, values: dict):
        (self.run_dir / "config.json").write_text(
            json.dumps({k: _plain(v) for k, v in values.items()}, indent=2, default=str)
        )

    @on_main_process
    def log(self, values: dict, step=None, **kwargs):
        record = {"step": step, **{k: _plain(v) for k, v in values.items()}}
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    @on_main_process
    def log_images(self, values: dict, step=None, **kwargs):
        folder = self.run_dir / "images"
        folder.mkdir(exist_ok=True)
        for name, images in values.items():
            for i, image in enumerate(images):
                array = np.asarray(image)
                if array.dtype != np.uint8:
                    array = np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
                safe = name.replace("/", "_").replace(os.sep, "_")
                PIL.Image.fromarray(array).save(folder / f"{safe}_{step}_{i}.png")


def read_metrics(path) -> list:
    """The records of a ``metrics.jsonl`` file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def build_trackers(report_to: str, project_name: str, logging_dir) -> list:
    """The Accelerator's ``log_with`` for ``--report_to`` (comma-separated names; "jsonl" is :class:`JSONLTracker`,
    last); a tracker whose package is missing fails here, with the command that installs it."""
    trackers, jsonl = [], []
    for name in [n.strip() for n in report_to.split(",") if n.strip()]:
        if name == "jsonl":
            jsonl = [JSONLTracker(project_name, logging_dir)]
        elif name == "wandb" and not is_wandb_available():
            raise ImportError("--report_to wandb needs wandb: pip install wandb")
        elif name == "tensorboard":
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise ImportError(
                    "--report_to tensorboard needs tensorboard: pip install tensorboard (or use --report_to jsonl)"
                ) from None
            trackers.append(name)
        else:
            trackers.append(name)
    return trackers + jsonl


def tracker_config(args) -> dict:
    """The run's configuration for the trackers: every argument (and derived count) as a plain value."""
    config = {}
    for key, value in vars(args).items():
        if key in UNLOGGED_ARGUMENTS:
            continue
        config[key] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    return {k: ("" if v is None else v) for k, v in config.items()}
