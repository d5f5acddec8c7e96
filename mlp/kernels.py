"""Numba kernels of the fast backend, each beside a plain NumPy twin.

Every kernel ``name`` here has a twin ``name_numpy`` that computes the same
thing with NumPy and the reference functions of :mod:`mlp.activations`,
:mod:`mlp.losses` and :mod:`mlp.network`; tests/test_kernels.py checks each
pair. The kernels fuse what NumPy does in separate passes::

    gather_dense / gather_sparse   X[rows] · scale   (uint8 pixels or floats; sparse: non-zeros only)
    sparse_forward, dense_forward  a = f(x · W + b)   (bias and activation fused into the product)
    output_delta                   ŷ = g(z), loss and δᴸ = ∂L/∂z in one pass per row
    backprop_delta                 δˡ⁻¹ = (δˡ · Wˡᵀ) ⊙ f'(aˡ⁻¹)
    dense_gradient, sparse_gradient   ∂L/∂W = aᵀ · δ, ∂L/∂b = Σ δ
    sgd_update, sgd_update_rows    v ← μv − η(g + λw); w ← w + v  (or Nesterov, or plain)

and :func:`train_chunk` runs whole minibatches with them, from gathering the
batch to updating the weights, with no Python in between.

Conventions, as in the reference: rows are samples, ``W`` is (n_in, n_out),
hidden layers are ``a = f(a_prev · W + b)``, the loss is averaged over the
batch. Derivatives are taken from a layer's output ``a`` (relu'(z) is
1 where a > 0, which is the same as z > 0), so only outputs are kept.

Numerics. All arithmetic happens in the network's dtype (float32 or float64);
constants are cast to it. ``fastmath`` is limited to ``contract`` (fused
multiply-add) and, in dot products, ``reassoc``: both change results only at
round-off level; NaN and infinity propagate as usual, so a diverging loss is
still seen. Sparse inputs skip zero entries: x · W then adds exact zeros less,
which changes nothing unless W holds infinities.

Threads. Kernels with a ``_par`` twin split their *outputs* between threads
(rows of the batch, or columns of W), never a sum, so for a given thread
count the result is bit-for-bit reproducible; in fact it does not depend on
the thread count at all. BLAS (``np.dot`` on contiguous arrays) is used for
large products, where it wins; OpenBLAS is deterministic for a fixed number
of threads.
"""

import math

import numpy as np
from numba import njit, prange

from .activations import ACTIVATIONS, DERIVATIVES
from .losses import get_loss

# Activation codes (hidden layers, and the output of mse); SOFTMAX only as an output.
SIGMOID, TANH, RELU, IDENTITY, SOFTMAX = 0, 1, 2, 3, 4
ACTIVATION_CODES = {"sigmoid": SIGMOID, "tanh": TANH, "relu": RELU, "identity": IDENTITY,
                    "softmax": SOFTMAX}
ACTIVATION_NAMES = {code: name for name, code in ACTIVATION_CODES.items()}
# Loss codes.
CE, MSE, BCE = 0, 1, 2
LOSS_CODES = {"ce": CE, "mse": MSE, "bce": BCE}
LOSS_NAMES = {code: name for name, code in LOSS_CODES.items()}

# Products of at least this many multiply-adds go to BLAS (np.dot); below it
# the loops here are faster (no call overhead, no transposed copies).
BLAS_MIN_FLOPS = 1 << 18
# Work (multiply-adds) per batch above which the kernels use both cores.
PARALLEL_MIN_FLOPS = 1 << 20

_FAST = {"contract"}                 # FMA only: round-off-level change
_FAST_SUM = {"contract", "reassoc"}  # plus reordering a sum, to vectorise it

# ---------------------------------------------------------------- scalars


@njit(inline="always", fastmath=_FAST)
def _f(x, kind, one):
    """f(x) for activation ``kind``; ``one`` is 1 in the working dtype."""
    if kind == SIGMOID:
        return one / (one + math.exp(-x))
    if kind == TANH:
        return math.tanh(x)
    if kind == RELU:
        return x if x > 0 else x * 0     # keeps NaN; 0 for x <= 0
    return x


@njit(inline="always", fastmath=_FAST)
def _fprime(a, kind, one):
    """f'(z) for activation ``kind``, from the output a = f(z)."""
    if kind == SIGMOID:
        return a * (one - a)
    if kind == TANH:
        return one - a * a
    if kind == RELU:
        return one if a > 0 else one * 0
    return one


