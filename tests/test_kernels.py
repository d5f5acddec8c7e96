"""Every Numba kernel of mlp.kernels against its NumPy twin, on random shapes and values.

Float64 comparisons are tight (1e-12 relative to the largest entry): the
kernels only reorder sums. Float32 ones allow a few float32 ulps. The SGD
updates must match bit for bit: they do the reference's arithmetic in its
order. Shapes include ones large enough for the BLAS branches
(:data:`mlp.kernels.BLAS_MIN_FLOPS`) and batch sizes of 1. Every kernel is run
in both dtypes: float32 is the default, and the one with kernel-only code
(the polynomial exp, AVX-512's compress).
"""

import contextlib
import platform
import re

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

pytest.importorskip("numba", reason="numba is not installed: the kernels need it")

from mlp import kernels as K  # noqa: E402
from mlp import kernels_reference as R  # noqa: E402
from mlp.optimizers import adam_step_size  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
KINDS = [K.SIGMOID, K.TANH, K.RELU, K.IDENTITY]
DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-12, np.float32: 2e-6}
NO_DROPOUT = {dtype: K.dropout_of(None, 1, dtype) for dtype in DTYPES}


def close(actual, expected, dtype=np.float64):
    """Equal within round-off, measured against the largest entry (sums are reordered)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOL[dtype] * scale)


def sparse_uint8(rng, n, n_in, density=0.2):
    """Image-like uint8 rows: mostly zeros, the rest 1 … 255."""
    X = rng.integers(1, 256, (n, n_in)).astype(np.uint8)
    X[rng.random((n, n_in)) > density] = 0
    return X


def sparse_batch(rng, n, n_in, dtype=np.float64, density=0.3):
    """A random sparse batch (nnz, cols, vals).

    Built by the (tested) gather_sparse from float rows.
    """
    X = rng.standard_normal((n, n_in)).astype(dtype)
    X[rng.random(X.shape) > density] = 0
    nnz = np.zeros(n, np.int64)
    cols, vals = np.empty((n, n_in), np.int32), np.empty((n, n_in), dtype)
    K.gather_sparse(X, np.arange(n), dtype(1), K.SparseBatch(nnz, cols, vals))
    return X, nnz, cols, vals


shapes = st.tuples(st.integers(1, 9), st.integers(1, 21), st.integers(1, 13), st.integers(0, 2**31))


# ------------------------------------------------------------------ gather
@SETTINGS
@given(shapes, st.sampled_from([np.uint8, np.float64, np.float32]), st.sampled_from(DTYPES))
def test_gather_dense(shape, xdtype, dtype):
    n, n_in, _, seed = shape
    rng = np.random.default_rng(seed)
    X = sparse_uint8(rng, 30, n_in).astype(xdtype)
    rows = rng.integers(0, 30, n)
    scale = dtype(1 / 255) if xdtype == np.uint8 else dtype(1)
    out = K.gather_dense(X, rows, scale, np.empty((n, n_in), dtype))
    np.testing.assert_array_equal(out, R.gather_dense(X, rows, scale, dtype))


@SETTINGS
@given(shapes, st.sampled_from([np.uint8, np.float64]), st.floats(0.0, 1.0),
       st.sampled_from(DTYPES))
def test_gather_sparse(shape, xdtype, density, dtype):
    """uint8 rows of 8k pixels go through _compact_row: AVX-512's compress for float32 values
    where the machine has it, the 64-bit-word fallback otherwise and for float64 values (so
    the fallback is tested through gather_sparse on every machine)."""
    n, n_in, _, seed = shape
    n_in = 8 * n_in if xdtype == np.uint8 and seed % 2 else n_in   # the 64-bit-word path too
    rng = np.random.default_rng(seed)
    X = sparse_uint8(rng, 30, n_in, density).astype(xdtype)
    if xdtype == np.float64:
        X[X != 0] -= 128.0          # negatives too: the zero-block test must not cancel
    rows = rng.integers(0, 30, n)
    scale = dtype(1 / 255) if xdtype == np.uint8 else dtype(1)
    nnz = np.full(n, -1, np.int64)
    cols, vals = np.empty((n, n_in), np.int32), np.empty((n, n_in), dtype)
    total = K.gather_sparse(X, rows, scale, K.SparseBatch(nnz, cols, vals))
    ref_nnz, ref_cols, ref_vals = R.gather_sparse(X, rows, scale, dtype)
    assert total == ref_nnz.sum()
    np.testing.assert_array_equal(nnz, ref_nnz)
    for s in range(n):
        np.testing.assert_array_equal(cols[s, :nnz[s]], ref_cols[s, :nnz[s]])
        np.testing.assert_array_equal(vals[s, :nnz[s]], ref_vals[s, :nnz[s]])


@SETTINGS
@given(shapes, st.floats(0.0, 1.0), st.sampled_from(DTYPES))
def test_gather_csr(shape, density, dtype):
    n, n_in, _, seed = shape
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((30, n_in)).astype(dtype)
    X[rng.random(X.shape) > density] = 0
    Xs = sp.csr_matrix(X)
    rows = rng.integers(0, 30, n)
    width = max(1, int(np.diff(Xs.indptr).max()))
    batch = K.SparseBatch(np.full(n, -1, np.int64), np.empty((n, width), np.int32),
                          np.empty((n, width), dtype))
    total = K.gather_csr(K.CSR(Xs.indptr, Xs.indices, Xs.data), rows, batch)
    assert total == np.count_nonzero(X[rows])
    np.testing.assert_array_equal(R.densify(batch, n_in), R.gather_csr(Xs, rows))
    for s in range(n):                              # columns increase along each row
        assert np.all(np.diff(batch.cols[s, :batch.nnz[s]]) > 0)


@pytest.mark.parametrize("compact, dtype", [("words", np.float32), ("words", np.float64),
                                            ("compressed", np.float32)])
@pytest.mark.parametrize("n_in, density", [(8, 0.5), (16, 0.9), (24, 0.3), (40, 0.05), (784, 0.2)])
def test_both_row_compactions_against_the_twin(compact, dtype, n_in, density):
    """The two ways to gather a uint8 row's non-zeros agree bit for bit with the twin.

    One takes 8 pixels a word (the fallback, run on every machine); the other
    16, with AVX-512 (float32 values only), run where the CPU has it.
    """
    if compact == "compressed" and not K.COMPRESS:
        pytest.skip("this machine (or NUMBA_CPU_NAME) gives no AVX-512 compress instruction")
    fn = K._compact_words if compact == "words" else K._compact_compressed
    rng = np.random.default_rng(n_in)
    X = sparse_uint8(rng, 12, n_in, density)
    X[3] = 0                                        # a blank row
    X[4] = 255                                      # a full one
    scale = dtype(1 / 255)
    ref_nnz, ref_cols, ref_vals = R.gather_sparse(X, np.arange(12), scale, dtype)
    Xf = X.reshape(X.size)
    for r in range(12):
        cs, vs = np.full(n_in, -1, np.int32), np.full(n_in, np.nan, dtype)
        k = fn(Xf, Xf.view(np.uint64), r * n_in, n_in, scale, cs, vs)
        assert k == ref_nnz[r]
        np.testing.assert_array_equal(cs[:k], ref_cols[r, :k])
        np.testing.assert_array_equal(vs[:k], ref_vals[r, :k])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_in", [19, 24, 40])   # 24, 40: 8-pixel words; 40: 16-blocks + a tail
def test_gather_sparse_sees_a_lone_pixel_in_every_position(n_in, dtype):
    X = np.zeros((n_in, n_in), np.uint8)
    X[np.arange(n_in), np.arange(n_in)] = 7      # one non-zero per row, at every offset
    nnz = np.zeros(n_in, np.int64)
    cols, vals = np.empty((n_in, n_in), np.int32), np.empty((n_in, n_in), dtype)
    assert K.gather_sparse(X, np.arange(n_in), dtype(1), K.SparseBatch(nnz, cols, vals)) == n_in
    np.testing.assert_array_equal(nnz, 1)
    np.testing.assert_array_equal(cols[:, 0], np.arange(n_in))
    np.testing.assert_array_equal(vals[:, 0], np.full(n_in, 7, dtype))


@SETTINGS
@given(shapes, st.booleans(), st.sampled_from(DTYPES))
def test_gather_targets(shape, labels_given, dtype):
    n, _, n_out, seed = shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 40, n)
    if labels_given:
        labels, T = rng.integers(0, n_out, 40), np.empty((0, n_out))
    else:
        labels, T = np.empty(0, np.int64), rng.random((40, n_out))
    Y = K.gather_targets(labels, T.astype(dtype), rows, np.empty((n, n_out), dtype))
    np.testing.assert_array_equal(Y, R.gather_targets(labels, T.astype(dtype), rows, n_out,
                                                      dtype))


# ----------------------------------------------------------------- forward
@SETTINGS
@given(shapes, st.sampled_from(KINDS), st.sampled_from([np.float64, np.float32]))
def test_bias_activation(shape, kind, dtype):
    n, _, n_out, seed = shape
    rng = np.random.default_rng(seed)
    z = (3 * rng.standard_normal((n, n_out))).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    expected = R.bias_activation(z, b, kind)
    close(K.bias_activation(z.copy(), b, kind), expected, dtype)


@SETTINGS
@given(shapes, st.sampled_from(KINDS), st.sampled_from([np.float64, np.float32]))
def test_sparse_forward(shape, kind, dtype):
    n, n_in, n_out, seed = shape
    rng = np.random.default_rng(seed)
    X, nnz, cols, vals = sparse_batch(rng, n, n_in, dtype)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    expected = R.sparse_forward(K.SparseBatch(nnz, cols, vals), W, b, kind)
    close(expected, R.dense_forward(X, W, b, kind), dtype)
    close(K.sparse_forward(K.SparseBatch(nnz, cols, vals), W, b, kind,
                           np.empty((n, n_out), dtype)), expected, dtype)


@SETTINGS
@given(shapes, st.sampled_from([np.uint8, np.float64]), st.sampled_from(KINDS),
       st.sampled_from([np.float64, np.float32]))
def test_sparse_gather_forward_par_is_the_serial_pair_bit_for_bit(shape, xdtype, kind, dtype):
    n, n_in, n_out, seed = shape
    n_in = 8 * n_in if xdtype == np.uint8 and seed % 2 else n_in   # the 64-bit-word path too
    rng = np.random.default_rng(seed)
    X = sparse_uint8(rng, 30, n_in, 0.3).astype(xdtype)
    rows = rng.integers(0, 30, n)
    scale = dtype(1 / 255) if xdtype == np.uint8 else dtype(1)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    buffers = [K.SparseBatch(np.full(n, -1, np.int64), np.empty((n, n_in), np.int32),
                             np.empty((n, n_in), dtype)) for _ in range(2)]
    K.gather_sparse(X, rows, scale, buffers[0])
    serial = K.sparse_forward(buffers[0], W, b, kind, np.empty((n, n_out), dtype))
    parallel = K.sparse_gather_forward_par(X, rows, scale, buffers[1], (W, b, kind),
                                           np.empty((n, n_out), dtype), NO_DROPOUT[dtype], 0,
                                           K.no_head(dtype))
    np.testing.assert_array_equal(parallel, serial)
    (nnz, cols, vals), (nnz2, cols2, vals2) = buffers
    np.testing.assert_array_equal(nnz2, nnz)
    for s in range(n):
        np.testing.assert_array_equal(cols2[s, :nnz[s]], cols[s, :nnz[s]])
        np.testing.assert_array_equal(vals2[s, :nnz[s]], vals[s, :nnz[s]])
    x = R.gather_dense(X, rows, scale, dtype)
    close(parallel, R.dense_forward(x, W, b, kind), dtype)


@SETTINGS
@given(shapes, st.sampled_from(KINDS), st.sampled_from(DTYPES))
def test_sparse_gather_forward_par_of_a_gathered_batch_is_the_serial_kernel_bit_for_bit(
        shape, kind, dtype):
    """An empty X (CSR data): the batch is gathered already, only the forward pass runs."""
    n, n_in, n_out, seed = shape
    rng = np.random.default_rng(seed)
    X, nnz, cols, vals = sparse_batch(rng, 40 + n, n_in, dtype)
    batch = K.SparseBatch(nnz, cols, vals)
    before = [a.copy() for a in batch]
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    serial = K.sparse_forward(batch, W, b, kind, np.empty((len(nnz), n_out), dtype))
    dropout = K.dropout_of([0.5], 1, dtype, seed=3)      # done by gather_csr's caller: not here
    parallel = K.sparse_gather_forward_par(np.empty((0, n_in), dtype), np.arange(len(nnz)),
                                           dtype(1), batch, (W, b, kind),
                                           np.empty((len(nnz), n_out), dtype), dropout, 0,
                                           K.no_head(dtype))
    np.testing.assert_array_equal(parallel, serial)
    for a, a0 in zip(batch, before):
        np.testing.assert_array_equal(a, a0)               # the batch is left as it was
    close(parallel, R.sparse_forward(batch, W, b, kind), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, n_in, n_out", [(3, 7, 5), (1, 1, 1), (64, 300, 120)])   # last: BLAS
@pytest.mark.parametrize("kind", KINDS)
def test_dense_forward(n, n_in, n_out, kind, dtype):
    rng = np.random.default_rng(n + n_in)
    a = rng.standard_normal((n, n_in)).astype(dtype)
    W = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    out = K.dense_forward(a, np.ascontiguousarray(W.T), b, kind, np.empty((n, n_out), dtype))
    assert out.dtype == dtype
    close(out, R.dense_forward(a, W, b, kind), dtype)


# ----------------------------------------------------------------- dropout
@SETTINGS
@given(st.integers(0, 2**64 - 1), st.integers(0, 10**6), st.integers(0, 10**7),
       st.integers(0, 9))
def test_row_key_is_the_reference_hash(seed, epoch, pos, layer):
    got = K.row_key(np.uint64(seed), np.int64(epoch), pos, layer)
    assert got == R.row_key(seed, epoch, pos, layer)


@SETTINGS
@given(shapes, st.sampled_from([0.2, 0.5, 0.9]), st.sampled_from([np.float64, np.float32]))
def test_drop_rows(shape, p, dtype):
    """The kernel draws the reference's masks bit for bit, and multiplies exactly as it."""
    n, n_in, layer, seed = shape
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n_in)).astype(dtype)
    rates = [0.0] * (layer + 1)
    rates[layer] = p
    dropout = K.dropout_of(rates, layer + 1, dtype, seed=seed, epoch=seed % 7)
    mask, out = np.empty_like(a), np.empty_like(a)
    K.drop_rows(a, layer, dropout, seed % 1000, mask, out)
    mask_ref, out_ref = R.drop_rows(a, layer, dropout, seed % 1000)
    np.testing.assert_array_equal(mask, mask_ref)
    np.testing.assert_array_equal(out, out_ref)


