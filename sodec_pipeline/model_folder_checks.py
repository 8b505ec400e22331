"""Checks of a saved pipeline folder made before anything in it is built or read: its components' weights are
safetensors (a pickle — ``.bin``, ``.pt``, ``.pth``, ``.ckpt`` — can run any code when it is loaded) and their
configs hold no absurd sizes (a UNet with a million channels would allocate gigabytes before a weight is read).
Each refusal is a :class:`ModelFolderError` with a one-line message naming the component and the file."""

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Tuple, Union


#: Weight files that are pickles (sharded ones have a ``….bin.index.json``); diffusers and transformers read
#: them with ``torch.load``.
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin.index.json")
SAFETENSORS_SUFFIXES = (".safetensors", ".safetensors.index.json")
#: Every file that holds a component's weights: safetensors, pickles, flax msgpack, sharded ones' indexes.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".msgpack", ".index.json")
CONFIG_FILE_NAMES = ("config.json", "scheduler_config.json")

#: The largest width (channels, hidden or intermediate units, ``*_dim``, filters) and spatial size (``sample_size``,
#: ``image_size``, …) a component's config may give: far above any real model's (Stable Diffusion XL's widest
#: block has 1280 channels, CLIP ViT-bigG 8192 MLP units, VAEs 1024-pixel samples).
MAX_CONFIG_WIDTH = 16384
#: The largest value of any other integer in a config (layers, heads, levels of a table, timesteps, …).
MAX_CONFIG_INTEGER = 65536
_WIDTH_KEY = re.compile(r"channels|size|_dims?$|^dims?$|filters|tokens")


class ModelFolderError(ValueError):
    """A saved pipeline that :meth:`SODECPipeline.from_pretrained` refuses to load: one line saying why."""


def check_model_folder(folder: Union[str, os.PathLike], allow_pickle: bool = False) -> None:
    """Raises :class:`ModelFolderError` for a pipeline folder with a component whose weights are only pickles (unless
    ``allow_pickle``) or whose config holds an absurd size. Reads model_index.json and the components' config
    files and lists their folders; builds nothing."""
    folder = Path(folder)
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return  # not a pipeline folder: diffusers says so
    if not isinstance(index, dict):
        return
    for name in sorted(k for k in index if not k.startswith("_")):
        component = folder / name
        if not component.is_dir():
            continue
        if not allow_pickle:
            check_no_pickle_only_weights(component, name)
        for config_name in CONFIG_FILE_NAMES:
            path = component / config_name
            if path.is_file():
                try:
                    config = json.loads(path.read_text(encoding="utf-8"))
                except (UnicodeDecodeError, ValueError):
                    continue  # the loader reports an unreadable config in its own words
                check_config_sizes(config, f"{name}/{config_name}")


def check_no_pickle_only_weights(component: Path, name: Optional[str] = None) -> None:
    """:class:`ModelFolderError` when the component folder holds weights only as pickles, no safetensors."""
    files = sorted(p.name for p in component.iterdir() if p.is_file())
    if any(f.endswith(SAFETENSORS_SUFFIXES) for f in files):
        return
    pickles = [f for f in files if f.endswith(PICKLE_WEIGHT_SUFFIXES)]
    if pickles:
        raise ModelFolderError(
            f"the {name or component.name} component of {component.parent} has only a pickle weight file, "
            f"{component.name}/{pickles[0]}, and no .safetensors: loading a pickle can run arbitrary code, so it is "
            f"refused; convert it to safetensors, or pass use_safetensors=False to from_pretrained if you trust it"
        )


def check_config_sizes(config: Mapping[str, Any], where: str) -> None:
    """:class:`ModelFolderError` for a width or size above :data:`MAX_CONFIG_WIDTH`, or another integer above
    :data:`MAX_CONFIG_INTEGER`, anywhere in ``config`` (nested ones included); ``where`` names it in the message."""
    for key, value in _numbers(config):
        is_width = bool(_WIDTH_KEY.search(key)) and key != "vocab_size"
        if not is_width and isinstance(value, float):
            continue  # a float that is not a size allocates nothing
        limit = MAX_CONFIG_WIDTH if is_width else MAX_CONFIG_INTEGER
        if not math.isfinite(value) or abs(value) > limit:
            raise ModelFolderError(
                f"{where}: {key} = {value} is absurd (at most {limit}); refusing to build a model that would "
                f"allocate that much: the config is corrupt or not a SODEC component's"
            )


def _numbers(value: Any, key: str = "") -> Iterator[Tuple[str, Union[int, float]]]:
    """``(key, number)`` for every number in a JSON value; a list's numbers carry the list's key."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _numbers(v, str(k))
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _numbers(v, key)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield key, value
