"""Dropout masks from a counter-based generator: each mask bit is a hash of where it is used.

Whether unit j of layer l's input is dropped for the sample at position
``pos`` of epoch ``epoch``'s order is a function of those numbers and the
run's dropout seed alone, not of a stream that has to be drawn in order.
So masks are never stored or carried over: the NumPy reference
(:meth:`mlp.network.Network.dropout_masks`) and the Numba kernels
(``_row_key``/``_keep_bits`` in :mod:`mlp.kernels`, the same formulas) draw
the same masks bit for bit, whatever the number of threads, the chunking of
an epoch, or where a ``--resume`` restarts it.

The hash is SplitMix64's finalizer ``mix`` (Steele, Lea and Flood 2014),
applied to 64-bit words (all arithmetic modulo 2⁶⁴)::

    row key   k = mix(mix(mix(mix(seed) + γ(epoch+1)) + γ(pos+1)) + γ(layer+1))
    unit bits u = mix(k + γ(j+1)) >> 11                (53 uniform bits)
    kept  ⟺  u ≥ ⌈p · 2⁵³⌉   ⟺   u / 2⁵³ ≥ p           (probability 1 − p)

with γ = 0x9E3779B97F4A7C15, SplitMix64's increment. Layer 0 is the input
features, layer l the output of hidden layer l. A kept unit is multiplied
by 1/(1 − p) (inverted dropout), a dropped one by 0.
"""

import math

import numpy as np

GAMMA = 0x9E3779B97F4A7C15
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
#: unit bits are the top 53 bits of a hash: a uniform in [0, 1) times 2⁵³
UNIT_BITS = 53


def mix(z):
    """SplitMix64's finalizer of the uint64 array (or scalar) z, modulo 2⁶⁴ (a new array)."""
    z = np.array(z, dtype=np.uint64)
    t = np.empty_like(z)
    with np.errstate(over="ignore"):     # in place, one scratch array: the masks' are large
        for shift, factor in ((30, MIX1), (27, MIX2), (31, None)):
            np.right_shift(z, np.uint64(shift), out=t)
            np.bitwise_xor(z, t, out=z)
            if factor is not None:
                np.multiply(z, np.uint64(factor), out=z)
    return z


def _step(key, count):
    """key + γ · (count + 1), modulo 2⁶⁴ (count: an int or an array of them)."""
    with np.errstate(over="ignore"):
        return key + np.uint64(GAMMA) * (np.asarray(count, dtype=np.uint64) + np.uint64(1))


def row_keys(seed, epoch, positions, layer):
    """The row key k of each sample position in ``positions`` (see the module docstring)."""
    k = mix(_step(mix(np.uint64(int(seed) % 2 ** 64)), int(epoch)))
    return mix(_step(mix(_step(k, np.asarray(positions, dtype=np.int64))), int(layer)))


def threshold(p):
    """⌈p · 2⁵³⌉: a unit is kept when its 53 bits are at least this (p · 2⁵³ is exact)."""
    return math.ceil(float(p) * 2.0 ** UNIT_BITS)


def keep_scale(p, dtype):
    """1/(1 − p) in ``dtype``: the factor of a kept unit (1 − p rounded to dtype first)."""
    dtype = np.dtype(dtype)
    return dtype.type(1) / dtype.type(1 - p)


def kept(seed, epoch, positions, layer, width, p):
    """(len(positions), width) bools: which units of layer ``layer`` are kept for each row."""
    keys = row_keys(seed, epoch, positions, layer)[:, None]
    bits = mix(_step(keys, np.arange(width))) >> np.uint64(64 - UNIT_BITS)
    return bits >= np.uint64(threshold(p))


def mask(seed, epoch, positions, layer, width, p, dtype):
    """Layer ``layer``'s inverted-dropout mask of the rows at ``positions``: 0 or 1/(1 − p)."""
    dtype = np.dtype(dtype)
    keep = kept(seed, epoch, positions, layer, width, p)
    return np.where(keep, keep_scale(p, dtype), dtype.type(0))


def check_rates(rates, n_layers):
    """``rates`` as a list of floats, one per weight layer, each in [0, 1); a ValueError if not."""
    rates = [float(p) for p in rates]
    if len(rates) != n_layers:
        raise ValueError(f"dropout needs one rate per weight layer ({n_layers}), "
                         f"got {len(rates)}")
    for p in rates:
        if not 0 <= p < 1:
            raise ValueError(f"dropout rates must be in [0, 1), got {p!r}")
    return rates
