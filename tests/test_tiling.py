"""Tiled processing: the layout is a function of the grid size and the configs, tiles cover the grid with
the promised overlap, blending is exact where tiles agree, and the pipeline's networks never see more
than a tile (on the tiny layout, whose tiles are 256 px)."""

import json
import types
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from sodec_pipeline.pipelines.tiling import TileSpec, axis_tiles, run_tiled, tile_layout, tile_specs_for


HUB_CONFIGS = Path(__file__).resolve().parent.parent / "hub_configs"


def _config(layout, component):
    return types.SimpleNamespace(**json.loads((HUB_CONFIGS / layout / component / "config.json").read_text()))


# Grids larger than a tile are multiples of the alignment in the pipeline: only those combinations occur.
_AXIS_CASES = [
    (length, spec)
    for spec in (TileSpec(64, 16, 8), TileSpec(32, 8, 1), TileSpec(512, 128, 16), TileSpec(4, 1, 1))
    for length in (1, 7, 64, 65, 100, 129, 512, 1000, 2048)
    if length <= spec.size or length % spec.align == 0
]


@pytest.mark.parametrize("length, spec", _AXIS_CASES)
def test_axis_tiles_cover_the_axis_with_the_overlap(length, spec):
    spans = axis_tiles(length, spec)
    assert spans == axis_tiles(length, spec)  # deterministic
    if length <= spec.size:
        assert spans == [(0, length)]
        return
    assert spans[0][0] == 0 and spans[-1][1] == length
    for start, end in spans:
        assert end - start == spec.size and start % spec.align == 0
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end - start >= spec.overlap  # neighbours overlap by at least the spec
    assert len(spans) == -(-(length - spec.overlap) // (spec.size - spec.overlap))  # the fewest tiles


def test_tile_specs_come_from_the_configs():
    tiny = tile_specs_for(_config("sodec-tiny", "unet"), _config("sodec-tiny", "vae"))
    assert tiny.unet == TileSpec(32, 8, 2) and tiny.vae == TileSpec(32, 8, 1)
    assert tiny.fidelity == TileSpec(16, 4, 1) and tiny.analysis == TileSpec(256, 64, 16)
    full = tile_specs_for(_config("sodec-sd21-base", "unet"), _config("sodec-sd21-base", "vae"))
    assert full.unet == TileSpec(64, 16, 8) and full.vae == TileSpec(64, 16, 1)  # 512 px, SD's training size
    assert full.fidelity == TileSpec(32, 8, 1) and full.analysis == TileSpec(256, 64, 16) == tiny.analysis
    # a VAE config without sample_size (AutoencoderTiny) takes the UNet's tile
    assert tile_specs_for(_config("sodec-tiny", "unet"), {"scaling_factor": 1.0}).vae == TileSpec(32, 8, 1)


def test_blending_is_exact_where_tiles_agree():
    """A function that is the same on every tile (nearest upsampling) is reproduced across the seams."""
    x = torch.randn(2, 3, 50, 70, dtype=torch.float64)
    up = lambda t, _: torch.nn.functional.interpolate(t, scale_factor=8, mode="nearest")  # noqa: E731
    tiled = run_tiled(up, x, TileSpec(16, 4), 8, tiles_per_batch=3)
    torch.testing.assert_close(tiled, up(x, None), rtol=1e-12, atol=1e-12)
    down = run_tiled(lambda t, _: t[..., ::16, ::16], x[..., :48, :64], TileSpec(32, 16, 16), Fraction(1, 16))
    torch.testing.assert_close(down, x[..., :48:16, :64:16])


def test_tiles_are_batched_with_their_sample_index():
    x = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 1, 40, 40).contiguous()
    calls = []

    def fn(tiles, sample_index):
        calls.append((tuple(tiles.shape), sample_index.tolist()))
        assert torch.equal(tiles[:, 0, 0, 0], sample_index.float())  # each tile knows its sample
        return tiles * 10

    out = run_tiled(fn, x, TileSpec(16, 4), 1, tiles_per_batch=4)
    torch.testing.assert_close(out, x * 10)
    assert len(tile_layout(40, 40, TileSpec(16, 4))) == 9
    assert sum(len(idx) for _, idx in calls) == 27 and all(shape[0] <= 4 for shape, _ in calls)
    assert {shape[1:] for shape, _ in calls} == {(1, 16, 16)}  # every call: full tiles of one shape


def test_single_tile_runs_the_function_on_the_whole_input():
    x = torch.randn(1, 2, 10, 12)
    seen = []
    out = run_tiled(lambda t, idx: seen.append(t) or t + 1, x, TileSpec(16, 4), 1)
    assert len(seen) == 1 and seen[0] is x and torch.equal(out, x + 1)


def test_tiling_is_differentiable():
    x = torch.randn(1, 2, 40, 40, requires_grad=True)
    conv = torch.nn.Conv2d(2, 2, 3, padding=1)
    run_tiled(lambda t, _: conv(t), x, TileSpec(16, 4), 1, tiles_per_batch=2).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and conv.weight.grad.abs().sum() > 0


def test_networks_never_see_more_than_a_tile(tiny_pipeline, photos):
    """The 481×321 photo (512×384 padded) goes through E, D_a, the UNet and the VAE decoder in tiles."""
    pipe, specs = tiny_pipeline, tiny_pipeline.tile_specs
    seen = {"analysis": [], "fidelity": [], "unet": [], "vae": []}
    hooks = [
        pipe.compression_vae.analysis_transform.register_forward_pre_hook(
            lambda m, a: seen["analysis"].append(a[0].shape)
        ),
        pipe.fidelity_guidance.fidelity_decoder.register_forward_pre_hook(
            lambda m, a: seen["fidelity"].append(a[0].shape)
        ),
        pipe.unet.register_forward_pre_hook(lambda m, a: seen["unet"].append(a[0].shape)),
        pipe.vae.decoder.register_forward_pre_hook(lambda m, a: seen["vae"].append(a[0].shape)),
    ]
    try:
        out = pipe(image=photos["bsds_481x321.jpg"], output_type="pt")
    finally:
        for hook in hooks:
            hook.remove()
    assert out.images.shape == (1, 3, 321, 481) and torch.isfinite(out.images).all()
    for name, shapes in seen.items():
        size = getattr(specs, name).size
        assert len(shapes) > 1, name  # tiled
        assert all(max(s[-2:]) <= size for s in shapes), (name, shapes)


def test_tiled_decode_is_deterministic_and_independent_of_companions(tiny_pipeline, photos, small_photo):
    photo = photos["bsds_481x321.jpg"]
    alone = tiny_pipeline(image=photo, output_type="pt").images
    streams = tiny_pipeline.compress([small_photo, photo])
    together = tiny_pipeline.decompress(streams, output_type="pt").images
    assert torch.equal(together[1][None], alone)