# ------------------------------------------------------------ gather rows


@njit(cache=True)
def gather_dense(X, rows, scale, out):
    """out[s] = X[rows[s]] · scale (uint8 pixels; pass scale 1 for float X), in out's dtype."""
    n_in = X.shape[1]
    for s in range(rows.shape[0]):
        r = rows[s]
        for i in range(n_in):
            out[s, i] = X[r, i]
            out[s, i] *= scale
    return out


def gather_dense_numpy(X, rows, scale, dtype):
    """NumPy twin of :func:`gather_dense`: the reference's batch_inputs."""
    from .backends import batch_inputs
    return batch_inputs(X, rows, scale, np.dtype(dtype))


@njit(cache=True)
def gather_sparse(X, rows, scale, indptr, cols, vals):
    """The non-zero entries of X[rows] · scale, compacted row by row (CSR).

    Row s of the batch has its non-zeros at ``cols[indptr[s]:indptr[s+1]]``
    with values ``vals[...]``; ``cols`` and ``vals`` need room for
    ``len(rows) * n_in`` entries. Returns the number of non-zeros.
    """
    n_in = X.shape[1]
    nnz = 0
    indptr[0] = 0
    for s in range(rows.shape[0]):
        r = rows[s]
        for i in range(n_in):
            x = X[r, i]
            if x != 0:
                cols[nnz] = i
                vals[nnz] = x
                vals[nnz] *= scale
                nnz += 1
        indptr[s + 1] = nnz
    return nnz


def gather_sparse_numpy(X, rows, scale, dtype):
    """NumPy twin of :func:`gather_sparse`: (indptr, cols, vals) of the scaled rows."""
    xb = gather_dense_numpy(X, rows, scale, dtype)
    r, c = np.nonzero(xb)
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=len(rows)), out=indptr[1:])
    return indptr, c, xb[r, c]


@njit(cache=True)
def gather_targets(labels, T, rows, Y):
    """Y[s] = the target of sample rows[s]: one-hot of ``labels`` if given, else T[rows[s]]."""
    n_out = Y.shape[1]
    if labels.shape[0] > 0:
        for s in range(rows.shape[0]):
            for k in range(n_out):
                Y[s, k] = 0
            Y[s, labels[rows[s]]] = 1
    else:
        for s in range(rows.shape[0]):
            for k in range(n_out):
                Y[s, k] = T[rows[s], k]
    return Y


def gather_targets_numpy(labels, T, rows, n_out, dtype):
    """NumPy twin of :func:`gather_targets`: the reference's batch_targets."""
    from .backends import batch_targets
    return batch_targets(labels if len(labels) else T, rows, n_out, np.dtype(dtype))


# ----------------------------------------------------------------- forward


@njit(inline="always", fastmath=_FAST)
def _activate_row(out, s, kind, one):
    for j in range(out.shape[1]):
        out[s, j] = _f(out[s, j], kind, one)


@njit(cache=True, fastmath=_FAST)
def bias_activation(z, b, kind):
    """z ← f(z + b) in place, row by row (after a BLAS product)."""
    one = z.dtype.type(1)
    for s in range(z.shape[0]):
        for j in range(z.shape[1]):
            z[s, j] = _f(z[s, j] + b[j], kind, one)
    return z


@njit(cache=True, fastmath=_FAST, parallel=True)
def bias_activation_par(z, b, kind):
    """:func:`bias_activation` with the rows split between threads."""
    one = z.dtype.type(1)
    for s in prange(z.shape[0]):
        for j in range(z.shape[1]):
            z[s, j] = _f(z[s, j] + b[j], kind, one)
    return z


def bias_activation_numpy(z, b, kind):
    """NumPy twin of :func:`bias_activation`: f(z + b) (identity for the output's z)."""
    return ACTIVATIONS[ACTIVATION_NAMES[kind]](z + b)


@njit(inline="always", fastmath=_FAST)
def _sparse_row(indptr, cols, vals, W, b, kind, out, s, one):
    n_out = W.shape[1]
    for j in range(n_out):
        out[s, j] = b[j]
    for p in range(indptr[s], indptr[s + 1]):
        x = vals[p]
        i = cols[p]
        for j in range(n_out):
            out[s, j] += x * W[i, j]
    _activate_row(out, s, kind, one)


