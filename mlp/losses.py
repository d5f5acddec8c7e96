"""Output layers paired with their losses, in one table keyed by name.

The last layer's function and the loss go together: for the canonical pairs
the error at the output collapses to ``ŷ − y`` (the tutorial's ``err``). With
``z`` the output layer's pre-activation, ``ŷ`` its output and ``y`` the target
(one-hot for classification), for a batch of ``n`` rows:

=====  ================  ==========================================  =====================
name   output ŷ = g(z)   loss, averaged over the batch               δ = ∂L/∂z
=====  ================  ==========================================  =====================
ce     softmax           −Σ_k y_k log ŷ_k                            (ŷ − y) / n
mse    sigmoid           ½ Σ_k (ŷ_k − y_k)²                          (ŷ − y) ⊙ g'(z) / n
bce    sigmoid           −Σ_k [y_k log ŷ_k + (1 − y_k) log(1 − ŷ_k)]  (ŷ − y) / n
=====  ================  ==========================================  =====================

``mse`` keeps the ½ of Nielsen's network.py and the tutorial, so their
learning rates carry over; its output may also be ``identity`` (regression)
or any activation of :mod:`mlp.activations`. The log-losses are computed from
``z`` (log-softmax, softplus), so they stay finite for logits of ±1e4.
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

    def value(self, z, yhat, y):
        """The loss averaged over the batch (a Python float)."""
        raise NotImplementedError

    def delta(self, z, yhat, y):
        """δ = ∂L/∂z at the output for the batch-averaged loss, shape of z."""
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

    def value(self, z, yhat, y):
        return float(-(y * log_softmax(z)).sum() / z.shape[0])

    def delta(self, z, yhat, y):
        return (yhat - y) / z.shape[0]


class SquaredError(Loss):
    """Squared error ½ Σ (ŷ − y)², sigmoid output by default (the tutorial's network)."""

    name = "mse"
    default_output = "sigmoid"
    outputs = tuple(ACTIVATIONS)

    def activate(self, z):
        return ACTIVATIONS[self.output](z)

    def value(self, z, yhat, y):
        err = yhat - y
        return float(0.5 * (err * err).sum() / z.shape[0])

    def delta(self, z, yhat, y):
        return (yhat - y) * DERIVATIVES[self.output](z, yhat) / z.shape[0]


class BinaryCrossEntropy(Loss):
    """Sigmoid output(s) with binary cross-entropy (one-output or multi-label problems)."""

    name = "bce"
    default_output = "sigmoid"
    outputs = ("sigmoid",)

    def activate(self, z):
        return ACTIVATIONS["sigmoid"](z)

    def value(self, z, yhat, y):
        # −[y log σ(z) + (1 − y) log(1 − σ(z))] = softplus(z) − y z
        return float((softplus(z) - y * z).sum() / z.shape[0])

    def delta(self, z, yhat, y):
        return (yhat - y) / z.shape[0]


LOSSES = {cls.name: cls for cls in (CrossEntropy, SquaredError, BinaryCrossEntropy)}


def get_loss(name, output=None):
    """Build the loss called ``name`` ("ce", "mse" or "bce") with an optional output function."""
    if isinstance(name, Loss):
        return name
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")
    return LOSSES[name](output)


def one_hot(labels, n_classes, dtype=np.float32):
    """Targets for classification: row i has a 1 in column labels[i]."""
    labels = np.asarray(labels)
    out = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out
