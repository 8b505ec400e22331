"""Shared fixtures: a tiny randomly initialised SODEC pipeline (hub_configs/sodec-tiny) saved once per
session, and the real photographs under tests/assets."""

import os
import shutil
from pathlib import Path

import PIL.Image
import pytest
import torch


ASSETS = Path(__file__).parent / "assets"
REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO_ROOT / "hub_configs" / "sodec-tiny"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def photo_paths():
    return sorted(ASSETS.glob("bsds_*"))


@pytest.fixture(scope="session")
def photos(photo_paths):
    return {p.name: PIL.Image.open(p).convert("RGB") for p in photo_paths}


@pytest.fixture(scope="session")
def small_photo(photos):
    return photos["bsds_crop0_96x64.png"]


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A saved tiny pipeline (seed 0). Read-only for tests: copy it before changing anything."""
    from sodec_pipeline.pipelines import build_pipeline_from_config

    out = tmp_path_factory.mktemp("sodec-tiny") / "pipeline"
    build_pipeline_from_config(TINY_CONFIG, seed=0).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_pipeline_dir):
    """The tiny pipeline loaded once. Do not modify it in a test."""
    from sodec_pipeline import SODECPipeline

    pipe = SODECPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def two_images(tmp_path, photo_paths):
    """A folder holding the two 96×64 photo crops."""
    folder = tmp_path / "images"
    folder.mkdir()
    for p in photo_paths:
        if p.name.startswith("bsds_crop"):
            shutil.copy(p, folder / p.name)
    assert len(list(folder.iterdir())) == 2
    return folder