@njit(cache=True, fastmath=_FAST)
def sparse_forward(indptr, cols, vals, W, b, kind, out):
    """out = f(x · W + b) for a batch x in CSR form (see :func:`gather_sparse`).

    Only the rows of W at non-zero inputs are read: for MNIST, a fifth of them.
    """
    one = W.dtype.type(1)
    for s in range(indptr.shape[0] - 1):
        _sparse_row(indptr, cols, vals, W, b, kind, out, s, one)
    return out


@njit(cache=True, fastmath=_FAST, parallel=True)
def sparse_forward_par(indptr, cols, vals, W, b, kind, out):
    """:func:`sparse_forward` with the batch's rows split between threads."""
    one = W.dtype.type(1)
    for s in prange(indptr.shape[0] - 1):
        _sparse_row(indptr, cols, vals, W, b, kind, out, s, one)
    return out


def sparse_forward_numpy(indptr, cols, vals, W, b, kind):
    """NumPy twin of :func:`sparse_forward` (densify, then f(x · W + b))."""
    x = np.zeros((len(indptr) - 1, W.shape[0]), dtype=W.dtype)
    for s in range(len(indptr) - 1):
        x[s, cols[indptr[s]:indptr[s + 1]]] = vals[indptr[s]:indptr[s + 1]]
    return bias_activation_numpy(x @ W, b, kind)


@njit(inline="always", fastmath=_FAST)
def _dense_row(a, W, b, kind, out, s, one):
    n_in, n_out = W.shape
    for j in range(n_out):
        out[s, j] = b[j]
    for i in range(n_in):
        x = a[s, i]
        for j in range(n_out):
            out[s, j] += x * W[i, j]
    _activate_row(out, s, kind, one)


@njit(cache=True, fastmath=_FAST)
def dense_forward(a, W, b, kind, out):
    """out = f(a · W + b): BLAS for large products, else one fused loop per row."""
    n, n_in = a.shape
    if n * n_in * W.shape[1] >= BLAS_MIN_FLOPS:
        np.dot(a, W, out)
        return bias_activation(out, b, kind)
    one = W.dtype.type(1)
    for s in range(n):
        _dense_row(a, W, b, kind, out, s, one)
    return out


@njit(cache=True, fastmath=_FAST, parallel=True)
def dense_forward_par(a, W, b, kind, out):
    """:func:`dense_forward` with the rows split between threads (and BLAS threads)."""
    n, n_in = a.shape
    if n * n_in * W.shape[1] >= BLAS_MIN_FLOPS:
        np.dot(a, W, out)
        return bias_activation_par(out, b, kind)
    one = W.dtype.type(1)
    for s in prange(n):
        _dense_row(a, W, b, kind, out, s, one)
    return out


def dense_forward_numpy(a, W, b, kind):
    """NumPy twin of :func:`dense_forward`: f(a · W + b)."""
    return bias_activation_numpy(a @ W, b, kind)


# ------------------------------------------------------------------ output


@njit(cache=True, fastmath=_FAST)
def output_delta(z, Y, loss, out_kind, delta):
    """ŷ = g(z), the batch-mean loss, and δ = ∂L/∂z in one pass over each row.

    ``z`` is the output layer's pre-activation; it is overwritten with ŷ.
    Returns the loss as a float64. For the pairs of :mod:`mlp.losses`:
    ce (softmax): δ = (ŷ − y)/n; bce (sigmoid): δ = (ŷ − y)/n;
    mse (any g): δ = (ŷ − y) g'(z)/n, loss ½Σ(ŷ − y)²/n.
    """
    n, n_out = z.shape
    one = z.dtype.type(1)
    zero = z.dtype.type(0)
    nf = z.dtype.type(n)
    total = 0.0
    for s in range(n):
        row = 0.0
        if loss == CE:
            # log ŷ_k = z_k − m − log Σ exp(z − m): finite for any finite z
            m = z[s, 0]
            for k in range(1, n_out):
                m = max(m, z[s, k])
            se = zero
            for k in range(n_out):
                se += math.exp(z[s, k] - m)
            lse = math.log(se)
            for k in range(n_out):
                y = Y[s, k]
                shifted = z[s, k] - m
                row -= y * (shifted - lse)
                yhat = math.exp(shifted) / se
                z[s, k] = yhat
                delta[s, k] = (yhat - y) / nf
        elif loss == BCE:
            # −[y log σ(z) + (1 − y) log(1 − σ(z))] = softplus(z) − y z
            for k in range(n_out):
                x = z[s, k]
                y = Y[s, k]
                row += max(x, zero) + math.log1p(math.exp(-abs(x))) - y * x
                yhat = _f(x, SIGMOID, one)
                z[s, k] = yhat
                delta[s, k] = (yhat - y) / nf
        else:
            for k in range(n_out):
                yhat = _f(z[s, k], out_kind, one)
                err = yhat - Y[s, k]
                row += err * err
                z[s, k] = yhat
                delta[s, k] = err * _fprime(yhat, out_kind, one) / nf
            row *= 0.5
        total += row
    return total / n


