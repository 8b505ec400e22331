"""Which dtype the decoder networks run in when the user says ``auto`` (``--dtype auto``, ``dtype="auto"``).

bfloat16 halves the decode time on a CPU that computes it natively (AVX512-BF16 or AMX-BF16: oneDNN's bf16
kernels), and makes it slower on one that does not (every bf16 operation is converted to float32 and back).
So ``auto`` is bfloat16 on a CUDA device that supports it and on a CPU whose flags list ``avx512_bf16`` or
``amx_bf16``, and float32 everywhere else. The codec's analysis transform, P and the entropy models always
run in float32, whatever the choice, so the bytes of a stream never depend on it.

Pure Python (no torch import for the CPU): the command line says in its ``--help`` what ``auto`` picks.
"""

import functools
import platform
from pathlib import Path
from typing import FrozenSet


#: CPU flags (Linux ``/proc/cpuinfo`` names) meaning that bfloat16 matrix products run natively.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
#: ``--dtype`` choices; ``auto`` is :func:`auto_dtype_name`'s pick.
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


@functools.lru_cache(maxsize=None)
def cpu_flags() -> FrozenSet[str]:
    """The flags of the first CPU in ``/proc/cpuinfo`` (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (x86: AVX512-BF16 or AMX-BF16)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False  # arm64's BF16 extension is not used by PyTorch's CPU convolutions: float32 is faster
    return bool(cpu_flags() & NATIVE_BF16_FLAGS)


def auto_dtype_name(device: str = "cpu") -> str:
    """``"bfloat16"`` where the device computes it natively, else ``"float32"``."""
    kind = str(device).split(":")[0]
    if kind == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float16"
    if kind == "cpu":
        return "bfloat16" if cpu_has_native_bfloat16() else "float32"
    return "float32"


def resolve_dtype_name(name: str, device: str = "cpu") -> str:
    """A ``--dtype`` choice → a torch dtype's name (``auto`` resolved for ``device``)."""
    if name not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}; got {name!r}")
    return auto_dtype_name(device) if name == "auto" else name


def dtype_help(device: str = "cpu") -> str:
    """The ``--dtype`` help: what ``auto`` picks here and why."""
    native = cpu_has_native_bfloat16()
    reason = "this CPU has native bfloat16" if native else "this CPU has no native bfloat16 (AVX512-BF16/AMX)"
    return (
        f"dtype of the decoder networks; the codec and its entropy models always run in float32, so the bytes "
        f"never change (default auto: {auto_dtype_name(device)} on the CPU here, {reason})"
    )
