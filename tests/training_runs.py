"""Helpers of the tests of training/ (test_training_units.py, test_training_runs.py, test_export_pipeline.py):
``training/`` on ``sys.path``, the argv of a ``train_sodec.py`` run on the tiny pipeline built in one place, runs in
this process, and what a run logged."""

import contextlib
import shutil
import sys
from pathlib import Path
from typing import List

import PIL.Image
import pytest
import torch


REPO_ROOT = Path(__file__).resolve().parent.parent
TRAINING_DIR = REPO_ROOT / "training"
SCRIPT = TRAINING_DIR / "train_sodec.py"
TINY_CONFIG = REPO_ROOT / "hub_configs" / "sodec-tiny"
ASSETS = Path(__file__).parent / "assets"
VALIDATION_IMAGE = ASSETS / "bsds_crop0_96x64.png"

sys.path.insert(0, str(TRAINING_DIR))

#: Every run's flags unless a test gives its own: 64×64 crops, the JSON-lines tracker, seed 0, no checkpoint,
#: a small discriminator.
RUN_DEFAULTS = {
    "resolution": 64,
    "report_to": "jsonl",
    "seed": 0,
    "checkpointing_steps": 100000,
    "discriminator_channels": "8,16",
}


def train_argv(pipeline_dir, data_dir, output_dir, **flags) -> List[str]:
    """The argv of a run of ``pipeline_dir`` (``--pretrained_model_name_or_path``; None: none) on the images of
    ``data_dir`` (``--train_data_dir``; None: none) into ``output_dir``, with :data:`RUN_DEFAULTS` and ``flags``:
    ``name=value`` is ``--name value``, a list or tuple several values, True the bare flag, False ``--no-name``
    and None nothing."""
    argv = []
    if pipeline_dir is not None:
        argv += ["--pretrained_model_name_or_path", str(pipeline_dir)]
    if data_dir is not None:
        argv += ["--train_data_dir", str(data_dir)]
    argv += ["--output_dir", str(output_dir)]
    for name, value in {**RUN_DEFAULTS, **flags}.items():
        if value is True:
            argv.append(f"--{name}")
        elif value is False:
            argv.append(f"--no-{name}")
        elif isinstance(value, (list, tuple)):
            argv += [f"--{name}", *map(str, value)]
        elif value is not None:
            argv += [f"--{name}", str(value)]
    return argv


def run_training(argv):
    """One in-process run, as from a fresh interpreter (accelerate's state is a process-wide singleton)."""
    import train_sodec
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    return train_sodec.main(train_sodec.parse_args([str(a) for a in argv]))


def train(pipeline_dir, data_dir, output_dir, **flags):
    """:func:`run_training` of :func:`train_argv`; returns the run's last validation metrics."""
    return run_training(train_argv(pipeline_dir, data_dir, output_dir, **flags))


def train_records(output_dir):
    """A run's logged steps ``{step: record}`` and its validation records."""
    from sodec_training.trackers import read_metrics

    records = read_metrics(Path(output_dir) / "logs" / "train_sodec" / "metrics.jsonl")
    return {r["step"]: r for r in records if "train/loss" in r}, [r for r in records if "validation/bpp" in r]


def make_train_images(folder: Path) -> Path:
    """Three training images of different sizes and modes, cut from the BSDS photographs (one in a subfolder,
    one smaller than 128 px, one greyscale)."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = PIL.Image.open(ASSETS / "bsds_481x321.jpg").convert("RGB")
    photo.crop((0, 0, 200, 150)).save(folder / "a.png")
    photo.crop((200, 100, 400, 321)).convert("L").save(folder / "b.jpg")
    sub = folder / "nested"
    sub.mkdir()
    PIL.Image.open(ASSETS / "bsds_crop1_96x64.png").save(sub / "c.png")  # smaller than 128: scaled up
    return folder


def make_imagefolder(folder: Path) -> Path:
    """A local `imagefolder` dataset of three PNGs (the images of :func:`make_train_images`, as RGB)."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = PIL.Image.open(ASSETS / "bsds_481x321.jpg").convert("RGB")
    photo.crop((0, 0, 200, 150)).save(folder / "a.png")
    photo.crop((200, 100, 400, 321)).save(folder / "b.png")
    PIL.Image.open(ASSETS / "bsds_crop1_96x64.png").convert("RGB").save(folder / "c.png")
    return folder


def copy_checkpoint(run_dir: Path, step: int, output_dir: Path) -> Path:
    """A new output folder holding only checkpoint ``step`` of ``run_dir``, to resume from."""
    output_dir.mkdir()
    shutil.copytree(run_dir / f"checkpoint-{step}", output_dir / f"checkpoint-{step}")
    return output_dir


def assert_same_records(resumed, uninterrupted, steps, keys=None):
    """The records of ``steps`` of a resumed run equal those of the uninterrupted run (all keys, or ``keys``)."""
    for step in steps:
        for key in keys or uninterrupted[step]:
            value = uninterrupted[step][key]
            assert resumed[step][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (step, key)


def front_matter(card_text):
    """The YAML front matter of a model card."""
    import yaml

    assert card_text.startswith("---\n")
    return yaml.safe_load(card_text.split("---")[1])


@contextlib.contextmanager
def torch_threads(count: int):
    """Torch on ``count`` threads meanwhile: on a shared 2-core machine two threads per process are several times
    slower for the tiny model."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
