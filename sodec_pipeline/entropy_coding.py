"""Entropy coding of integer symbols with a model's quantised CDF tables, by constriction's ANS coder.

SODEC keeps compressai's entropy models (``EntropyBottleneck`` for ẑ, ``GaussianConditional`` for ŷ) for
training and for their CDF tables (``_quantized_cdf``, ``_cdf_length``, ``_offset``: 16-bit fixed point,
saved with the weights), but codes the symbols with ``constriction``'s ``AnsCoder`` (Rust, bounds-checked)
instead of compressai's C++ rANS coder, which reads past the end of a crafted string.

Coding scheme of one string (what :func:`encode_symbols` writes and :func:`decode_symbols` reads):

- Every symbol ``v`` has a table ``k``; its bin is ``v - offset[k]``. Table ``k`` has
  ``n_k = cdf_length[k] - 1`` bins; the last one, ``n_k - 1``, is the escape bin.
- Symbols are coded grouped by table (table 0 first), in raster order within a table, each table's bins
  with a ``Categorical`` model of the table's probabilities (``perfect=False``: constriction's fast,
  deterministic conversion to its 24-bit fixed point).
- A bin outside ``[0, n_k - 2]`` is coded as the escape bin, and after all bins every escaped value, in
  the same order, as one ``Uniform(2**ESCAPE_BITS)`` symbol ``e``: ``e = -2·bin - 1`` below the table,
  ``e = 2·(bin - (n_k - 1))`` above it. Values farther out than ``e < 2**ESCAPE_BITS`` allows are clamped
  by the encoder.
- The string is the coder's 32-bit words, little-endian. A decoder that does not end with the coder
  empty has been given a string that this scheme did not write (too long, or other symbols):
  :class:`BitstreamError`.

Decoding reads only the given words, and does work proportional to the number of symbols the caller asks
for (which the caller bounds), whatever the bytes are. A string too short for the symbols asked for is not
an error by itself: an ANS coder whose words are used up goes on decoding from its exhausted state (and
ends empty); the stream's entropy check and the pixel budget are what stand between such a string and
the networks.
"""

from typing import Sequence, Tuple

import numpy as np
import torch

from .bitstream import BitstreamError

ESCAPE_BITS = 16
_ESCAPE_SIZE = 1 << ESCAPE_BITS


def _constriction():
    try:
        import constriction
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ImportError("SODEC's entropy coding needs the `constriction` package: pip install constriction") from e
    return constriction


class CategoricalTables:
    """The CDF tables of one compressai entropy model as constriction models.

    Args:
        quantized_cdf: (L, max_length) int32, each row a CDF from 0 to 2**16 (compressai's ``_quantized_cdf``).
        cdf_length: (L,) int32, the used length of each row (``_cdf_length``).
        offset: (L,) int32, the symbol of bin 0 of each table (``_offset``).
    """

    def __init__(self, quantized_cdf: torch.Tensor, cdf_length: torch.Tensor, offset: torch.Tensor):
        constriction = _constriction()
        cdf = quantized_cdf.detach().to("cpu", torch.int64).numpy()
        lengths = cdf_length.detach().to("cpu", torch.int64).numpy().reshape(-1)
        self.offset = offset.detach().to("cpu", torch.int64).numpy().reshape(-1)
        if cdf.ndim != 2 or cdf.shape[0] != lengths.shape[0] or lengths.shape[0] != self.offset.shape[0]:
            raise ValueError("inconsistent CDF tables: quantized_cdf, cdf_length and offset disagree in size")
        self.num_bins = lengths - 1
        if (self.num_bins < 2).any():
            raise ValueError("every CDF table needs at least one symbol bin and the escape bin")
        self.models = []
        for row, length in zip(cdf, lengths):
            pmf = np.diff(row[:length]).astype(np.float64)
            if (pmf <= 0).any():
                raise ValueError("CDF tables must be strictly increasing (compressai's pmf_to_quantized_cdf makes them so)")
            self.models.append(constriction.stream.model.Categorical(pmf, perfect=False))

    @classmethod
    def from_entropy_model(cls, entropy_model) -> "CategoricalTables":
        """The tables of a compressai ``EntropyBottleneck`` or ``GaussianConditional`` after ``update()``."""
        return cls(entropy_model._quantized_cdf, entropy_model._cdf_length, entropy_model._offset)

    def __len__(self) -> int:
        return len(self.models)


