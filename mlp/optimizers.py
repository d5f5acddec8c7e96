"""Optimizers: minibatch SGD (momentum, Nesterov, weight decay) and Adam (AdamW), and max-norm.

SGD. With learning rate η, momentum μ and L2 weight decay λ, each step takes
the gradient g of the batch-averaged loss and, for every parameter array w::

    g ← g + λ w                 (weights only: biases are not decayed)
    v ← μ v − η g
    w ← w + v                   (classical momentum)
    w ← w + μ v − η g           (Nesterov momentum)

With μ = 0 this is plain SGD, ``w ← w − η g``. Adding λw to the gradient is
the same as minimising ``L + (λ/2) Σ‖W‖²``, which is what
:meth:`mlp.network.Network.loss_and_gradients` computes for a given λ.

Adam (Kingma & Ba 2015) with β₁, β₂, ε, at step t = 1, 2, …::

    g ← g + λ w                 (Adam's L2 weight decay; weights only)
    w ← w (1 − η λ)             (AdamW's decoupled weight decay instead, Loshchilov & Hutter)
    m ← β₁ m + (1 − β₁) g
    v ← β₂ v + (1 − β₂) g²
    w ← w − αₜ m / (√v + ε),    αₜ = η √(1 − β₂ᵗ) / (1 − β₁ᵗ)

That is the paper's bias correction in the form its section 2 gives (and
scikit-learn uses); PyTorch's ``m̂ / (√v̂ + ε)`` is the same with ε scaled
by √(1 − β₂ᵗ), a difference only where |g| is as small as ε.

Max-norm (Srivastava et al. 2014): after every step, each hidden unit's
incoming weight vector (a column of W, shape (n_in,)) longer than c is
scaled back to length c: ``W[:, j] ← W[:, j] · min(1, c / ‖W[:, j]‖)``.
The output layer is left free.

:func:`sgd_step`, :func:`adam_step` and :func:`max_norm_step` are that
arithmetic, written once: the optimizers apply them to every array, and the
Numba kernels' NumPy twins call them too. The learning rate of step t is
``lr`` times the factor of a :class:`mlp.schedules.Schedule` when the
optimizer has one (:meth:`Optimizer.rate`); ``t`` counts the steps taken.

The state is plain arrays, so that the Numba backend can update it in its
fused kernels and a checkpoint can save it: SGD keeps one velocity per
weight matrix and bias vector, Adam the two moments m and v of each.
"""

import math

import numpy as np

from .schedules import Schedule


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


def adam_step_size(lr, beta1, beta2, t):
    """αₜ = η √(1 − β₂ᵗ) / (1 − β₁ᵗ), in float64, for step t = 1, 2, …"""
    return lr * math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)


def adam_step(p, g, m, v, step, beta1, beta2, eps, wd=0.0, lr=None):
    """One Adam step on ``p`` in place (see the module docstring); m and v are updated in place.

    ``step`` is αₜ (:func:`adam_step_size`) and ``wd`` the weight decay λ (0
    for biases): Adam's L2 term g + λp, or, given the step's η as ``lr``,
    AdamW's decoupled decay p ← p(1 − ηλ) first. The arithmetic runs in p's
    dtype, in this order.
    """
    dt = p.dtype.type
    step, b1, b2, eps, wd = (dt(x) for x in (step, beta1, beta2, eps, wd))
    one = dt(1)
    if wd and lr is None:
        g = g + wd * p
    elif wd:
        p *= one - dt(lr) * wd
    m *= b1
    m += (one - b1) * g
    v *= b2
    v += (one - b2) * (g * g)
    p -= (step * m) / (np.sqrt(v) + eps)
    return p


def max_norm_step(W, c):
    """Scale every column of W (n_in, n_out) longer than c back to length c, in place."""
    norms = np.sqrt((W * W).sum(axis=0))
    long = norms > W.dtype.type(c)
    W[:, long] *= W.dtype.type(c) / norms[long]
    return W


