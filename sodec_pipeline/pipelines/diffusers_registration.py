"""Makes diffusers' generic loaders understand SODEC pipelines; runs when ``sodec_pipeline.pipelines``
is first imported (``from sodec_pipeline import SODECPipeline`` does that)."""

import diffusers
from diffusers.pipelines.pipeline_loading_utils import LOADABLE_CLASSES


# The methods diffusers calls on a component of a registered library to save and load it.
_SAVE_LOAD_METHODS = ["save_pretrained", "from_pretrained"]


def register_with_diffusers(pipeline_class: type) -> None:
    """Registers ``pipeline_class`` and the ``sodec_pipeline`` component library with diffusers.

    - ``DiffusionPipeline.from_pretrained(dir_or_id)`` looks the ``_class_name`` of model_index.json up
      in the diffusers namespace: the pipeline class is made resolvable there.
    - ``sodec_pipeline`` becomes a library diffusers loads components from (like ``transformers``):
      components are recorded in model_index.json as ``["sodec_pipeline", class]``, and the Hub
      download path accepts them instead of looking for a custom-code file in the repository.
    """
    if not hasattr(diffusers, pipeline_class.__name__):
        setattr(diffusers, pipeline_class.__name__, pipeline_class)
    LOADABLE_CLASSES.setdefault(
        "sodec_pipeline", {"ModelMixin": list(_SAVE_LOAD_METHODS), "SchedulerMixin": list(_SAVE_LOAD_METHODS)}
    )
