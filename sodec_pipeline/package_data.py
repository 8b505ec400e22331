"""Data folders that ship with the package (hub config layouts, trained pipelines): found in the installed
package, or in the repository checkout next to ``sodec_pipeline/``; each holds named folders, one a
``model_index.json``."""

import os
from pathlib import Path
from typing import List, Optional, Union


_REPO_ROOT = Path(__file__).resolve().parent.parent


def package_data_folder(package: str, repo_folder: str) -> Path:
    """The installed data package ``package`` (setup.py maps it to ``repo_folder``), else the checkout's folder."""
    try:
        from importlib.resources import files

        packaged = Path(str(files(package)))
        if packaged.is_dir():
            return packaged
    except (ModuleNotFoundError, TypeError):
        pass
    return _REPO_ROOT / repo_folder


class NamedFolders:
    """The folders of one shipped data folder, each addressed by its name (``sodec-small``): those that hold a
    ``model_index.json``. Imports nothing heavy (the CLI looks names up before it decides to load torch)."""

    def __init__(self, package: str, repo_folder: str):
        self.package = package
        self.repo_folder = repo_folder

    def root(self) -> Path:
        """The data folder itself (the installed copy, or the checkout's ``repo_folder``)."""
        return package_data_folder(self.package, self.repo_folder)

    def names(self) -> List[str]:
        """The names, sorted."""
        root = self.root()
        return sorted(p.name for p in root.iterdir() if (p / "model_index.json").is_file()) if root.is_dir() else []

    def find(self, name: Union[str, os.PathLike]) -> Optional[Path]:
        """The folder named ``name``; ``None`` when there is none, or when ``name`` is a path rather than a name
        (it holds a folder separator or starts with a dot)."""
        name = str(name)
        if not name or os.sep in name or "/" in name or name.startswith("."):
            return None
        folder = self.root() / name
        return folder if (folder / "model_index.json").is_file() else None
