"""Backends: who runs the per-batch loop. One interface, two implementations.

* ``numpy`` — :class:`NumpyBackend`, the readable reference: a Python loop over
  batches calling :meth:`Network.loss_and_gradients` and :meth:`SGD.step`.
* ``numba`` — :class:`mlp.numba_backend.NumbaBackend`: the same arithmetic in
  fused, cached Numba kernels with no Python inside the batch loop.

A backend provides:

``loss_and_gradients(net, X, Y, weight_decay=0.0)``
    loss and gradients on one float batch (what gradient checking compares).
``full_batch_gradients(net, X, targets, sample_weight=None)``
    loss and gradients over all rows of X at once (what L-BFGS minimises,
    :mod:`mlp.lbfgs`); targets as for ``train_batches``, no weight decay.
``train_batches(net, opt, X, targets, order, start, stop, batch_size, scale)``
    runs batches ``start … stop-1`` of an epoch whose sample order is
    ``order``; batch b is ``order[b*batch_size:(b+1)*batch_size]``. X may be
    uint8 (pixels, multiplied by ``scale`` per batch) or float; targets are
    int labels (1-D, one-hot on the fly) or a 2-D float array. X may also
    be a scipy.sparse matrix (:mod:`mlp.csr`), of float rows. Updates the
    network and optimizer state in place and returns each batch's loss
    (before its update) as a float64 array.
``predict_output(net, X, scale=1.0)``
    the network's output ŷ for all rows, computed in chunks.
``prepare(net, opt, X, targets, batch_size, scale)``
    compile or warm up whatever needs it, on copies (state unchanged);
    returns the seconds it took, reported apart from training time.
"""

import numpy as np
from threadpoolctl import threadpool_limits

from .batches import batch_inputs, batch_rows, batch_targets, run_batches

BACKENDS = ("numba", "numpy")


class NumpyBackend:
    """The reference backend: readable NumPy, one Python iteration per batch."""

    name = "numpy"

    def loss_and_gradients(self, net, X, Y, weight_decay=0.0):
        """Loss and gradients of one batch (see :meth:`Network.loss_and_gradients`)."""
        return net.loss_and_gradients(X, Y, weight_decay)

    def full_batch_gradients(self, net, X, targets, sample_weight=None):
        """:meth:`Network.loss_and_gradients` of the whole set (X may be scipy.sparse)."""
        every = slice(None)
        return net.loss_and_gradients(batch_inputs(X, every, 1.0, net.dtype),
                                      batch_targets(targets, every, net.sizes[-1], net.dtype),
                                      sample_weight=sample_weight)

    def train_batches(self, net, opt, X, targets, order, start, stop, batch_size, scale=1.0):
        """Train on batches start … stop-1 of ``order``; return their losses."""
        return run_batches(net, opt, X, targets, batch_rows(order, start, stop, batch_size), scale)

    def predict_output(self, net, X, scale=1.0, chunk=4096):
        """ŷ for every row of X, computed ``chunk`` rows at a time."""
        out = np.empty((X.shape[0], net.sizes[-1]), dtype=net.dtype)
        for s in range(0, X.shape[0], chunk):
            idx = np.arange(s, min(s + chunk, X.shape[0]))
            out[idx] = net.feedforward(batch_inputs(X, idx, scale, net.dtype))
        return out

    def prepare(self, net, opt, X, targets, batch_size, scale=1.0):
        """Nothing to compile: 0 seconds."""
        return 0.0


def get_backend(name):
    """The backend called ``name`` ("numba" or "numpy")."""
    if name == "numpy":
        return NumpyBackend()
    if name == "numba":
        from .numba_backend import NumbaBackend  # Numba is imported only by who asks for it
        return NumbaBackend()
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


def set_threads(n):
    """Use ``n`` threads in Numba's parallel loops and in BLAS (NumPy's matrix products)."""
    if n is None:
        return
    n = int(n)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    import numba  # here, not at the top: the NumPy backend runs without Numba

    # SciPy's BLAS is the library np.dot inside Numba's kernels calls: loaded
    # now, the thread limit below reaches it too (loading SciPy costs ~0.4 s)
    import scipy.linalg.cython_blas  # noqa: F401
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=n)