class Optimizer:
    """What SGD and Adam share: η and its schedule, max-norm, the step count and state arrays.

    Subclasses name their state arrays in ``STATE`` (lists of one array per
    weight matrix and per bias vector each) and implement ``_update``.
    """

    STATE = ()

    def __init__(self, lr, max_norm=0.0, schedule=None):
        if not np.isfinite(lr) or lr <= 0:
            raise ValueError(f"learning rate must be a positive number, got {lr!r}")
        if not np.isfinite(max_norm) or max_norm < 0:
            raise ValueError(f"max-norm must be >= 0 (0: none), got {max_norm!r}")
        self.lr = float(lr)
        self.max_norm = float(max_norm)
        self.schedule = Schedule(**schedule) if isinstance(schedule, dict) else schedule
        self.t = 0                        # steps taken
        for name in self.STATE:
            setattr(self, name, None)

    def rate(self, t):
        """η of step t (0-based): lr times the schedule's factor."""
        return self.lr * self.schedule.factor(t) if self.schedule else self.lr

    def rates(self, n):
        """η of the next n steps (float64)."""
        if self.schedule:
            return self.schedule.rates(self.lr, self.t, n)
        return np.full(n, self.lr)

    def init_state(self, net):
        """Zero state arrays shaped like the network's weights and biases."""
        for name in self.STATE:
            like = net.weights if name.endswith("_w") else net.biases
            setattr(self, name, [np.zeros_like(a) for a in like])

    def ensure_state(self, net):
        """Create the state arrays if they are missing or do not match the network."""
        for name in self.STATE:
            like = net.weights if name.endswith("_w") else net.biases
            state = getattr(self, name)
            if state is None or not _like(state, like):
                self.init_state(net)
                return

    def state_arrays(self):
        """Every state array: for each of STATE's pairs, in the order W¹, b¹, W², b², …"""
        out = []
        for name_w, name_b in zip(self.STATE[0::2], self.STATE[1::2]):
            for sw, sb in zip(getattr(self, name_w) or [], getattr(self, name_b) or []):
                out += [sw, sb]
        return out

    def set_state_arrays(self, arrays):
        """Take state arrays in the order of :meth:`state_arrays` (they are not copied)."""
        per = len(arrays) // max(1, len(self.STATE) // 2)
        for k, (name_w, name_b) in enumerate(zip(self.STATE[0::2], self.STATE[1::2])):
            part = arrays[k * per:(k + 1) * per]
            setattr(self, name_w, list(part[0::2]))
            setattr(self, name_b, list(part[1::2]))

    def step(self, net, nabla_w, nabla_b):
        """Apply one update to ``net`` in place from the gradients of one batch, then max-norm."""
        self.ensure_state(net)
        self._update(net, nabla_w, nabla_b, self.rate(self.t))
        self.t += 1
        if self.max_norm:
            for W in net.weights[:-1]:                 # hidden units only
                max_norm_step(W, self.max_norm)

    def config(self):
        """The hyper-parameters as plain data (the keyword arguments of the constructor)."""
        return {"lr": self.lr, "max_norm": self.max_norm,
                "schedule": self.schedule.config() if self.schedule else None}


class SGD(Optimizer):
    """Minibatch SGD with optional (Nesterov) momentum and L2 weight decay."""

    name = "sgd"
    STATE = ("velocity_w", "velocity_b")

    def __init__(self, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0, max_norm=0.0,
                 schedule=None):
        super().__init__(lr, max_norm, schedule)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not np.isfinite(weight_decay) or weight_decay < 0:
            raise ValueError(f"weight decay must be >= 0, got {weight_decay!r}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)

    def _update(self, net, nabla_w, nabla_b, lr):
        for l in range(net.num_layers):
            sgd_step(net.weights[l], nabla_w[l], self.velocity_w[l], lr, self.momentum,
                     self.weight_decay, self.nesterov)
            sgd_step(net.biases[l], nabla_b[l], self.velocity_b[l], lr, self.momentum,
                     0.0, self.nesterov)

    def config(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay, **super().config()}


class Adam(Optimizer):
    """Adam with bias correction; ``decoupled=True`` makes the weight decay AdamW's."""

    name = "adam"
    STATE = ("m_w", "m_b", "v_w", "v_b")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 decoupled=False, max_norm=0.0, schedule=None):
        super().__init__(lr, max_norm, schedule)
        for name, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0 <= b < 1:
                raise ValueError(f"{name} must be in [0, 1), got {b!r}")
        if not np.isfinite(eps) or eps < 0:
            raise ValueError(f"epsilon must be >= 0, got {eps!r}")
        if not np.isfinite(weight_decay) or weight_decay < 0:
            raise ValueError(f"weight decay must be >= 0, got {weight_decay!r}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.weight_decay = float(weight_decay)
        self.decoupled = bool(decoupled)

    def step_sizes(self, rates):
        """αₜ of the next len(rates) steps, whose η are ``rates`` (float64)."""
        return np.array([adam_step_size(lr, self.beta1, self.beta2, self.t + 1 + k)
                         for k, lr in enumerate(rates)])

    def _update(self, net, nabla_w, nabla_b, lr):
        step = adam_step_size(lr, self.beta1, self.beta2, self.t + 1)
        for l in range(net.num_layers):
            adam_step(net.weights[l], nabla_w[l], self.m_w[l], self.v_w[l], step, self.beta1,
                      self.beta2, self.eps, self.weight_decay, lr if self.decoupled else None)
            adam_step(net.biases[l], nabla_b[l], self.m_b[l], self.v_b[l], step, self.beta1,
                      self.beta2, self.eps)

    def config(self):
        return {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps,
                "weight_decay": self.weight_decay, "decoupled": self.decoupled,
                **super().config()}


#: the optimizers by name (as checkpoints record them)
OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def optimizer_record(opt):
    """The optimizer as plain data: its name, hyper-parameters and step count."""
    return {"name": opt.name, **opt.config(), "t": opt.t}


def optimizer_from_record(record):
    """The optimizer :func:`optimizer_record` described (without state arrays).

    A record without a name is an SGD's (checkpoints from before Adam);
    an unknown name is a ValueError saying which names there are.
    """
    record = dict(record)
    name = record.pop("name", "sgd")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r} (this mlp knows "
                         f"{', '.join(OPTIMIZERS)}); upgrade mlp to load it")
    t = int(record.pop("t", 0))
    opt = OPTIMIZERS[name](**record)
    opt.t = t
    return opt


def _like(state, params):
    """Whether the state arrays have the shapes and dtypes of the parameters."""
    return len(state) == len(params) and all(
        s.shape == p.shape and s.dtype == p.dtype for s, p in zip(state, params))
