"""Named hub config layouts (``hub_configs/<name>/``: model_index.json and each component's config,
no weights). ``sodec_pipeline.pipelines.build_pipeline_from_config`` builds a randomly initialised
pipeline from one.

Finding layouts imports nothing heavy (the CLI uses it before deciding to load torch).
"""

import os
from pathlib import Path
from typing import Union

from .package_data import package_data_folder


def hub_configs_root() -> Path:
    """The folder holding the named layouts (the repository's ``hub_configs/`` or the installed copy)."""
    return package_data_folder("sodec_pipeline.hub_configs_data", "hub_configs")


def available_hub_configs():
    root = hub_configs_root()
    return sorted(p.name for p in root.iterdir() if (p / "model_index.json").is_file()) if root.is_dir() else []


def resolve_hub_config(name_or_path: Union[str, os.PathLike]) -> Path:
    """A folder path, or the name of a layout shipped with the package (``sodec-tiny``, ``sodec-sd21-base``)."""
    path = Path(name_or_path)
    if (path / "model_index.json").is_file():
        return path
    named = hub_configs_root() / str(name_or_path)
    if (named / "model_index.json").is_file():
        return named
    raise FileNotFoundError(
        f"{str(name_or_path)!r} is neither a folder with a model_index.json nor a known hub config "
        f"(known: {', '.join(available_hub_configs()) or 'none'})"
    )
