"""The private functions of torch, diffusers and compressai that this package relies on, each behind one small
function here, so that an upgrade that breaks one fails its test (``tests/test_models.py::
test_library_internals_still_work``) instead of the codec. No public API does what these do:

- ``torch._C._nn._parse_to``: the argument parsing of ``nn.Module.to`` (device, dtype, tensor, ``non_blocking``,
  ``memory_format``; positional or keyword), which the codec's dtype lock (``models/float32_lock.py``) needs in
  order to drop the dtype.
- ``diffusers.utils.hub_utils._get_model_file`` and ``_add_variant``: the weights file of a saved model (local
  folder or Hub, ``subfolder``, ``variant``) as ``ModelMixin.from_pretrained`` finds it; ``CompressionVAE``
  loads without ``ModelMixin``'s meta-device initialisation (its CDF tables change shape).
- ``EntropyBottleneck._get_medians`` and ``_logits_cumulative``: the factorized prior's medians (ẑ's offsets,
  as compressai's own ``compress`` uses them; ``codec/entropy_models.py``) and its cumulative logits (the HiFiC
  conversion).
"""

import warnings
from typing import Optional, Tuple

import torch
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
from diffusers.utils.hub_utils import _add_variant, _get_model_file


with warnings.catch_warnings():
    # compressai 1.2.8 scripts a function with torch.jit at import time, which torch ≥ 2.10 deprecates. The
    # package imports compressai here first: models/__init__.py imports this module before anything else (a
    # direct import of sodec_pipeline.codec.entropy_models alone shows the warning once).
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    from compressai.entropy_models import EntropyBottleneck


def parse_module_to_arguments(
    *args, **kwargs
) -> Tuple[Optional[torch.device], Optional[torch.dtype], bool, Optional[torch.memory_format]]:
    """The (device, dtype, non_blocking, memory_format) that ``nn.Module.to(*args, **kwargs)`` would use."""
    device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
    return device, dtype, non_blocking, memory_format


def model_weights_file(
    pretrained_model_name_or_path, subfolder: Optional[str], variant: Optional[str], **hub_kwargs
) -> str:
    """Local path of ``diffusion_pytorch_model[.variant].safetensors`` of a saved model (downloaded if needed)."""
    return _get_model_file(
        pretrained_model_name_or_path,
        weights_name=_add_variant(SAFETENSORS_WEIGHTS_NAME, variant),
        subfolder=subfolder,
        user_agent={"file_type": "model", "framework": "pytorch"},
        **hub_kwargs,
    )


def entropy_bottleneck_medians(entropy_bottleneck: EntropyBottleneck) -> torch.Tensor:
    """The medians of the factorized prior, (C, 1, 1): the middle column of its ``quantiles``."""
    return entropy_bottleneck._get_medians()


def entropy_bottleneck_logits_cumulative(entropy_bottleneck: EntropyBottleneck, x: torch.Tensor) -> torch.Tensor:
    """The factorized prior's cumulative logits at ``x`` (C, 1, N), without gradient to the density model."""
    return entropy_bottleneck._logits_cumulative(x, stop_gradient=True)
