"""The distortion d(x, x̂) = k_M·MSE + k_P·LPIPS, the LPIPS of the loss, and the non-saturating GAN losses."""

from typing import Dict, Optional

import torch
from torch import nn
from torch.nn import functional as F

from sodec_pipeline.metrics import LPIPS_NETS, MetricWeightsError, load_lpips

#: --lpips_net choices: the metrics module's backbones, and "squeeze", which only explains what replaced it.
LPIPS_NET_CHOICES = LPIPS_NETS + ("squeeze",)


def load_lpips_loss(net: str = "vgg", weights_path: Optional[str] = None) -> nn.Module:
    """The LPIPS of :mod:`sodec_pipeline.metrics` (frozen, eval mode) for the perceptual loss: weights from
    ``weights_path`` (a full ``lpips.LPIPS`` state_dict) or found on the machine. Raises
    :class:`~sodec_pipeline.metrics.MetricWeightsError` with one line that says what to do."""
    if net == "squeeze":
        raise MetricWeightsError(
            "--lpips_net squeeze is no longer available: the LPIPS loss is sodec_pipeline.metrics' LPIPS with an "
            "AlexNet or VGG-16 backbone; use --lpips_net alex or --lpips_net vgg"
        )
    return load_lpips(net, weights_path, flag="--lpips_weights")


class DistortionLoss(nn.Module):
    """d(x, x̂) = mse_weight · MSE(x, x̂) + perceptual_weight · LPIPS(x, x̂), images in [0, 1] (the LPIPS of
    :mod:`sodec_pipeline.metrics` takes [0, 1] images)."""

    def __init__(self, mse_weight: float = 1.0, perceptual_weight: float = 0.0, lpips_model: Optional[nn.Module] = None):
        super().__init__()
        if perceptual_weight > 0 and lpips_model is None:
            raise ValueError("a perceptual weight needs an LPIPS model")
        self.mse_weight = mse_weight
        self.perceptual_weight = perceptual_weight if lpips_model is not None else 0.0
        self.lpips = lpips_model

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x_hat = x_hat.float()
        mse = F.mse_loss(x_hat, x)
        total = self.mse_weight * mse
        out = {"mse": mse}
        if self.lpips is not None:
            perceptual = self.lpips(x_hat, x).mean()
            total = total + self.perceptual_weight * perceptual
            out["lpips"] = perceptual
        out["distortion"] = total
        return out


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss −log D(x̂)."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """−log D(x) − log(1 − D(x̂))."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
