"""Counter-based random bits, identical on every backend (DESIGN §5).

The word for counter ``i`` (the flat C-order index of an output element, offset
by the caller for multi-event operations) is SplitMix64's finaliser applied to
``z = seed + (i + 1) * 0x9E3779B97F4A7C15 (mod 2^64)``.  Being a pure function
of ``(seed, i)`` it needs no state, so any thread count or launch shape gives the
same bits.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GOLDEN_GAMMA", "MIX1", "MIX2", "normalize_seed", "splitmix64", "random_bits"]

GOLDEN_GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1


def normalize_seed(seed: object) -> int:
    """Validate a seed: any int (NumPy integers too), taken modulo 2^64."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed={seed!r} must be an int (any value, taken modulo 2^64)")
    return int(seed) & _MASK64


def splitmix64(seed: int, counter: int) -> int:
    """The 64-bit random word for one counter: the readable scalar definition."""
    z = (seed + (counter + 1) * GOLDEN_GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * MIX2) & _MASK64
    return z ^ (z >> 31)


def random_bits(seed: int, start: int, count: int, nbits: int = 64) -> np.ndarray:
    """Top ``nbits`` of the words for counters ``start .. start+count-1`` (uint64 array)."""
    if not 1 <= nbits <= 64:
        raise ValueError(f"nbits={nbits} not allowed; must be 1..64")
    seed = normalize_seed(seed)
    i = np.arange(count, dtype=np.uint64) + np.uint64(start & _MASK64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (i + np.uint64(1)) * np.uint64(GOLDEN_GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
        z = z ^ (z >> np.uint64(31))
    return z >> np.uint64(64 - nbits)