@SETTINGS
@given(shapes, st.sampled_from([np.uint8, np.float64]), st.sampled_from([np.float64, np.float32]))
def test_drop_entries_serial_and_in_the_parallel_gather(shape, xdtype, dtype):
    """Input dropout removes exactly the reference's dropped non-zeros, in both gathers."""
    n, n_in, n_out, seed = shape
    rng = np.random.default_rng(seed)
    X = sparse_uint8(rng, 30, n_in, 0.4).astype(xdtype)
    rows = rng.integers(0, 30, n)
    scale = dtype(1 / 255) if xdtype == np.uint8 else dtype(1)
    dropout = K.dropout_of([0.3, 0.0], 2, dtype, seed=seed, epoch=2)
    batch = K.sparse_buffers(n, np.empty((n_in, 1), dtype))
    K.gather_sparse(X, rows, scale, batch)
    ref = R.drop_entries(batch, n_in, dropout, 40)
    K.drop_entries(batch, n, dropout, 40)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    par = K.sparse_buffers(n, W)
    out = K.sparse_gather_forward_par(X, rows, scale, par, (W, b, K.TANH),
                                      np.empty((n, n_out), dtype), dropout, 40, K.no_head(dtype))
    for got in (batch, par):
        np.testing.assert_array_equal(got.nnz, ref.nnz)
        for s in range(n):
            np.testing.assert_array_equal(got.cols[s, :ref.nnz[s]], ref.cols[s, :ref.nnz[s]])
            np.testing.assert_array_equal(got.vals[s, :ref.nnz[s]], ref.vals[s, :ref.nnz[s]])
    np.testing.assert_array_equal(out, K.sparse_forward(batch, W, b, K.TANH,
                                                        np.empty((n, n_out), dtype)))


