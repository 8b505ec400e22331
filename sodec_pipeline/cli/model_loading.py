"""``--model``: which pipeline a command loads, checked cheaply before anything heavy is imported, and
every way loading can fail turned into one line that says what to do."""

import json
import logging
import os
import re
import socket
import sys
import warnings
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from ..codec.quality_levels import quality_levels_of_config
from ..hardware import DTYPE_CHOICES, default_cpu_threads, dtype_help, resolve_dtype_name
from ..hub_configs import HUB_CONFIGS
from ..messages import first_line
from ..model_folder_checks import WEIGHT_SUFFIXES
from ..shipped_models import SHIPPED_MODELS
from .errors import CLIError


#: The model ``--model`` defaults to: the trained pipeline shipped in ``pretrained/`` under this short name
#: (:mod:`sodec_pipeline.shipped_models`).
DEFAULT_MODEL = "sodec-small"

#: ``--dtype`` choices: the dtype of the decoder networks (the codec and its entropy models stay float32);
#: ``auto`` is bfloat16 where the device computes it natively, else float32 (:mod:`sodec_pipeline.hardware`).
DTYPES = DTYPE_CHOICES

# A Hugging Face Hub model id: "owner/name".
_HUB_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
# Exception classes (anywhere in an exception's chain, by MRO name so that requests, httpx and
# huggingface_hub need not be imported to recognise them) that mean "no network".
_NETWORK_ERRORS = {"ConnectionError", "ConnectError", "ConnectTimeout", "NetworkError", "TransportError", "Timeout",
                   "TimeoutException", "ProxyError", "OfflineModeIsEnabled"}  # fmt: skip
_INIT_HINT = "make a randomly initialised one with `sodec init sodec-tiny my-model`, then pass --model my-model"
#: What to do about a --model that does not exist.
_MISSING_MODEL_HINT = f"leave --model out to use the shipped {DEFAULT_MODEL}, or {_INIT_HINT}"


def add_model_argument(parser) -> None:
    """Adds ``--model`` (a pipeline folder, a shipped model's name or a Hub repo id)."""
    parser.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help=f"a saved SODEC pipeline: folder, shipped model name or Hugging Face Hub id (owner/name) "
        f"(default: {DEFAULT_MODEL})",
    )


def add_device_arguments(parser) -> None:
    """Adds ``--device`` (under ``accelerate launch``, each process's own by default) and ``--dtype``."""
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda[:N] or mps (default cpu; under accelerate launch, each process's own device)",
    )
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help=dtype_help())


def torch_dtype(name: str, device: str = "cpu"):
    """The torch dtype of a ``--dtype`` choice (``auto`` resolved for ``device``)."""
    import torch

    return getattr(torch, resolve_dtype_name(name, str(device)))


# ---------------------------------------------------------------------- resolving --model (no heavy imports)
def resolve_model(model: Optional[str]) -> str:
    """``--model`` → what to hand ``SODECPipeline.from_pretrained``: a pipeline folder or a Hub repo id.

    In this order: an existing folder; the name of a pipeline shipped in ``pretrained/``; the name of a
    layout in ``hub_configs/`` (configs only: the answer is the ``sodec init`` line that makes a model
    from it); a Hub repo id ``owner/name``. Raises :class:`CLIError` at once for what can be known
    without loading: a missing folder, a folder that is not a pipeline or holds no weights, a layout, a file.
    ``None`` (no ``--model``) is :data:`DEFAULT_MODEL`. Imports nothing heavy.
    """
    model = DEFAULT_MODEL if model is None else model
    path = Path(model).expanduser()
    if path.is_dir():
        check_pipeline_folder(path, model)
        return str(path)
    if path.exists():
        raise CLIError(f"--model {model}: a file, not a pipeline folder (pass the folder holding model_index.json)")
    shipped = SHIPPED_MODELS.find(model)
    if shipped is not None:
        check_pipeline_folder(shipped, model)
        return str(shipped)
    layout = HUB_CONFIGS.find(model)
    if layout is not None:
        if not _weightless_components(layout):
            return str(layout)
        raise CLIError(
            f"--model {model}: {model!r} is a layout (configs without weights), not a model; make a randomly "
            f"initialised model from it with `sodec init {model} my-model`, then pass --model my-model"
        )
    if _looks_like_a_local_path(model):
        raise CLIError(f"--model {model}: no such folder; {_MISSING_MODEL_HINT}")
    if not _HUB_REPO_ID.fullmatch(model):
        raise CLIError(
            f"--model {model}: no such folder, shipped model or Hub repo id (owner/name); {_MISSING_MODEL_HINT}"
        )
    return model


