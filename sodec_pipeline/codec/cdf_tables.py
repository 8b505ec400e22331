"""Quantised CDF tables: a probability mass function → the 16-bit cumulative frequencies an ANS coder codes with.

The tables are saved with the weights (``_quantized_cdf``, ``_cdf_length``, ``_offset`` of the entropy layers,
``entropy_layers.py``), so a stream depends on them bit for bit: :func:`pmf_to_quantized_cdf` makes the tables
compressai's ``pmf_to_quantized_cdf`` makes (its C++ ``_CXX`` extension, after ryg_rans), which wrote every
table of the shipped models; ``tests/test_entropy_layers.py`` compares the two on many PMFs.

The rule, for probabilities p_0 … p_{n−1} (float32) and precision P (16):

1. f_k = round(p_k · 2^P), halves away from zero, and T = Σ f_k;
2. f_k ← ⌊2^P · f_k / T⌋ (integer division), and the last frequency takes what the floors left, so that the
   frequencies sum to 2^P;
3. every symbol with frequency 0, in increasing order, takes 1 from the smallest frequency above 1 at that
   moment (the first such symbol on a tie), so that every symbol can be coded.

The CDF is 0 followed by the running sums of the frequencies (n + 1 values, the last 2^P).
"""

import heapq

import numpy as np
import torch


def pmf_to_quantized_cdf(pmf: torch.Tensor, precision: int = 16) -> torch.Tensor:
    """The quantised CDF (int32, ``len(pmf) + 1`` values from 0 to ``2**precision``) of a 1-D float PMF.

    ``ValueError`` for a PMF with a negative or non-finite entry, one that rounds to nothing, or one with more
    symbols than ``2**precision`` can give a frequency each."""
    one = 1 << precision
    # float32 values, exactly as doubles: p · 2^P is exact, and ⌊x + ½⌋ rounds halves away from zero for x ≥ 0
    p = pmf.detach().to("cpu", torch.float32).numpy().astype(np.float64).reshape(-1)
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("a PMF needs finite, non-negative probabilities")
    rounded = np.floor(p * one + 0.5).astype(np.int64)
    total = int(rounded.sum())
    if total == 0:
        raise ValueError("a PMF needs at least one probability that is not 0 at this precision")
    freqs = rounded * one // total
    freqs[-1] += one - int(freqs.sum())
    empty = np.flatnonzero(freqs == 0)
    if empty.size:
        _give_empty_symbols_one(freqs, empty)
    cdf = np.zeros(freqs.size + 1, dtype=np.int64)
    np.cumsum(freqs, out=cdf[1:])
    return torch.from_numpy(cdf.astype(np.int32))


def _give_empty_symbols_one(freqs: np.ndarray, empty: np.ndarray) -> None:
    """Step 3 in place: each symbol of ``empty`` (increasing) takes 1 from the smallest frequency above 1, the
    lowest symbol on a tie. Symbols it made 1 are never taken from again, so a heap of (frequency, symbol) of
    the frequencies above 1 is all it needs."""
    donors = [(int(f), int(k)) for k, f in enumerate(freqs) if f > 1]
    heapq.heapify(donors)
    for k in empty:
        if not donors:
            raise ValueError("a PMF with more symbols than the precision gives a frequency each")
        f, donor = heapq.heappop(donors)
        freqs[donor] = f - 1
        freqs[k] = 1
        if f - 1 > 1:
            heapq.heappush(donors, (f - 1, donor))
