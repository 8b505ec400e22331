"""The two check values a stream carries (docs/bitstream.md): the model's fingerprint, so that a stream is only
decoded by the model that wrote it, and each image's entropy check, so that a decoder deriving other entropy
parameters than its encoder raises instead of decoding garbage.

Only the standard library is imported here (the container, :mod:`sodec_pipeline.codec.bitstream`, takes the sizes
from this module and stays cheap to import); the functions take torch tensors.
"""

import hashlib
import struct
import zlib
from typing import Iterable, Optional, Sequence, Tuple


FINGERPRINT_SIZE = 4
ENTROPY_CHECK_SIZE = 2


def entropy_check(indexes, means) -> bytes:
    """A short check value of one image's entropy parameters (the CDF indexes and μ, tensors): the low
    ``ENTROPY_CHECK_SIZE`` bytes of the CRC-32 of their little-endian bytes (indexes as int32, μ as float32)."""
    crc = zlib.crc32(indexes.detach().cpu().int().numpy().astype("<i4").tobytes())
    crc = zlib.crc32(means.detach().cpu().float().numpy().astype("<f4").tobytes(), crc)
    return (crc & ((1 << (8 * ENTROPY_CHECK_SIZE)) - 1)).to_bytes(ENTROPY_CHECK_SIZE, "little")


def fingerprint(named_tensors: Iterable[Tuple[str, object]], quantization_steps: Optional[Sequence[float]]) -> bytes:
    """``FINGERPRINT_SIZE`` bytes identifying a model: the first bytes of a SHA-256 over each named tensor (its
    name, dtype, shape and bytes, in the order given) and, when the model has explicit quality levels, their
    steps Δ (float64, little-endian): the levels are part of what a stream means."""
    digest = hashlib.sha256()
    for name, t in named_tensors:
        t = t.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.numpy().tobytes() if t.numel() else b"")
    if quantization_steps is not None:
        digest.update(b"quantization_steps:" + struct.pack(f"<{len(quantization_steps)}d", *quantization_steps))
    return digest.digest()[:FINGERPRINT_SIZE]


class ModelFingerprint:
    """:func:`fingerprint` of a module's parameters and buffers (sorted by name), computed again only when one of
    them is replaced or modified in place, or the levels change."""

    def __init__(self):
        self._cached: Optional[Tuple[tuple, bytes]] = None

    def __call__(self, module, quantization_steps: Optional[Sequence[float]]) -> bytes:
        tensors = sorted(list(module.named_parameters()) + list(module.named_buffers()), key=lambda kv: kv[0])
        key = tuple((name, id(t), t.data_ptr(), t._version) for name, t in tensors) + (quantization_steps,)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, fingerprint(tensors, quantization_steps))
        return self._cached[1]
