"""Minibatches on the reference path: rows in, float batches out, one SGD step each.

:func:`run_batches` is *the* batch loop of the NumPy reference, written
once: :class:`mlp.backends.NumpyBackend` runs it, and the Numba kernel
:func:`mlp.kernels.train_chunk` is tested against it through its twin in
:mod:`mlp.kernels_reference`. Batch b of an epoch whose sample order is
``order`` is ``order[b*batch_size:(b+1)*batch_size]``; the sample at
position ``pos`` of that order draws its dropout masks from (seed, epoch,
pos) (see :mod:`mlp.dropout`). What a batch loop adds to plain minibatches
(the pixels' scale, sample weights, dropout) comes as one :class:`Extras`.
"""

from typing import NamedTuple

import numpy as np

from .losses import one_hot


class Extras(NamedTuple):
    """What the batch loop needs besides the rows: the pixels' scale, sample weights, dropout."""
    scale: float = 1.0          #: factor of uint8 pixels (float X is used as it is)
    sample_weight: object = None  #: one weight per row of X (e.g. of mean 1), or None
    dropout: object = None      #: one rate per weight layer (input features first), or None
    seed: int = 0               #: dropout's seed (see :mod:`mlp.dropout`)
    epoch: int = 0              #: the epoch the batches belong to (dropout's counter)


def as_extras(extras):
    """``extras`` as an :class:`Extras`; a number is the scale alone (the older argument)."""
    return extras if isinstance(extras, Extras) else Extras(scale=float(extras))


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


def run_batches(net, opt, X, targets, order, start, stop, batch_size, extras=1.0):
    """Train ``net`` with ``opt`` on batches start … stop-1 of ``order``; return their losses.

    Each batch: gather its rows (:func:`batch_inputs`, :func:`batch_targets`),
    compute the loss and gradients (:meth:`Network.loss_and_gradients`, with
    the rows' sample weights and dropout masks when ``extras`` has them),
    take one step (``opt.step``). ``extras``: an :class:`Extras` (or the
    pixels' scale). Returns each batch's loss before its update, as a
    float64 array.
    """
    extras = as_extras(extras)
    opt.ensure_state(net)
    losses = np.empty(max(stop - start, 0))
    for k, idx in enumerate(batch_rows(order, start, stop, batch_size)):
        xb = batch_inputs(X, idx, extras.scale, net.dtype)
        yb = batch_targets(targets, idx, net.sizes[-1], net.dtype)
        sw = None if extras.sample_weight is None else extras.sample_weight[idx]
        masks = None
        if extras.dropout is not None:
            positions = (start + k) * batch_size + np.arange(len(idx))
            masks = net.dropout_masks(extras.dropout, extras.seed, extras.epoch, positions)
        loss, nabla_w, nabla_b = net.loss_and_gradients(xb, yb, sample_weight=sw,
                                                        dropout_masks=masks)
        opt.step(net, nabla_w, nabla_b)
        losses[k] = loss
    return losses
