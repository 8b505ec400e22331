"""sodec_pipeline.codec.entropy_coding: constriction's ANS coder driven by compressai-style CDF tables."""

import hashlib
import time

import numpy as np
import pytest
import torch

from sodec_pipeline import BitstreamError
from sodec_pipeline.codec.entropy_coding import (
    ESCAPE_BITS,
    CategoricalTables,
    SymbolDecoder,
    codable_symbols,
    decode_symbols,
    encode_symbol_groups,
    encode_symbols,
)


def integer_tables(num_tables: int = 5) -> CategoricalTables:
    """Tables defined by integer arithmetic only (so the golden bytes below hold on any machine): table k
    has 2k + 3 bins (the last one the escape bin) with triangular weights, as 16-bit CDFs."""
    lengths = [2 * k + 4 for k in range(num_tables)]
    cdf = torch.zeros(num_tables, max(lengths), dtype=torch.int32)
    offsets = []
    for k, length in enumerate(lengths):
        bins = length - 1
        weights = [min(i + 1, bins - i) ** 2 for i in range(bins)]
        scaled = [1 + w * (65536 - bins) // sum(weights) for w in weights]
        scaled[bins // 2] += 65536 - sum(scaled)
        cdf[k, 1:length] = torch.tensor(np.cumsum(scaled), dtype=torch.int32)
        offsets.append(-(bins // 2))
    return CategoricalTables(cdf, torch.tensor(lengths, dtype=torch.int32), torch.tensor(offsets, dtype=torch.int32))


def test_round_trip_with_escapes():
    tables = integer_tables()
    rng = np.random.default_rng(0)
    indexes = rng.integers(0, len(tables), 5000)
    symbols = np.round(rng.normal(0, 1 + indexes)).astype(np.int64)
    symbols[:6] = [40, -40, 1000, -1000, (1 << (ESCAPE_BITS - 1)) - 10, -(1 << (ESCAPE_BITS - 1)) + 10]
    data = encode_symbols(symbols, indexes, tables)
    assert len(data) % 4 == 0
    np.testing.assert_array_equal(decode_symbols(data, indexes, tables), symbols)


def test_values_beyond_the_escape_range_are_clamped_on_their_side():
    tables = integer_tables(1)  # one table: bins for -1, 0, 1 (+ escape)
    symbols = np.array([10**7, -(10**7), 3, -3])
    decoded = decode_symbols(
        encode_symbols(symbols, np.zeros(4, dtype=np.int64), tables), np.zeros(4, dtype=np.int64), tables
    )
    assert decoded[0] > (1 << (ESCAPE_BITS - 2)) and decoded[1] < -(1 << (ESCAPE_BITS - 2))
    assert list(decoded[2:]) == [3, -3]


def test_golden_bytes():
    """The bytes of a fixed message: a change here (another constriction version that quantises tables
    differently) would make streams unreadable across installations."""
    tables = integer_tables()
    indexes = np.arange(200) % len(tables)
    symbols = (np.arange(200) * 7919 % 9) - 4
    data = encode_symbols(symbols, indexes, tables)
    assert hashlib.sha256(data).hexdigest()[:16] == GOLDEN_SHA256_PREFIX
    np.testing.assert_array_equal(decode_symbols(data, indexes, tables), symbols)


GOLDEN_SHA256_PREFIX = "9b09424e42aa5335"


def test_strings_it_did_not_write_raise_bitstream_error():
    tables = integer_tables()
    rng = np.random.default_rng(1)
    indexes = rng.integers(0, len(tables), 300)
    symbols = rng.integers(-2, 3, 300)
    data = encode_symbols(symbols, indexes, tables)
    with pytest.raises(BitstreamError, match="whole number of 32-bit words"):
        decode_symbols(data + b"\x01", indexes, tables)
    with pytest.raises(BitstreamError, match="exactly the announced symbols"):
        decode_symbols(data + b"\x01\x02\x03\x04", indexes, tables)
    # far more symbols than the string holds: the coder goes on from its exhausted state (no read past the
    # end, work proportional to the symbols asked for) and ends empty, so this may decode
    many = rng.integers(0, len(tables), 200_000)
    started = time.perf_counter()
    try:
        assert decode_symbols(data[:8], many, tables).shape == many.shape
    except BitstreamError:
        pass
    assert time.perf_counter() - started < 10
    for _trial in range(200):
        junk = rng.integers(0, 256, 4 * int(rng.integers(0, 40)), dtype=np.uint8).tobytes()
        try:
            out = decode_symbols(junk, indexes, tables)
        except BitstreamError:
            continue
        assert out.shape == indexes.shape


def test_tables_are_checked():
    with pytest.raises(ValueError, match="disagree"):
        CategoricalTables(
            torch.zeros(2, 4, dtype=torch.int32),
            torch.tensor([4], dtype=torch.int32),
            torch.tensor([0, 0], dtype=torch.int32),
        )
    flat = torch.tensor([[0, 65536, 65536, 65536]], dtype=torch.int32)
    with pytest.raises(ValueError, match="strictly increasing"):
        CategoricalTables(flat, torch.tensor([4], dtype=torch.int32), torch.tensor([0], dtype=torch.int32))
    tables = integer_tables()
    with pytest.raises(ValueError, match="table indexes"):
        encode_symbols(np.zeros(3, dtype=np.int64), np.array([0, 1, len(tables)]), tables)


def test_groups_decode_one_after_the_other_and_one_group_is_encode_symbols():
    """encode_symbol_groups: the checkerboard's two passes in one string; the decoder reads the first group before it
    knows the second's tables."""
    tables = integer_tables()
    rng = np.random.default_rng(2)
    first_indexes, second_indexes = rng.integers(0, len(tables), 700), rng.integers(0, len(tables), 500)
    first = np.round(rng.normal(0, 2 + first_indexes)).astype(np.int64)
    second = np.round(rng.normal(0, 2 + second_indexes)).astype(np.int64)
    first[:2], second[:2] = [300, -300], [5000, -5000]  # escapes in both groups
    data = encode_symbol_groups([(first, first_indexes), (second, second_indexes)], tables)
    decoder = SymbolDecoder(data)
    np.testing.assert_array_equal(decoder.decode(first_indexes, tables), first)
    np.testing.assert_array_equal(decoder.decode(second_indexes, tables), second)
    decoder.finish()
    assert encode_symbol_groups([(first, first_indexes)], tables) == encode_symbols(first, first_indexes, tables)
    assert (
        abs(
            len(data)
            - len(encode_symbols(first, first_indexes, tables))
            - len(encode_symbols(second, second_indexes, tables))
        )
        <= 4
    )  # one string: no more than a word apart from two
    decoder = SymbolDecoder(data)
    decoder.decode(first_indexes, tables)
    with pytest.raises(BitstreamError, match="exactly the announced symbols"):
        decoder.finish()  # the second group is left
    with pytest.raises(BitstreamError, match="whole number"):
        SymbolDecoder(data[:-1])


def test_codable_symbols_are_what_the_decoder_gets_back():
    tables = integer_tables(3)
    indexes = np.array([0, 1, 2, 2, 0, 1], dtype=np.int64)
    symbols = np.array([10**7, -(10**7), 3, -40000, 40000, 0], dtype=np.int64)
    decoded = decode_symbols(encode_symbols(symbols, indexes, tables), indexes, tables)
    clamped = codable_symbols(torch.from_numpy(symbols), torch.from_numpy(indexes), tables)
    np.testing.assert_array_equal(clamped.numpy(), decoded)
    assert clamped[2] == 3 and clamped[5] == 0 and clamped[0] < 10**7 and clamped[3] > -40000
