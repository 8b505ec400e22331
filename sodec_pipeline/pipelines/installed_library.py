"""The installed package's classes under a library name that no saved folder has a code file for.

:meth:`SODECPipeline.from_pretrained` reads components recorded as ``["sodec_pipeline", class]`` under this module's
name (:func:`sodec_pipeline.pipelines.hub_code.installed_model_index`). diffusers loads a component from the file
``<component>/<library>.py`` when the folder has one, which a saved folder has for ``sodec_pipeline`` (for plain
diffusers, :mod:`sodec_pipeline.pipelines.hub_code`). No folder has a file named after this module, so diffusers
imports this module instead (it is registered with diffusers like ``sodec_pipeline``) and takes each class, and the
``ModelMixin``/``SchedulerMixin`` it checks them against, from the installed ``sodec_pipeline``.
"""

import importlib


def __getattr__(name: str):
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # the package namespace (its lazy exports), imported by name: this module is below it
    return getattr(importlib.import_module("sodec_pipeline"), name)
