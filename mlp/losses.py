"""Output layers paired with their losses, in one table keyed by name.

The last layer's function and the loss go together: for the canonical pairs
the error at the output collapses to ``ŷ − y`` (the tutorial's ``err``). With
``z`` the output layer's pre-activation, ``ŷ`` its output and ``y`` the target
(one-hot for classification), for a batch of ``n`` rows:

=======  ================  ==========================================  ====================
name     output ŷ = g(z)   loss, averaged over the batch               δ = ∂L/∂z
=======  ================  ==========================================  ====================
ce       softmax           −Σ_k y_k log ŷ_k                            (ŷ − y) / n
mse      sigmoid           ½ Σ_k (ŷ_k − y_k)²                          (ŷ − y) ⊙ g'(z) / n
bce      sigmoid           −Σ_k [y_k log ŷ_k + (1 − y_k) log(1 − ŷ_k)]  (ŷ − y) / n
poisson  exp               Σ_k [y_k log(y_k / ŷ_k) − y_k + ŷ_k]        (ŷ − y) / n
=======  ================  ==========================================  ====================

``mse`` keeps the ½ of Nielsen's network.py and the tutorial, so their
learning rates carry over; its output may also be ``identity`` (regression)
or any activation of :mod:`mlp.activations`. The log-losses are computed from
``z`` (log-softmax, softplus), so they stay finite for logits of ±1e4.

``poisson`` is half the Poisson deviance, scikit-learn's ``loss="poisson"`` of
MLPRegressor: a log link (ŷ = e^z > 0) for counts and rates y ≥ 0. It is
computed from z as ``e^z − y z + (y log y − y)``, whose last term (0 log 0 =
0) does not depend on the weights; it makes the loss 0 where ŷ = y.

Sample weights. ``value`` and ``delta`` take an optional ``sample_weight``, one
weight wᵢ ≥ 0 per row: row i's loss then counts wᵢ times in the batch mean,

    L = (1/n) Σᵢ wᵢ lᵢ            δᵢ = wᵢ (∂lᵢ/∂zᵢ) / n

(so every δ in the table above gets the factor wᵢ). Weights of 1 give the
plain mean. This is a mean of weighted terms, not ``Σ wᵢ lᵢ / Σ wᵢ``: it is
linear in w, a batch whose weights are all 0 contributes nothing (no 0/0), and
a minibatch estimates the full objective without bias. To get the normalised
mean Σwᵢlᵢ/Σwᵢ of a batch, pass ``w / w.mean()``; the estimators
(:mod:`mlp.estimators`) divide by the training set's mean weight, which makes
one epoch of minibatches estimate ``Σ wᵢ lᵢ / Σ wᵢ`` over the whole set.
"""

import numpy as np

from .activations import ACTIVATIONS, DERIVATIVES, softmax


def log_softmax(z):
    """Row-wise log of the softmax, without forming exp of a large number."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softplus(z):
    """log(1 + e^z) without overflow: max(z, 0) + log1p(e^-|z|)."""
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def row_weights(sample_weight, z):
    """The per-row weights as a column (n, 1) in z's dtype; a ValueError if their shape is wrong."""
    w = np.asarray(sample_weight, dtype=z.dtype)
    if w.shape != (z.shape[0],):
        raise ValueError(f"sample_weight must hold one weight per row: expected shape "
                         f"({z.shape[0]},), got {w.shape}")
    return w[:, None]


class Loss:
    """An output function g and a loss L(ŷ, y), with the error δ = ∂L/∂z they give."""

    name = None
    #: the output layer's default function
    default_output = None
    #: output functions this loss accepts
    outputs = ()

    def __init__(self, output=None):
        self.output = output or self.default_output
        if self.output not in self.outputs:
            raise ValueError(
                f"loss {self.name!r} cannot use output {self.output!r}: "
                f"choose one of {', '.join(self.outputs)}")

    def activate(self, z):
        """The network's output ŷ = g(z)."""
        raise NotImplementedError

    def value(self, z, yhat, y, sample_weight=None):
        """The loss averaged over the batch (a Python float); (1/n) Σ wᵢ lᵢ with weights."""
        raise NotImplementedError

    def delta(self, z, yhat, y, sample_weight=None):
        """δ = ∂L/∂z at the output for the batch-averaged loss, shape of z (row i times wᵢ)."""
        raise NotImplementedError

    def output_value(self, yhat, y):
        """The batch-mean loss from the outputs ŷ alone, as evaluation computes it (no z kept).

        The log-losses clip ŷ to the smallest positive normal float, so a
        confident wrong answer costs a large finite loss, not infinity.
        """
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}(output={self.output!r})"