def quality_levels_of(model: str) -> Optional[Tuple[int, int]]:
    """(number of quality levels, default level) from a local pipeline folder's ``compression_vae`` config,
    without loading anything; ``None`` for a Hub id or an unreadable config (known once loaded)."""
    config_path = Path(model) / "compression_vae" / "config.json"
    try:
        return quality_levels_of_config(json.loads(config_path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError):
        return None


def realism_control_of(model: str) -> Optional[bool]:
    """Whether a local pipeline folder's scheduler takes a realism between 0 and 1 (its config's
    ``realism_control``), without loading anything; ``None`` for a Hub id or an unreadable config."""
    config_path = Path(model) / "scheduler" / "scheduler_config.json"
    try:
        return bool(json.loads(config_path.read_text(encoding="utf-8")).get("realism_control", False))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError):
        return None


def check_quality_level(quality: int, levels: Optional[Tuple[int, int]]) -> None:
    """:class:`CLIError` for a ``--quality`` outside the model's ``levels`` ((count, default), as
    :func:`quality_levels_of` gives them; ``None``: not known before the model loads)."""
    if levels is None:
        return
    count, default = levels
    if not 1 <= quality <= count:
        raise CLIError(
            f"--quality {quality}: this model has quality levels 1 to {count} (default {default})"
            if count > 1
            else f"--quality {quality}: this model has one quality level, 1"
        )


