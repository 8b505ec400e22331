"""The private functions of torch and diffusers that this package relies on, each behind one small function here,
so that an upgrade that breaks one fails its test (``tests/test_models.py::test_library_internals_still_work``)
instead of the codec. No public API does what these do:

- ``torch._C._nn._parse_to``: the argument parsing of ``nn.Module.to`` (device, dtype, tensor, ``non_blocking``,
  ``memory_format``; positional or keyword), which the codec's dtype lock (``models/float32_lock.py``) needs in
  order to drop the dtype.
- ``diffusers.utils.hub_utils._get_model_file`` and ``_add_variant``: the weights file of a saved model (local
  folder or Hub, ``subfolder``, ``variant``) as ``ModelMixin.from_pretrained`` finds it; ``CompressionVAE``
  loads without ``ModelMixin``'s meta-device initialisation (its CDF tables change shape).

Only torch is imported here: diffusers (seconds of imports) is imported by :func:`model_weights_file` when it is
called, so that the codec's modules, which import this one, load without it (``sodec compress``).
"""

from typing import Optional, Tuple

import torch


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
    from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
    from diffusers.utils.hub_utils import _add_variant, _get_model_file

    return _get_model_file(
        pretrained_model_name_or_path,
        weights_name=_add_variant(SAFETENSORS_WEIGHTS_NAME, variant),
        subfolder=subfolder,
        user_agent={"file_type": "model", "framework": "pytorch"},
        **hub_kwargs,
    )
