"""The NumPy twins of the Numba kernels in :mod:`mlp.kernels`, one per kernel, same name.

Each twin computes what its kernel computes by calling the reference code —
:mod:`mlp.batches` (gathering rows), :mod:`mlp.network` (forward and
backward passes), :mod:`mlp.losses`, :mod:`mlp.activations`,
:func:`mlp.optimizers.sgd_step`, :func:`~mlp.optimizers.adam_step` — so
that no formula has a third copy.
tests/test_kernels.py runs each pair on random inputs and compares them.
The twins take the kernels' bundles (:class:`mlp.kernels.Model`,
:class:`~mlp.kernels.SGDParams`, …) and return their results where the
kernels write into ``out`` arrays.
"""

import numpy as np
import scipy.sparse as sp

from .activations import ACTIVATIONS, DERIVATIVES
from .batches import Extras, batch_inputs, batch_targets, run_batches
from .dropout import kept, mask, row_keys
from .kernels import ACTIVATION_NAMES, CE, LOSS_NAMES, POISSON, SparseBatch
from .losses import get_loss
from .network import Network
from .optimizers import SGD, Adam, adam_step, max_norm_step, sgd_step


def loss_of(model):
    """The reference :class:`mlp.losses.Loss` of a :class:`~mlp.kernels.Model`."""
    output = None if model.loss in (CE, POISSON) else ACTIVATION_NAMES[model.out_kind]
    return get_loss(LOSS_NAMES[model.loss], output)


def network_of(weights, biases, model):
    """A :class:`Network` over the given arrays (not copied) computing ``model``."""
    loss = loss_of(model)
    return Network.from_arrays(weights, biases, ACTIVATION_NAMES[model.act], loss.name,
                               loss.output)


def densify(batch, n_in):
    """The dense (n, n_in) matrix of a :class:`~mlp.kernels.SparseBatch`."""
    nnz, cols, vals = batch
    x = np.zeros((len(nnz), n_in), dtype=vals.dtype)
    for s in range(len(nnz)):
        x[s, cols[s, :nnz[s]]] = vals[s, :nnz[s]]
    return x


def gather_dense(X, rows, scale, dtype):
    """Twin of :func:`mlp.kernels.gather_dense`: the reference's ``batch_inputs``."""
    return batch_inputs(X, rows, scale, np.dtype(dtype))


def gather_sparse(X, rows, scale, dtype):
    """Twin of :func:`mlp.kernels.gather_sparse`.

    The :class:`SparseBatch` of the reference's batch.
    """
    xb = gather_dense(X, rows, scale, dtype)
    nnz = np.count_nonzero(xb, axis=1)
    cols = np.zeros(xb.shape, np.int32)
    vals = np.zeros(xb.shape, xb.dtype)
    for s in range(len(rows)):
        (c,) = np.nonzero(xb[s])
        cols[s, :len(c)], vals[s, :len(c)] = c, xb[s, c]
    return SparseBatch(nnz, cols, vals)


def csr_matrix_of(data, n_in):
    """The scipy.sparse CSR matrix of a :class:`~mlp.kernels.Data`'s ``csr`` bundle."""
    indptr, indices, values = data.csr
    return sp.csr_matrix((values, indices, indptr), shape=(len(indptr) - 1, n_in))


def gather_csr(X, rows):
    """Twin of :func:`mlp.kernels.gather_csr`: rows ``rows`` of the scipy.sparse X, dense."""
    return X[rows].toarray()


def gather_targets(labels, T, rows, n_out, dtype):
    """Twin of :func:`mlp.kernels.gather_targets`: the reference's ``batch_targets``."""
    return batch_targets(labels if len(labels) else T, rows, n_out, np.dtype(dtype))


def bias_activation(z, b, kind):
    """Twin of :func:`mlp.kernels.bias_activation`: f(z + b) with mlp.activations' f."""
    return ACTIVATIONS[ACTIVATION_NAMES[kind]](z + b)


def dense_forward(a, W, b, kind):
    """Twin of :func:`mlp.kernels.dense_forward` (which takes Wᵀ): f(a · W + b)."""
    return bias_activation(a @ W, b, kind)


def sparse_forward(batch, W, b, kind):
    """Twin of :func:`mlp.kernels.sparse_forward`: densify, then f(x · W + b)."""
    return dense_forward(densify(batch, W.shape[0]), W, b, kind)


def output_delta(z, Y, model, w=None):
    """Twin of :func:`mlp.kernels.output_delta`: (loss, ŷ, δ) from the reference loss.

    ``w``: sample weights (one per row), or None.
    """
    loss = loss_of(model)
    yhat = loss.activate(z)
    return loss.value(z, yhat, Y, w), yhat, loss.delta(z, yhat, Y, w)


def output_activation(z, model):
    """Twin of :func:`mlp.kernels.output_activation`: the reference loss's ``activate``."""
    return loss_of(model).activate(z)


def times_fprime(d, a, kind):
    """Twin of :func:`mlp.kernels.times_fprime`: d ⊙ f'(a) with mlp.activations' derivative."""
    return d * DERIVATIVES[ACTIVATION_NAMES[kind]](a, a)