def output_delta_numpy(z, Y, loss, out_kind):
    """NumPy twin of :func:`output_delta`: (loss, ŷ, δ) from the reference loss."""
    L = get_loss(LOSS_NAMES[loss], None if loss == CE else ACTIVATION_NAMES[out_kind])
    yhat = L.activate(z)
    return L.value(z, yhat, Y), yhat, L.delta(z, yhat, Y)


@njit(cache=True)
def output_activation(z, loss, out_kind):
    """z ← g(z) in place: softmax for ce, sigmoid for bce, the mse output's function."""
    n, n_out = z.shape
    one = z.dtype.type(1)
    for s in range(n):
        if loss == CE:
            m = z[s, 0]
            for k in range(1, n_out):
                m = max(m, z[s, k])
            se = z.dtype.type(0)
            for k in range(n_out):
                z[s, k] = math.exp(z[s, k] - m)
                se += z[s, k]
            for k in range(n_out):
                z[s, k] /= se
        else:
            kind = SIGMOID if loss == BCE else out_kind
            for k in range(n_out):
                z[s, k] = _f(z[s, k], kind, one)
    return z


def output_activation_numpy(z, loss, out_kind):
    """NumPy twin of :func:`output_activation`: the reference loss's activate."""
    return get_loss(LOSS_NAMES[loss], None if loss == CE else ACTIVATION_NAMES[out_kind]).activate(z)


# ---------------------------------------------------------------- backward


@njit(inline="always", fastmath=_FAST_SUM)
def _backprop_row(d_next, W, a, kind, out, s, one):
    n_in, n_out = W.shape
    for i in range(n_in):
        t = d_next[s, 0] * W[i, 0]
        for k in range(1, n_out):
            t += d_next[s, k] * W[i, k]
        out[s, i] = t * _fprime(a[s, i], kind, one)


@njit(cache=True, fastmath=_FAST_SUM)
def backprop_delta(d_next, W, a, kind, out):
    """out = (δ · Wᵀ) ⊙ f'(a): the error of the layer below (before W is updated)."""
    n = d_next.shape[0]
    one = W.dtype.type(1)
    if n * W.shape[0] * W.shape[1] >= BLAS_MIN_FLOPS:
        np.dot(d_next, W.T, out)
        for s in range(n):
            for i in range(W.shape[0]):
                out[s, i] *= _fprime(a[s, i], kind, one)
        return out
    for s in range(n):
        _backprop_row(d_next, W, a, kind, out, s, one)
    return out


@njit(cache=True, fastmath=_FAST_SUM, parallel=True)
def backprop_delta_par(d_next, W, a, kind, out):
    """:func:`backprop_delta` with the rows split between threads (and BLAS threads)."""
    n = d_next.shape[0]
    one = W.dtype.type(1)
    if n * W.shape[0] * W.shape[1] >= BLAS_MIN_FLOPS:
        np.dot(d_next, W.T, out)
        for s in prange(n):
            for i in range(W.shape[0]):
                out[s, i] *= _fprime(a[s, i], kind, one)
        return out
    for s in prange(n):
        _backprop_row(d_next, W, a, kind, out, s, one)
    return out


def backprop_delta_numpy(d_next, W, a, kind):
    """NumPy twin of :func:`backprop_delta`: (δ · Wᵀ) ⊙ f'(a) with mlp.activations' f'."""
    return (d_next @ W.T) * DERIVATIVES[ACTIVATION_NAMES[kind]](a, a)


@njit(inline="always", fastmath=_FAST)
def _column_sums(d, gb):
    n, n_out = d.shape
    for k in range(n_out):
        gb[k] = 0
    for s in range(n):
        for k in range(n_out):
            gb[k] += d[s, k]


