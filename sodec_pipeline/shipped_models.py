"""Trained SODEC pipelines shipped inside this package, addressed by a short name.

``SODECPipeline.from_pretrained("sodec-small")`` loads the folder ``pretrained/sodec-small`` of the
repository (installed as ``sodec_pipeline.pretrained_data``); a path or a Hub repo id is passed through
unchanged. An existing local path always wins over a shipped name.
"""

import os
from typing import List, Union

from .package_data import NamedFolders


#: The shipped pipelines: the repository's ``pretrained/`` or the installed copy.
SHIPPED_MODELS = NamedFolders("sodec_pipeline.pretrained_data", "pretrained")


def shipped_model_names() -> List[str]:
    return SHIPPED_MODELS.names()


def resolve_model_path(name_or_path: Union[str, os.PathLike]) -> Union[str, os.PathLike]:
    """The shipped folder for a shipped model's name; anything else (paths, Hub ids) unchanged."""
    if isinstance(name_or_path, (str, os.PathLike)) and not os.path.exists(name_or_path):
        folder = SHIPPED_MODELS.find(name_or_path)
        if folder is not None:
            return str(folder)
    return name_or_path
