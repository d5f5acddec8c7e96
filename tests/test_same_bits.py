"""The fixed set of runs of tests/bitmatrix.py.

Every thread count gives the same bits, and both backends agree.

The same set, run as a script at two commits (see bitmatrix.py), is how a
refactoring of the kernels is shown to change no bit of any result.
"""

import itertools

import bitmatrix
import numpy as np
import pytest

pytest.importorskip("numba", reason="the Numba backend's runs need numba")

DATA = bitmatrix.sparse_data()
CASES = list(itertools.product(bitmatrix.DTYPES, bitmatrix.OPTIMIZERS, bitmatrix.BATCHES,
                               bitmatrix.HIDDEN))
#: the backends' results differ by the order of some sums: round-off, grown over one epoch
TOL = {"float32": 2e-4, "float64": 1e-10}


@pytest.mark.parametrize("dtype, optimizer, batch, hidden", CASES,
                         ids=[bitmatrix.key(c) for c in CASES])
def test_threads_change_no_bit_and_the_backends_agree(dtype, optimizer, batch, hidden):
    one = bitmatrix.run("numba", dtype, optimizer, 1, batch, hidden, DATA)
    two = bitmatrix.run("numba", dtype, optimizer, 2, batch, hidden, DATA)
    ref = bitmatrix.run("numpy", dtype, optimizer, 1, batch, hidden, DATA)
    assert one.keys() == two.keys() == ref.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)
        scale = max(1.0, float(np.abs(ref[name]).max()))
        np.testing.assert_allclose(one[name], ref[name], rtol=0, atol=TOL[dtype] * scale,
                                   err_msg=name)