def backprop_delta(d, W, a, kind, mask=None):
    """Twin of :func:`mlp.kernels.backprop_delta` (which takes Wᵀ): (δ · Wᵀ) (⊙ m) ⊙ f'(a)."""
    upstream = d @ W.T
    return times_fprime(upstream if mask is None else upstream * mask, a, kind)


def row_key(seed, epoch, pos, layer):
    """Twin of :func:`mlp.kernels.row_key`: :func:`mlp.dropout.row_keys` of one position."""
    return row_keys(seed, epoch, [pos], layer)[0]


def _masks(dropout, dtype, layer, width, positions):
    """Layer ``layer``'s masks of ``positions``, as Network.dropout_masks draws them."""
    return mask(int(dropout.seed), int(dropout.epoch), positions, layer, width,
                float(dropout.rates[layer]), dtype)


def drop_rows(a, layer, dropout, pos0):
    """Twin of :func:`mlp.kernels.drop_rows`: (mask, a ⊙ mask) from Network.dropout_masks."""
    mask = _masks(dropout, a.dtype, layer, a.shape[1], pos0 + np.arange(len(a)))
    return mask, a * mask


def drop_entries(batch, n_in, dropout, pos0):
    """Twin of :func:`mlp.kernels.drop_entries`: the dense rows masked, as a :class:`SparseBatch`.

    Also checks that the kept entries are those :func:`mlp.dropout.kept` keeps.
    """
    x = densify(batch, n_in)
    positions = pos0 + np.arange(len(x))
    masked = x * _masks(dropout, x.dtype, 0, n_in, positions)
    keep = kept(int(dropout.seed), int(dropout.epoch), positions, 0, n_in, dropout.rates[0])
    assert not (masked[~keep]).any()
    nnz = np.count_nonzero((x != 0) & keep, axis=1)
    cols, vals = np.zeros(x.shape, np.int32), np.zeros(x.shape, x.dtype)
    for s in range(len(x)):
        (c,) = np.nonzero((x[s] != 0) & keep[s])
        cols[s, :len(c)], vals[s, :len(c)] = c, masked[s, c]
    return SparseBatch(nnz, cols, vals)


def column_sums(d):
    """Twin of :func:`mlp.kernels.column_sums`, as in Network.backward."""
    return d.sum(axis=0)


def dense_gradient(a, d):
    """Twin of :func:`mlp.kernels.dense_gradient`: (aᵀ · δ, Σ δ).

    The kernel returns W's gradient transposed.
    """
    return a.T @ d, column_sums(d)


def sparse_gradient(batch, d, n_in):
    """Twin of :func:`mlp.kernels.sparse_gradient`: (xᵀ · δ, Σ δ, touched) with x densified."""
    x = densify(batch, n_in)
    G, gb = dense_gradient(x, d)
    return G, gb, (x != 0).any(axis=0).astype(np.uint8)


def sgd_update(p, g, v, sgd):
    """Twin of :func:`mlp.kernels.sgd_update`: :func:`mlp.optimizers.sgd_step`.

    In place on p and v.
    """
    return sgd_step(p, g, v, sgd.lr, sgd.mu, sgd.wd, sgd.nesterov)


def dense_sgd_plain(a, d, W, lr):
    """Twin of :func:`mlp.kernels.dense_sgd_plain`: the gradient, then plain SGD.

    The kernel updates Wᵀ.
    """
    G, _ = dense_gradient(a, d)
    return sgd_step(W, G, None, lr, 0.0, 0.0, False)


def sparse_sgd_plain(batch, d, W, lr):
    """Twin of :func:`mlp.kernels.sparse_sgd_plain`: the gradient, then plain SGD."""
    G, _, _ = sparse_gradient(batch, d, W.shape[0])
    return sgd_step(W, G, None, lr, 0.0, 0.0, False)


def sgd_update_rows(layer, sgd):
    """Twin of :func:`mlp.kernels.sgd_update_rows`.

    The full update with G zeroed off the touched rows, then G ← 0.
    """
    W, G = layer.W, layer.G
    g = np.where(layer.touched[:, None] != 0, G, 0).astype(W.dtype)
    sgd_update(W, g, layer.V, sgd)
    G[...] = 0
    return W


def adam_update(p, g, m, v, adam):
    """Twin of :func:`mlp.kernels.adam_update`: :func:`mlp.optimizers.adam_step`, then g ← 0.

    In place on p, m and v. AdamW's ``decay`` (ηλ, already a product) is
    passed as λ = ηλ with η = 1.
    """
    if adam.decay:
        adam_step(p, g, m, v, adam.step, adam.beta1, adam.beta2, adam.eps, adam.decay, lr=1.0)
    else:
        adam_step(p, g, m, v, adam.step, adam.beta1, adam.beta2, adam.eps, adam.wd)
    g[...] = 0
    return p


