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

The state (the velocities v) is plain arrays so that the Numba backend can
update it in its fused kernels and a checkpoint can save it.
"""

import numpy as np


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
        self.velocities = None

    def init_state(self, net):
        """Zero velocities shaped like the network's parameters (W¹, b¹, W², b², …)."""
        self.velocities = [np.zeros_like(p) for p in net.params()]

    def ensure_state(self, net):
        """Create the velocities if they are missing or do not match the network."""
        params = net.params()
        if (self.velocities is None or len(self.velocities) != len(params)
                or any(v.shape != p.shape or v.dtype != p.dtype
                       for v, p in zip(self.velocities, params))):
            self.init_state(net)

    def step(self, net, nabla_w, nabla_b):
        """Apply one update to ``net`` in place from the gradients of one batch."""
        self.ensure_state(net)
        dtype = net.dtype.type
        lr, mu, wd = dtype(self.lr), dtype(self.momentum), dtype(self.weight_decay)
        grads = []
        for gw, gb in zip(nabla_w, nabla_b):
            grads += [gw, gb]
        for i, (p, g) in enumerate(zip(net.params(), grads)):
            if wd and i % 2 == 0:          # even positions are weight matrices
                g = g + wd * p
            if mu:
                v = self.velocities[i]
                v *= mu
                v -= lr * g
                if self.nesterov:
                    p += mu * v - lr * g
                else:
                    p += v
            else:
                p -= lr * g

    def config(self):
        """The hyper-parameters as plain data."""
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}
