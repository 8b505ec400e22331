"""Named hub config layouts (``hub_configs/<name>/``: model_index.json and each component's config,
no weights). ``sodec_pipeline.pipelines.build_pipeline_from_config`` builds a randomly initialised
pipeline from one.

Finding layouts imports nothing heavy (the CLI uses it before deciding to load torch).
"""

import os
from pathlib import Path
from typing import List, Union

from .package_data import NamedFolders


#: The named layouts: the repository's ``hub_configs/`` or the installed copy.
HUB_CONFIGS = NamedFolders("sodec_pipeline.hub_configs_data", "hub_configs")


def available_hub_configs() -> List[str]:
    return HUB_CONFIGS.names()


def resolve_hub_config(name_or_path: Union[str, os.PathLike]) -> Path:
    """A folder path, or the name of a layout shipped with the package (``sodec-tiny``, ``sodec-sd21-base``)."""
    path = Path(name_or_path)
    if (path / "model_index.json").is_file():
        return path
    named = HUB_CONFIGS.find(name_or_path)
    if named is not None:
        return named
    raise FileNotFoundError(
        f"{str(name_or_path)!r} is neither a folder with a model_index.json nor a known hub config "
        f"(known: {', '.join(available_hub_configs()) or 'none'})"
    )
