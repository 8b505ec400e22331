"""The components named in a ``model_index.json`` (``[library, class_name]``): importing their classes and
building them from a config folder, for the pipelines built from a hub config or from published parts."""

import importlib
from pathlib import Path
from typing import Any, Dict, Optional

from ..model_folder_checks import check_config_sizes


def import_component_class(library: str, class_name: str) -> type:
    """``library.class_name`` (``["diffusers", "UNet2DConditionModel"]`` in a model_index.json)."""
    cls = getattr(importlib.import_module(library), class_name, None)
    if cls is None:
        raise ValueError(f"{library} has no class {class_name}")
    return cls


def build_component(cls: type, folder: Path, overrides: Optional[Dict[str, Any]] = None):
    """A randomly initialised ``cls`` from the config in ``folder`` with ``overrides``: a diffusers model or
    scheduler (``from_config``), or a transformers model (its ``config_class``). A config with absurd sizes raises
    ``ModelFolderError`` first."""
    from diffusers import ModelMixin, SchedulerMixin

    if isinstance(cls, type) and issubclass(cls, (ModelMixin, SchedulerMixin)):
        config = dict(cls.load_config(folder))
        config.update(overrides or {})
        check_config_sizes(config, str(folder))  # before anything is allocated
        return cls.from_config(config)
    if hasattr(cls, "config_class"):
        config = cls.config_class.from_pretrained(folder, **(overrides or {}))
        check_config_sizes(config.to_dict(), str(folder))
        return cls(config)
    raise ValueError(f"don't know how to build {cls!r} from a config (folder {folder})")


def split_model_index(index: Dict[str, Any]) -> "tuple[Dict[str, list], Dict[str, Any]]":
    """A ``model_index.json`` as (components ``{name: [library, class_name]}``, pipeline options such as
    ``colour_correction_block_size``); diffusers' own keys (``_class_name``, ...) are dropped."""
    components, options = {}, {}
    for name, value in index.items():
        if name.startswith("_"):
            continue
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, str) for v in value):
            components[name] = value
        else:
            options[name] = value
    return components, options