@njit(cache=True, fastmath=_FAST)
def dense_gradient(a, d, G, gb):
    """G = aᵀ · δ and gb = Σ_rows δ: the gradients of a layer with input a and error δ."""
    n, n_in = a.shape
    n_out = d.shape[1]
    _column_sums(d, gb)
    if n * n_in * n_out >= BLAS_MIN_FLOPS:
        np.dot(a.T, d, G)
        return G
    for i in range(n_in):
        for k in range(n_out):
            G[i, k] = 0
    for s in range(n):
        for i in range(n_in):
            x = a[s, i]
            for k in range(n_out):
                G[i, k] += x * d[s, k]
    return G


@njit(cache=True, fastmath=_FAST, parallel=True)
def dense_gradient_par(a, d, G, gb):
    """:func:`dense_gradient` with the rows of G split between threads (and BLAS threads)."""
    n, n_in = a.shape
    n_out = d.shape[1]
    _column_sums(d, gb)
    if n * n_in * n_out >= BLAS_MIN_FLOPS:
        np.dot(a.T, d, G)
        return G
    for i in prange(n_in):
        for k in range(n_out):
            G[i, k] = 0
        for s in range(n):
            x = a[s, i]
            for k in range(n_out):
                G[i, k] += x * d[s, k]
    return G


def dense_gradient_numpy(a, d):
    """NumPy twin of :func:`dense_gradient`: (aᵀ · δ, Σ δ), as in Network.backward."""
    return a.T @ d, d.sum(axis=0)


@njit(cache=True, fastmath=_FAST)
def sparse_gradient(indptr, cols, vals, d, G, gb, touched):
    """G = xᵀ · δ, gb = Σ δ for a CSR input x; only rows of G with a non-zero x are written.

    ``touched[i]`` is set to 1 for those rows and 0 for the others, whose
    gradient is exactly zero (their rows of G are left as they were).
    """
    n_out = d.shape[1]
    _column_sums(d, gb)
    touched[:] = 0
    for s in range(indptr.shape[0] - 1):
        for p in range(indptr[s], indptr[s + 1]):
            i = cols[p]
            x = vals[p]
            if touched[i] == 0:
                touched[i] = 1
                for k in range(n_out):
                    G[i, k] = x * d[s, k]
            else:
                for k in range(n_out):
                    G[i, k] += x * d[s, k]
    return G


@njit(cache=True, fastmath=_FAST, parallel=True)
def sparse_gradient_par(indptr, cols, vals, d, G, gb, touched):
    """:func:`sparse_gradient` with the columns of G split between threads.

    Each thread sums over the whole batch, in the same order, for its own
    columns: no shared sums, so the result does not depend on the threads.
    """
    n_out = d.shape[1]
    _column_sums(d, gb)
    touched[:] = 0
    n_rows = indptr.shape[0] - 1
    for s in range(n_rows):
        for p in range(indptr[s], indptr[s + 1]):
            touched[cols[p]] = 1
    # zero the touched rows, then accumulate; blocks of 16 columns per task
    n_blocks = (n_out + 15) // 16
    for blk in prange(n_blocks):
        k0 = blk * 16
        k1 = min(n_out, k0 + 16)
        for i in range(G.shape[0]):
            if touched[i]:
                for k in range(k0, k1):
                    G[i, k] = 0
        for s in range(n_rows):
            for p in range(indptr[s], indptr[s + 1]):
                i = cols[p]
                x = vals[p]
                for k in range(k0, k1):
                    G[i, k] += x * d[s, k]
    return G


def sparse_gradient_numpy(indptr, cols, vals, d, n_in):
    """NumPy twin of :func:`sparse_gradient`: (xᵀ · δ, Σ δ, touched) with x densified."""
    x = np.zeros((len(indptr) - 1, n_in), dtype=d.dtype)
    for s in range(len(indptr) - 1):
        x[s, cols[indptr[s]:indptr[s + 1]]] = vals[indptr[s]:indptr[s + 1]]
    touched = (x != 0).any(axis=0).astype(np.uint8)
    return x.T @ d, d.sum(axis=0), touched


# ------------------------------------------------------------------ update