def check_pipeline_folder(folder: Path, shown: Optional[str] = None) -> None:
    """Raises :class:`CLIError` unless ``folder`` holds a saved SODEC pipeline with weights."""
    shown = shown or str(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise CLIError(f"--model {shown}: not a SODEC pipeline folder (no model_index.json); {_INIT_HINT}")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CLIError(f"--model {shown}: model_index.json is unreadable ({first_line(e)})") from None
    class_name = index.get("_class_name") if isinstance(index, dict) else None
    if isinstance(class_name, list) and len(class_name) == 2:  # ["pipeline_sodec", class]: with its code file
        class_name = class_name[1]
    if class_name != "SODECPipeline":
        raise CLIError(f"--model {shown}: holds a {class_name or 'pipeline of unknown class'}, not a SODECPipeline")
    missing = _weightless_components(folder)
    if missing:
        raise CLIError(
            f"--model {shown}: configs without weights ({', '.join(missing)} have none): a layout, not a model; "
            f"make a randomly initialised model from it with `sodec init {shown} my-model`, then pass --model my-model"
        )


def _weightless_components(folder: Path) -> List[str]:
    """The components of a pipeline folder that have a model config but no weight file."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return []
    missing = []
    for name in sorted(k for k in index if not k.startswith("_")):
        sub = folder / name
        if (sub / "config.json").is_file() and not any(p.name.endswith(WEIGHT_SUFFIXES) for p in sub.iterdir()):
            missing.append(name)
    return missing


def _looks_like_a_local_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or text.endswith(("/", os.sep)) or (os.sep != "/" and os.sep in text)


# ---------------------------------------------------------------------- loading
def quiet_libraries() -> None:
    """Library logging, warnings and progress bars off (the CLI reports in its own words); ``--debug``
    leaves them on. Cheap: libraries not imported yet read the environment variables when they are."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    if "diffusers" in sys.modules:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def check_device(name: str):
    """``--device`` → a ``torch.device`` that exists on this machine, or a :class:`CLIError`."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {name!r} is not a device (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CLIError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CLIError(f"--device {name}: MPS is not available on this machine (use --device cpu)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise CLIError(f"--device must be cpu, cuda[:N] or mps; got {name!r}")
    return device


def load_pipeline(model: Optional[str], device: str = "cpu", dtype: str = "auto", debug: bool = False):
    """Loads a saved SODEC pipeline (``--model``); any failure becomes a one-line :class:`CLIError`."""
    source = resolve_model(model)
    torch_device = check_device(device)
    from ..pipelines import SODECPipeline

    if not debug:
        quiet_libraries()  # diffusers and transformers are imported now: set their own switches too
    try:
        pipe = SODECPipeline.from_pretrained(source, dtype=torch_dtype(dtype, torch_device))
    except Exception as e:  # noqa: BLE001 - the loaders raise many kinds; report one line
        raise CLIError(describe_load_error(source, e)) from e
    if not isinstance(pipe, SODECPipeline):
        raise CLIError(f"--model {source}: holds a {type(pipe).__name__}, not a SODECPipeline")
    pipe.set_progress_bar_config(disable=True)
    return _on_device(pipe, torch_device)


def load_coding_pipeline(
    model: Optional[str],
    device: str = "cpu",
    dtype: str = "auto",
    fidelity_decoder: bool = False,
    debug: bool = False,
):
    """What ``compress`` (and ``decompress --fidelity``, with ``fidelity_decoder``) runs: the codec (and D_a) of a
    local pipeline folder alone, as a ``SODECCodecPipeline`` (no diffusers or transformers import: seconds less;
    the same bytes and pixels), or the whole ``SODECPipeline`` (:func:`load_pipeline`) for a Hub id or a folder that
    ``SODECCodecPipeline`` does not load on its own."""
    source = resolve_model(model)
    if not Path(source).is_dir():
        return load_pipeline(source, device, dtype, debug=debug)
    torch_device = check_device(device)
    from ..pipelines.coding import CodecPipelineUnsupported, SODECCodecPipeline

    try:
        pipe = SODECCodecPipeline.from_pretrained(
            source, fidelity_decoder=fidelity_decoder, dtype=torch_dtype(dtype, torch_device)
        )
    except CodecPipelineUnsupported:
        return load_pipeline(source, device, dtype, debug=debug)
    except Exception as e:  # noqa: BLE001 - the loaders raise many kinds; report one line
        raise CLIError(describe_load_error(source, e)) from e
    return _on_device(pipe, torch_device)


def _on_device(pipe, torch_device):
    """``pipe`` on ``torch_device``; on the CPU, its convolutional networks channels-last and torch's threads one per
    physical core (:func:`sodec_pipeline.hardware.default_cpu_threads`; ``OMP_NUM_THREADS`` wins)."""
    pipe = pipe.to(torch_device)
    if torch_device.type != "cpu":
        return pipe
    use_default_cpu_threads()
    return pipe.enable_channels_last()


def use_default_cpu_threads() -> None:
    """torch's CPU threads: one per physical core this process may run on, unless ``OMP_NUM_THREADS`` says."""
    import torch

    threads = default_cpu_threads()
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)


def describe_load_error(source: str, error: BaseException) -> str:
    """One line for a failed ``from_pretrained``: offline, unknown Hub repo, or the loader's own words."""
    if not Path(source).is_dir():
        names = {cls.__name__ for e in _chain(error) for cls in type(e).__mro__}
        if "RepositoryNotFoundError" in names or "GatedRepoError" in names:
            return (
                f"--model {source}: no such model on the Hugging Face Hub, or it is private or gated "
                f"(log in with `hf auth login`); no local folder {source} either"
            )
        offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
        no_network = any(isinstance(e, (socket.gaierror, ConnectionError, TimeoutError)) for e in _chain(error))
        if offline or no_network or names & _NETWORK_ERRORS:
            return (
                f"--model {source}: cannot download it from the Hugging Face Hub: this machine is offline "
                f"(or the Hub is unreachable) and the model is not in the local cache; download it where there "
                f"is a network (`hf download {source}`) or pass a local pipeline folder"
            )
    return f"cannot load a SODEC pipeline from {source}: {first_line(error)}"


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__
