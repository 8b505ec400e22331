#!/usr/bin/env python
"""Finds a periodic grain in decodes (issue 29): the luma power spectrum of each decode over 64×64 Hann-windowed
tiles (half overlapping, means removed, summed over the image), divided frequency by frequency by the reference's,
and the largest ratio with its frequency. A decode that paints a regular hatching has a narrow peak there (the
photograph's own spectrum at that frequency is many times smaller); a blur or a faithful decode has none above
about 1.

    python benchmarks/periodic_grain.py --reference kodak/kodim13.png kodim13.diffusion.png kodim13.fidelity.png
"""

import argparse

import numpy as np
import PIL.Image

from sodec_pipeline.metrics.texture import LUMA_WEIGHTS


TILE = 64


def luma(path: str) -> np.ndarray:
    return np.asarray(PIL.Image.open(path).convert("RGB"), dtype=np.float64) @ np.asarray(LUMA_WEIGHTS)


def power_spectrum(image: np.ndarray, tile: int = TILE) -> np.ndarray:
    """The sum of the tiles' |FFT|² (tile × tile, Hann window, each tile's mean removed)."""
    window = np.hanning(tile)[:, None] * np.hanning(tile)[None]
    total = np.zeros((tile, tile))
    height, width = image.shape
    if height < tile or width < tile:
        raise SystemExit(f"an image of {width}×{height} has no {tile}×{tile} tile")
    for top in range(0, height - tile + 1, tile // 2):
        for left in range(0, width - tile + 1, tile // 2):
            patch = image[top : top + tile, left : left + tile]
            total += np.abs(np.fft.fft2((patch - patch.mean()) * window)) ** 2
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="the original photograph")
    parser.add_argument("decodes", nargs="+", help="decodes of it (the same size)")
    args = parser.parse_args()
    reference = power_spectrum(luma(args.reference))
    frequencies = np.fft.fftfreq(TILE)
    for path in args.decodes:
        ratio = power_spectrum(luma(path)) / np.maximum(reference, 1e-12)
        fy, fx = np.unravel_index(np.argmax(ratio), ratio.shape)
        print(
            f"{path}: peak power ratio {ratio[fy, fx]:.1f} at {frequencies[fy]:+.3f} cycles/px vertically, "
            f"{frequencies[fx]:+.3f} horizontally"
        )


if __name__ == "__main__":
    main()