@njit(inline="always")
def _sgd(p, g, v, j, lr, mu, wd, nesterov):
    """One SGD step of element j, the reference's arithmetic in the same order."""
    gj = g[j] + wd * p[j] if wd != 0 else g[j]
    if mu != 0:
        vj = mu * v[j] - lr * gj
        v[j] = vj
        if nesterov:
            p[j] += mu * vj - lr * gj
        else:
            p[j] += vj
    else:
        p[j] -= lr * gj


@njit(cache=True)
def sgd_update(p, g, v, lr, mu, wd, nesterov):
    """In place: g ← g + λp (if λ); v ← μv − ηg; p ← p + v (Nesterov: p + μv − ηg); μ = 0: p ← p − ηg.

    p, g, v are same-shape contiguous arrays (v unused when μ = 0); pass
    λ = 0 for biases, which are not decayed.
    """
    pf, gf, vf = p.ravel(), g.ravel(), v.ravel()
    for j in range(pf.shape[0]):
        _sgd(pf, gf, vf, j, lr, mu, wd, nesterov)


@njit(cache=True, parallel=True)
def sgd_update_par(p, g, v, lr, mu, wd, nesterov):
    """:func:`sgd_update` with the elements split between threads."""
    pf, gf, vf = p.ravel(), g.ravel(), v.ravel()
    for j in prange(pf.shape[0]):
        _sgd(pf, gf, vf, j, lr, mu, wd, nesterov)


def sgd_update_numpy(p, g, v, lr, mu, wd, nesterov):
    """NumPy twin of :func:`sgd_update` (in place on p and v), as in :meth:`mlp.optimizers.SGD.step`."""
    dt = p.dtype.type
    lr, mu, wd = dt(lr), dt(mu), dt(wd)
    if wd:
        g = g + wd * p
    if mu:
        v *= mu
        v -= lr * g
        if nesterov:
            p += mu * v - lr * g
        else:
            p += v
    else:
        p -= lr * g


@njit(inline="always")
def _sgd_row(W, G, V, i, lr, mu, wd, nesterov, touched):
    zero = W.dtype.type(0)
    n_out = W.shape[1]
    if touched[i]:
        for k in range(n_out):
            gk = G[i, k] + wd * W[i, k] if wd != 0 else G[i, k]
            if mu != 0:
                vk = mu * V[i, k] - lr * gk
                V[i, k] = vk
                W[i, k] += mu * vk - lr * gk if nesterov else vk
            else:
                W[i, k] -= lr * gk
    elif mu != 0 or wd != 0:         # zero gradient: only decay and momentum act
        for k in range(n_out):
            gk = zero + wd * W[i, k]
            if mu != 0:
                vk = mu * V[i, k] - lr * gk
                V[i, k] = vk
                W[i, k] += mu * vk - lr * gk if nesterov else vk
            else:
                W[i, k] -= lr * gk


@njit(cache=True)
def sgd_update_rows(W, G, V, touched, lr, mu, wd, nesterov):
    """:func:`sgd_update` for a weight matrix whose gradient is G on rows with touched[i], else 0.

    Plain SGD leaves the zero-gradient rows alone; momentum and decay still move them.
    """
    for i in range(W.shape[0]):
        _sgd_row(W, G, V, i, lr, mu, wd, nesterov, touched)


@njit(cache=True, parallel=True)
def sgd_update_rows_par(W, G, V, touched, lr, mu, wd, nesterov):
    """:func:`sgd_update_rows` with the rows split between threads."""
    for i in prange(W.shape[0]):
        _sgd_row(W, G, V, i, lr, mu, wd, nesterov, touched)


def sgd_update_rows_numpy(W, G, V, touched, lr, mu, wd, nesterov):
    """NumPy twin of :func:`sgd_update_rows`: the full update with G zeroed off the touched rows."""
    g = np.where(touched[:, None] != 0, G, 0).astype(W.dtype)
    sgd_update_numpy(W, g, V, lr, mu, wd, nesterov)


# ------------------------------------------------------------ the batch loop


