"""``--report_to jsonl``: an accelerate tracker that needs no extra package. Scalars go to
``<logging_dir>/<project>/metrics.jsonl`` (one JSON object per ``log`` call, with its step), the run's
configuration to ``config.json``, images to ``images/<name>_<step>.png``."""

import json
import math
import os
from pathlib import Path

import numpy as np
import PIL.Image
from accelerate.tracking import GeneralTracker, on_main_process


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
