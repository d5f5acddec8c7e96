"""Minibatches on the reference path: rows in, float batches out, one SGD step each.

:func:`run_batches` is *the* batch loop of the NumPy reference, written
once: :class:`mlp.backends.NumpyBackend` runs it, the estimators run it for
what the fast kernels do not compute (sample weights, hidden dropout), and
the Numba kernel :func:`mlp.kernels.train_chunk` is tested against it
through its twin in :mod:`mlp.kernels_reference`. Batch b of an epoch whose
sample order is ``order`` is ``order[b*batch_size:(b+1)*batch_size]``.
"""

import numpy as np

from .losses import one_hot


def batch_inputs(X, idx, scale, dtype):
    """Rows ``idx`` of X as floats of ``dtype``.

    uint8 pixels times ``scale``, floats as they are.
    """
    xb = X[idx]
    if xb.dtype == np.uint8:
        return xb.astype(dtype) * dtype.type(scale)
    return xb.astype(dtype, copy=False)


def batch_targets(targets, idx, n_out, dtype):
    """Rows ``idx`` of the targets as a 2-D float array (labels become one-hot rows)."""
    tb = targets[idx]
    if tb.ndim == 1:
        return one_hot(tb, n_out, dtype)
    return tb.astype(dtype, copy=False)


def batch_rows(order, start, stop, batch_size):
    """The sample indices of batches start … stop-1 of an epoch in ``order``, one array each."""
    return [order[b * batch_size:(b + 1) * batch_size] for b in range(start, stop)]


def run_batches(net, opt, X, targets, batches, scale=1.0, sample_weight=None, dropout=None):
    """Train ``net`` with ``opt`` on each batch of ``batches`` in turn; return their losses.

    Each batch: gather its rows (:func:`batch_inputs`, :func:`batch_targets`),
    compute the loss and gradients (:meth:`Network.loss_and_gradients`),
    take one step (``opt.step``). ``batches`` holds arrays of row indices
    (:func:`batch_rows`). Optional: ``sample_weight`` (one per row of X) and
    ``dropout`` = (rates, rng) for :meth:`Network.dropout_masks`. Returns each
    batch's loss before its update, as a float64 array.
    """
    opt.ensure_state(net)
    losses = np.empty(len(batches))
    for k, idx in enumerate(batches):
        xb = batch_inputs(X, idx, scale, net.dtype)
        yb = batch_targets(targets, idx, net.sizes[-1], net.dtype)
        sw = None if sample_weight is None else sample_weight[idx]
        masks = None if dropout is None else net.dropout_masks(len(idx), *dropout)
        loss, nabla_w, nabla_b = net.loss_and_gradients(xb, yb, sample_weight=sw,
                                                        dropout_masks=masks)
        opt.step(net, nabla_w, nabla_b)
        losses[k] = loss
    return losses
