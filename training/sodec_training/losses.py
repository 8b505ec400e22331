"""The distortion d(x, x̂) = k_M·MSE + k_P·LPIPS + k_D·DISTS + k_C·colour + k_T·texture + k_χ·chroma + k_G·grain,
the perceptual models of the loss, and the non-saturating GAN losses."""

import math
from typing import Dict, Optional

import torch
from torch import nn
from torch.nn import functional as F

from sodec_pipeline.metrics import LPIPS_NETS, MetricWeightsError, load_dists, load_lpips
from sodec_pipeline.metrics.fidelity import COLOUR_BLOCK
from sodec_pipeline.metrics.texture import added_chroma_energy, local_energy, tile_power_spectrum


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


def load_dists_loss(weights_path: Optional[str] = None) -> nn.Module:
    """The DISTS of :mod:`sodec_pipeline.metrics` (frozen, eval mode) for the loss; weights as
    :func:`load_lpips_loss` finds them."""
    return load_dists(weights_path, flag="--dists_weights")


def block_mean_mse(x_hat: torch.Tensor, x: torch.Tensor, block: int = COLOUR_BLOCK) -> torch.Tensor:
    """MSE between the ``block``×``block`` means of two images: the colour and brightness of flat regions,
    which a perceptual loss does not see and a texture can hide."""
    return F.mse_loss(F.avg_pool2d(x_hat, block), F.avg_pool2d(x, block))


def texture_energy_l1(
    x_hat: torch.Tensor, x: torch.Tensor, excess_factor: float = 1.0, flat_energy: float = 0.0, per_image: bool = False
) -> torch.Tensor:
    """Mean over 8×8 windows of the gap between E(x̂) and E(x), E a window's mean |Laplacian| of luma on the 0…255
    scale (the map of :mod:`sodec_pipeline.metrics.texture`): ``excess_factor`` · max(0, E(x̂) − E(x)) (grain or
    hatching added where x has less) + max(0, E(x) − E(x̂)) (detail missing where x has it), without asking for
    the photograph's exact pixels there. ``excess_factor`` 1 is the plain L1 |E(x̂) − E(x)|.

    An asymmetric L1 is a quantile loss: with a factor f everywhere, the decoder's best E is the 1/(1 + f) quantile
    of what the stream leaves possible, in flat and textured windows alike. With ``flat_energy`` τ > 0 the factor
    of a window depends on how flat x is there, 1 + (f − 1)·exp(−E(x)/τ): f where x is flat, falling to 1 (the
    median: texture kept) where x has texture. ``per_image``: the mean of each image, (B,)."""
    reference = local_energy(x)
    gap = local_energy(x_hat) - reference
    if flat_energy > 0:
        excess_factor = 1 + (excess_factor - 1) * torch.exp(-reference / flat_energy)
    loss = excess_factor * gap.clamp_min(0) + (-gap).clamp_min(0)
    return loss.flatten(1).mean(1) if per_image else loss.mean()