@njit(cache=True)
def _batch_gradients(X, scale, labels, T, rows, weights, biases, act, loss, out_kind,
                     sparse, parallel, bufs, update, lr, mu, wd, nesterov, vw, vb):
    """Forward and backward pass of one batch; returns its mean loss.

    With ``update`` the SGD step of each layer follows its gradient at once
    (after δ of the layer below, which needs the old W, is computed); else
    the gradients stay in ``bufs`` for the caller.
    """
    acts, deltas, grads, gbs, Ybuf, indptr, cols, vals, touched = bufs
    nl = len(weights)
    nb = rows.shape[0]
    Y = Ybuf[:nb]
    gather_targets(labels, T, rows, Y)
    # forward: layer 0 from the raw rows, then dense layers; the last keeps z
    for l in range(nl):
        kind = act if l < nl - 1 else IDENTITY
        out = acts[l + 1][:nb]
        if l == 0 and sparse:
            gather_sparse(X, rows, scale, indptr, cols, vals)
            if parallel:
                sparse_forward_par(indptr, cols, vals, weights[0], biases[0], kind, out)
            else:
                sparse_forward(indptr, cols, vals, weights[0], biases[0], kind, out)
        else:
            if l == 0:
                gather_dense(X, rows, scale, acts[0][:nb])
            if parallel:
                dense_forward_par(acts[l][:nb], weights[l], biases[l], kind, out)
            else:
                dense_forward(acts[l][:nb], weights[l], biases[l], kind, out)
    d = deltas[nl][:nb]
    batch_loss = output_delta(acts[nl][:nb], Y, loss, out_kind, d)
    # backward, from the output layer down
    for l in range(nl - 1, -1, -1):
        d = deltas[l + 1][:nb]
        G = grads[l]
        if l == 0 and sparse:
            if parallel:
                sparse_gradient_par(indptr, cols, vals, d, G, gbs[0], touched)
            else:
                sparse_gradient(indptr, cols, vals, d, G, gbs[0], touched)
        elif parallel:
            dense_gradient_par(acts[l][:nb], d, G, gbs[l])
        else:
            dense_gradient(acts[l][:nb], d, G, gbs[l])
        if l > 0:
            if parallel:
                backprop_delta_par(d, weights[l], acts[l][:nb], act, deltas[l][:nb])
            else:
                backprop_delta(d, weights[l], acts[l][:nb], act, deltas[l][:nb])
        if update:
            if l == 0 and sparse:
                if parallel:
                    sgd_update_rows_par(weights[0], G, vw[0], touched, lr, mu, wd, nesterov)
                else:
                    sgd_update_rows(weights[0], G, vw[0], touched, lr, mu, wd, nesterov)
            elif parallel:
                sgd_update_par(weights[l], G, vw[l], lr, mu, wd, nesterov)
            else:
                sgd_update(weights[l], G, vw[l], lr, mu, wd, nesterov)
            sgd_update(biases[l], gbs[l], vb[l], lr, mu, wd * 0, nesterov)
    return batch_loss


@njit(cache=True)
def _buffers(weights, batch_size, sparse):
    """Work arrays for batches of up to ``batch_size`` rows."""
    dtype = weights[0].dtype
    nl = len(weights)
    n_in = weights[0].shape[0]
    acts = [np.empty((batch_size, n_in), dtype)]
    deltas = [np.empty((0, n_in), dtype)]
    grads = []
    gbs = []
    for l in range(nl):
        n_out = weights[l].shape[1]
        acts.append(np.empty((batch_size, n_out), dtype))
        deltas.append(np.empty((batch_size, n_out), dtype))
        grads.append(np.zeros(weights[l].shape, dtype))
        gbs.append(np.empty(n_out, dtype))
    n_out = weights[nl - 1].shape[1]
    Y = np.empty((batch_size, n_out), dtype)
    cap = batch_size * n_in if sparse else 0
    indptr = np.zeros(batch_size + 1, np.int64)
    cols = np.empty(cap, np.int32)
    vals = np.empty(cap, dtype)
    touched = np.zeros(n_in if sparse else 0, np.uint8)
    return acts, deltas, grads, gbs, Y, indptr, cols, vals, touched