def sparse_adam_par(batch, d, layer, S, adam):
    """Twin of :func:`mlp.kernels.sparse_adam_par`: the gradient's twin, then adam_update's.

    In place on layer.W, layer.V (m) and S (v); returns (W, Σ δ).
    """
    G, gb, _ = sparse_gradient(batch, d, layer.W.shape[0])
    adam_update(layer.W, G.astype(layer.W.dtype), layer.V, S, adam)
    return layer.W, gb


def max_norm_cols(W, c):
    """Twin of :func:`mlp.kernels.max_norm_cols`: :func:`mlp.optimizers.max_norm_step`."""
    return max_norm_step(W, c)


def max_norm_rows(Wt, c):
    """Twin of :func:`mlp.kernels.max_norm_rows` (which takes Wᵀ): max-norm of W = Wtᵀ."""
    max_norm_step(Wt.T, c)
    return Wt


def optimizer_of(opt, params):
    """The reference optimizer of an :class:`~mlp.kernels.OptParams`, on ``params``' state.

    Its η is left to the caller (``opt.lrs`` holds one per batch).
    """
    if opt.adam:
        ref = Adam(1.0, float(opt.beta1), float(opt.beta2), float(opt.eps), float(opt.wd),
                   bool(opt.decoupled), float(opt.max_norm))
        ref.m_w, ref.m_b = list(params.vel_w), list(params.vel_b)
        ref.v_w, ref.v_b = list(params.sq_w), list(params.sq_b)
    else:
        ref = SGD(1.0, float(opt.mu), bool(opt.nesterov), float(opt.wd), float(opt.max_norm))
        ref.velocity_w, ref.velocity_b = list(params.vel_w), list(params.vel_b)
    return ref


def train_chunk(data, params, model, opt, plan, start, stop, losses, dropout):
    """Twin of :func:`mlp.kernels.train_chunk`.

    :func:`mlp.batches.run_batches` with the reference Network and optimizer,
    one batch at a time at the rate ``opt.lrs[k]``, counting steps from ``opt.t0``,
    with the sample weights of ``data`` and the rates and key of ``dropout``.
    """
    net = network_of(params.weights, params.biases, model)
    ref = optimizer_of(opt, params)
    targets = data.labels if len(data.labels) else data.T
    X = csr_matrix_of(data, net.sizes[0]) if len(data.csr.indptr) else data.X
    extras = _extras_of(data, dropout)
    for k, b in enumerate(range(start, stop)):
        ref.lr, ref.t = float(opt.lrs[k]), int(opt.t0) + k
        losses[k] = run_batches(net, ref, X, targets, data.order, b, b + 1, plan.batch_size,
                                extras)[0]
    return losses


def train_chunk_adam(data, params, model, opt, plan, start, stop, losses, dropout):
    """Twin of :func:`mlp.kernels.train_chunk_adam`: :func:`train_chunk` (which takes the
    optimizer from ``opt.adam``)."""
    return train_chunk(data, params, model, opt, plan, start, stop, losses, dropout)


def _extras_of(data, dropout):
    """The reference's :class:`mlp.batches.Extras` of a :class:`~mlp.kernels.Data` (its scale
    and sample weights) and a :class:`~mlp.kernels.Dropout`."""
    rates = [float(p) for p in dropout.rates]
    return Extras(float(data.scale), data.weights if len(data.weights) else None,
                  rates if any(rates) else None, int(dropout.seed), int(dropout.epoch))


def block_gradient(data, weights, biases, model, dropout, lo, hi):
    """Twin of :func:`mlp.kernels.block_gradient`: (Σ wᵢ lᵢ, flat gradient) of rows
    order[lo:hi], from :meth:`Network.loss_and_gradients` with the sample weights of
    ``data`` and the dropout masks of positions lo … hi-1.

    The reference returns (1/m) Σ wᵢ lᵢ over its m rows and that mean's
    gradient; the kernel's share of the n-row mean is m/n of it.
    """
    net = network_of(weights, biases, model)
    rows = data.order[lo:hi]
    X = csr_matrix_of(data, net.sizes[0]) if len(data.csr.indptr) else data.X
    xb = batch_inputs(X, rows, data.scale, net.dtype)
    yb = batch_targets(data.labels if len(data.labels) else data.T, rows, net.sizes[-1],
                       net.dtype)
    extras = _extras_of(data, dropout)
    w = extras.sample_weight[rows] if len(data.weights) else np.ones(len(rows), net.dtype)
    masks = None
    if extras.dropout is not None:
        masks = net.dropout_masks(extras.dropout, extras.seed, extras.epoch, np.arange(lo, hi))
    loss, nabla_w, nabla_b = net.loss_and_gradients(xb, yb, sample_weight=w, dropout_masks=masks)
    share = len(rows) / len(data.order)
    flat = np.concatenate([g.ravel() for g in nabla_w + nabla_b])
    return loss * len(rows), flat * share


def predict(X, scale, weights, biases, model):
    """Twin of :func:`mlp.kernels.predict`: gather, then Network.feedforward."""
    net = network_of(weights, biases, model)
    return net.feedforward(gather_dense(X, np.arange(len(X)), scale, net.dtype))