def chroma_excess_l1(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean over 8×8 windows of max(0, E_c(x̂) − E_c(x)), E_c the window's mean |Laplacian| of Cb and Cr on the
    0…255 scale: the chroma excess of :mod:`sodec_pipeline.metrics.texture` as a loss. Colour detail the
    photograph has costs nothing; coloured speckle added where its detail is brightness does."""
    return added_chroma_energy(x_hat, x)


#: the periodic-grain loss's tiles (a 128² training crop holds 7 × 7 half-overlapping ones) and the ratio of the
#: photograph's power that a frequency may reach before it costs
GRAIN_TILE = 32
GRAIN_MARGIN = 2.0


def periodic_grain_l1(x_hat: torch.Tensor, x: torch.Tensor, tile: int = GRAIN_TILE, margin: float = GRAIN_MARGIN):
    """Mean over the frequencies of max(0, log(P(x̂) / P(x)) − log ``margin``), P each image's
    :func:`~sodec_pipeline.metrics.texture.tile_power_spectrum` plus a floor of 10⁻³ of its mean (a flat
    photograph's near-zero power is not divided by): a hatching, one frequency painted many times stronger than
    the photograph has it, costs; texture at the photograph's own frequencies does not."""
    spectrum_hat, spectrum = tile_power_spectrum(x_hat, tile), tile_power_spectrum(x, tile)
    floor = 1e-3 * spectrum.mean((-2, -1), keepdim=True) + 1e-6
    excess = (torch.log((spectrum_hat + floor) / (spectrum + floor)) - math.log(margin)).clamp_min(0)
    return excess.flatten(1)[:, 1:].mean()  # the zero frequency (each tile's mean is removed) left out


def realism_weighted_mean(per_image: torch.Tensor, realism: Optional[torch.Tensor]) -> torch.Tensor:
    """The batch mean of a per-image loss (any shape with the batch first), each image's weighed by its realism β
    when there is one (``train_sodec.py --realism_control``)."""
    per_image = per_image.reshape(per_image.shape[0], -1).mean(1)
    return per_image.mean() if realism is None else (realism.to(per_image) * per_image).mean()


class DistortionLoss(nn.Module):
    """d(x, x̂) = mse_weight · MSE + perceptual_weight · LPIPS + dists_weight · DISTS + colour_weight ·
    MSE of 16×16 block means + texture_weight · :func:`texture_energy_l1` + chroma_weight ·
    :func:`chroma_excess_l1` + grain_weight · :func:`periodic_grain_l1`, images in [0, 1] (the LPIPS and
    DISTS of :mod:`sodec_pipeline.metrics` take [0, 1] images). A term with weight 0 is neither computed nor
    logged.

    With a ``realism`` β per image (``train_sodec.py --realism_control``) the perceptual terms (LPIPS, DISTS and the
    texture term) of each image are weighed by its β in the total: β = 0 asks for the MSE decode, β = 1 for the full
    objective. The logged values are the unweighted means."""

    def __init__(
        self,
        mse_weight: float = 1.0,
        perceptual_weight: float = 0.0,
        lpips_model: Optional[nn.Module] = None,
        dists_weight: float = 0.0,
        dists_model: Optional[nn.Module] = None,
        colour_weight: float = 0.0,
        texture_weight: float = 0.0,
        texture_excess_factor: float = 1.0,
        texture_flat_energy: float = 0.0,
        chroma_weight: float = 0.0,
        grain_weight: float = 0.0,
    ):
        super().__init__()
        if perceptual_weight > 0 and lpips_model is None:
            raise ValueError("a perceptual weight needs an LPIPS model")
        if dists_weight > 0 and dists_model is None:
            raise ValueError("a DISTS weight needs a DISTS model")
        self.mse_weight = mse_weight
        self.perceptual_weight = perceptual_weight if lpips_model is not None else 0.0
        self.lpips = lpips_model
        self.dists_weight = dists_weight if dists_model is not None else 0.0
        self.dists = dists_model
        self.colour_weight = colour_weight
        self.texture_weight = texture_weight
        self.texture_excess_factor = texture_excess_factor
        self.texture_flat_energy = texture_flat_energy
        self.chroma_weight = chroma_weight
        self.grain_weight = grain_weight

    def forward(
        self, x_hat: torch.Tensor, x: torch.Tensor, realism: Optional[torch.Tensor] = None
    ) -> Dict[str, torch.Tensor]:
        x_hat = x_hat.float()
        mse = F.mse_loss(x_hat, x)
        total = self.mse_weight * mse
        out = {"mse": mse}
        perceptual_terms = []
        if self.lpips is not None:
            perceptual_terms.append(("lpips", self.perceptual_weight, self.lpips(x_hat, x)))
        if self.dists is not None:
            perceptual_terms.append(("dists", self.dists_weight, self.dists(x_hat, x)))
        if self.texture_weight > 0:
            texture = texture_energy_l1(x_hat, x, self.texture_excess_factor, self.texture_flat_energy, per_image=True)
            perceptual_terms.append(("texture", self.texture_weight, texture))
        for name, weight, per_image in perceptual_terms:
            total = total + weight * realism_weighted_mean(per_image, realism)
            out[name] = per_image.mean()
        if self.colour_weight > 0:
            colour = block_mean_mse(x_hat, x)
            total = total + self.colour_weight * colour
            out["colour"] = colour
        if self.chroma_weight > 0:
            chroma = chroma_excess_l1(x_hat, x)
            total = total + self.chroma_weight * chroma
            out["chroma"] = chroma
        if self.grain_weight > 0:
            grain = periodic_grain_l1(x_hat, x)
            total = total + self.grain_weight * grain
            out["grain"] = grain
        out["distortion"] = total
        return out


def build_distortion_loss(args) -> DistortionLoss:
    """The distortion of ``train_sodec.py``'s arguments (``--mse_weight``, ``--perceptual_loss``/``--perceptual_weight``,
    ``--dists_weight``, ``--colour_weight``, ``--texture_weight``, ``--chroma_weight``, ``--grain_weight``), its LPIPS and DISTS loaded (once, by
    ``parse_args``). Raises :class:`~sodec_pipeline.metrics.MetricWeightsError` where their weights are missing."""
    lpips_model = load_lpips_loss(args.lpips_net, args.lpips_weights) if args.perceptual_loss == "lpips" else None
    dists_model = load_dists_loss(args.dists_weights) if args.dists_weight > 0 else None
    return DistortionLoss(
        args.mse_weight,
        args.perceptual_weight if lpips_model is not None else 0.0,
        lpips_model,
        dists_weight=args.dists_weight,
        dists_model=dists_model,
        colour_weight=args.colour_weight,
        texture_weight=args.texture_weight,
        texture_excess_factor=args.texture_excess_factor,
        texture_flat_energy=args.texture_flat_energy,
        chroma_weight=args.chroma_weight,
        grain_weight=args.grain_weight,
    )


def generator_adversarial_loss(fake_logits: torch.Tensor, realism: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Non-saturating generator loss −log D(x̂), each image's weighed by its realism β when there is one."""
    return realism_weighted_mean(F.softplus(-fake_logits), realism)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """−log D(x) − log(1 − D(x̂))."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