@njit(cache=True)
def train_chunk(X, scale, labels, T, order, start, stop, batch_size, weights, biases, vw, vb,
                act, loss, out_kind, lr, mu, wd, nesterov, sparse, parallel, losses):
    """Train on batches start … stop-1 of an epoch, in place; losses[k] = loss of batch start+k.

    Batch b is rows ``order[b*batch_size:(b+1)*batch_size]`` of X (uint8
    pixels times ``scale``, or floats with scale 1); its targets are the
    one-hot ``labels`` of those rows, or rows of T when labels is empty.
    ``weights``, ``biases`` and the velocities ``vw``, ``vb`` are tuples of
    the network's and optimizer's arrays, updated in place as
    :meth:`mlp.optimizers.SGD.step` would. ``sparse``: skip zero inputs in
    the first layer; ``parallel``: split each batch's work between threads.
    """
    n = order.shape[0]
    bufs = _buffers(weights, batch_size, sparse)
    for b in range(start, stop):
        lo = b * batch_size
        rows = order[lo:min(lo + batch_size, n)]
        losses[b - start] = _batch_gradients(
            X, scale, labels, T, rows, weights, biases, act, loss, out_kind, sparse, parallel,
            bufs, True, lr, mu, wd, nesterov, vw, vb)
    return losses


def train_chunk_numpy(X, scale, labels, T, order, start, stop, batch_size, weights, biases,
                      vw, vb, act, loss, out_kind, lr, mu, wd, nesterov, losses):
    """NumPy twin of :func:`train_chunk`: the reference Network and SGD arithmetic, batch by batch."""
    from .network import Network
    net = object.__new__(Network)
    net.weights, net.biases = list(weights), list(biases)
    net.sizes = [weights[0].shape[0]] + [w.shape[1] for w in weights]
    net.activation = ACTIVATION_NAMES[act]
    net.loss = get_loss(LOSS_NAMES[loss], None if loss == CE else ACTIVATION_NAMES[out_kind])
    net.dtype = weights[0].dtype
    n = len(order)
    for b in range(start, stop):
        rows = order[b * batch_size:(b + 1) * batch_size]
        xb = gather_dense_numpy(X, rows, scale, net.dtype)
        yb = gather_targets_numpy(labels, T, rows, net.sizes[-1], net.dtype)
        value, gw, gb = net.loss_and_gradients(xb, yb)
        for l in range(len(weights)):
            sgd_update_numpy(weights[l], gw[l], vw[l], lr, mu, wd, nesterov)
            sgd_update_numpy(biases[l], gb[l], vb[l], lr, mu, 0.0, nesterov)
        losses[b - start] = value
    assert n >= 0
    return losses


@njit(cache=True)
def loss_and_gradients(X, Y, weights, biases, act, loss, out_kind, sparse):
    """Mean loss of the batch (X, Y) and the gradients (lists of G per layer, gb per layer).

    X is a float batch in the network's dtype, Y its 2-D targets. No weight decay here.
    """
    nb = X.shape[0]
    bufs = _buffers(weights, nb, sparse)
    rows = np.arange(nb)
    labels = np.empty(0, np.int64)
    value = _batch_gradients(X, X.dtype.type(1), labels, Y, rows, weights, biases, act, loss,
                             out_kind, sparse, False, bufs, False, 0.0, 0.0, 0.0, False,
                             weights, biases)
    return value, bufs[2], bufs[3]


@njit(cache=True)
def predict(X, scale, weights, biases, act, loss, out_kind, parallel, out):
    """out = ŷ for every row of X (uint8 times scale, or float), 1024 rows at a time."""
    n = X.shape[0]
    nl = len(weights)
    chunk = 1024
    bufs = _buffers(weights, min(chunk, max(n, 1)), False)
    acts = bufs[0]
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        rows = np.arange(lo, hi)
        nb = hi - lo
        gather_dense(X, rows, scale, acts[0][:nb])
        for l in range(nl):
            kind = act if l < nl - 1 else IDENTITY
            if parallel:
                dense_forward_par(acts[l][:nb], weights[l], biases[l], kind, acts[l + 1][:nb])
            else:
                dense_forward(acts[l][:nb], weights[l], biases[l], kind, acts[l + 1][:nb])
        z = acts[nl][:nb]
        output_activation(z, loss, out_kind)
        out[lo:hi] = z
    return out


def predict_numpy(X, scale, weights, biases, act, loss, out_kind):
    """NumPy twin of :func:`predict`: gather, then Network.feedforward."""
    from .network import Network
    net = object.__new__(Network)
    net.weights, net.biases = list(weights), list(biases)
    net.activation = ACTIVATION_NAMES[act]
    net.loss = get_loss(LOSS_NAMES[loss], None if loss == CE else ACTIVATION_NAMES[out_kind])
    net.dtype = weights[0].dtype
    return net.feedforward(gather_dense_numpy(X, np.arange(len(X)), scale, net.dtype))