def _as_int64(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().to("cpu").numpy()
    return np.ascontiguousarray(np.asarray(array).reshape(-1), dtype=np.int64)


def _group_order(table_indexes: np.ndarray, num_tables: int) -> Tuple[np.ndarray, np.ndarray]:
    if table_indexes.size and (table_indexes.min() < 0 or table_indexes.max() >= num_tables):
        raise ValueError(f"table indexes must lie in [0, {num_tables})")
    order = np.argsort(table_indexes, kind="stable")
    counts = np.bincount(table_indexes, minlength=num_tables)
    return order, counts


def encode_symbols(symbols, table_indexes, tables: CategoricalTables) -> bytes:
    """Codes integer symbols (any shape, flattened in C order), symbol ``i`` with table ``table_indexes[i]``."""
    constriction = _constriction()
    values = _as_int64(symbols)
    indexes = _as_int64(table_indexes)
    if values.shape != indexes.shape:
        raise ValueError(f"{values.size} symbols but {indexes.size} table indexes")
    order, counts = _group_order(indexes, len(tables))
    bins = values - tables.offset[indexes]
    escape_bin = tables.num_bins[indexes] - 1
    below, above = bins < 0, bins >= escape_bin
    escapes = np.where(below, -2 * bins - 1, 2 * (bins - escape_bin))
    escaped = below | above
    coded_bins = np.where(escaped, escape_bin, bins)
    escapes = np.minimum(escapes, _ESCAPE_SIZE - 2 + escapes % 2)  # clamp, keeping the side (parity)
    escape_values = escapes[order][escaped[order]].astype(np.int32)

    coder = constriction.stream.stack.AnsCoder()
    if escape_values.size:
        coder.encode_reverse(escape_values, constriction.stream.model.Uniform(_ESCAPE_SIZE))
    grouped = coded_bins[order].astype(np.int32)
    ends = np.cumsum(counts)
    for table in range(len(tables) - 1, -1, -1):
        if counts[table]:
            coder.encode_reverse(grouped[ends[table] - counts[table] : ends[table]], tables.models[table])
    return coder.get_compressed().astype("<u4").tobytes()


def decode_symbols(data: bytes, table_indexes, tables: CategoricalTables) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: int64 symbols in the order of ``table_indexes`` (flattened).

    Raises :class:`BitstreamError` when ``data`` is not a string that :func:`encode_symbols` wrote for
    these tables and indexes (its length is not whole words, or the coder does not end exactly empty).
    """
    constriction = _constriction()
    indexes = _as_int64(table_indexes)
    if len(data) % 4:
        raise BitstreamError(f"an entropy-coded string is {len(data)} bytes long, not a whole number of 32-bit words")
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    order, counts = _group_order(indexes, len(tables))
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        grouped = np.empty(indexes.size, dtype=np.int64)
        start = 0
        for table, count in enumerate(counts):
            if count:
                grouped[start : start + count] = coder.decode(tables.models[table], int(count))
                start += count
        bins = np.empty_like(grouped)
        bins[order] = grouped
        escape_bin = tables.num_bins[indexes] - 1
        escaped = bins == escape_bin
        num_escaped = int(escaped[order].sum())
        if num_escaped:
            escapes = np.empty(indexes.size, dtype=np.int64)
            escapes[order[escaped[order]]] = coder.decode(constriction.stream.model.Uniform(_ESCAPE_SIZE), num_escaped)
            escapes = escapes[escaped]
            bins[escaped] = np.where(escapes % 2 == 1, -(escapes + 1) // 2, escapes // 2 + escape_bin[escaped])
        exhausted = coder.is_empty()
    except BaseException as e:  # noqa: BLE001 - constriction reports bad input as ValueError, or as a Rust panic
        if not isinstance(e, (ValueError, RuntimeError, OverflowError)) and type(e).__name__ != "PanicException":
            raise
        raise BitstreamError(f"an entropy-coded string is malformed ({e})") from None
    if not exhausted:
        raise BitstreamError("an entropy-coded string does not decode to exactly the announced symbols")
    return bins + tables.offset[indexes]


def table_indexes_of_channels(num_channels: int, spatial: Sequence[int]) -> np.ndarray:
    """Table index of every element of a (1, C, *spatial) tensor whose table is its channel (ẑ's tables)."""
    size = int(np.prod(spatial)) if len(spatial) else 1
    return np.repeat(np.arange(num_channels, dtype=np.int64), size)


__all__ = ["CategoricalTables", "ESCAPE_BITS", "decode_symbols", "encode_symbols", "table_indexes_of_channels"]
