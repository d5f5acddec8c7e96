"""The NumPy twins of the Numba kernels in :mod:`mlp.kernels`, one per kernel, same name.

Each twin computes what its kernel computes by calling the reference code —
:mod:`mlp.batches` (gathering rows), :mod:`mlp.network` (forward and
backward passes), :mod:`mlp.losses`, :mod:`mlp.activations`,
:func:`mlp.optimizers.sgd_step` — so that no formula has a third copy.
tests/test_kernels.py runs each pair on random inputs and compares them.
The twins take the kernels' bundles (:class:`mlp.kernels.Model`,
:class:`~mlp.kernels.SGDParams`, …) and return their results where the
kernels write into ``out`` arrays.
"""

import numpy as np

from .activations import ACTIVATIONS, DERIVATIVES
from .batches import Extras, batch_inputs, batch_targets, run_batches
from .dropout import kept, mask, row_keys
from .kernels import ACTIVATION_NAMES, CE, LOSS_NAMES, POISSON, SparseBatch
from .losses import get_loss
from .network import Network
from .optimizers import SGD, sgd_step


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


def train_chunk(data, params, model, sgd, plan, start, stop, losses, dropout):
    """Twin of :func:`mlp.kernels.train_chunk`.

    :func:`mlp.batches.run_batches` with the reference Network and SGD, the
    sample weights of ``data`` and the rates and key of ``dropout``.
    """
    net = network_of(params.weights, params.biases, model)
    opt = SGD(float(sgd.lr), float(sgd.mu), bool(sgd.nesterov), float(sgd.wd))
    opt.velocity_w, opt.velocity_b = list(params.vel_w), list(params.vel_b)
    targets = data.labels if len(data.labels) else data.T
    rates = [float(p) for p in dropout.rates]
    extras = Extras(float(data.scale), data.weights if len(data.weights) else None,
                    rates if any(rates) else None, int(dropout.seed), int(dropout.epoch))
    losses[:] = run_batches(net, opt, data.X, targets, data.order, start, stop,
                            plan.batch_size, extras)
    return losses


def predict(X, scale, weights, biases, model):
    """Twin of :func:`mlp.kernels.predict`: gather, then Network.feedforward."""
    net = network_of(weights, biases, model)
    return net.feedforward(gather_dense(X, np.arange(len(X)), scale, net.dtype))