# ------------------------------------------------------------------ output
LOSS_PAIRS = ([(K.CE, K.SOFTMAX), (K.BCE, K.SIGMOID), (K.POISSON, K.EXP)]
              + [(K.MSE, kind) for kind in KINDS])


@SETTINGS
@given(shapes, st.sampled_from(LOSS_PAIRS), st.sampled_from([np.float64, np.float32]))
def test_output_delta(shape, pair, dtype):
    n, _, n_out, seed = shape
    loss, out_kind = pair
    rng = np.random.default_rng(seed)
    z = (4 * rng.standard_normal((n, n_out))).astype(dtype)
    if loss == K.CE and seed % 2:         # soft targets, rows not summing to 1, half the time
        Y = (2 * rng.random((n, n_out))).astype(dtype)
    elif loss == K.CE:
        Y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, n)]
    elif loss == K.POISSON:               # counts, zeros included (0 log 0 = 0)
        z /= 4
        Y = rng.poisson(2.0, (n, n_out)).astype(dtype)
    else:
        Y = rng.random((n, n_out)).astype(dtype)
    w = rng.uniform(0, 3, n).astype(dtype) if seed % 3 == 0 else None     # sample weights
    value, yhat, delta = R.output_delta(z, Y, K.Model(K.SIGMOID, loss, out_kind), w)
    z_inout, d = z.copy(), np.empty_like(z)
    got = K.output_delta(z_inout, Y, K.Model(K.SIGMOID, loss, out_kind), d,
                         np.empty(0, dtype) if w is None else w)
    assert abs(got - value) <= 50 * TOL[dtype] * max(1.0, abs(value))
    close(z_inout, yhat, dtype)
    close(d, delta, dtype)
    close(K.output_activation(z.copy(), K.Model(K.SIGMOID, loss, out_kind)),
          R.output_activation(z, K.Model(K.SIGMOID, loss, out_kind)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_output_delta_of_huge_logits_is_finite(dtype):
    z = np.array([[1e4, -1e4, 0.0]], dtype)
    Y = np.array([[0.0, 1.0, 0.0]], dtype)
    for loss, out_kind in [(K.CE, K.SOFTMAX), (K.BCE, K.SIGMOID)]:
        value, _, delta = R.output_delta(z, Y, K.Model(K.SIGMOID, loss, out_kind))
        d = np.empty_like(z)
        got = K.output_delta(z.copy(), Y, K.Model(K.SIGMOID, loss, out_kind), d,
                             np.empty(0, dtype))
        assert np.isfinite(got) and got == pytest.approx(value, rel=TOL[dtype])
        assert np.all(np.isfinite(d))
        close(d, delta, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_output_delta_passes_nan_through(dtype):
    z = np.array([[np.nan, 0.0]], dtype)
    got = K.output_delta(z, np.array([[1.0, 0.0]], dtype), K.Model(K.SIGMOID, K.CE, K.SOFTMAX),
                         np.empty_like(z), np.empty(0, dtype))
    assert np.isnan(got)


# ---------------------------------------------------------------- backward
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, n_in, n_out", [(4, 9, 3), (1, 2, 1), (7, 5, 11), (128, 200, 100)])
@pytest.mark.parametrize("kind", KINDS)
def test_backprop_delta(n, n_in, n_out, kind, dtype):
    rng = np.random.default_rng(n * n_out)
    d = rng.standard_normal((n, n_out)).astype(dtype)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    a = R.bias_activation(rng.standard_normal((n, n_in)), np.zeros(n_in), kind).astype(dtype)
    out = K.backprop_delta(d, np.ascontiguousarray(W.T), a, kind, np.empty((n, n_in), dtype),
                           np.empty((0, 0), dtype))
    close(out, R.backprop_delta(d, W, a, kind), dtype)
    mask = np.where(rng.random((n, n_in)) < 0.4, 0, 1 / 0.6).astype(dtype)    # with dropout
    out = K.backprop_delta(d, np.ascontiguousarray(W.T), a, kind, np.empty((n, n_in), dtype),
                           mask)
    close(out, R.backprop_delta(d, W, a, kind, mask), dtype)


@SETTINGS
@given(shapes, st.sampled_from(KINDS), st.sampled_from([np.float64, np.float32]))
def test_times_fprime(shape, kind, dtype):
    n, _, m, seed = shape
    rng = np.random.default_rng(seed)
    a = R.bias_activation(rng.standard_normal((n, m)), np.zeros(m), kind).astype(dtype)
    d = rng.standard_normal((n, m)).astype(dtype)
    close(K.times_fprime(d.copy(), a, kind), R.times_fprime(d, a, kind), dtype)


@pytest.mark.parametrize("dtype, ulps", [(np.float32, 2), (np.float64, 2)])
def test_sigmoid_is_accurate_to_a_few_ulps_everywhere(dtype, ulps):
    z = np.concatenate([np.linspace(-120, 120, 20001), [0.0, -0.0, 88.5, -88.5, 1e-30]])
    z = z.astype(dtype)
    got = K.bias_activation(z[None, :].copy(), np.zeros(len(z), dtype), K.SIGMOID)[0]
    exact = 1 / (1 + np.exp(-z.astype(np.longdouble)))
    err = np.abs(got - exact) / np.maximum(exact, np.finfo(dtype).tiny)
    big = exact > 1e-30                     # away from underflow, relative error in ulps
    assert np.max(err[big]) <= ulps * np.finfo(dtype).eps
    assert np.all(np.abs(got - exact)[~big] < 1e-30)
    nan = K.bias_activation(np.array([[np.nan, np.inf, -np.inf]], dtype), np.zeros(3, dtype),
                            K.SIGMOID)[0]
    assert np.isnan(nan[0]) and nan[1] == 1 and 0 <= nan[2] < 1e-37


@pytest.mark.parametrize("dtype, ulps", [(np.float32, 3), (np.float64, 3)])
def test_tanh_is_accurate_to_a_few_ulps_of_one_everywhere(dtype, ulps):
    """tanh through e^{2|x|} (kernels._tanh): absolute error a few ulps of 1 (relative
    error grows near 0, where tanh x ≈ x is small), odd, ±1 far out, NaN kept."""
    z = np.concatenate([np.linspace(-30, 30, 20001), [0.0, -0.0, 1e-30, 400.0, -400.0]])
    z = z.astype(dtype)
    got = K.bias_activation(z[None, :].copy(), np.zeros(len(z), dtype), K.TANH)[0]
    exact = np.tanh(z.astype(np.longdouble))
    assert np.max(np.abs(got - exact)) <= ulps * np.finfo(dtype).eps
    np.testing.assert_array_equal(got[z > 0], -K.bias_activation(
        -z[None, z > 0].copy(), np.zeros((z > 0).sum(), dtype), K.TANH)[0])
    assert got[-2] == 1 and got[-1] == -1
    nan = K.bias_activation(np.array([[np.nan, np.inf, -np.inf]], dtype), np.zeros(3, dtype),
                            K.TANH)[0]
    assert np.isnan(nan[0]) and nan[1] == 1 and nan[2] == -1


def layer_batch(shape, dtype):
    """(rng, a, d) for a dense layer's test: inputs a (n, n_in) and output errors d (n, n_out)."""
    n, n_in, n_out, seed = shape
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n_in)).astype(dtype)
    return rng, a, rng.standard_normal((n, n_out)).astype(dtype)


@SETTINGS
@given(shapes, st.sampled_from([np.float64, np.float32]))
def test_dense_gradient_and_column_sums(shape, dtype):
    _, n_in, n_out, _ = shape
    rng, a, d = layer_batch(shape, dtype)
    Gt, gb = np.empty((n_out, n_in), dtype), np.empty(n_out, dtype)
    K.dense_gradient(a, d, Gt, gb)
    G_ref, gb_ref = R.dense_gradient(a, d)
    close(Gt.T, G_ref, dtype)
    close(gb, gb_ref, dtype)
    close(K.column_sums(d, np.empty(n_out, dtype)), R.column_sums(d), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_gradient_blas_branch(dtype):
    rng = np.random.default_rng(5)
    a, d = rng.standard_normal((300, 100)), rng.standard_normal((300, 80))
    assert 300 * 100 * 80 >= K.BLAS_MIN_FLOPS
    Gt, gb = np.empty((80, 100), dtype), np.empty(80, dtype)
    K.dense_gradient(a.astype(dtype), d.astype(dtype), Gt, gb)
    # against float64 products of the same (rounded) inputs
    a64, d64 = a.astype(dtype).astype(np.float64), d.astype(dtype).astype(np.float64)
    close(Gt.T, a64.T @ d64, dtype)
    close(gb, d64.sum(axis=0), dtype)


@SETTINGS
@given(shapes, st.sampled_from([np.float64, np.float32]))
def test_sparse_gradient(shape, dtype):
    n, n_in, n_out, seed = shape
    rng = np.random.default_rng(seed)
    X, nnz, cols, vals = sparse_batch(rng, n, n_in, dtype)
    d = rng.standard_normal((n, n_out)).astype(dtype)
    G_ref, gb_ref, touched_ref = R.sparse_gradient(K.SparseBatch(nnz, cols, vals), d, n_in)
    close(G_ref, X.T @ d, dtype)
    G, gb = np.zeros((n_in, n_out), dtype), np.empty(n_out, dtype)
    touched = np.full(n_in, 7, np.uint8)
    K.sparse_gradient(K.SparseBatch(nnz, cols, vals), d, G, gb, touched)
    close(G, G_ref, dtype)
    close(gb, gb_ref, dtype)
    np.testing.assert_array_equal(touched, touched_ref)


@SETTINGS
@given(shapes, st.integers(1, 5),
       st.sampled_from([(0.0, 0.0, False), (0.0, 0.01, False),
                        (0.9, 0.0, False), (0.9, 0.01, True)]),
       st.sampled_from(DTYPES))
def test_sparse_update_par_is_the_serial_kernels_bit_for_bit(shape, blocks, update, dtype):
    """sparse_update_par gives the serial kernels' results bit for bit.

    Plain SGD (mu = wd = 0) as sparse_sgd_plain, any other step as
    sparse_update; and sparse_update is sparse_gradient + sgd_update_rows up
    to the order of the gradient's sums.
    """
    n, n_in, n_out, seed = shape
    mu, wd, nesterov = update
    rng = np.random.default_rng(seed)
    _, nnz, cols, vals = sparse_batch(rng, n, n_in, dtype)
    d = rng.standard_normal((n, n_out)).astype(dtype)
    W, V = rng.standard_normal((2, n_in, n_out)).astype(dtype)
    sgd = K.sgd_params(dtype, 0.1, mu, wd, nesterov)
    batch = K.SparseBatch(nnz, cols, vals)
    W1, V1, G1 = W.copy(), V.copy(), np.zeros_like(W)
    gb1, t1 = np.empty(n_out, dtype), np.full(n_in, 7, np.uint8)
    if mu == wd == 0:
        K.column_sums(d, gb1)
        K.sparse_sgd_plain(batch, d, W1, sgd.lr)
    else:
        W0, V0, G0 = W.copy(), V.copy(), np.zeros_like(W)
        gb0, t0 = np.empty(n_out, dtype), np.full(n_in, 7, np.uint8)
        K.sparse_gradient(batch, d, G0, gb0, t0)
        K.sgd_update_rows(K.FirstLayer(W0, V0, G0, gb0, t0), sgd)
        K.sparse_update(batch, d, K.FirstLayer(W1, V1, G1, gb1, t1), sgd)
        close(W1, W0, dtype)
        close(V1, V0, dtype)
        np.testing.assert_array_equal(gb1, gb0)
    W2, V2, G2 = W.copy(), V.copy(), np.zeros_like(W)
    gb2, t2 = np.empty(n_out, dtype), np.full(n_in, 7, np.uint8)
    K.sparse_update_par(batch, d, K.FirstLayer(W2, V2, G2, gb2, t2), sgd, blocks)
    for a, b in [(W1, W2), (V1, V2), (G1, G2), (gb1, gb2), (t1, t2)]:
        np.testing.assert_array_equal(a, b)
    G_ref, _, _ = R.sparse_gradient(batch, d, n_in)
    W_ref, V_ref = W.copy(), V.copy()
    R.sgd_update(W_ref, G_ref, V_ref, sgd)
    close(W2, W_ref, dtype)


@SETTINGS
@given(shapes, st.integers(0, 2**31))
def test_column_lists_of_a_range_of_columns_are_the_whole_lists_part(shape, cut):
    """_column_lists_of(i0, i1): column i's samples (the batch rows with a non-zero there, in
    order) and their values, for every column of the range and nothing else."""
    n, n_in, _, seed = shape
    rng = np.random.default_rng(seed)
    _, nnz, cols, vals = sparse_batch(rng, n, n_in)
    batch = K.SparseBatch(nnz, cols, vals)
    i0, i1 = sorted(np.random.default_rng(cut).integers(0, n_in + 1, 2))
    rows = [dict(zip(cols[s, :nnz[s]].tolist(), vals[s, :nnz[s]])) for s in range(n)]
    samples = {i: [s for s in range(n) if i in rows[s]] for i in range(n_in)}
    got_starts, got_samples, got_values = K._column_lists_of(batch, n, i0, i1, n_in)
    assert len(got_samples) == sum(len(samples[i]) for i in range(i0, i1))
    for i in range(i0, i1):
        c, e = got_starts[i], got_starts[i + 1]
        np.testing.assert_array_equal(got_samples[c:e], samples[i])
        np.testing.assert_array_equal(got_values[c:e], [rows[s][i] for s in samples[i]])


@SETTINGS
@given(shapes, st.sampled_from([np.float64, np.float32]))
def test_sparse_sgd_plain(shape, dtype):
    n, n_in, n_out, seed = shape
    rng = np.random.default_rng(seed)
    _, nnz, cols, vals = sparse_batch(rng, n, n_in, dtype)
    d = rng.standard_normal((n, n_out)).astype(dtype)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    batch = K.SparseBatch(nnz, cols, vals)
    expected = R.sparse_sgd_plain(batch, d, W.copy(), 0.3)
    serial = K.sparse_sgd_plain(batch, d, W.copy(), dtype(0.3))
    close(serial, expected, dtype)
    untouched = ~R.sparse_gradient(batch, d, n_in)[2].astype(bool)
    np.testing.assert_array_equal(serial[untouched], W[untouched])


@SETTINGS
@given(shapes, st.sampled_from([np.float64, np.float32]))
def test_dense_sgd_plain(shape, dtype):
    _, n_in, n_out, _ = shape
    rng, a, d = layer_batch(shape, dtype)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    expected = R.dense_sgd_plain(a, d, W.copy(), 0.3)
    Wt = K.dense_sgd_plain(a, d, np.ascontiguousarray(W.T), dtype(0.3))
    close(Wt.T, expected, dtype)


def test_the_avx512_gather_is_off_where_llvm_would_abort(monkeypatch):
    """LLVM 14 (numba < 0.61) aborts the interpreter on the compress intrinsic: not used there."""
    monkeypatch.setattr(K.binding, "get_host_cpu_features", lambda: {"avx512f": True})
    monkeypatch.setattr(K.config, "CPU_NAME", None)
    monkeypatch.setattr(K.binding, "llvm_version_info", (14, 0, 6))
    assert K._can_compress() is False
    monkeypatch.setattr(K.binding, "llvm_version_info", (15, 0, 7))
    assert K._can_compress() is True
    monkeypatch.setattr(K.config, "CPU_NAME", "generic")
    assert K._can_compress() is False                 # a portable cache: no host-only code
    monkeypatch.setattr(K.config, "CPU_NAME", None)
    monkeypatch.setattr(K.binding, "get_host_cpu_features", lambda: {"avx512f": False})
    assert K._can_compress() is False


def test_prefetch_rows_changes_nothing():
    X = np.arange(3 * 200, dtype=np.uint8).reshape(3, 200)
    before = X.copy()
    K._prefetch_rows(X, np.array([2, 0]))
    np.testing.assert_array_equal(X, before)


# ------------------------------------------------------------------ update
UPDATES = [(0.0, 0.0, False), (0.0, 0.01, False), (0.9, 0.0, False), (0.9, 0.0, True),
           (0.9, 0.01, False), (0.5, 0.01, True)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mu, wd, nesterov", UPDATES)
def test_sgd_update_is_the_reference_bit_for_bit(mu, wd, nesterov, dtype):
    rng = np.random.default_rng(int(10 * mu + 100 * wd + nesterov))
    p, g, v = (rng.standard_normal((6, 5)).astype(dtype) for _ in range(3))
    sgd = K.sgd_params(dtype, 0.3, mu, wd, nesterov)
    p_ref, v_ref = p.copy(), v.copy()
    R.sgd_update(p_ref, g, v_ref, sgd)
    for shape in [(6, 5), (30,)]:                   # a weight matrix and a bias vector
        p2, v2 = p.reshape(shape).copy(), v.reshape(shape).copy()
        K.sgd_update(p2, g.reshape(shape), v2, sgd)
        np.testing.assert_array_equal(p2.reshape(p.shape), p_ref)
        if mu:
            np.testing.assert_array_equal(v2.reshape(v.shape), v_ref)


@contextlib.contextmanager
def numba_threads(n):
    """Numba's thread count set to n inside the block, and put back after."""
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mu, wd, nesterov", UPDATES)
def test_sgd_update_par_is_sgd_update_bit_for_bit(mu, wd, nesterov, dtype, threads):
    """The threads' blocks of a dense layer's step give the serial kernel's bits: every block
    count, on one thread or two, at a size with a ragged last block."""
    rng = np.random.default_rng(5)
    p, g, v = (rng.standard_normal((37, 29)).astype(dtype) for _ in range(3))
    sgd = K.sgd_params(dtype, 0.3, mu, wd, nesterov)
    p1, v1 = p.copy(), v.copy()
    K.sgd_update(p1, g, v1, sgd)
    with numba_threads(threads):
        for blocks in (1, 2, 5):
            p2, v2 = p.copy(), v.copy()
            K.sgd_update_par(p2, g, v2, sgd, blocks)
            np.testing.assert_array_equal(p2, p1)
            np.testing.assert_array_equal(v2, v1)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_norm_par_is_the_serial_kernels_bit_for_bit(dtype, threads):
    """Rows of Wᵀ or columns of W in blocks on the threads: the serial passes' bits, long
    and short units alike."""
    rng = np.random.default_rng(2)
    W = (rng.standard_normal((40, 70)) * rng.uniform(0.05, 0.4, 70)).astype(dtype)
    c = dtype(1.0)
    short = np.linalg.norm(W.astype(np.float64), axis=0) <= 1.0
    assert short.any() and not short.all()
    cols, rows = K.max_norm_cols(W.copy(), c), K.max_norm_rows(np.ascontiguousarray(W.T), c)
    with numba_threads(threads):
        for blocks in (1, 2, 3):
            np.testing.assert_array_equal(K.max_norm_par(W.copy(), c, False, blocks), cols)
            np.testing.assert_array_equal(
                K.max_norm_par(np.ascontiguousarray(W.T), c, True, blocks), rows)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mu, wd, nesterov", UPDATES)
def test_sgd_update_rows(mu, wd, nesterov, dtype):
    rng = np.random.default_rng(3)
    W, V = rng.standard_normal((40, 7)).astype(dtype), rng.standard_normal((40, 7)).astype(dtype)
    touched = (rng.random(40) < 0.4).astype(np.uint8)
    G = np.where(touched[:, None] != 0, rng.standard_normal((40, 7)), 0).astype(dtype)
    sgd = K.sgd_params(dtype, 0.2, mu, wd, nesterov)
    W0, G0 = W.copy(), G.copy()                       # before the update
    W_ref, V_ref, G_ref = W.copy(), V.copy(), G.copy()
    gb = np.empty(7, dtype)
    R.sgd_update_rows(K.FirstLayer(W_ref, V_ref, G_ref, gb, touched), sgd)
    K.sgd_update_rows(K.FirstLayer(W, V, G, gb, touched), sgd)
    np.testing.assert_array_equal(W, W_ref)
    np.testing.assert_array_equal(V, V_ref)
    assert not G.any()                    # left zero for the next sparse_gradient
    kept, moved = touched == 0, touched != 0
    assert 0 < kept.sum() < 40
    if mu == 0 and wd == 0:
        # plain SGD: the untouched rows keep W from before the update, bit for bit, and the
        # touched rows are W − ηG, entry by entry
        np.testing.assert_array_equal(W[kept], W0[kept])
        np.testing.assert_array_equal(W[moved], W0[moved] - sgd.lr * G0[moved])
    else:
        # momentum and weight decay move every row, the untouched ones too
        assert np.all(W[kept] != W0[kept])
    assert np.all(W[moved] != W0[moved])


#: (λ as Adam's L2 term, AdamW's ηλ): neither, each
ADAM_DECAYS = [(0.0, 0.0), (0.05, 0.0), (0.0, 0.002)]


def _adam_arrays(rng, shape, dtype):
    """p, g, m, v for an Adam step from mid-run state (v ≥ 0)."""
    p, g, m = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    return p, g, m, (0.1 * rng.random(shape)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wd, decay", ADAM_DECAYS)
def test_adam_update_is_the_reference_bit_for_bit(wd, decay, dtype):
    """The reference's arithmetic in its order, no fused multiply-add: the same bits."""
    rng = np.random.default_rng(int(100 * wd + 1000 * decay))
    p, g, m, v = _adam_arrays(rng, (6, 5), dtype)
    t = np.dtype(dtype).type
    adam = K.AdamParams(t(0.003), t(0.9), t(0.999), t(1e-8), t(wd), t(decay))
    ref = [a.copy() for a in (p, g, m, v)]
    R.adam_update(*ref, adam)
    for shape in [(6, 5), (30,)]:                   # a weight matrix and a bias vector
        got = [a.reshape(shape).copy() for a in (p, g, m, v)]
        K.adam_update(*got, adam)
        for a, b, name in zip(got, ref, "pgmv"):
            np.testing.assert_array_equal(a.reshape(b.shape), b, err_msg=name)
    assert not ref[1].any()                         # g left zero, ready for sparse_gradient


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="reads x86 assembly (packed square roots: sqrtps)")
def test_adam_range_from_a_run_time_entry_is_vectorised():
    """_adam_range on entries j0 … j1-1, as sparse_adam_par's threads call it, compiles to
    packed square roots. Its loop once ran from a run-time j0: Numba kept a negative-index
    branch on every access, LLVM left the loop scalar, and the 2-thread Adam step was slower
    than the 1-thread one (docs/performance.md, session 7). Compiled here without the cache,
    whose code cannot be inspected."""
    @njit(error_model="numpy")
    def entries(p, g, m, v, adam, j0, j1):
        K._adam_range(p, g, m, v, adam, j0, j1)

    p, g, m, v = _adam_arrays(np.random.default_rng(0), (64,), np.float32)
    adam = K.AdamParams(*(np.float32(x) for x in (0.003, 0.9, 0.999, 1e-8, 0.0, 0.0)))
    entries(p, g, m, v, adam, 3, 60)
    asm = "".join(entries.inspect_asm().values())
    assert re.search(r"\bv?sqrtps\b", asm), "the Adam loop was not vectorised"


@SETTINGS
@given(shapes, st.integers(1, 5), st.sampled_from(ADAM_DECAYS), st.sampled_from(DTYPES))
def test_sparse_adam_par_is_the_serial_kernels_bit_for_bit(shape, blocks, decays, dtype):
    """sparse_adam_par = sparse_gradient then adam_update, bit for bit, whatever the blocks;
    and its twin within round-off (the gradient's sums are reordered)."""
    n, n_in, n_out, seed = shape
    rng = np.random.default_rng(seed)
    _, nnz, cols, vals = sparse_batch(rng, n, n_in, dtype)
    batch = K.SparseBatch(nnz, cols, vals)
    d = rng.standard_normal((n, n_out)).astype(dtype)
    W, _, M, S = _adam_arrays(rng, (n_in, n_out), dtype)
    t = np.dtype(dtype).type
    adam = K.AdamParams(t(0.01), t(0.8), t(0.99), t(1e-7), t(decays[0]), t(decays[1]))
    out = []
    for par in (False, True):
        W1, M1, S1, G1 = W.copy(), M.copy(), S.copy(), np.zeros_like(W)
        gb, touched = np.empty(n_out, dtype), np.zeros(n_in, np.uint8)
        if par:
            K.sparse_adam_par(batch, d, K.FirstLayer(W1, M1, G1, gb, touched), S1, adam, blocks)
        else:
            K.sparse_gradient(batch, d, G1, gb, touched)
            K.adam_update(W1, G1, M1, S1, adam)
        out.append((W1, M1, S1, G1, gb))
    for a, b, name in zip(*out, ["W", "m", "v", "G", "gb"]):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert not out[1][3].any()                       # G left zero
    W2, M2, S2 = W.copy(), M.copy(), S.copy()
    layer = K.FirstLayer(W2, M2, None, None, None)
    _, gb_ref = R.sparse_adam_par(batch, d, layer, S2, adam)
    for a, b in [(out[1][0], W2), (out[1][1], M2), (out[1][2], S2), (out[1][4], gb_ref)]:
        close(a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_norm_kernels_against_their_twins(dtype):
    """Columns of W (the sparse first layer's layout) and rows of Wᵀ (the dense layers'): long
    ones scaled to norm c, short ones untouched bit for bit, as the reference does."""
    rng = np.random.default_rng(0)
    W = (rng.standard_normal((9, 12)) * rng.uniform(0.05, 0.8, 12)).astype(dtype)
    c = dtype(1.0)
    short = np.linalg.norm(W.astype(np.float64), axis=0) <= 1.0
    assert short.any() and not short.all()
    ref = R.max_norm_cols(W.copy(), c)
    cols = K.max_norm_cols(W.copy(), c)
    rows = K.max_norm_rows(np.ascontiguousarray(W.T), c).T
    for got in (cols, rows):
        close(got, ref, dtype)
        np.testing.assert_array_equal(got[:, short], W[:, short])
        assert np.linalg.norm(got.astype(np.float64), axis=0).max() <= 1.0 + 4 * TOL[dtype]
    close(R.max_norm_rows(np.ascontiguousarray(W.T), c).T, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4), (8, 8), (17, 9), (1, 30), (64, 10)])
def test_transpose_into(dtype, shape):
    """Every shape, whole tiles or not, against NumPy's transpose (a copy: the same bits)."""
    A = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    np.testing.assert_array_equal(K.transpose_into(A, np.empty(shape[::-1], dtype)), A.T)


# --------------------------------------------------------------- whole loop
CONFIGS = [("sigmoid", K.CE, K.SOFTMAX), ("tanh", K.MSE, K.IDENTITY),
           ("relu", K.BCE, K.SIGMOID), ("identity", K.MSE, K.TANH), ("tanh", K.POISSON, K.EXP)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act, loss, out_kind", CONFIGS)
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("extras", ["none", "weights", "dropout"])
def test_train_chunk_against_its_twin(act, loss, out_kind, sparse, threads, extras, dtype):
    _train_chunk_against_its_twin(act, loss, out_kind, sparse, threads, dtype,
                                  dict(mu=0.9, wd=0.01, nesterov=True), extras)


#: (η of each batch, other OptParams): SGD with a schedule and max-norm, Adam with an L2 term,
#: AdamW with max-norm (rates that vary from batch to batch, as a schedule makes them)
OPTIMIZERS = {"sgd-schedule-maxnorm": dict(mu=0.9, wd=0.01, max_norm=0.7),
              "adam": dict(adam=True, wd=0.01, adam_hyper=(0.8, 0.95, 1e-6, False)),
              "adamw-maxnorm": dict(adam=True, wd=0.1, adam_hyper=(0.9, 0.999, 1e-8, True),
                                    max_norm=0.7)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("extras", ["none", "both"])
def test_train_chunk_with_adam_schedules_and_max_norm_against_its_twin(optimizer, sparse,
                                                                      threads, extras, dtype):
    _train_chunk_against_its_twin("relu", K.CE, K.SOFTMAX, sparse, threads, dtype,
                                  OPTIMIZERS[optimizer], extras)


def _train_chunk_against_its_twin(act, loss, out_kind, sparse, threads, dtype, opt_kwargs,
                                  extras):
    """Batches 1 … 6 of an epoch, from optimizer state that is not zero (as mid-run).

    ``extras``: "none", "weights" (sample weights), "dropout" or "both".
    """
    rng = np.random.default_rng(1)
    sizes = [12, 9, 7, 4]
    X = sparse_uint8(rng, 50, 12, 0.3)
    weights = tuple((rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype)
                    for a, b in zip(sizes[:-1], sizes[1:]))
    biases = tuple((0.1 * rng.standard_normal(b)).astype(dtype) for b in sizes[1:])
    vw = tuple(0.01 * rng.standard_normal(w.shape).astype(dtype) for w in weights)
    vb = tuple(0.01 * rng.standard_normal(b.shape).astype(dtype) for b in biases)
    sw = tuple(0.01 * rng.random(w.shape).astype(dtype) for w in weights)
    sb = tuple(0.01 * rng.random(b.shape).astype(dtype) for b in biases)
    if loss == K.CE:
        labels, T = rng.integers(0, 4, 50), np.empty((0, 4), dtype)
    else:
        labels, T = np.empty(0, np.int64), rng.random((50, 4)).astype(dtype)
    order = rng.permutation(50)
    model = K.Model(K.ACTIVATION_CODES[act], loss, out_kind)
    kwargs = dict(opt_kwargs)
    adam = kwargs.pop("adam", False)
    lrs = (0.01 if adam else 0.1) * np.linspace(1, 0.5, 6)     # as a schedule makes them
    b1, b2, _, _ = kwargs.get("adam_hyper", (0.9, 0.999, 1e-8, False))
    steps = np.array([adam_step_size(lr, b1, b2, 4 + k) for k, lr in enumerate(lrs)])
    opt = K.opt_params(dtype, adam, (lrs, steps), 3, **kwargs)     # 3 steps taken before
    weighted = extras in ("weights", "both")
    sample_weight = (rng.uniform(0, 2, 50) if weighted else np.empty(0)).astype(dtype)
    data = K.Data(X, dtype(1 / 255), labels, T, order, K.no_csr(dtype), sample_weight)
    rates = [0.3, 0.5, 0.2] if extras in ("dropout", "both") else None
    dropout = K.dropout_of(rates, 3, dtype, seed=11, epoch=4)
    plan = K.Plan(sparse, threads, 8)
    copies = [tuple(a.copy() for a in group) for group in (weights, biases, vw, vb, sw, sb)]
    losses_ref = R.train_chunk(data, K.Params(*copies), model, opt, plan, 1, 7, np.empty(6),
                               dropout)
    kernel = K.train_chunk_for(opt)
    assert kernel is (K.train_chunk_adam if adam else K.train_chunk)
    losses = kernel(data, K.Params(weights, biases, vw, vb, sw, sb), model, opt, plan, 1, 7,
                    np.empty(6), K.sparse_buffers(8 if sparse else 0, weights[0]), dropout)
    close(losses, losses_ref, dtype)
    used = 6 if opt.adam else 4
    for got, ref in zip((weights + biases + vw + vb + sw + sb)[:used * 3],
                        sum(copies, ())[:used * 3]):
        assert got.dtype == dtype
        close(got, ref, dtype)


def test_each_optimizer_has_its_training_kernel_and_the_other_refuses():
    """train_chunk compiles SGD's step only, train_chunk_adam Adam's (the optimizer is a literal
    in their shared body): each refuses the other's OptParams rather than take a wrong step.

    The types are those of the twin tests above (3 layers, float32, sparse), whose kernels
    are compiled already: this test compiles nothing new.
    """
    dtype = np.float32
    rng = np.random.default_rng(3)
    sizes = [12, 9, 7, 4]
    X = sparse_uint8(rng, 16, 12, 0.3)
    weights = tuple(rng.standard_normal((a, b)).astype(dtype) for a, b in zip(sizes, sizes[1:]))
    biases = tuple(np.zeros(b, dtype) for b in sizes[1:])
    params = K.Params(weights, biases, weights, biases, weights, biases)
    data = K.Data(X, dtype(1 / 255), rng.integers(0, 4, 16), np.empty((0, 4), dtype),
                  rng.permutation(16), K.no_csr(dtype), np.empty(0, dtype))
    model = K.Model(K.SIGMOID, K.CE, K.SOFTMAX)
    rates = (np.full(2, 0.1), np.full(2, 0.01))
    for adam, wrong in ((True, K.train_chunk), (False, K.train_chunk_adam)):
        opt = K.opt_params(dtype, adam, rates, 0)
        assert K.train_chunk_for(opt) is not wrong
        with pytest.raises(ValueError, match="train_chunk takes SGD's OptParams"):
            wrong(data, params, model, opt, K.Plan(True, 1, 8), 0, 2, np.empty(2),
                  K.sparse_buffers(8, weights[0]), K.dropout_of(None, 3, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act, loss, out_kind", CONFIGS)
def test_predict_against_its_twin(act, loss, out_kind, dtype):
    rng = np.random.default_rng(2)
    sizes = [12, 8, 3]
    X = sparse_uint8(rng, 2100, 12, 0.5)            # three chunks of 1024 rows, the last short
    weights = tuple(rng.standard_normal((a, b)).astype(dtype)
                    for a, b in zip(sizes[:-1], sizes[1:]))
    biases = tuple(rng.standard_normal(b).astype(dtype) for b in sizes[1:])
    model = K.Model(K.ACTIVATION_CODES[act], loss, out_kind)
    out = K.predict(X, dtype(1 / 255), weights, biases, model, np.empty((2100, 3), dtype))
    close(out, R.predict(X, dtype(1 / 255), weights, biases, model), dtype)


# ----------------------------------------- vector blocks, sorted entries, BLAS in blocks
#: shapes (n, n_in, n_out) past the small ones above: rows of whole 64-byte lines and a
#: remainder (float32 lines are 16 wide: 149 = 9 lines + 5, 1040 = 65 lines), batches that
#: are sorted by column (≥ OUTER_MIN_SORT rows) in one block and in several (> OUTER_ROWS)
WIDE = [(40, 30, 149), (300, 50, 260), (45, 20, 1040), (300, 50, 37)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, n_in, n_out", WIDE)
def test_sparse_kernels_on_wide_rows_and_long_batches(n, n_in, n_out, dtype):
    rng = np.random.default_rng(n_out)
    X, nnz, cols, vals = sparse_batch(rng, n, n_in, dtype)
    batch = K.SparseBatch(nnz, cols, vals)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    out = K.sparse_forward(batch, W, b, K.IDENTITY, np.empty((n, n_out), dtype))
    close(out, R.sparse_forward(batch, W, b, K.IDENTITY), dtype)
    d = rng.standard_normal((n, n_out)).astype(dtype)
    G, gb, touched = np.zeros_like(W), np.empty(n_out, dtype), np.empty(n_in, np.uint8)
    K.sparse_gradient(batch, d, G, gb, touched)
    close(G, R.sparse_gradient(batch, d, n_in)[0], dtype)
    close(K.sparse_sgd_plain(batch, d, W.copy(), dtype(0.3)),
          R.sparse_sgd_plain(batch, d, W.copy(), 0.3), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sorted_by_column_and_row_by_row_give_the_same_bits(dtype):
    """_sparse_outer_rows sorts ≥ OUTER_MIN_SORT rows by column, adds fewer a row at a time.

    Both add each term with one multiply-add in batch order: the whole batch (sorted)
    equals the same rows added in pieces too short to be sorted, one after another.
    """
    n, n_in, n_out = 3 * K.OUTER_MIN_SORT, 40, 300
    rng = np.random.default_rng(3)
    _, nnz, cols, vals = sparse_batch(rng, n, n_in, dtype)
    d = rng.standard_normal((n, n_out)).astype(dtype)
    A = rng.standard_normal((n_in, n_out)).astype(dtype)
    whole = A.copy()
    K._sparse_outer_rows(K.SparseBatch(nnz, cols, vals), d, whole, dtype(-0.1), 3, n_in - 2)
    pieces = A.copy()
    for s0 in range(0, n, K.OUTER_MIN_SORT - 1):
        s1 = min(n, s0 + K.OUTER_MIN_SORT - 1)
        part = K.SparseBatch(nnz[s0:s1], cols[s0:s1], vals[s0:s1])
        K._sparse_outer_rows(part, d[s0:s1], pieces, dtype(-0.1), 3, n_in - 2)
    np.testing.assert_array_equal(whole, pieces)
    assert not np.array_equal(whole, A)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta, tb", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("by_rows", [False, True])
def test_gemm_blocks_against_numpy(ta, tb, by_rows, dtype):
    """C ← α·op(A)·op(B) + β·C in blocks of C's rows or columns (several blocks, ragged end)."""
    m, n, k = 300, 2 * K.BLAS_BLOCK + 40, 33
    rng = np.random.default_rng(int(ta) + 2 * int(tb))
    A = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    C = rng.standard_normal((m, n)).astype(dtype)
    A64, B64 = (A.T if ta else A).astype(np.float64), (B.T if tb else B).astype(np.float64)
    expected = -0.5 * (A64 @ B64) + 2 * C
    got = K._gemm_blocks(dtype(-0.5), A, ta, B, tb, dtype(2), C.copy(), by_rows)
    close(got, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_gather_forward_par_on_wide_rows_is_the_serial_pair(dtype):
    """Rows of W ≥ OUTER_MIN_SORT_BYTES come in fewer, longer blocks: the same bits still."""
    n, n_in, n_out = 50, 64, 300
    assert n_out * np.dtype(dtype).itemsize >= K.OUTER_MIN_SORT_BYTES
    rng = np.random.default_rng(8)
    X = sparse_uint8(rng, 80, n_in, 0.3)
    rows = rng.integers(0, 80, n)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    batches = [K.sparse_buffers(n, W) for _ in range(2)]
    K.gather_sparse(X, rows, dtype(1 / 255), batches[0])
    serial = K.sparse_forward(batches[0], W, b, K.SIGMOID, np.empty((n, n_out), dtype))
    parallel = K.sparse_gather_forward_par(X, rows, dtype(1 / 255), batches[1], (W, b, K.SIGMOID),
                                           np.empty((n, n_out), dtype), NO_DROPOUT[dtype], 0,
                                           K.no_head(dtype))
    np.testing.assert_array_equal(parallel, serial)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act, loss, out_kind", CONFIGS)
@pytest.mark.parametrize("extras", ["none", "dropout", "weights-dropout"])
def test_the_fused_head_is_the_serial_kernels_bit_for_bit(act, loss, out_kind, extras, dtype):
    """sparse_gather_forward_par with a Head: the hidden layer's padding zeroed and dropout,
    the output layer, ŷ, each row's loss and δ², and δ¹, the same bits as the serial kernels
    one after the other (drop_rows, dense_forward, output_delta, backprop_delta), and the rows'
    losses sum in row order to output_delta's loss."""
    check_fused_head(act, loss, out_kind, extras, dtype, (37, 50, 13, 16, 4))


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_fused_head_of_a_batch_past_blas_size_is_the_serial_kernels(dtype):
    """A 10-output layer past BLAS_MIN_FLOPS stays in the row loops (BLAS_MIN_WIDTH), serial
    and fused alike: the same bits."""
    shape = (1100, 60, 100, 112, 10)
    assert 1100 * 112 * 10 >= K.BLAS_MIN_FLOPS and 10 < K.BLAS_MIN_WIDTH
    check_fused_head("sigmoid", K.CE, K.SOFTMAX, "weights-dropout", dtype, shape)


def check_fused_head(act, loss, out_kind, extras, dtype, shape):
    """The fused head's check (above) for a batch of n rows, n_in → hp (h true units) → n_out."""
    n, n_in, h, hp, n_out = shape
    rng = np.random.default_rng(len(extras) + n_out)
    kind = K.ACTIVATION_CODES[act]
    model = K.Model(kind, loss, out_kind)
    X = sparse_uint8(rng, 60, n_in, 0.3)
    rows = rng.integers(0, 60, n)
    scale = dtype(1 / 255)
    W = (rng.standard_normal((n_in, hp)) / np.sqrt(n_in / 4)).astype(dtype)
    W[:, h:] = 0                                            # padding units, as train_chunk's
    b = np.concatenate([rng.standard_normal(h), np.zeros(hp - h)]).astype(dtype)
    Wt = (rng.standard_normal((n_out, hp)) / 3).astype(dtype)
    b2 = rng.standard_normal(n_out).astype(dtype)
    Y = (np.eye(n_out)[rng.integers(0, n_out, n)] if loss == K.CE
         else rng.random((n, n_out))).astype(dtype)
    w = rng.random(n).astype(dtype) + dtype(0.5) if "weights" in extras else np.empty(0, dtype)
    rates = [0.2, 0.5 if "dropout" in extras else 0.0]
    dropout = K.dropout_of(rates, 2, dtype, seed=5, epoch=1)
    on = rates[1] > 0

    def arrays():
        return (np.empty((n, hp), dtype), np.empty((n, n_out), dtype), np.empty((n, n_out), dtype),
                np.empty((n, hp), dtype), np.zeros((n if on else 0, hp if on else 0), dtype),
                np.zeros((n if on else 0, hp if on else 0), dtype))
    a, z, delta, d1, mask, dropped = arrays()
    batch = K.sparse_buffers(n, W)
    K.gather_sparse(X, rows, scale, batch)
    K.drop_entries(batch, n, dropout, 7)
    K.sparse_forward(batch, W, b, kind, a)
    a[:, h:] = 0
    x = K.drop_rows(a, 1, dropout, 7, mask, dropped) if on else a
    K.dense_forward(x, Wt, b2, K.IDENTITY, z)
    loss_value = K.output_delta(z, Y, model, delta, w)
    K.backprop_delta(delta, Wt, a, kind, d1, mask)
    got = arrays()
    terms = np.empty(n, np.float64)
    head = K.Head(True, Wt, b2, got[1], Y, got[2], w, got[3], got[4], got[5], terms, *model,
                  h)
    K.sparse_gather_forward_par(X, rows, scale, K.sparse_buffers(n, W), (W, b, kind), got[0],
                                dropout, 7, head)
    for g, e in zip(got, (a, z, delta, d1, mask, dropped)):
        np.testing.assert_array_equal(g, e)
    total = 0.0
    for term in terms:
        total += term
    assert total / n == loss_value
    assert np.all(a[:, h:] == 0) and (not on or 0 < np.count_nonzero(mask) < mask.size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act, loss, out_kind", CONFIGS)
@pytest.mark.parametrize("layout", ["dense", "sparse", "csr"])
@pytest.mark.parametrize("extras", ["none", "weights-dropout"])
def test_block_gradient_against_its_twin(act, loss, out_kind, layout, extras, dtype):
    """Two blocks of rows (one spanning several sub-batches, the last one short), each
    against the reference on its rows; CSR rows against the same rows dense; with sample
    weights and dropout (fixed masks of positions lo … hi-1) or without."""
    rng = np.random.default_rng(3)
    sizes, n = [20, 9, 7, 4], 45
    X = rng.standard_normal((n, 20)).astype(dtype)
    X[rng.random(X.shape) < (0.8 if layout != "dense" else 0.0)] = 0
    weights = tuple((rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype)
                    for a, b in zip(sizes[:-1], sizes[1:]))
    biases = tuple((0.1 * rng.standard_normal(b)).astype(dtype) for b in sizes[1:])
    if loss == K.CE:
        labels, T = rng.integers(0, 4, n), np.empty((0, 4), dtype)
    else:
        labels, T = np.empty(0, np.int64), rng.random((n, 4)).astype(dtype)
    on = extras != "none"
    sw = rng.random(n).astype(dtype) * 2 if on else np.empty(0, dtype)
    dropout = K.dropout_of([0.3, 0.5, 0.2] if on else None, 3, dtype, seed=7, epoch=2)
    order = rng.permutation(n)
    if layout == "csr":
        Xs = sp.csr_matrix(X)
        data = K.Data(np.empty((0, 20), dtype), dtype(1), labels, T, order,
                      K.CSR(Xs.indptr, Xs.indices, Xs.data), sw)
    else:
        data = K.Data(X, dtype(1), labels, T, order, K.no_csr(dtype), sw)
    model = K.Model(K.ACTIVATION_CODES[act], loss, out_kind)
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    for lo, hi in [(0, 31), (31, n)]:
        g = np.full(n_params, np.nan, dtype)
        total = K.block_gradient(data, weights, biases, model, dropout,
                                 K.Plan(layout != "dense", 1, 8), lo, hi, g)
        ref_total, ref_g = R.block_gradient(data, weights, biases, model, dropout, lo, hi)
        assert total == pytest.approx(ref_total, rel=TOL[dtype] * 10)
        close(g, ref_g, dtype)
