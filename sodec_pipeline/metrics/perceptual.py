"""LPIPS (Zhang et al. 2018, v0.1, AlexNet or VGG-16) and DISTS (Ding et al. 2020) as torch modules.

Both are written here with the module layout of the reference packages, so a full ``state_dict`` of
``lpips.LPIPS(net=...)`` or of ``DISTS_pytorch.DISTS()`` loads key for key, and take images in [0, 1]
(B, 3, H, W); lower is better. They are built without weights: :mod:`.weights` finds and loads them.
"""

from typing import List, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .fidelity import check_pair, uint8_to_tensor


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

    BOUNDS = {
        "alex": ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12)),
        "vgg": ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30)),
    }

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

    def feature_blocks(self) -> List[nn.Sequential]:
        """The backbone's blocks; their children are named by torchvision's ``features`` indices."""
        return [getattr(self.net, f"slice{i}") for i in range(1, 6)]

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
        for stage, (pool_index, channels, stop) in zip(
            stages[1:], ((4, 64, 9), (9, 128, 16), (16, 256, 23), (23, 512, 30))
        ):
            stage.add_module(str(pool_index), _L2Pooling(channels))
            for x in range(pool_index + 1, stop):
                stage.add_module(str(x), features[x])
        for i, stage in enumerate(stages, start=1):
            self.add_module(f"stage{i}", stage)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1))
        self.alpha = nn.Parameter(torch.empty(1, sum(self.CHANNELS), 1, 1).normal_(0.1, 0.01))
        self.beta = nn.Parameter(torch.empty(1, sum(self.CHANNELS), 1, 1).normal_(0.1, 0.01))

    def feature_blocks(self) -> List[nn.Sequential]:
        """The VGG-16 stages; their children are named by torchvision's ``features`` indices."""
        return [getattr(self, f"stage{i}") for i in range(1, 6)]

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


class PerceptualMetric:
    """A loaded LPIPS or DISTS model as a function of two uint8 RGB images → float (lower is better)."""

    def __init__(self, name: str, model: nn.Module, device: str = "cpu", source: str = ""):
        self.name = name
        self.model = model.to(device)
        self.device = device
        self.source = source

    @torch.no_grad()
    def __call__(self, reference: np.ndarray, test: np.ndarray) -> float:
        check_pair(reference, test)
        x = (uint8_to_tensor(reference) / 255.0).to(self.device)
        y = (uint8_to_tensor(test) / 255.0).to(self.device)
        return float(self.model(x, y)[0])
