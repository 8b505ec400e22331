"""Tiled processing of SODEC's large-activation networks (E, D_a, the UNet step, the VAE decoder), so
that peak memory is bounded whatever the image size.

A network ``fn`` that maps an input grid (B, C, H, W) to an output grid scaled by ``scale`` (16 for D_a,
8 for the VAE decoder, 1 for the UNet, 1/16 for E) runs on overlapping square tiles of the input; the
outputs are blended with weights that ramp linearly across each overlap (so a seam never shows a step)
and normalised by the summed weights.

The tile layout (:func:`axis_tiles`, :func:`tile_layout`) depends on the grid size and on the models'
configs only (:func:`tile_specs_for`): a stream decodes to the same tiles, and so to the same pixels, on
every machine. A grid no larger than a tile runs untiled, exactly as the network itself.

Tiles of a layout all have the same shape, so they go through the network in batches of
``tiles_per_batch`` (images of the same size are tiled together). Memory is bounded by that batch of
tiles, plus the full-size input and output grids.
"""

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, List, Tuple, Union

import torch


Span = Tuple[int, int]

#: Side of E's tiles in pixels (a multiple of 64). E (HiFiC's encoder) sees ±34 px around a latent; at
#: 256 px its first activation is 60 × 256² floats (15 MiB) per tile for the full-size layout.
ANALYSIS_TILE = 256


@dataclass(frozen=True)
class TileSpec:
    """Square tiles of ``size`` input cells, neighbours overlapping by at least ``overlap`` cells, tile
    starts on multiples of ``align`` (the network's total stride, so that tiles see the same sampling
    grid as the whole image)."""

    size: int
    overlap: int
    align: int = 1

    def __post_init__(self):
        if self.size < 1 or self.align < 1 or self.size % self.align:
            raise ValueError(f"tile size {self.size} must be a positive multiple of align {self.align}")
        if not 0 <= self.overlap < self.size:
            raise ValueError(f"tile overlap {self.overlap} must lie in [0, {self.size})")


@dataclass(frozen=True)
class TileSpecs:
    """The tile spec of each tiled network, in the units of that network's input grid."""

    analysis: TileSpec  # E, on image pixels
    fidelity: TileSpec  # D_a, on ŷ (stride 16)
    unet: TileSpec  # the UNet step, on ŷ_t (stride 8)
    vae: TileSpec  # the VAE decoder, on ŷ_0 (stride 8)


