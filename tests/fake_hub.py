"""A Hugging Face Hub repo played by a local folder: the functions diffusers calls to list and download a repo's
files (``model_info``, ``hf_hub_download``, ``snapshot_download``), answered by copies into a snapshot folder. Used
in-process and by the fresh interpreters of tests/test_hub_folders.py."""

import fnmatch
import shutil
import types
from pathlib import Path


def fake_hub_functions(remote, snapshot):
    """(model_info, hf_hub_download, snapshot_download) serving the files of the folder ``remote``."""
    remote, snapshot = Path(remote), Path(snapshot)
    files = sorted(str(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file())

    def model_info(repo, **kwargs):
        return types.SimpleNamespace(siblings=[types.SimpleNamespace(rfilename=f) for f in files], sha="0" * 40)

    def hf_hub_download(repo, filename, subfolder=None, **kwargs):
        filename = f"{subfolder}/{filename}" if subfolder else filename
        (snapshot / filename).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(remote / filename, snapshot / filename)
        return str(snapshot / filename)

    def snapshot_download(repo, allow_patterns=None, **kwargs):
        for f in files:
            if allow_patterns is None or any(fnmatch.fnmatch(f, p) for p in allow_patterns):
                hf_hub_download(repo, f)
        return str(snapshot)

    return model_info, hf_hub_download, snapshot_download
