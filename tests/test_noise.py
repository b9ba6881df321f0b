"""Keyed draws: layout independence, ranges and moments."""

import numpy as np

from diffdac import noise


def test_a_learners_draws_do_not_depend_on_its_block():
    whole = noise.Stream(3, noise.ACTION, np.arange(10), 4).uniform(17)
    block = noise.Stream(3, noise.ACTION, np.array([6, 7]), 4).uniform(17)
    assert np.array_equal(whole[6:8], block)
    assert np.array_equal(noise.uniform(3, noise.ACTION, np.arange(10), 4, 17), whole)


def test_uniform_draws_differ_by_step_seed_and_stream_and_fill_the_unit_interval():
    stream = noise.Stream(0, noise.ACTION, np.arange(100), 10)
    u = np.concatenate([stream.uniform(step).ravel() for step in range(20)])
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 1800  # 20,000 draws, 2,000 a bin expected
    assert not np.array_equal(stream.uniform(0), stream.uniform(1))
    assert not np.array_equal(stream.uniform(0), noise.Stream(1, noise.ACTION, np.arange(100), 10).uniform(0))
    assert not np.array_equal(stream.uniform(0), noise.Stream(0, noise.DELAY, np.arange(100), 10).uniform(0))


def test_normal_draws_are_standard():
    z = np.concatenate(
        [noise.Stream(0, noise.ACTION, np.arange(100), 10, 6).normal(step).ravel() for step in range(20)]
    )
    assert z.shape == (60_000,)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.02


def test_a_stream_draws_from_the_key_that_key_folds():
    """Stream folds the scalar head with Python ints; the draws must still come from `_key(seed, stream, step, k, e, d)`."""
    learners = np.array([0, 5, 2**20])
    k, e, d = (
        learners.astype(np.uint64)[:, None, None],
        np.arange(3, dtype=np.uint64)[None, :, None],
        np.arange(2, dtype=np.uint64)[None, None, :],
    )
    for seed, step in ((0, 0), (7, 12345), (2**40 + 3, 2**33)):
        expected = (noise._key(seed, noise.ACTION, step, k, e, d) >> np.uint64(11)).astype(np.float64) * 2.0**-53
        assert np.array_equal(noise.Stream(seed, noise.ACTION, learners, 3, 2).uniform(step), expected)
