"""Where a decode puts texture: the flat-window excess and the texture recall (issue 29).

A person sees two failures of a generative decode that PSNR, LPIPS and DISTS average away: texture painted
where the photograph is flat (skin, sky, walls), and texture missing where the photograph has it (grass,
hair, bark). Both are read off one map, each 8×8 window's high-frequency energy:

- E = the mean over the window of |Laplacian(luma)|, luma = 0.299 R + 0.587 G + 0.114 B on the 0…255 scale,
  Laplacian the 3×3 four-neighbour kernel (0 1 0 / 1 −4 1 / 0 1 0) with replicated borders; only whole
  windows count (the last H mod 8 rows and W mod 8 columns are left out).
- *flat* windows: the 30 % of the reference's windows with the lowest E; *textured*: the 30 % with the highest.
- **flat-window excess** = mean over flat windows of max(0, E_decode − E_reference): 0 for a decode that
  keeps flat regions flat (a blur), large for one that adds grain or hatching there.
- **texture recall** = Σ E_decode / Σ E_reference over the textured windows: about 1 for a decode with the
  photograph's amount of texture where it has some, near 0 for a blur.

Both read luma. A decode can also paint its texture in colour: purple and green speckle on water, blotches on
skin, where the photograph's fine detail is almost all brightness. The same map on the two colour-difference
planes (BT.601 Cb and Cr, the mean of their |Laplacian|) gives E_c, and

- **chroma excess** = mean over all windows of max(0, E_c,decode − E_c,reference): 0 for a decode whose colours
  are no busier than the photograph's (a blur, or grain in brightness alone), large for coloured speckle.

A hatching is one frequency painted everywhere. :func:`tile_power_spectrum` sums the luma power spectra of
half-overlapping Hann-windowed tiles; the **peak power ratio** (:func:`peak_power_ratio`) is the largest ratio of a
decode's to the photograph's over the frequencies: about 1 or less for a faithful decode or a blur, many times
more at the hatching's frequency.

:func:`texture_statistics` and :func:`chroma_excess` take two uint8 RGB images (H, W, 3), the reference first, as
``sodec eval`` does; :func:`local_energy` is the differentiable map on (B, 3, H, W) tensors in [0, 1], which the training's
texture-energy loss uses too, so the loss and the metric are one implementation.
"""

from typing import Tuple

import numpy as np
import torch
from torch.nn import functional as F

from .fidelity import check_pair, uint8_to_tensor


