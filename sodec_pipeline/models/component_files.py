"""A saved diffusers component read without diffusers: its ``config.json`` and its
``diffusion_pytorch_model[.variant].safetensors``, as ``save_pretrained`` writes them (what ``HyperpriorCodec`` and
``StandaloneFidelityDecoder`` load for ``sodec compress`` and ``sodec decompress --fidelity``). Only the standard
library, torch and safetensors are imported here."""

import inspect
import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch


#: The name of a saved model's weights file (diffusers' ``SAFETENSORS_WEIGHTS_NAME``).
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def init_arguments(constructor, config: dict) -> dict:
    """The entries of a saved config that ``constructor`` (a class or a function) takes: diffusers' ``_class_name``,
    ``_diffusers_version`` and unknown keys are left out, as ``from_config`` leaves them out."""
    names = inspect.signature(constructor).parameters
    return {name: config[name] for name in names if name in config}


def variant_weights_name(variant: Optional[str]) -> str:
    """``diffusion_pytorch_model[.variant].safetensors`` (diffusers' ``_add_variant``)."""
    if variant is None:
        return WEIGHTS_NAME
    stem, suffix = WEIGHTS_NAME.rsplit(".", 1)
    return f"{stem}.{variant}.{suffix}"


def load_safetensors(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on the CPU."""
    from safetensors.torch import load_file

    return load_file(str(path))


def read_component(
    folder: Union[str, os.PathLike], subfolder: Optional[str] = None, variant: Optional[str] = None
) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """(config, weights) of the saved component in ``folder[/subfolder]``."""
    path = Path(folder) / subfolder if subfolder else Path(folder)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    return config, load_safetensors(path / variant_weights_name(variant))
