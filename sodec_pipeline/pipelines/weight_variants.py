"""``variant="fp16"`` for a pipeline folder whose weights are float16 under the default file names.

diffusers and transformers name a variant's weights ``diffusion_pytorch_model.fp16.safetensors`` /
``model.fp16.safetensors``, next to the default (float32) ``diffusion_pytorch_model.safetensors``, and
``from_pretrained(variant="fp16")`` of a folder without such files raises. A folder with one set of weights stored
in float16 (``sodec-small``: ``training/export_pipeline.py --weights_dtype float16``, parameters in float16, entropy
tables in their own dtypes) keeps them under the default names, so that ``from_pretrained`` without a variant, plain
diffusers' included, loads it; :meth:`SODECPipeline.from_pretrained` resolves ``variant="fp16"`` to those same files
(:func:`unsuffixed_weights_are_variant`).
"""

import json
import os
import struct
from pathlib import Path
from typing import Iterator, Union

from ..model_folder_checks import WEIGHT_SUFFIXES


#: The variants named after a storage dtype, and that dtype's name in a safetensors header.
DTYPE_VARIANTS = {"fp16": "F16", "bf16": "BF16"}
#: A safetensors header larger than this is not read (a real one is kilobytes; a corrupt length could be anything).
_MAX_HEADER_BYTES = 100 * 2**20
#: What diffusers says when a folder or repo has no file of the requested variant.
_NO_VARIANT_FILES = "no such modeling files are available"


def missing_variant_files(error: BaseException) -> bool:
    """Whether ``error`` is diffusers' refusal of a ``variant`` that no weight file of the folder or repo has."""
    return isinstance(error, ValueError) and _NO_VARIANT_FILES in str(error)


def unsuffixed_weights_are_variant(folder: Union[str, os.PathLike], variant: str) -> bool:
    """True when ``variant`` is a dtype variant (``fp16``, ``bf16``) that no weight file of the pipeline folder
    ``folder`` carries in its name, and every component's default ``.safetensors`` files hold tensors of that dtype
    (its parameters; buffers such as entropy tables may keep other dtypes): the default files are that variant.
    False when any component has ``variant`` files (diffusers loads them) or default weights of another dtype only."""
    dtype = DTYPE_VARIANTS.get(variant)
    folder = Path(folder)
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if dtype is None or not isinstance(index, dict):
        return False
    weighted = 0
    for name in sorted(k for k in index if not k.startswith("_")):
        component = folder / name
        if not component.is_dir():
            continue
        weights = sorted(p for p in component.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
        if any(f".{variant}." in p.name or f".{variant}-" in p.name for p in weights):
            return False
        safetensors = [p for p in weights if p.name.endswith(".safetensors")]
        if not safetensors:
            continue
        weighted += 1
        if not all(dtype in set(_safetensors_dtypes(p)) for p in safetensors):
            return False
    return weighted > 0


def _safetensors_dtypes(path: Path) -> Iterator[str]:
    """The dtype names (``F16``, ``F32``, ``I32``, …) of the tensors in a safetensors file, from its header alone."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > _MAX_HEADER_BYTES:
                return
            header = json.loads(f.read(length))
    except (OSError, struct.error, UnicodeDecodeError, ValueError):
        return
    if isinstance(header, dict):
        for key, entry in header.items():
            if key != "__metadata__" and isinstance(entry, dict) and isinstance(entry.get("dtype"), str):
                yield entry["dtype"]
