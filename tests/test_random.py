"""Counter-based random bits (DESIGN §5) and the statistics of the stochastic modes."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import precisionlab as pl
from precisionlab.random import normalize_seed, random_bits, splitmix64

MASK = (1 << 64) - 1


def reference_word(seed: int, i: int) -> int:
    """DESIGN §5, with plain Python ints: z = seed + (i+1)*0x9E3779B97F4A7C15 (mod 2^64), then
    z = (z ^ z>>30) * 0xBF58476D1CE4E5B9; z = (z ^ z>>27) * 0x94D049BB133111EB; z ^= z>>31."""
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


# (seed, counter) -> word, computed by hand from the formula above.  Seed 0, counters 0..2
# are also the first three outputs of the reference SplitMix64 generator seeded with 0.
KNOWN = [
    (0, 0, 0xE220A8397B1DCDAF),
    (0, 1, 0x6E789E6AA1B965F4),
    (0, 2, 0x06C45D188009454F),
    (1, 0, 0x910A2DEC89025CC1),
    (42, 7, 0xCCF635EE9E9E2FA4),
    (2**64 - 1, 0, 0xE4D971771B652C20),
    (12345, 2**64 - 2, 0x161DD8CDEA9AC2D8),
    (0x0123456789ABCDEF, 1_000_000, 0x419D3EE200D2FE3F),
]


@pytest.mark.parametrize("seed, counter, word", KNOWN)
def test_splitmix64_known_values(seed, counter, word):
    assert reference_word(seed, counter) == word
    assert splitmix64(seed, counter) == word
    assert int(random_bits(seed, counter, 1, 64)[0]) == word
    for nbits in (1, 7, 23, 53, 63):
        assert int(random_bits(seed, counter, 1, nbits)[0]) == word >> (64 - nbits)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, MASK), start=st.one_of(st.integers(0, 1000), st.integers(0, MASK)),
       count=st.integers(0, 40), nbits=st.integers(1, 64))
def test_random_bits_vectorised_equals_scalar(seed, start, count, nbits):
    got = random_bits(seed, start, count, nbits)
    assert got.dtype == np.uint64 and got.shape == (count,)
    want = [reference_word(seed, (start + k) & MASK) >> (64 - nbits) for k in range(count)]
    assert [int(v) for v in got] == want


def test_seed_is_taken_mod_2_64():
    assert normalize_seed(-1) == MASK
    assert normalize_seed(2**64 + 5) == 5
    assert normalize_seed(np.int64(7)) == 7
    assert np.array_equal(random_bits(-1, 0, 8), random_bits(MASK, 0, 8))
    for bad in (1.0, "1", None, True):
        with pytest.raises(TypeError, match="seed"):
            normalize_seed(bad)
    for nbits in (0, 65):
        with pytest.raises(ValueError, match="nbits"):
            random_bits(0, 0, 1, nbits)


# ---- stochastic rounding: determinism and statistics ------------------------------------

N = 10**6
BF16_ULP1 = 2.0**-7
X1 = np.float32(1 + BF16_ULP1 / 3)            # 1 + about 1/3 ulp of bf16
DELTA = (Fraction(float(X1)) - 1) / Fraction(BF16_ULP1)   # exact discarded fraction of an ulp


def test_sr_is_deterministic_and_index_based():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(10_000).astype(np.float32)
    a = pl.round(x, "bf16", rounding="sr", seed=11)
    assert np.array_equal(a, pl.round(x, "bf16", rounding="sr", seed=11))
    assert not np.array_equal(a, pl.round(x, "bf16", rounding="sr", seed=12))
    # the random word of an element is chosen by its flat C-order index, whatever the shape
    assert np.array_equal(pl.round(x.reshape(100, 100), "bf16", rounding="sr", seed=11).reshape(-1), a)
    # ... so rounding a slice uses different words than rounding the whole array
    part = pl.round(x[5000:], "bf16", rounding="sr", seed=11)
    assert np.array_equal(part, pl.round(x[5000:].copy(), "bf16", rounding="sr", seed=11))
    for mode in ("sr", "sr_equal"):
        r = pl.round(x, "e4m3", rounding=mode, seed=3)
        lo = pl.round(x, "e4m3", rounding="rtz")
        # every result is one of the two neighbours of x
        rup = pl.round(x, "e4m3", rounding="rup")
        rdn = pl.round(x, "e4m3", rounding="rdn")
        assert np.all((r == rup) | (r == rdn))
        assert np.all(np.abs(r) >= np.abs(lo))


def _away_count(mode: str, seed: int, **kw) -> int:
    x = np.full(N, X1, np.float32)
    r = pl.round(x, "bf16", rounding=mode, seed=seed, **kw)
    assert set(np.unique(r).tolist()) <= {1.0, 1.0 + BF16_ULP1}
    return int(np.count_nonzero(r == np.float32(1.0 + BF16_ULP1)))


def test_sr_unbiased():
    """The mean of 10^6 stochastic roundings of x is within 2 standard errors of x, pooled
    over 20 seeds fixed in advance (one seed alone is a single draw: an unlucky seed lands
    outside 2 SE 4.6% of the time); the per-seed z-scores must also look standard normal."""
    p = float(DELTA)
    seeds = range(20)
    counts = [_away_count("sr", seed=s) for s in seeds]
    se1 = BF16_ULP1 * math.sqrt(p * (1 - p) / N)               # SE of one seed's mean
    z = [((1.0 + BF16_ULP1 * k / N) - float(X1)) / se1 for k in counts]
    pooled_mean = 1.0 + BF16_ULP1 * sum(counts) / (N * len(counts))
    pooled_se = se1 / math.sqrt(len(counts))
    assert abs(pooled_mean - float(X1)) <= 2 * pooled_se, (pooled_mean, float(X1), pooled_se)
    chi2 = sum(v * v for v in z)                                # ~ chi^2 with 20 degrees of freedom
    assert 5.92 < chi2 < 45.3, (chi2, z)                        # its 0.1% and 99.9% quantiles
    # and with the opposite sign
    x = np.full(N, -X1, np.float32)
    k_neg = int(np.count_nonzero(pl.round(x, "bf16", rounding="sr", seed=777) == np.float32(-(1 + BF16_ULP1))))
    assert abs(k_neg / N - p) <= 3 * math.sqrt(p * (1 - p) / N)


def test_sr_few_bits_is_biased_as_p3109_says():
    """With N random bits the probability of rounding away is floor(delta*2^N)/2^N
    (P3109 StochasticA): for delta ~ 1/3 and N = 2 that is 1/4, not 1/3."""
    p = math.floor(DELTA * 4) / 4
    assert p == 0.25
    k = _away_count("sr", seed=99, sr_bits=2)
    se = math.sqrt(p * (1 - p) / N)
    assert abs(k / N - p) <= 2 * se
    assert abs(k / N - float(DELTA)) > 50 * se
    # 1 bit: floor(delta*2) = 0, never rounds away
    assert _away_count("sr", seed=99, sr_bits=1) == 0


def test_sr_equal_rounds_away_half_the_time():
    k = _away_count("sr_equal", seed=4242)
    se = math.sqrt(0.25 / N)
    assert abs(k / N - 0.5) <= 2 * se
    # exact inputs never move
    x = np.full(1000, 1.0 + BF16_ULP1, np.float32)
    assert np.array_equal(pl.round(x, "bf16", rounding="sr_equal", seed=1), x)
    assert np.array_equal(pl.round(x, "bf16", rounding="sr", seed=1), x)


def test_sr_neighbouring_elements_independent():
    """Pairs of neighbouring elements both round away with frequency ~ delta^2."""
    x = np.full(N, X1, np.float32)
    away = pl.round(x, "bf16", rounding="sr", seed=31337) != np.float32(1.0)
    p = float(DELTA)
    both = np.mean(away[:-1] & away[1:])
    se = math.sqrt(p * p * (1 - p * p) / (N - 1))
    assert abs(both - p * p) <= 4 * se