def tile_specs_for(unet_config, vae_config) -> TileSpecs:
    """The tile layout of a pipeline, from its configs alone.

    - UNet: tiles of ``unet.config.sample_size`` latents (the resolution it was trained at: 64 latents =
      512 px for SD 2.1-base), overlap a quarter, starts on multiples of its total downsampling factor.
    - VAE decoder: tiles of ``vae.config.sample_size`` / 8 latents (the UNet's when the config has none,
      as ``AutoencoderTiny``'s), overlap a quarter.
    - D_a: tiles covering the same image area as the VAE decoder's, overlap a quarter.
    - E: tiles of :data:`ANALYSIS_TILE` pixels, overlap a quarter, starts on multiples of its stride 16 —
      the same for every model, so that the bytes depend on the codec alone, not on the decoder's configs.
    """
    unet_tile = int(unet_config.sample_size)
    unet_align = 2 ** (len(unet_config.block_out_channels) - 1)
    unet_tile = max(unet_align, unet_tile // unet_align * unet_align)
    vae_sample_size = (
        getattr(vae_config, "sample_size", None) if not isinstance(vae_config, dict) else vae_config.get("sample_size")
    )
    vae_tile = int(vae_sample_size) // 8 if vae_sample_size else unet_tile
    vae_tile = max(2, vae_tile)
    pixels = vae_tile * 8
    fidelity_tile = max(2, pixels // 16)
    return TileSpecs(
        analysis=TileSpec(ANALYSIS_TILE, _quarter(ANALYSIS_TILE, 16), 16),
        fidelity=TileSpec(fidelity_tile, _quarter(fidelity_tile, 1), 1),
        unet=TileSpec(unet_tile, _quarter(unet_tile, 1), unet_align),
        vae=TileSpec(vae_tile, _quarter(vae_tile, 1), 1),
    )


def _quarter(size: int, multiple: int) -> int:
    """A quarter of ``size``, rounded down to ``multiple`` but at least ``multiple`` (and below ``size``)."""
    return min(size - 1, max(multiple, size // 4 // multiple * multiple))


def axis_tiles(length: int, spec: TileSpec) -> List[Span]:
    """The (start, end) spans of the tiles along one axis of ``length`` cells.

    One span covering everything when ``length <= spec.size``; otherwise the fewest tiles of
    ``spec.size`` whose neighbours overlap by at least ``spec.overlap``, first at 0, last ending at
    ``length``, the starts spread evenly and rounded to ``spec.align``.
    """
    if length <= spec.size:
        return [(0, length)]
    stride = spec.size - spec.overlap
    count = math.ceil((length - spec.overlap) / stride)
    last = length - spec.size
    starts = []
    for i in range(count):
        start = round(i * last / (count - 1) / spec.align) * spec.align if count > 1 else 0
        starts.append(min(start, last))
    starts[-1] = last
    spans = [(s, s + spec.size) for s in starts]
    for (s0, e0), (s1, _e1) in zip(spans, spans[1:]):
        if s1 <= s0 or e0 < s1:
            raise ValueError(f"tiles {spans} of a {length}-cell axis do not cover it (align {spec.align})")
    return spans


def tile_layout(height: int, width: int, spec: TileSpec) -> List[Tuple[Span, Span]]:
    """Row-major (rows, columns) spans of the tiles of a ``height`` × ``width`` grid."""
    return [(rows, cols) for rows in axis_tiles(height, spec) for cols in axis_tiles(width, spec)]


def _axis_weights(spans: List[Span], index: int, scale: Fraction, ramp: int, device, dtype) -> torch.Tensor:
    """Blending weights of tile ``index`` along one axis, in output cells: 1 inside, a linear ramp over
    ``ramp`` cells on each side that has a neighbour (never 0, so that every cell has weight)."""
    start, end = spans[index]
    n = int((end - start) * scale)
    weights = torch.ones(n, device=device, dtype=dtype)
    if ramp <= 0:
        return weights
    position = torch.arange(n, device=device, dtype=dtype)
    ramp_up = (position + 0.5) / ramp
    if index > 0:
        weights = torch.minimum(weights, ramp_up)
    if index < len(spans) - 1:
        weights = torch.minimum(weights, ramp_up.flip(0))
    return weights


def run_tiled(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    spec: TileSpec,
    scale: Union[int, Fraction] = 1,
    tiles_per_batch: int = 1,
) -> torch.Tensor:
    """``fn`` over overlapping tiles of ``x`` (B, C, H, W), blended into one output grid.

    ``fn(tiles, sample_index)`` gets a batch of tiles (N, C, t, t) and, for each, the index of the
    sample of ``x`` it comes from (for per-sample inputs such as the UNet's guidance); it returns
    (N, C', t·scale, t·scale). When the grid is a single tile, ``fn`` runs on ``x`` as a whole.
    The result has ``fn``'s dtype (blended in float32 at least).
    Differentiable: a tile's gradient flows back through the slicing and the blending.
    """
    scale = Fraction(scale)
    batch, _, height, width = x.shape
    rows, cols = axis_tiles(height, spec), axis_tiles(width, spec)
    all_samples = torch.arange(batch, device=x.device)
    if len(rows) == 1 and len(cols) == 1:
        return fn(x, all_samples)
    out_h, out_w = int(height * scale), int(width * scale)
    ramp = int(spec.overlap * scale)
    tiles = [(r, c) for r in range(len(rows)) for c in range(len(cols))]
    accumulator = None
    weight_sum = None
    groups = _tile_groups(tiles, batch, tiles_per_batch)
    for group in groups:
        inputs, sample_index = [], []
        for (r, c), samples in group:
            (r0, r1), (c0, c1) = rows[r], cols[c]
            inputs.append(x[samples, :, r0:r1, c0:c1])
            sample_index.append(all_samples[samples])
        result = fn(torch.cat(inputs), torch.cat(sample_index))
        if accumulator is None:
            out_dtype, dtype = result.dtype, torch.promote_types(result.dtype, torch.float32)  # blend in ≥ float32
            accumulator = torch.zeros(batch, result.shape[1], out_h, out_w, device=result.device, dtype=dtype)
            weight_sum = torch.zeros(1, 1, out_h, out_w, device=result.device, dtype=dtype)
        offset = 0
        for (r, c), samples in group:
            n = samples.stop - samples.start
            tile_out = result[offset : offset + n].to(dtype)
            offset += n
            wy = _axis_weights(rows, r, scale, ramp, result.device, dtype)
            wx = _axis_weights(cols, c, scale, ramp, result.device, dtype)
            weight = wy[:, None] * wx[None, :]
            (r0, r1), (c0, c1) = rows[r], cols[c]
            oy, ox = int(r0 * scale), int(c0 * scale)
            ty, tx = tile_out.shape[-2:]
            region = (slice(samples.start, samples.stop), slice(None), slice(oy, oy + ty), slice(ox, ox + tx))
            accumulator[region] += tile_out * weight
            if samples.start == 0:
                weight_sum[..., oy : oy + ty, ox : ox + tx] += weight
    # in place where no gradient is needed: the full-size grid is the largest tensor here
    result = accumulator / weight_sum if accumulator.requires_grad else accumulator.div_(weight_sum)
    return result.to(out_dtype)


def _tile_groups(tiles, batch: int, tiles_per_batch: int):
    """Splits the (tile × sample) work into network calls of at most ``tiles_per_batch`` tiles, tile by
    tile, each tile's samples contiguous (a slice), so that every call has the same composition whatever
    the image content."""
    limit = max(1, tiles_per_batch)
    groups, current, count = [], [], 0
    for tile in tiles:
        start = 0
        while start < batch:
            take = min(batch - start, limit - count)
            current.append((tile, slice(start, start + take)))
            count += take
            start += take
            if count == limit:
                groups.append(current)
                current, count = [], 0
    if current:
        groups.append(current)
    return groups
