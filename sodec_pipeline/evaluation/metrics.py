"""Image-quality metrics of the evaluation: PSNR and MS-SSIM (offline), LPIPS and DISTS (weights by path).

Every metric takes two RGB images as uint8 arrays (H, W, 3), the reference first, as a user would see
them (decoded outputs are rounded to 8 bits like a PNG before they are measured).

- PSNR: 10·log10(255² / MSE), MSE over all pixels and the three channels; ``inf`` for identical images.
- MS-SSIM: pytorch-msssim on RGB, ``data_range=255``, 11×11 Gaussian window (σ = 1.5), the standard five
  scales and weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333). Five scales need a smaller side above
  160 px. A smaller image uses the largest number of scales M its smaller side allows (side > 10·2^(M−1))
  with the first M weights renormalised to sum to 1; :func:`ms_ssim_scales` says how many were used and
  the evaluation report records it. Below 11 px not even one scale fits and the value is NaN.
- LPIPS (Zhang et al. 2018, v0.1, AlexNet or VGG-16) and DISTS (Ding et al. 2020): implemented here with
  the module layout of the reference packages, so a full ``state_dict`` of ``lpips.LPIPS(net=...)`` or of
  ``DISTS_pytorch.DISTS()`` loads key for key. Neither backbone can be downloaded on these machines, so
  they take a weights file by path (see :func:`load_lpips` / :func:`load_dists` for how to make one).
"""

import math
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_WIN_SIZE = 11
MS_SSIM_WIN_SIGMA = 1.5


class MetricWeightsError(ValueError):
    """A perceptual metric's weights file is missing or does not hold what the metric needs."""


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) → float32 (1, 3, H, W) on the 0…255 scale (float64 convolutions are ~5× slower on CPU
    and change MS-SSIM by ~1e-7)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3); got shape {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()


def _check_pair(reference: np.ndarray, test: np.ndarray) -> None:
    if reference.shape != test.shape:
        raise ValueError(f"images differ in size: {reference.shape} vs {test.shape}")


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of two uint8 RGB images (``inf`` when they are identical)."""
    _check_pair(reference, test)
    mse = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * math.log10(255.0**2 / mse))


def ms_ssim_scales(height: int, width: int, win_size: int = MS_SSIM_WIN_SIZE) -> int:
    """How many MS-SSIM scales (at most 5) an image of this size allows: M with min side > (win−1)·2^(M−1)."""
    side = min(height, width)
    if side < win_size:
        return 0
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and side > (win_size - 1) * 2**scales:
        scales += 1
    return scales


def ms_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """MS-SSIM of two uint8 RGB images (see the module docstring for images under 161 px)."""
    import pytorch_msssim

    _check_pair(reference, test)
    scales = ms_ssim_scales(*reference.shape[:2])
    if scales == 0:
        return float("nan")
    x, y = _as_tensor(reference), _as_tensor(test)
    if scales == len(MS_SSIM_WEIGHTS):
        return float(pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=True, win_size=MS_SSIM_WIN_SIZE))
    weights = list(MS_SSIM_WEIGHTS[:scales])
    total = sum(weights)
    return _ms_ssim_levels(x, y, [w / total for w in weights])


def _ms_ssim_levels(x: torch.Tensor, y: torch.Tensor, weights: Sequence[float]) -> float:
    return float(ms_ssim_per_image(x, y, weights, data_range=255).mean())


def ms_ssim_per_image(
    x: torch.Tensor,
    y: torch.Tensor,
    weights: Sequence[float],
    data_range: float,
    win_size: int = MS_SSIM_WIN_SIZE,
    win_sigma: float = MS_SSIM_WIN_SIGMA,
) -> torch.Tensor:
    """pytorch-msssim's MS-SSIM loop for any number of levels (its public function insists on five):
    one value per image of (B, C, H, W) tensors, ``len(weights)`` scales with those exponents."""
    from pytorch_msssim.ssim import _fspecial_gauss_1d, _ssim

    win = _fspecial_gauss_1d(win_size, win_sigma).repeat([x.shape[1], 1, 1, 1]).to(x.dtype)
    mcs = []
    for level in range(len(weights)):
        ssim_per_channel, cs = _ssim(x, y, win=win, data_range=data_range, size_average=False, K=(0.01, 0.03))
        if level < len(weights) - 1:
            mcs.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    stacked = torch.stack(mcs + [torch.relu(ssim_per_channel)], dim=0)
    return torch.prod(stacked ** x.new_tensor(weights).view(-1, 1, 1), dim=0).mean(1)


# ---------------------------------------------------------------------- backbones (torchvision layouts)
def alexnet_features() -> nn.Sequential:
    """``torchvision.models.alexnet().features`` (same indices), built without torchvision."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )  # fmt: skip


def vgg16_features() -> nn.Sequential:
    """``torchvision.models.vgg16().features`` (same indices), built without torchvision."""
    layers: List[nn.Module] = []
    channels = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = v
    return nn.Sequential(*layers)


def _slices(features: nn.Sequential, bounds: Sequence[Tuple[int, int]]) -> List[nn.Sequential]:
    out = []
    for start, stop in bounds:
        block = nn.Sequential()
        for i in range(start, stop):
            block.add_module(str(i), features[i])
        out.append(block)
    return out


# ---------------------------------------------------------------------- LPIPS
class _LPIPSBackbone(nn.Module):
    """``lpips.pretrained_networks.alexnet`` / ``vgg16``: the features split in five slices."""

    BOUNDS = {"alex": ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12)), "vgg": ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))}

    def __init__(self, net: str):
        super().__init__()
        features = alexnet_features() if net == "alex" else vgg16_features()
        for i, block in enumerate(_slices(features, self.BOUNDS[net]), start=1):
            self.add_module(f"slice{i}", block)

    def forward(self, x):
        outs = []
        for i in range(1, 6):
            x = getattr(self, f"slice{i}")(x)
            outs.append(x)
        return outs