class CrossEntropy(Loss):
    """Softmax output with categorical cross-entropy (multi-class classification)."""

    name = "ce"
    default_output = "softmax"
    outputs = ("softmax",)

    def activate(self, z):
        return softmax(z)

    def value(self, z, yhat, y, sample_weight=None):
        if sample_weight is None:
            return float(-(y * log_softmax(z)).sum() / z.shape[0])
        w = row_weights(sample_weight, z)
        return float(-(w * y * log_softmax(z)).sum() / z.shape[0])

    def output_value(self, yhat, y):
        return -(y * np.log(np.maximum(yhat, _tiny(yhat)))).sum() / yhat.shape[0]

    def delta(self, z, yhat, y, sample_weight=None):
        # ∂/∂z of −Σ_k y_k log softmax(z)_k is ŷ·Σ_k y_k − y: ŷ − y for one-hot rows
        # (and any row summing to 1), but not for multi-hot or soft targets
        grad = yhat * y.sum(axis=1, keepdims=True) - y
        if sample_weight is None:
            return grad / z.shape[0]
        return row_weights(sample_weight, z) * grad / z.shape[0]


class SquaredError(Loss):
    """Squared error ½ Σ (ŷ − y)², sigmoid output by default (the tutorial's network)."""

    name = "mse"
    default_output = "sigmoid"
    outputs = tuple(ACTIVATIONS)

    def activate(self, z):
        return ACTIVATIONS[self.output](z)

    def value(self, z, yhat, y, sample_weight=None):
        err = yhat - y
        if sample_weight is None:
            return float(0.5 * (err * err).sum() / z.shape[0])
        w = row_weights(sample_weight, z)
        return float(0.5 * (w * err * err).sum() / z.shape[0])

    def output_value(self, yhat, y):
        err = yhat - y
        return 0.5 * (err * err).sum() / yhat.shape[0]

    def delta(self, z, yhat, y, sample_weight=None):
        if sample_weight is None:
            return (yhat - y) * DERIVATIVES[self.output](z, yhat) / z.shape[0]
        w = row_weights(sample_weight, z)
        return w * (yhat - y) * DERIVATIVES[self.output](z, yhat) / z.shape[0]


class BinaryCrossEntropy(Loss):
    """Sigmoid output(s) with binary cross-entropy (one-output or multi-label problems)."""

    name = "bce"
    default_output = "sigmoid"
    outputs = ("sigmoid",)

    def activate(self, z):
        return ACTIVATIONS["sigmoid"](z)

    def value(self, z, yhat, y, sample_weight=None):
        # −[y log σ(z) + (1 − y) log(1 − σ(z))] = softplus(z) − y z
        if sample_weight is None:
            return float((softplus(z) - y * z).sum() / z.shape[0])
        w = row_weights(sample_weight, z)
        return float((w * (softplus(z) - y * z)).sum() / z.shape[0])

    def output_value(self, yhat, y):
        eps = _tiny(yhat)
        return -(y * np.log(np.maximum(yhat, eps))
                 + (1 - y) * np.log(np.maximum(1 - yhat, eps))).sum() / yhat.shape[0]

    def delta(self, z, yhat, y, sample_weight=None):
        if sample_weight is None:
            return (yhat - y) / z.shape[0]
        return row_weights(sample_weight, z) * (yhat - y) / z.shape[0]


class PoissonDeviance(Loss):
    """Exponential output (log link) with half the Poisson deviance (counts, rates y >= 0)."""

    name = "poisson"
    default_output = "exp"
    outputs = ("exp",)

    def activate(self, z):
        return np.exp(z)

    def value(self, z, yhat, y, sample_weight=None):
        # y log(y/ŷ) − y + ŷ with log ŷ = z: ŷ − y z + (y log y − y)
        terms = yhat - y * z + _ylogy(y) - y
        if sample_weight is None:
            return float(terms.sum() / z.shape[0])
        return float((row_weights(sample_weight, z) * terms).sum() / z.shape[0])

    def output_value(self, yhat, y):
        log_yhat = np.log(np.maximum(yhat, _tiny(yhat)))
        return (yhat - y * log_yhat + _ylogy(y) - y).sum() / yhat.shape[0]

    def delta(self, z, yhat, y, sample_weight=None):
        if sample_weight is None:
            return (yhat - y) / z.shape[0]
        return row_weights(sample_weight, z) * (yhat - y) / z.shape[0]


def _ylogy(y):
    """y log y, with 0 log 0 = 0 (the limit)."""
    return y * np.log(np.where(y > 0, y, 1))


LOSSES = {cls.name: cls
          for cls in (CrossEntropy, SquaredError, BinaryCrossEntropy, PoissonDeviance)}


def _tiny(a):
    """The smallest positive normal number of a's dtype."""
    return np.finfo(a.dtype).tiny


def get_loss(name, output=None):
    """Build the loss called ``name`` ("ce", "mse", "bce", "poisson"), optionally with an output
    function."""
    if isinstance(name, Loss):
        return name
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")
    return LOSSES[name](output)


def one_hot(labels, n_classes, dtype=np.float32):
    """Targets for classification: row i has a 1 in column labels[i].

    Labels must be integers in 0 … n_classes − 1 (a negative label would
    otherwise wrap around to the last class).
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must be integers in 0 … {n_classes - 1}; "
                         f"found {labels.min()} … {labels.max()}")
    out = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out
