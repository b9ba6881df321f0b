"""Compressors: the bytes of each message by hand, and how far the decoded rows may be from the rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffdac.errors import ConfigError
from diffdac.network import compress

K, P = 3, 1000
LEARNERS = np.array([0, 4, 7])


def _rows(seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(K, P, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize(
    ("spec", "dtype", "by_hand"),
    [
        ("none", torch.float32, 4 * P),
        ("none", torch.float64, 8 * P),
        ("top-k:0.1", torch.float32, 100 * (4 + 4)),  # 100 float32 values and 100 int32 indices
        ("top-k:0.01", torch.float64, 10 * (8 + 4)),
        ("random-k:0.1", torch.float32, 100 * 4),  # values only: receivers draw the same entries
        ("qsgd:4", torch.float32, 4 + P * 4 // 8),  # one float32 scale and 4 bits per entry
        ("qsgd:3", torch.float32, 4 + 3 * math.ceil(P / 8)),  # bit planes of ceil(P / 8) bytes each
        ("qsgd:5", torch.float64, 8 + 5 * P // 8),
        ("sign", torch.float32, 4 + P // 8),  # one scale and a bit per entry
    ],
)
def test_a_message_is_the_bytes_counted_by_hand(spec, dtype, by_hand):
    codec = compress.parse(spec, seed=1)
    message, _ = codec.compress(_rows(dtype=dtype), LEARNERS, 5)
    assert message.dtype == torch.uint8
    assert message.shape == (K, by_hand) and codec.row_bytes(P, dtype) == by_hand


def test_none_decodes_to_the_rows_bit_for_bit():
    rows = _rows()
    assert torch.equal(compress.parse("none").compress(rows, LEARNERS, 0)[1], rows)


def test_top_k_keeps_the_k_largest_entries_exactly_and_zeroes_the_rest():
    rows = _rows()
    _, decoded = compress.parse("top-k:0.05").compress(rows, LEARNERS, 0)
    kept = decoded != 0
    assert (kept.sum(1) == 50).all()
    assert torch.equal(decoded[kept], rows[kept])
    smallest_kept = rows.abs().where(kept, torch.inf).min(1).values
    largest_dropped = rows.abs().where(~kept, -torch.inf).max(1).values
    assert (smallest_kept >= largest_dropped).all()
    # the contraction CHOCO needs: ||v - Q(v)||^2 <= (1 - k/P) ||v||^2
    error = (rows - decoded).square().sum(1)
    assert (error <= (1 - 50 / P) * rows.square().sum(1)).all()


def test_random_k_keeps_k_entries_drawn_per_learner_and_round():
    rows = _rows()
    codec = compress.parse("random-k:0.1", seed=3)
    _, decoded = codec.compress(rows, LEARNERS, 2)
    kept = decoded != 0
    assert (kept.sum(1) == 100).all() and torch.equal(decoded[kept], rows[kept])
    again = codec.compress(rows[1:2], LEARNERS[1:2], 2)[1]
    assert torch.equal(again, decoded[1:2])  # learner 4's entries whatever block it is in
    assert not torch.equal(codec.compress(rows, LEARNERS, 3)[1] != 0, kept)  # a new round draws others
    assert not torch.equal(kept[0], kept[1])  # and each learner its own


def test_random_k_is_unbiased_once_scaled_by_p_over_k():
    rows = _rows()[:1]
    codec = compress.parse("random-k:0.1")
    mean = sum(codec.compress(rows, LEARNERS[:1], r)[1] for r in range(2000)) / 2000 * 10
    assert (mean - rows).abs().max() < 0.35 * rows.abs().max()
    assert (mean - rows).abs().mean() < 0.1 * rows.abs().mean()


def test_qsgd_is_unbiased_in_expectation_over_many_draws_before_the_tau_scaling():
    rows = _rows()[:1]
    codec = compress.parse("qsgd:4", seed=2)
    draws = 3000
    mean = sum(codec.compress(rows, LEARNERS[:1], r)[1] for r in range(draws)) / draws * codec.tau(P)
    # each draw of an entry lies within one level ||v|| / s of it: the mean of n within ||v|| / (s sqrt(n)) or so
    level = float(rows.norm()) / codec.levels
    assert (mean - rows).abs().max() < 5 * level / math.sqrt(draws)
    assert (mean - rows).abs().mean() < level / math.sqrt(draws)


def test_qsgd_decodes_to_levels_of_the_norm_and_contracts_as_chocos_paper_says():
    rows = _rows()
    codec = compress.parse("qsgd:4")
    _, decoded = codec.compress(rows, LEARNERS, 0)
    unit = rows.norm(dim=1, keepdim=True) / (codec.levels * codec.tau(P))
    levels = decoded / unit
    assert torch.allclose(levels, levels.round(), atol=1e-3) and levels.abs().max() <= codec.levels
    assert ((decoded == 0) | (decoded.sign() == rows.sign())).all()
    error = (rows.double() - decoded.double()).square().sum(1)
    # E ||Q(v)/tau - v||^2 <= (1 - 1/tau) ||v||^2; one draw of 1000 entries sits close to its expectation
    assert (error <= (1 - 0.5 / codec.tau(P)) * rows.double().square().sum(1)).all()


def test_qsgd_draws_are_keyed_by_learner_and_round_not_by_the_block():
    rows = _rows()
    codec = compress.parse("qsgd:4", seed=9)
    whole = codec.compress(rows, LEARNERS, 7)[0]
    assert torch.equal(codec.compress(rows[2:], LEARNERS[2:], 7)[0], whole[2:])
    assert not torch.equal(codec.compress(rows, LEARNERS, 8)[0], whole)


def test_sign_sends_the_signs_and_the_mean_magnitude():
    rows = _rows()
    _, decoded = compress.parse("sign").compress(rows, LEARNERS, 0)
    scale = rows.abs().mean(1, keepdim=True)
    assert torch.allclose(decoded.abs(), scale.expand(K, P))
    assert ((decoded > 0) == (rows >= 0)).all()
    error = (rows - decoded).square().sum(1)
    exact = rows.square().sum(1) - rows.abs().sum(1).square() / P  # ||v||^2 - ||v||_1^2 / P
    assert torch.allclose(error, exact, rtol=1e-4)


def test_bits_pack_and_unpack_for_any_width():
    codes = torch.randint(0, 8, (2, 13), generator=torch.Generator().manual_seed(0))
    packed = compress.pack_bits(codes, 3)
    assert packed.shape == (2, 3 * 2)  # three bit planes of two bytes
    assert torch.equal(compress.unpack_bits(packed, 13, 3), codes)


def test_a_zero_row_decodes_to_zero():
    zeros = torch.zeros(K, P)
    for spec in ("top-k:0.1", "random-k:0.1", "qsgd:4", "sign", "none"):
        assert torch.equal(compress.parse(spec).compress(zeros, LEARNERS, 0)[1], zeros), spec


@pytest.mark.parametrize(
    "spec", ["", "top-k", "top-k:0", "top-k:1.5", "top-k:x", "qsgd:1", "qsgd:17", "sign:2", "gzip"]
)
def test_a_bad_spec_is_one_config_error(spec):
    with pytest.raises(ConfigError, match="is not a compressor"):
        compress.parse(spec)
