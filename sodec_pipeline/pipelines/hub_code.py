"""The code files of a saved SODEC pipeline folder, which let plain diffusers load it: a Hub repo or a folder loads
with ``diffusers.DiffusionPipeline.from_pretrained(repo_or_folder, trust_remote_code=True)`` in any interpreter where
``sodec-pipeline`` is installed, without ``import sodec_pipeline`` first.

diffusers' own mechanism for pipelines and components defined outside it (custom pipelines and components):

- ``model_index.json`` names the pipeline as ``"_class_name": ["pipeline_sodec", "SODECPipeline"]``, and the folder
  holds ``pipeline_sodec.py``, from which diffusers takes the class;
- a component recorded as ``["sodec_pipeline", "CompressionVAE"]`` has ``sodec_pipeline.py`` in its own folder
  (``compression_vae/sodec_pipeline.py``): diffusers looks for that file on the Hub before it loads anything.

Each file only imports the classes from the installed package (a few lines, never a copy of the package), so a
folder loads whichever version of ``sodec-pipeline`` is installed, as it would with ``SODECPipeline.from_pretrained``.
``SODECPipeline.from_pretrained`` itself never runs these files: it takes the classes from the installed package
(:func:`installed_model_index`), with or without ``trust_remote_code``.
"""

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union


#: The module of the pipeline's code file, ``<folder>/pipeline_sodec.py``: ``_class_name``'s first element.
PIPELINE_MODULE = "pipeline_sodec"
#: The library name of this package's components in ``model_index.json``, and so the name of their code file,
#: ``<component>/sodec_pipeline.py``.
COMPONENT_LIBRARY = "sodec_pipeline"
#: The library name :meth:`SODECPipeline.from_pretrained` reads ``COMPONENT_LIBRARY``'s components under:
#: registered with diffusers (``sodec_pipeline.pipelines.diffusers_registration``) and resolved from the installed
#: package, it has no code file, so diffusers takes the classes without running the folder's ``sodec_pipeline.py``.
INSTALLED_LIBRARY = "sodec_pipeline.pipelines.installed_library"

_HEADER = (
    '"""{what}, imported from the installed sodec-pipeline package.\n'
    "\n"
    "With this file, diffusers.DiffusionPipeline.from_pretrained(folder_or_repo_id, trust_remote_code=True) "
    "loads the\n"
    "pipeline in any interpreter where sodec-pipeline is installed (pip install sodec-pipeline), without importing\n"
    "sodec_pipeline first. Written by SODECPipeline.save_pretrained; it holds no model code.\n"
    '"""\n'
    "\n"
)


def _import_lines(classes: Iterable[type]) -> str:
    classes = list(classes)
    lines = sorted({f"from {cls.__module__} import {cls.__name__}" for cls in classes})
    names = sorted({cls.__name__ for cls in classes})
    return "\n".join(lines) + "\n\n\n" + f"__all__ = {json.dumps(names)}\n"


def pipeline_code(pipeline_class: type) -> str:
    """The text of ``<folder>/pipeline_sodec.py`` for a pipeline of ``pipeline_class``."""
    return _HEADER.format(what="The pipeline class of this folder") + _import_lines([pipeline_class])


def component_code(component_classes: Iterable[type]) -> str:
    """The text of ``<component>/sodec_pipeline.py``: the same in every component folder (it imports the classes of
    all the pipeline's ``sodec_pipeline`` components), as diffusers copies each of them to the same module of its
    cache."""
    return _HEADER.format(what="The classes of this folder's sodec_pipeline components") + _import_lines(
        component_classes
    )


def hub_class_name(pipeline_class: type) -> List[str]:
    """``_class_name`` of a saved folder's ``model_index.json``: ``[PIPELINE_MODULE, class name]``."""
    return [PIPELINE_MODULE, pipeline_class.__name__]


def pipeline_class_name(value: Any) -> Optional[str]:
    """The class name of a ``model_index.json``'s ``_class_name``: ``"SODECPipeline"`` for ``"SODECPipeline"`` (folders
    saved before the code files) and for ``["pipeline_sodec", "SODECPipeline"]``; ``None`` for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return value[1]
    return None


def write_code_files(folder: Union[str, os.PathLike], pipeline) -> List[Path]:
    """Writes ``pipeline_sodec.py`` into ``folder`` and ``sodec_pipeline.py`` into the folder of each component the
    pipeline records under :data:`COMPONENT_LIBRARY` that ``folder`` holds. Returns the files written."""
    folder = Path(folder)
    components = {
        name: getattr(pipeline, name)
        for name, value in pipeline.config.items()
        if not name.startswith("_") and isinstance(value, (list, tuple)) and value and value[0] == COMPONENT_LIBRARY
    }
    written = [folder / f"{PIPELINE_MODULE}.py"]
    written[0].write_text(pipeline_code(type(pipeline)), encoding="utf-8")
    text = component_code(type(module) for module in components.values())
    for name in sorted(components):
        if (folder / name).is_dir():
            path = folder / name / f"{COMPONENT_LIBRARY}.py"
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def installed_model_index(config: Dict[str, Any], pipeline_class: type) -> Dict[str, Any]:
    """A ``model_index.json`` as :meth:`SODECPipeline.from_pretrained` reads it: the classes come from the installed
    package and the folder's code files are never run (so no ``trust_remote_code`` is needed).

    ``_class_name`` ``["pipeline_sodec", "SODECPipeline"]`` becomes ``"SODECPipeline"`` (diffusers then builds the
    class ``from_pretrained`` was called on, as for folders saved before the code files), and ``["sodec_pipeline",
    class]`` components become ``[INSTALLED_LIBRARY, class]``. Other entries are left as they are."""
    config = dict(config)
    class_name = config.get("_class_name")
    if isinstance(class_name, (list, tuple)) and pipeline_class_name(class_name) == pipeline_class.__name__:
        config["_class_name"] = pipeline_class.__name__
    for name, value in config.items():
        if not name.startswith("_") and isinstance(value, (list, tuple)) and len(value) == 2:
            if value[0] == COMPONENT_LIBRARY:
                config[name] = [INSTALLED_LIBRARY, value[1]]
    return config
