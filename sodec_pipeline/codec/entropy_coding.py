"""Entropy coding of integer symbols with a model's quantised CDF tables, by constriction's ANS coder.

The entropy layers (``entropy_layers.py``: ``EntropyBottleneck`` for ẑ, ``GaussianConditional`` for ŷ, compressai's
layers bit for bit) give the CDF tables (``_quantized_cdf``, ``_cdf_length``, ``_offset``: 16-bit fixed point,
saved with the weights); the symbols are coded with ``constriction``'s ``AnsCoder`` (Rust, bounds-checked)
instead of compressai's C++ rANS coder, which reads past the end of a crafted string (version 1 streams).

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

from contextlib import contextmanager
from typing import Sequence, Tuple

import numpy as np
import torch

from .errors import BitstreamError


ESCAPE_BITS = 16
_ESCAPE_SIZE = 1 << ESCAPE_BITS


def _constriction():
    try:
        import constriction
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ImportError("SODEC's entropy coding needs the `constriction` package: pip install constriction") from e
    return constriction


class CategoricalTables:
    """The CDF tables of one entropy layer as constriction models.

    Args:
        quantized_cdf: (L, max_length) int32, each row a CDF from 0 to 2**16 (the layer's ``_quantized_cdf``).
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
                raise ValueError(
                    "CDF tables must be strictly increasing (pmf_to_quantized_cdf makes them so: cdf_tables.py)"
                )
            self.models.append(constriction.stream.model.Categorical(pmf, perfect=False))

    @classmethod
    def from_entropy_model(cls, entropy_model) -> "CategoricalTables":
        """The tables of an ``EntropyBottleneck`` or ``GaussianConditional`` (``entropy_layers.py``) after
        ``update()``."""
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
    """Codes integer symbols (any shape, flattened in C order), symbol ``i`` with table ``table_indexes[i]``.

    Keeps few arrays of the symbols' size (int64 bins and table indexes, the grouping order, int32 coded
    bins) and computes the escapes for the escaped symbols only (benchmarks/README.md: 41 bytes per symbol)."""
    return encode_symbol_groups([(symbols, table_indexes)], tables)


def encode_symbol_groups(groups: Sequence[Tuple[object, object]], tables: CategoricalTables) -> bytes:
    """Codes several groups of symbols, each ``(symbols, table_indexes)`` as :func:`encode_symbols` codes one,
    into one string that a :class:`SymbolDecoder` reads group by group, in the order given: a decoder can compute
    the table indexes of a group from the symbols of the groups before it (the checkerboard's two passes). One
    group gives exactly the bytes of :func:`encode_symbols`."""
    constriction = _constriction()
    coder = constriction.stream.stack.AnsCoder()
    for symbols, table_indexes in reversed(list(groups)):  # a stack: the last group coded is decoded first
        _encode_group(coder, symbols, table_indexes, tables)
    return coder.get_compressed().astype("<u4").tobytes()


def _encode_group(coder, symbols, table_indexes, tables: CategoricalTables) -> None:
    """Pushes one group onto ``coder``: its escapes first, then its bins table by table (last table first), so that
    a decoder pops the bins of table 0 first and the escapes last."""
    constriction = _constriction()
    indexes = _as_int64(table_indexes)
    bins = _as_int64(symbols)
    if bins.shape != indexes.shape:
        raise ValueError(f"{bins.size} symbols but {indexes.size} table indexes")
    order, counts = _group_order(indexes, len(tables))
    bins = bins - tables.offset[indexes]  # a new array: the caller's symbols stay as they are
    escape_bin = tables.num_bins[indexes]
    escape_bin -= 1
    escaped = bins < 0
    escaped |= bins >= escape_bin
    in_order = order[escaped[order]]  # the escaped symbols, in coding order
    low = bins[in_order]
    high = escape_bin[in_order]
    escapes = np.where(low < 0, -2 * low - 1, 2 * (low - high))
    escapes = np.minimum(escapes, _ESCAPE_SIZE - 2 + escapes % 2)  # clamp, keeping the side (parity)
    escape_values = escapes.astype(np.int32)
    np.copyto(bins, escape_bin, where=escaped)  # an escaped symbol is coded as its table's escape bin
    del escape_bin, escaped
    grouped = bins.astype(np.int32)
    del bins
    grouped = grouped[order]

    if escape_values.size:
        coder.encode_reverse(escape_values, constriction.stream.model.Uniform(_ESCAPE_SIZE))
    ends = np.cumsum(counts)
    for table in range(len(tables) - 1, -1, -1):
        if counts[table]:
            coder.encode_reverse(grouped[ends[table] - counts[table] : ends[table]], tables.models[table])


def codable_symbols(symbols: torch.Tensor, table_indexes: torch.Tensor, tables: CategoricalTables) -> torch.Tensor:
    """The symbols a decoder gets back for ``symbols`` coded with ``table_indexes``: values farther beyond their
    table than an escape reaches are clamped, on their side, as :func:`encode_symbols` clamps them (an int64 tensor
    of the same shape; every other value unchanged). An encoder whose later symbols depend on earlier ones (a
    context model) computes the context from these."""
    indexes = table_indexes.to("cpu", torch.int64)
    offset = torch.from_numpy(tables.offset)[indexes]
    top = torch.from_numpy(tables.num_bins)[indexes] - 1  # the escape bin
    low = offset - (_ESCAPE_SIZE // 2)  # e = -2·bin - 1 ≤ 2^16 - 1
    high = offset + top + (_ESCAPE_SIZE // 2 - 1)  # e = 2·(bin - top) ≤ 2^16 - 2
    return torch.minimum(torch.maximum(symbols.to("cpu", torch.int64), low), high).to(symbols.device)


class SymbolDecoder:
    """Reads a string of :func:`encode_symbol_groups` group by group: :meth:`decode` for each group in the order
    they were coded, then :meth:`finish`. Raises :class:`BitstreamError` when ``data`` is not such a string (its
    length is not whole words, the coder fails, or it does not end exactly empty)."""

    def __init__(self, data: bytes):
        if len(data) % 4:
            raise BitstreamError(
                f"an entropy-coded string is {len(data)} bytes long, not a whole number of 32-bit words"
            )
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        with _decoding_errors():
            self.coder = _constriction().stream.stack.AnsCoder(words)

    def decode(self, table_indexes, tables: CategoricalTables) -> np.ndarray:
        """The next group: int64 symbols in the order of ``table_indexes`` (flattened)."""
        indexes = _as_int64(table_indexes)
        order, counts = _group_order(indexes, len(tables))
        with _decoding_errors():
            return _decode_group(self.coder, indexes, order, counts, tables)

    def finish(self) -> None:
        """Raises :class:`BitstreamError` unless every word of the string was used."""
        with _decoding_errors():
            exhausted = self.coder.is_empty()
        if not exhausted:
            raise BitstreamError("an entropy-coded string does not decode to exactly the announced symbols")


def decode_symbols(data: bytes, table_indexes, tables: CategoricalTables) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: int64 symbols in the order of ``table_indexes`` (flattened).

    Raises :class:`BitstreamError` when ``data`` is not a string that :func:`encode_symbols` wrote for
    these tables and indexes (its length is not whole words, or the coder does not end exactly empty).
    """
    decoder = SymbolDecoder(data)
    symbols = decoder.decode(table_indexes, tables)
    decoder.finish()
    return symbols


@contextmanager
def _decoding_errors():
    """constriction reports bad input as ``ValueError``, or as a Rust panic: both become :class:`BitstreamError`."""
    try:
        yield
    except BaseException as e:  # noqa: BLE001
        if not isinstance(e, (ValueError, RuntimeError, OverflowError)) and type(e).__name__ != "PanicException":
            raise
        raise BitstreamError(f"an entropy-coded string is malformed ({e})") from None


def _decode_group(coder, indexes: np.ndarray, order: np.ndarray, counts: np.ndarray, tables) -> np.ndarray:
    """Pops one group's bins (table 0 first) and then its escapes from ``coder``."""
    constriction = _constriction()
    grouped = np.empty(indexes.size, dtype=np.int32)
    start = 0
    for table, count in enumerate(counts):
        if count:
            grouped[start : start + count] = coder.decode(tables.models[table], int(count))
            start += count
    symbols = tables.offset[indexes]  # int64: the result, the bins added below
    bins = np.empty_like(grouped)
    bins[order] = grouped
    del grouped
    escape_bin = tables.num_bins.astype(np.int32)[indexes]
    escape_bin -= 1
    escaped = bins == escape_bin
    in_order = order[escaped[order]]  # the escaped symbols, in coding order
    if in_order.size:
        escapes = coder.decode(constriction.stream.model.Uniform(_ESCAPE_SIZE), int(in_order.size)).astype(np.int64)
        high = escape_bin[in_order].astype(np.int64)
        symbols[in_order] += np.where(escapes % 2 == 1, -(escapes + 1) // 2, escapes // 2 + high)
    bins[escaped] = 0  # escaped symbols are complete already
    symbols += bins
    return symbols


def table_indexes_of_channels(num_channels: int, spatial: Sequence[int]) -> np.ndarray:
    """Table index of every element of a (1, C, *spatial) tensor whose table is its channel (ẑ's tables)."""
    size = int(np.prod(spatial)) if len(spatial) else 1
    return np.repeat(np.arange(num_channels, dtype=np.int64), size)


__all__ = [
    "CategoricalTables",
    "ESCAPE_BITS",
    "SymbolDecoder",
    "codable_symbols",
    "decode_symbols",
    "encode_symbol_groups",
    "encode_symbols",
    "table_indexes_of_channels",
]
