"""Optimizers: minibatch stochastic gradient descent, with momentum and weight decay.

With learning rate η, momentum μ and L2 weight decay λ, each step takes the
gradient g of the batch-averaged loss and, for every parameter array w::

    g ← g + λ w                 (weights only: biases are not decayed)
    v ← μ v − η g
    w ← w + v                   (classical momentum)
    w ← w + μ v − η g           (Nesterov momentum)

With μ = 0 this is plain SGD, ``w ← w − η g``. Adding λw to the gradient is
the same as minimising ``L + (λ/2) Σ‖W‖²``, which is what
:meth:`mlp.network.Network.loss_and_gradients` computes for a given λ.

:func:`sgd_step` is that arithmetic, written once: :meth:`SGD.step` applies
it to every array, and the Numba kernels' NumPy twins call it too.

The state is plain arrays, one velocity per weight matrix
(``velocity_w``) and one per bias vector (``velocity_b``), so that the Numba
backend can update it in its fused kernels and a checkpoint can save it.
"""

import numpy as np


def sgd_step(p, g, v, lr, mu, wd, nesterov):
    """One SGD step on the array ``p`` in place, from its gradient ``g`` (see the module docstring).

    ``v`` is p's velocity (updated in place; unused when μ = 0). lr, mu, wd
    are η, μ, λ; pass λ = 0 for biases. The arithmetic runs in p's dtype.
    """
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
    return p


class SGD:
    """Minibatch SGD with optional (Nesterov) momentum and L2 weight decay."""

    def __init__(self, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0):
        if not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"learning rate must be a positive number, got {lr!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not np.isfinite(weight_decay) or weight_decay < 0:
            raise ValueError(f"weight decay must be >= 0, got {weight_decay!r}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)
        self.velocity_w = None
        self.velocity_b = None

    def init_state(self, net):
        """Zero velocities shaped like the network's weights and biases."""
        self.velocity_w = [np.zeros_like(w) for w in net.weights]
        self.velocity_b = [np.zeros_like(b) for b in net.biases]

    def ensure_state(self, net):
        """Create the velocities if they are missing or do not match the network."""
        if self.velocity_w is None or self.velocity_b is None or not (
                _like(self.velocity_w, net.weights) and _like(self.velocity_b, net.biases)):
            self.init_state(net)

    def state_arrays(self):
        """Every state array, in the order W¹, b¹, W², b², … of :meth:`Network.params`."""
        out = []
        for vw, vb in zip(self.velocity_w or [], self.velocity_b or []):
            out += [vw, vb]
        return out

    def set_state_arrays(self, arrays):
        """Take state arrays in the order of :meth:`state_arrays` (they are not copied)."""
        self.velocity_w, self.velocity_b = list(arrays[0::2]), list(arrays[1::2])

    def step(self, net, nabla_w, nabla_b):
        """Apply one update to ``net`` in place from the gradients of one batch."""
        self.ensure_state(net)
        for l in range(net.num_layers):
            sgd_step(net.weights[l], nabla_w[l], self.velocity_w[l], self.lr, self.momentum,
                     self.weight_decay, self.nesterov)
            sgd_step(net.biases[l], nabla_b[l], self.velocity_b[l], self.lr, self.momentum,
                     0.0, self.nesterov)

    def config(self):
        """The hyper-parameters as plain data."""
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


def _like(state, params):
    """Whether the state arrays have the shapes and dtypes of the parameters."""
    return len(state) == len(params) and all(
        s.shape == p.shape and s.dtype == p.dtype for s, p in zip(state, params))
