"""Trained SODEC pipelines shipped inside this package, addressed by a short name.

``SODECPipeline.from_pretrained("sodec-small")`` loads the folder ``pretrained/sodec-small`` of the
repository (installed as ``sodec_pipeline.pretrained_data``); a path or a Hub repo id is passed through
unchanged. An existing local path always wins over a shipped name.
"""

import os
from pathlib import Path
from typing import List, Union

from .package_data import package_data_folder


def shipped_models_root() -> Path:
    """The folder holding the shipped pipelines (the repository's ``pretrained/`` or the installed copy)."""
    return package_data_folder("sodec_pipeline.pretrained_data", "pretrained")


def shipped_model_names() -> List[str]:
    root = shipped_models_root()
    return sorted(p.name for p in root.iterdir() if (p / "model_index.json").is_file()) if root.is_dir() else []


def resolve_model_path(name_or_path: Union[str, os.PathLike]) -> Union[str, os.PathLike]:
    """The shipped folder for a shipped model's name; anything else (paths, Hub ids) unchanged."""
    if isinstance(name_or_path, (str, os.PathLike)) and not os.path.exists(name_or_path):
        candidate = shipped_models_root() / str(name_or_path)
        if str(name_or_path) in shipped_model_names():
            return str(candidate)
    return name_or_path
