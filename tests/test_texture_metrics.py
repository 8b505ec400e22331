"""The flat-window excess and the texture recall (sodec_pipeline.metrics.texture) on images with a known answer,
and the training's texture-energy loss, which shares their energy map."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sodec_pipeline.metrics import batch_texture_statistics, chroma_excess, local_energy, texture_statistics
from sodec_pipeline.metrics.texture import peak_power_ratio


def _half_flat_half_textured(seed: int = 0, size: int = 64) -> np.ndarray:
    """Left half one flat grey, right half a strong random texture (so the flat and textured 30 % are known)."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), 120, dtype=np.uint8)
    image[:, size // 2 :] = rng.integers(40, 216, size=(size, size // 2, 1), dtype=np.uint8)
    return image


def test_identical_images_have_no_excess_and_full_recall():
    image = _half_flat_half_textured()
    excess, recall = texture_statistics(image, image)
    assert excess == 0.0
    assert recall == pytest.approx(1.0)


def test_noise_on_a_flat_region_is_flat_window_excess():
    image = _half_flat_half_textured()
    noisy = image.astype(np.int16)
    noisy[:, :32] += np.random.default_rng(1).integers(-12, 13, size=(64, 32, 1), dtype=np.int16)
    noisy = noisy.clip(0, 255).astype(np.uint8)
    excess, recall = texture_statistics(image, noisy)
    assert excess > 5.0  # the Laplacian of ±12 noise averages about 4·6 on the flat half
    assert recall == pytest.approx(1.0, abs=1e-3)  # the textured half is untouched (but its border column)


def test_a_blurred_texture_loses_recall_and_adds_no_excess():
    image = _half_flat_half_textured()
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(tensor, (2, 2, 2, 2), mode="replicate"), 5, 1)
    blurred = blurred[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
    excess, recall = texture_statistics(image, blurred)
    assert recall < 0.4
    assert excess < 0.5  # only the windows at the border of the two halves change, and few of them are flat


def test_the_energy_map_is_on_the_0_255_scale_and_has_whole_windows_only():
    image = torch.zeros(1, 3, 20, 17)
    image[..., 4, 4] = 1.0  # one white pixel: |Laplacian| 4·255 there and 255 at its four neighbours
    energy = local_energy(image)
    assert energy.shape == (1, 2, 2)
    assert energy[0, 0, 0].item() == pytest.approx(8 * 255 / 64)
    with pytest.raises(ValueError, match="whole 8×8 window"):
        local_energy(torch.zeros(1, 3, 7, 30))


def test_coloured_speckle_is_chroma_excess_and_grey_grain_is_not():
    """Noise in one channel is colour detail the photo lacks; the same noise in all three is brightness alone
    (Cb and Cr sum their weights to 0), and a blur of the photo adds none."""
    image = _half_flat_half_textured()
    noise = np.random.default_rng(1).integers(-12, 13, size=(64, 64), dtype=np.int16)
    coloured, grey = image.astype(np.int16), image.astype(np.int16)
    coloured[..., 0] += noise
    grey += noise[..., None]
    coloured, grey = (x.clip(0, 255).astype(np.uint8) for x in (coloured, grey))
    assert chroma_excess(image, image) == 0.0
    assert chroma_excess(image, coloured) > 3.0  # |Laplacian| of ±12 noise ≈ 24 on R, weighed 0.5 and 0.17
    assert chroma_excess(image, grey) < 0.05  # clipping at 40…216 grey never happens: only rounding is left
    assert texture_statistics(image, grey)[0] > 5.0  # while the luma map sees that grain
    colourful = image.copy()
    colourful[:, 32:] = np.random.default_rng(2).integers(40, 216, size=(64, 32, 3), dtype=np.uint8)
    blurred = colourful.astype(np.float32)
    blurred[:, 1:-1] = (blurred[:, :-2] + blurred[:, 1:-1] + blurred[:, 2:]) / 3
    assert chroma_excess(colourful, blurred.round().astype(np.uint8)) < 0.5  # colour only spills onto the border
    assert chroma_excess(blurred.round().astype(np.uint8), colourful) > 3.0  # and the other way round it is
    with pytest.raises(ValueError, match="planes"):
        local_energy(torch.zeros(1, 3, 8, 8), planes="rgb")


def test_batch_statistics_equal_the_uint8_ones():
    reference = _half_flat_half_textured(2)
    test = _half_flat_half_textured(3)
    as_batch = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    excess, recall = batch_texture_statistics(as_batch(test), as_batch(reference))
    expected = texture_statistics(reference, test)
    assert excess.item() == pytest.approx(expected[0], rel=1e-4)
    assert recall.item() == pytest.approx(expected[1], rel=1e-4)


def test_the_texture_loss_is_zero_for_the_image_itself_and_differentiable():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    from sodec_training.losses import texture_energy_l1

    x = torch.from_numpy(_half_flat_half_textured()).permute(2, 0, 1)[None].float() / 255
    assert texture_energy_l1(x, x).item() == 0.0
    blurred = torch.nn.functional.avg_pool2d(x, 5, 1, 2, count_include_pad=False).requires_grad_(True)
    loss = texture_energy_l1(blurred, x)
    loss.backward()
    assert loss.item() > 1.0 and blurred.grad is not None and blurred.grad.abs().sum() > 0


def test_the_excess_factor_weighs_grain_on_flat_regions_more_than_missing_detail():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    from sodec_training.losses import texture_energy_l1

    x = torch.from_numpy(_half_flat_half_textured()).permute(2, 0, 1)[None].float() / 255
    grainy = x.clone()
    grainy[..., :, :32] += 0.05 * torch.randn(1, 1, 64, 32, generator=torch.Generator().manual_seed(0))
    plain, heavy = texture_energy_l1(grainy, x), texture_energy_l1(grainy, x, excess_factor=8.0)
    assert heavy.item() == pytest.approx(8 * plain.item(), rel=0.01)  # nearly all of the gap is energy added
    blurred = torch.nn.functional.avg_pool2d(x, 5, 1, 2, count_include_pad=False)
    assert texture_energy_l1(blurred, x, 8.0).item() < 1.1 * texture_energy_l1(blurred, x).item()


def test_flat_energy_keeps_the_heavy_factor_on_flat_regions_and_drops_it_on_textured_ones():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    from sodec_training.losses import texture_energy_l1

    x = torch.from_numpy(_half_flat_half_textured()).permute(2, 0, 1)[None].float() / 255
    noise = 0.05 * torch.randn(1, 1, 64, 32, generator=torch.Generator().manual_seed(0))
    on_flat, on_texture = x.clone(), x.clone()
    on_flat[..., :, :32] += noise  # the flat half (as in the test above)
    on_texture[..., :, 32:] += noise
    constant, by_flatness, plain = (
        texture_energy_l1(on_flat, x, f, flat_energy=t) for f, t in ((8.0, 0), (8.0, 4.0), (1.0, 0))
    )
    assert 0.75 * constant.item() < by_flatness.item() <= constant.item()  # the windows next to the texture weigh less
    assert constant.item() == pytest.approx(8 * plain.item(), rel=0.01)
    constant, by_flatness, plain = (
        texture_energy_l1(on_texture, x, f, flat_energy=t) for f, t in ((8.0, 0), (8.0, 4.0), (1.0, 0))
    )
    assert by_flatness.item() == pytest.approx(plain.item(), rel=0.02) and constant.item() > 2 * plain.item()


def test_the_chroma_loss_charges_coloured_speckle_only():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    from sodec_training.losses import chroma_excess_l1

    x = torch.from_numpy(_half_flat_half_textured()).permute(2, 0, 1)[None].float() / 255
    noise = 0.05 * torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    grey = (x + noise).requires_grad_(True)
    coloured = (x + noise * x.new_tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)).requires_grad_(True)
    assert chroma_excess_l1(x, x).item() == 0.0
    assert chroma_excess_l1(grey, x).item() < 1e-3  # grey grain is brightness alone
    loss = chroma_excess_l1(coloured, x)
    loss.backward()
    assert loss.item() > 1.0 and coloured.grad.abs().sum() > 0
    assert chroma_excess_l1(x, coloured.detach()).item() == 0.0  # colour detail missing costs nothing


