"""The distortion d(x, x̂) = k_M·MSE + k_P·LPIPS, the LPIPS loader, and the non-saturating GAN losses."""

from pathlib import Path
from typing import Dict, Optional

import torch
from torch import nn
from torch.nn import functional as F

LPIPS_NETS = ("vgg", "alex", "squeeze")

LPIPS_HELP = (
    "LPIPS needs its backbone and linear-layer weights, which this code never downloads. On a machine "
    "with internet access, save them once with\n"
    "    python -c \"import lpips, torch; torch.save(lpips.LPIPS(net='{net}').state_dict(), 'lpips_{net}.pth')\"\n"
    "copy lpips_{net}.pth here and pass --lpips_weights /path/to/lpips_{net}.pth (and --lpips_net {net})."
)


def check_lpips_weights(weights_path: Optional[str], net: str = "vgg") -> Path:
    """The weights file, or a ``FileNotFoundError``/``ValueError`` that says where to put it."""
    if net not in LPIPS_NETS:
        raise ValueError(f"--lpips_net must be one of {LPIPS_NETS}; got {net!r}")
    if not weights_path:
        raise FileNotFoundError("--perceptual_loss lpips needs --lpips_weights.\n" + LPIPS_HELP.format(net=net))
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS weights not found at {path}.\n" + LPIPS_HELP.format(net=net))
    return path


def load_lpips(weights_path: Optional[str], net: str = "vgg") -> nn.Module:
    """An LPIPS module (the ``lpips`` package) with all its weights (backbone ``net.*`` and ``lin*``)
    read from ``weights_path``: a ``state_dict`` of ``lpips.LPIPS(net=net)`` saved with ``torch.save`` or
    safetensors. Frozen, in eval mode. Raises ``FileNotFoundError``/``ValueError`` that say what to do."""
    path = check_lpips_weights(weights_path, net)
    try:
        import lpips
    except ImportError as err:
        raise ImportError("--perceptual_loss lpips needs the `lpips` package: pip install lpips") from err
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = load_file(str(path))
    else:
        state_dict = torch.load(str(path), map_location="cpu", weights_only=True)
    model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path} is not a complete LPIPS-{net} state dict (missing {len(missing)} keys, e.g. "
            f"{missing[:3]}; unexpected {len(unexpected)}, e.g. {unexpected[:3]}).\n" + LPIPS_HELP.format(net=net)
        )
    model.requires_grad_(False)
    return model.eval()


class DistortionLoss(nn.Module):
    """d(x, x̂) = mse_weight · MSE(x, x̂) + perceptual_weight · LPIPS(x, x̂), images in [0, 1]."""

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
            perceptual = self.lpips(x_hat * 2 - 1, x * 2 - 1).mean()
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
