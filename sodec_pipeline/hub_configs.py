"""Named hub config layouts (``hub_configs/<name>/``: model_index.json and each component's config,
no weights) and building a randomly initialised pipeline from one.

Finding layouts imports nothing heavy (the CLI uses it before deciding to load torch).
"""

import importlib
import json
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


def _build_component(library: str, class_name: str, folder: Path):
    from diffusers import ModelMixin, SchedulerMixin

    module = importlib.import_module(library)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"{library} has no class {class_name} (component folder {folder})")
    if isinstance(cls, type) and issubclass(cls, (ModelMixin, SchedulerMixin)):
        return cls.from_config(cls.load_config(folder))
    if library == "transformers":
        config = cls.config_class.from_pretrained(folder)
        return cls(config)
    raise ValueError(f"don't know how to build {library}.{class_name} from a config")


def build_pipeline_from_config(config: Union[str, os.PathLike], seed: int = 0):
    """A randomly initialised ``SODECPipeline`` of the given layout, with the entropy tables built.

    Random weights make meaningless pictures, but real bitstreams: this is what the tests, the
    benchmarks and ``sodec init`` use.
    """
    import torch

    from .pipelines import SODECPipeline

    folder = resolve_hub_config(config)
    index = json.loads((folder / "model_index.json").read_text())
    torch.manual_seed(seed)
    components = {}
    for name, value in index.items():
        if name.startswith("_"):
            continue
        library, class_name = value
        components[name] = _build_component(library, class_name, folder / name)
    pipe = SODECPipeline(**components)
    for module in (pipe.compression_vae, pipe.fidelity_guidance, pipe.image_encoder, pipe.unet, pipe.vae):
        module.eval()
    pipe.compression_vae.update(force=True)
    return pipe
