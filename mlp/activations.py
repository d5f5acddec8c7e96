"""Activation functions and their derivatives, in one table keyed by name.

Each hidden layer computes ``a = f(z)``; the backward pass needs ``f'(z)``.
For the functions here the derivative is cheapest written in terms of the
layer's output ``a`` (which the forward pass keeps anyway), so every
derivative takes both ``z`` and ``a`` and uses whichever it needs:

    sigmoid   f(z) = 1 / (1 + e^-z)      f'(z) = a (1 - a)
    tanh      f(z) = tanh z              f'(z) = 1 - a^2
    relu      f(z) = max(z, 0)           f'(z) = 1 if z > 0 else 0
    identity  f(z) = z                   f'(z) = 1

The output layer's function (softmax or sigmoid) belongs to the loss: see
:mod:`mlp.losses`.
"""

import numpy as np


def sigmoid(z):
    """The logistic function σ(z) = 1 / (1 + e^-z), in a form that never overflows.

    σ(z) = (1 + tanh(z/2)) / 2 is exact algebra and stays finite for every
    finite z (``1 / (1 + np.exp(-z))`` warns of overflow below z ≈ -88 in
    float32).
    """
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def sigmoid_prime(z, a):
    """σ'(z) = σ(z)(1 − σ(z)), computed from the layer's output a = σ(z)."""
    return a * (1.0 - a)


def tanh(z):
    """The hyperbolic tangent."""
    return np.tanh(z)


def tanh_prime(z, a):
    """tanh'(z) = 1 − tanh(z)², computed from a = tanh(z)."""
    return 1.0 - a * a


def relu(z):
    """The rectifier max(z, 0)."""
    return np.maximum(z, 0)


def relu_prime(z, a):
    """relu'(z): 1 where z > 0, else 0 (the subgradient 0 is taken at the kink)."""
    return (z > 0).astype(z.dtype)


def identity(z):
    """No activation: f(z) = z."""
    return z


def identity_prime(z, a):
    """identity'(z) = 1."""
    return np.ones_like(z)


def softmax(z):
    """Row-wise softmax, shifted by the row maximum so exp never overflows."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


ACTIVATIONS = {
    "sigmoid": sigmoid,
    "tanh": tanh,
    "relu": relu,
    "identity": identity,
}

DERIVATIVES = {
    "sigmoid": sigmoid_prime,
    "tanh": tanh_prime,
    "relu": relu_prime,
    "identity": identity_prime,
}

#: Activations whose derivative is continuous; relu's has a kink at 0, where
#: finite differences straddling the kink disagree with any subgradient.
SMOOTH = {"sigmoid": True, "tanh": True, "relu": False, "identity": True}


def check_activation(name, argument="activation"):
    """Return ``name`` if it is a known activation, else raise a ValueError naming the choices."""
    if name not in ACTIVATIONS:
        choices = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown {argument} {name!r}: choose one of {choices}")
    return name
