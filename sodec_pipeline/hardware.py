"""Which dtype the decoder networks run in when the user says ``auto`` (``--dtype auto``, ``dtype="auto"``).

bfloat16 halves the decode time on a CPU that computes it natively (AVX512-BF16 or AMX-BF16: oneDNN's bf16
kernels), and makes it slower on one that does not (every bf16 operation is converted to float32 and back).
So ``auto`` is bfloat16 on a CUDA device that supports it and on a CPU whose flags list ``avx512_bf16`` or
``amx_bf16``, and float32 everywhere else. The codec's analysis transform, P and the entropy models always
run in float32, whatever the choice, so the bytes of a stream never depend on it.

It also says how many threads the CPU networks get when the user sets none (:func:`default_cpu_threads`): one
per physical core this process may run on. Two SMT threads of one core share its vector units, so a second
thread per core adds synchronisation and no arithmetic; torch's own default (GNU OpenMP) counts logical CPUs.

Pure Python (no torch import for the CPU): the command line says in its ``--help`` what ``auto`` picks.
"""

import functools
import os
import platform
from pathlib import Path
from typing import FrozenSet, Iterable, Optional


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


#: Where Linux describes the CPUs' topology (``cpuN/topology/{physical_package_id,core_id}``).
SYSFS_CPU = Path("/sys/devices/system/cpu")


def physical_core_count(cpus: Optional[Iterable[int]] = None, sysfs: Path = SYSFS_CPU) -> int:
    """The physical cores among ``cpus`` (default: the CPUs this process may run on): logical CPUs with the same
    (package, core) in sysfs's topology are SMT threads of one core. Where the topology cannot be read, the
    number of CPUs."""
    if cpus is None:
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cpus = sorted(set(cpus))
    cores = set()
    for cpu in cpus:
        topology = Path(sysfs) / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return max(1, len(cpus))
        cores.add((package, core))
    return max(1, len(cores))


def default_cpu_threads(environ=None) -> Optional[int]:
    """The CPU threads to give torch when the user chose none: ``None`` where ``OMP_NUM_THREADS`` is set (the
    user's or ``accelerate launch``'s choice stands), else one per physical core this process may run on."""
    environ = os.environ if environ is None else environ
    if environ.get("OMP_NUM_THREADS", "").strip():
        return None
    return physical_core_count()
