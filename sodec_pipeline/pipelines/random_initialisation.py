"""A randomly initialised ``SODECPipeline`` of a hub config layout (``hub_configs/<name>/``).

Random weights make meaningless pictures, but real bitstreams: this is what the tests, the benchmarks and
``sodec init`` use.
"""

import json
import os
from typing import Union

import torch

from ..hub_configs import resolve_hub_config
from ..model_folder_checks import check_model_folder
from .components import build_component, import_component_class, split_model_index
from .pipeline_sodec import SODECPipeline


def build_pipeline_from_config(config: Union[str, os.PathLike], seed: int = 0) -> SODECPipeline:
    """The pipeline of the layout ``config`` (a name such as ``sodec-tiny`` or a folder), every component
    built from its config with ``seed``, in eval mode, with the entropy tables built."""
    folder = resolve_hub_config(config)
    check_model_folder(folder, allow_pickle=True)  # every config's sizes, before any component is built
    index, options = split_model_index(json.loads((folder / "model_index.json").read_text()))
    torch.manual_seed(seed)
    components = {
        name: build_component(import_component_class(*library_and_class), folder / name)
        for name, library_and_class in index.items()
    }
    pipe = SODECPipeline(**components, **options)
    for module in (pipe.compression_vae, pipe.fidelity_guidance, pipe.image_encoder, pipe.unet, pipe.vae):
        module.eval()
    pipe.compression_vae.update(force=True)
    return pipe
