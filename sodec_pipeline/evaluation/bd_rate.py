"""Bjøntegaard delta rate (VCEG-M33): the mean bitrate difference of one rate–distortion curve against an
anchor at equal quality, over the quality range both curves cover."""

import math
from typing import Optional, Sequence

import numpy as np


def bd_rate(
    anchor_bpp: Sequence[float],
    anchor_quality: Sequence[float],
    test_bpp: Sequence[float],
    test_quality: Sequence[float],
) -> Optional[float]:
    """BD-rate of the test curve against the anchor, in percent (negative: the test needs fewer bits for the
    same quality). Each curve's log-rate is fitted as a polynomial of the quality (degree 3, lower for fewer
    points; VCEG-M33) and the fits' difference is averaged over the overlap of the two quality ranges. ``None``
    when a curve has fewer than 2 distinct points or the ranges do not overlap."""
    curves = []
    for bpp, quality in ((anchor_bpp, anchor_quality), (test_bpp, test_quality)):
        points = sorted({(float(q), float(r)) for r, q in zip(bpp, quality) if r > 0 and math.isfinite(q)})
        if len({q for q, _ in points}) < 2:
            return None
        q = np.array([p[0] for p in points])
        log_rate = np.log(np.array([p[1] for p in points]))
        curves.append((np.polyfit(q, log_rate, min(3, len(points) - 1)), q.min(), q.max()))
    low = max(curves[0][1], curves[1][1])
    high = min(curves[0][2], curves[1][2])
    if not high > low:
        return None
    integrals = []
    for coefficients, _, _ in curves:
        antiderivative = np.polyint(coefficients)
        integrals.append(np.polyval(antiderivative, high) - np.polyval(antiderivative, low))
    mean_log_ratio = (integrals[1] - integrals[0]) / (high - low)
    return float((math.exp(mean_log_ratio) - 1.0) * 100.0)
