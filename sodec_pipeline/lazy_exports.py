"""Lazy package namespaces: ``import sodec_pipeline`` costs nothing until a name is used.

The way diffusers and transformers keep ``import diffusers`` cheap (their ``_LazyModule``), with
PEP 562's module ``__getattr__``: a package lists which module defines each public name, and the
module is imported the first time one of its names is accessed. Only the standard library is
imported here.
"""

import importlib
import sys
from typing import Callable, Dict, Iterable, List, Tuple


def lazy_exports(
    package: str, import_structure: Dict[str, Iterable[str]], submodules: Iterable[str] = ()
) -> Tuple[Callable[[str], object], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for ``package``.

    Args:
        package: the package's ``__name__``.
        import_structure: module → the names it exports; a module starting with ``.`` is relative to
            ``package`` (``{".codec.errors": ["BitstreamError"], "diffusers": ["ModelMixin"]}``).
        submodules: subpackages or modules of ``package`` that are importable as attributes too
            (``sodec_pipeline.models`` without ``import sodec_pipeline.models``).
    """
    name_to_module = {name: module for module, names in import_structure.items() for name in names}
    submodules = set(submodules)

    def __getattr__(name: str):
        if name in name_to_module:
            value = getattr(importlib.import_module(name_to_module[name], package), name)
        elif name in submodules:
            value = importlib.import_module(f".{name}", package)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(name_to_module) | submodules)

    return __getattr__, __dir__