def _hatched(image: np.ndarray, frequency: float = 0.40625, amplitude: float = 12.0) -> np.ndarray:
    """``image`` with vertical stripes of ``frequency`` cycles per pixel added to every row (a hatching)."""
    stripes = amplitude * np.cos(2 * np.pi * frequency * np.arange(image.shape[1]))
    return (image.astype(np.float64) + stripes[None, :, None]).round().clip(0, 255).astype(np.uint8)


def _blurred(image: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    blurred = torch.nn.functional.avg_pool2d(tensor, 3, 1, 1, count_include_pad=False)
    return blurred[0].permute(1, 2, 0).round().byte().numpy()


def test_a_hatching_is_a_peak_of_the_power_ratio_at_its_frequency():
    photo = np.random.default_rng(3).integers(60, 196, size=(128, 128, 3), dtype=np.uint8)
    ratio, fy, fx = peak_power_ratio(photo, _hatched(_blurred(photo)))
    assert ratio > 5 and fy == 0.0 and fx == pytest.approx(0.40625)
    assert peak_power_ratio(photo, photo)[0] == pytest.approx(1.0)
    assert peak_power_ratio(photo, _blurred(photo))[0] < 1.1  # a blur adds no power (but rounding's)
    with pytest.raises(ValueError, match="64×64 tile"):
        peak_power_ratio(photo[:40], photo[:40])


def test_the_grain_loss_charges_a_hatching_and_not_a_blur():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    from sodec_training.losses import periodic_grain_l1

    photo = np.random.default_rng(4).integers(60, 196, size=(64, 64, 3), dtype=np.uint8)
    x, blurred = (torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255 for a in (photo, _blurred(photo)))
    hatched = torch.from_numpy(_hatched(_blurred(photo))).permute(2, 0, 1)[None].float().div(255).requires_grad_(True)
    assert periodic_grain_l1(x, x).item() == 0.0 and periodic_grain_l1(blurred, x).item() == 0.0
    loss = periodic_grain_l1(hatched, x)
    loss.backward()
    assert loss.item() > 0.01 and hatched.grad.abs().sum() > 0
