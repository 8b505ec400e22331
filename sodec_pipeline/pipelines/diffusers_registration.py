"""Makes diffusers' generic loaders understand SODEC pipelines; runs when ``sodec_pipeline.pipelines``
is first imported (``from sodec_pipeline import SODECPipeline`` does that)."""

import diffusers
from diffusers.pipelines.pipeline_loading_utils import LOADABLE_CLASSES

from .hub_code import COMPONENT_LIBRARY, INSTALLED_LIBRARY


# The methods diffusers calls on a component of a registered library to save and load it.
_SAVE_LOAD_METHODS = ["save_pretrained", "from_pretrained"]


def register_with_diffusers(pipeline_class: type) -> None:
    """Registers ``pipeline_class`` and the ``sodec_pipeline`` component library with diffusers.

    - ``DiffusionPipeline.from_pretrained(dir_or_id)`` looks a ``_class_name`` string of model_index.json up
      in the diffusers namespace (folders saved before the code files of
      :mod:`sodec_pipeline.pipelines.hub_code`): the pipeline class is made resolvable there.
    - ``sodec_pipeline`` becomes a library diffusers loads components from (like ``transformers``):
      components are recorded in model_index.json as ``["sodec_pipeline", class]``, and the Hub
      download path accepts them even from a repository without their code files.
    - :data:`~sodec_pipeline.pipelines.hub_code.INSTALLED_LIBRARY`, the name ``SODECPipeline.from_pretrained`` reads
      those components under, is registered the same way: the classes come from the installed package and a
      folder's code files are never run.
    """
    if not hasattr(diffusers, pipeline_class.__name__):
        setattr(diffusers, pipeline_class.__name__, pipeline_class)
    for library in (COMPONENT_LIBRARY, INSTALLED_LIBRARY):
        LOADABLE_CLASSES.setdefault(
            library, {"ModelMixin": list(_SAVE_LOAD_METHODS), "SchedulerMixin": list(_SAVE_LOAD_METHODS)}
        )