class _NetLinLayer(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, stride=1, padding=0, bias=False))

    def forward(self, x):
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS v0.1 with the module layout of ``lpips.LPIPS`` (scaling layer, ``net.slice1..5``, ``lin0..4``
    and their ``lins`` alias). ``forward`` takes images in [0, 1] (B, 3, H, W); lower is better."""

    CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in self.CHANNELS:
            raise ValueError(f"LPIPS net must be 'alex' or 'vgg'; got {net!r}")
        self.net_type = net
        self.scaling_layer = nn.Module()
        self.scaling_layer.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.scaling_layer.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
        self.net = _LPIPSBackbone(net)
        for i, channels in enumerate(self.CHANNELS[net]):
            self.add_module(f"lin{i}", _NetLinLayer(channels))
        self.lins = nn.ModuleList([getattr(self, f"lin{i}") for i in range(5)])

    @staticmethod
    def _unit_normalize(x, eps=1e-10):
        return x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = 2 * x - 1, 2 * y - 1
        x = (x - self.scaling_layer.shift) / self.scaling_layer.scale
        y = (y - self.scaling_layer.shift) / self.scaling_layer.scale
        total = 0
        for lin, fx, fy in zip(self.lins, self.net(x), self.net(y)):
            diff = (self._unit_normalize(fx) - self._unit_normalize(fy)) ** 2
            total = total + lin(diff).mean(dim=(2, 3), keepdim=True)
        return total.flatten()


# ---------------------------------------------------------------------- DISTS
class _L2Pooling(nn.Module):
    """DISTS' Hanning-window L2 pooling (``DISTS_pytorch.L2pooling``)."""

    def __init__(self, channels: int, filter_size: int = 5, stride: int = 2):
        super().__init__()
        self.padding = (filter_size - 2) // 2
        self.stride = stride
        a = np.hanning(filter_size)[1:-1]
        g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
        g = g / g.sum()
        self.register_buffer("filter", g[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x):
        out = F.conv2d(x**2, self.filter, stride=self.stride, padding=self.padding, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class DISTS(nn.Module):
    """DISTS with the module layout of ``DISTS_pytorch.DISTS`` (``stage1..5`` over VGG-16 with L2
    pooling, ``alpha``/``beta``). ``forward`` takes images in [0, 1] (B, 3, H, W); lower is better."""

    CHANNELS = (3, 64, 128, 256, 512, 512)

    def __init__(self):
        super().__init__()
        features = vgg16_features()
        stages = [nn.Sequential() for _ in range(5)]
        for x in range(0, 4):
            stages[0].add_module(str(x), features[x])
        for stage, (pool_index, channels, stop) in zip(stages[1:], ((4, 64, 9), (9, 128, 16), (16, 256, 23), (23, 512, 30))):
            stage.add_module(str(pool_index), _L2Pooling(channels))
            for x in range(pool_index + 1, stop):
                stage.add_module(str(x), features[x])
        for i, stage in enumerate(stages, start=1):
            self.add_module(f"stage{i}", stage)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1))
        self.alpha = nn.Parameter(torch.empty(1, sum(self.CHANNELS), 1, 1).normal_(0.1, 0.01))
        self.beta = nn.Parameter(torch.empty(1, sum(self.CHANNELS), 1, 1).normal_(0.1, 0.01))

    def _features(self, x):
        feats = [x]
        h = (x - self.mean) / self.std
        for i in range(1, 6):
            h = getattr(self, f"stage{i}")(h)
            feats.append(h)
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self._features(x), self._features(y)
        c1 = c2 = 1e-6
        w_sum = self.alpha.sum() + self.beta.sum()
        alpha = torch.split(self.alpha / w_sum, list(self.CHANNELS), dim=1)
        beta = torch.split(self.beta / w_sum, list(self.CHANNELS), dim=1)
        dist1 = dist2 = 0
        for k in range(len(self.CHANNELS)):
            x_mean = fx[k].mean([2, 3], keepdim=True)
            y_mean = fy[k].mean([2, 3], keepdim=True)
            s1 = (2 * x_mean * y_mean + c1) / (x_mean**2 + y_mean**2 + c1)
            dist1 = dist1 + (alpha[k] * s1).sum(1, keepdim=True)
            x_var = ((fx[k] - x_mean) ** 2).mean([2, 3], keepdim=True)
            y_var = ((fy[k] - y_mean) ** 2).mean([2, 3], keepdim=True)
            xy_cov = (fx[k] * fy[k]).mean([2, 3], keepdim=True) - x_mean * y_mean
            s2 = (2 * xy_cov + c2) / (x_var + y_var + c2)
            dist2 = dist2 + (beta[k] * s2).sum(1, keepdim=True)
        return (1 - (dist1 + dist2)).flatten()


