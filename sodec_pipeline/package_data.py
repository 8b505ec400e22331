"""Data folders that ship with the package (hub config layouts, trained pipelines): found in the installed
package, or in the repository checkout next to ``sodec_pipeline/``."""

from pathlib import Path


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
