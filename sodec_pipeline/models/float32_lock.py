"""The codec's dtype lock: ``CompressionVAE`` stays float32 whatever dtype it is moved to.

Why: a stream is only decodable by the model that wrote it, bit for bit. The fingerprint in every stream hashes
the codec's float32 parameters, the fixed-point P is derived from its float32 weights, and E's float32 output
is what gets quantised; a codec cast to float16 or bfloat16 would write other symbols under another fingerprint,
and its streams would not decode with the float32 model (the shipped one) and vice versa. Half precision would
save little: the codec is a small part of the pipeline's weights and time (docs/pretrained_parts.md).

Where: ``pipe.to(torch.float16)``, ``SODECPipeline.from_pretrained(..., torch_dtype=...)`` and the CLI's
``--dtype`` cast every component of the pipeline with ``module.to(device, dtype)``; diffusers has no per-component
opt-out there (``ModelMixin._keep_in_fp32_modules`` acts while loading and in layerwise casting, not in ``to``).
So the codec ignores the dtype in ``to``/``half``/``bfloat16``/``type`` itself (:class:`Float32Lock`), and
``CompressionVAE.from_pretrained`` ignores ``torch_dtype``. Autocast is the other way in: the codec's forward and
coding paths run with autocast disabled.
"""

import torch

from ..library_internals import parse_module_to_arguments


class Float32Lock:
    """Mixin for an ``nn.Module`` (listed before it in the bases) whose ``to``, ``half``, ``bfloat16`` and ``type``
    ignore a dtype: devices and memory formats move as usual, the parameters and buffers stay float32."""

    def to(self, *args, **kwargs):
        """``nn.Module.to`` (device, ``non_blocking``, ``memory_format``) except that a dtype is ignored."""
        device, _dtype, non_blocking, memory_format = parse_module_to_arguments(*args, **kwargs)
        if device is None and memory_format is None:
            return self
        return super().to(device=device, non_blocking=non_blocking, memory_format=memory_format)

    def half(self):
        """Returns the module unchanged, in float32: as :meth:`to`, a dtype is ignored."""
        return self.to(torch.float16)

    def bfloat16(self):
        """Returns the module unchanged, in float32: as :meth:`to`, a dtype is ignored."""
        return self.to(torch.bfloat16)

    def type(self, dst_type):
        """Returns the module unchanged, in float32: as :meth:`to`, a dtype is ignored."""
        return self