# ---------------------------------------------------------------------- loading by path
_HOW_TO = {
    "LPIPS": (
        "a full state_dict of lpips.LPIPS(net='alex' or 'vgg') (backbone and linear layers), e.g. made on a "
        "machine with internet by `torch.save(lpips.LPIPS(net='alex').state_dict(), 'lpips_alex.pth')`"
    ),
    "DISTS": (
        "a full state_dict of DISTS_pytorch.DISTS() (VGG-16 stages, alpha and beta), e.g. made on a machine "
        "with internet by `torch.save(DISTS_pytorch.DISTS().state_dict(), 'dists.pth')`"
    ),
}


def _read_state_dict(path: str, metric: str) -> dict:
    if not os.path.isfile(path):
        raise MetricWeightsError(f"{metric} weights file {path} does not exist; it must be {_HOW_TO[metric]}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one user error
        raise MetricWeightsError(f"{metric} weights file {path} is not a readable torch file ({type(e).__name__})") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MetricWeightsError(f"{metric} weights file {path} does not hold a state_dict; it must be {_HOW_TO[metric]}")
    return state


def _load_strict(model: nn.Module, state: dict, path: str, metric: str) -> nn.Module:
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    if missing:
        raise MetricWeightsError(
            f"{metric} weights file {path} lacks {len(missing)} tensors (first: {missing[0]}); it must be {_HOW_TO[metric]}"
        )
    try:
        model.load_state_dict({k: state[k] for k in expected}, strict=True)
    except RuntimeError as e:
        raise MetricWeightsError(f"{metric} weights file {path} does not fit: {str(e).splitlines()[-1].strip()}") from e
    return model.eval().requires_grad_(False)


def load_lpips(path: str) -> LPIPS:
    """LPIPS from a full ``lpips.LPIPS`` state_dict file; AlexNet or VGG is told by the first conv's shape."""
    state = _read_state_dict(path, "LPIPS")
    first = state.get("net.slice1.0.weight")
    net = "alex" if first is not None and tuple(first.shape[-2:]) == (11, 11) else "vgg"
    return _load_strict(LPIPS(net), state, path, "LPIPS")


def load_dists(path: str) -> DISTS:
    """DISTS from a full ``DISTS_pytorch.DISTS`` state_dict file."""
    return _load_strict(DISTS(), _read_state_dict(path, "DISTS"), path, "DISTS")


class PerceptualMetric:
    """A loaded LPIPS or DISTS model as a function of two uint8 RGB images → float (lower is better)."""

    def __init__(self, name: str, model: nn.Module, device: str = "cpu"):
        self.name = name
        self.model = model.to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, reference: np.ndarray, test: np.ndarray) -> float:
        _check_pair(reference, test)
        x = (_as_tensor(reference) / 255.0).to(self.device)
        y = (_as_tensor(test) / 255.0).to(self.device)
        return float(self.model(x, y)[0])


def load_perceptual_metrics(lpips_weights: Optional[str], dists_weights: Optional[str], device: str = "cpu"):
    """The perceptual metrics whose weights were given, as ``{name: PerceptualMetric}``."""
    metrics = {}
    if lpips_weights:
        metrics["lpips"] = PerceptualMetric("lpips", load_lpips(lpips_weights), device)
    if dists_weights:
        metrics["dists"] = PerceptualMetric("dists", load_dists(dists_weights), device)
    return metrics