TEXTURE_WINDOW = 8
#: the share of the reference's windows called flat (lowest E) and textured (highest E)
TEXTURE_FRACTION = 0.3
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: BT.601's colour differences Cb and Cr without their offset (each row sums to 0: grey detail has no chroma)
CHROMA_WEIGHTS = ((-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


#: the side of the tiles of :func:`tile_power_spectrum` and :func:`peak_power_ratio` (an image needs one whole)
PEAK_POWER_TILE = 64


def local_energy(
    images: torch.Tensor, window: int = TEXTURE_WINDOW, peak: float = 255.0, planes: str = "luma"
) -> torch.Tensor:
    """E per ``window``×``window`` window: (B, 3, H, W) RGB scaled so that ``peak`` is white → (B, H//w, W//w).

    With the default ``peak`` the images are in [0, 1] and E is on the 0…255 scale of the metric. ``planes``:
    ``"luma"`` (E) or ``"chroma"`` (E_c, the mean of Cb's and Cr's |Laplacian|)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images (B, 3, H, W); got shape {tuple(images.shape)}")
    if images.shape[-2] < window or images.shape[-1] < window:
        raise ValueError(f"images of {tuple(images.shape[-2:])} have no whole {window}×{window} window")
    weights = {"luma": (LUMA_WEIGHTS,), "chroma": CHROMA_WEIGHTS}.get(planes)
    if weights is None:
        raise ValueError(f"planes must be 'luma' or 'chroma', not {planes!r}")
    with torch.autocast(images.device.type, enabled=False):  # a Laplacian of 0…255 values needs float32
        images = images.float()
        kernel = images.new_tensor(_LAPLACIAN).view(1, 1, 3, 3)
        laplacian = 0
        for plane_weights in weights:
            plane = _weighted_plane(images, plane_weights, peak)
            laplacian = laplacian + F.conv2d(F.pad(plane, (1, 1, 1, 1), mode="replicate"), kernel).abs()
        return F.avg_pool2d(laplacian / len(weights), window)[:, 0]


def _weighted_plane(images: torch.Tensor, weights, peak: float) -> torch.Tensor:
    """Σ_c weights[c] · images[:, c] · peak of float32 (B, 3, H, W) images → (B, 1, H, W)."""
    return (images * images.new_tensor(weights).view(1, 3, 1, 1)).sum(1, keepdim=True) * peak


def window_masks(
    reference_energy: torch.Tensor, fraction: float = TEXTURE_FRACTION
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The flat and textured windows of one reference (boolean maps like ``reference_energy``, (h, w)): the
    ⌈fraction·n⌉ windows of lowest and of highest E, ties broken by position (a stable sort)."""
    flat_energy = reference_energy.reshape(-1)
    count = max(1, int(np.ceil(fraction * flat_energy.numel())))
    order = torch.argsort(flat_energy, stable=True)
    flat = torch.zeros_like(flat_energy, dtype=torch.bool)
    textured = torch.zeros_like(flat_energy, dtype=torch.bool)
    flat[order[:count]] = True
    textured[order[-count:]] = True
    return flat.view_as(reference_energy), textured.view_as(reference_energy)


def energy_statistics(reference_energy: torch.Tensor, test_energy: torch.Tensor) -> Tuple[float, float]:
    """(flat-window excess, texture recall) of one image from its two energy maps (h, w)."""
    flat, textured = window_masks(reference_energy)
    excess = (test_energy[flat] - reference_energy[flat]).clamp_min(0).mean().item()
    denominator = reference_energy[textured].sum().item()
    recall = test_energy[textured].sum().item() / denominator if denominator > 0 else float("nan")
    return excess, recall


def texture_statistics(reference: np.ndarray, test: np.ndarray) -> Tuple[float, float]:
    """(flat-window excess, texture recall) of ``test`` against ``reference``, uint8 RGB (H, W, 3) each.
    Recall is NaN for a reference without any high-frequency energy (a constant image)."""
    reference, test = np.asarray(reference), np.asarray(test)
    check_pair(reference, test)
    with torch.no_grad():
        energies = local_energy(torch.cat([uint8_to_tensor(reference), uint8_to_tensor(test)]), peak=1.0)
    return energy_statistics(energies[0], energies[1])


def added_chroma_energy(test: torch.Tensor, reference: torch.Tensor, peak: float = 255.0) -> torch.Tensor:
    """Mean over all windows and images of max(0, E_c(test) − E_c(reference)), (B, 3, H, W) batches scaled as
    for :func:`local_energy`: the chroma excess, differentiable (the training's ``--chroma_weight`` loss)."""
    added = local_energy(test, peak=peak, planes="chroma") - local_energy(reference, peak=peak, planes="chroma")
    return added.clamp_min(0).mean()


def chroma_excess(reference: np.ndarray, test: np.ndarray) -> float:
    """The chroma excess of ``test`` against ``reference``, uint8 RGB (H, W, 3) each: colour detail the decode
    adds, mean over all windows of max(0, E_c(test) − E_c(reference))."""
    reference, test = np.asarray(reference), np.asarray(test)
    check_pair(reference, test)
    with torch.no_grad():
        return added_chroma_energy(uint8_to_tensor(test), uint8_to_tensor(reference), peak=1.0).item()


def tile_power_spectrum(images: torch.Tensor, tile: int = PEAK_POWER_TILE) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] → (B, tile, tile // 2 + 1): the sum over the tiles (``tile``², half
    overlapping, whole ones only) of |rfft2(Hann · (luma − the tile's mean))|², luma on the 0…255 scale."""
    if images.shape[-2] < tile or images.shape[-1] < tile:
        raise ValueError(f"images of {tuple(images.shape[-2:])} have no whole {tile}×{tile} tile")
    with torch.autocast(images.device.type, enabled=False):
        luma = _weighted_plane(images.float(), LUMA_WEIGHTS, 255.0)[:, 0]
        tiles = luma.unfold(1, tile, tile // 2).unfold(2, tile, tile // 2)
        tiles = tiles - tiles.mean((-2, -1), keepdim=True)
        hann = torch.hann_window(tile, periodic=False, dtype=torch.float32, device=images.device)
        power = torch.fft.rfft2(tiles * (hann[:, None] * hann[None])).abs().square()
        return power.sum((1, 2))


def peak_power_ratio(
    reference: np.ndarray, test: np.ndarray, tile: int = PEAK_POWER_TILE
) -> Tuple[float, float, float]:
    """The largest ratio of ``test``'s :func:`tile_power_spectrum` to ``reference``'s (uint8 RGB (H, W, 3) each)
    and its frequency (vertical, horizontal; cycles per pixel, the horizontal one ≥ 0), the zero frequency left out."""
    reference, test = np.asarray(reference), np.asarray(test)
    check_pair(reference, test)
    with torch.no_grad():
        spectra = tile_power_spectrum(torch.cat([uint8_to_tensor(reference), uint8_to_tensor(test)]) / 255, tile)
    ratio = spectra[1] / spectra[0].clamp_min(1e-12)
    ratio[0, 0] = 0.0  # each tile's mean is removed: no power at 0 but rounding
    fy, fx = divmod(int(torch.argmax(ratio)), ratio.shape[-1])
    return ratio[fy, fx].item(), float(np.fft.fftfreq(tile)[fy]), fx / tile


def batch_texture_statistics(x_hat: torch.Tensor, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per image of two (B, 3, H, W) batches in [0, 1], x the reference: (excess, recall), each (B,)."""
    with torch.no_grad():
        reference, test = local_energy(x), local_energy(x_hat)
    pairs = [energy_statistics(r, t) for r, t in zip(reference, test)]
    return torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
