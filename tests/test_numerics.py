"""Numerical safety: saturated units and huge logits give finite losses and gradients, silently."""

import numpy as np
import pytest
from optional import backend_params

from mlp.backends import get_backend
from mlp.losses import one_hot
from mlp.network import Network


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("loss", ["ce", "mse", "bce"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_huge_logits_and_saturated_sigmoids_stay_finite(backend, loss, dtype, scale):
    net = Network([5, 4, 3], "sigmoid", loss, dtype=dtype, seed=0)
    net.weights[0][...] = scale                    # hidden units saturate at 0 or 1
    net.weights[1][...] = np.array([[1, -1, 0.5]] * 4) * abs(scale)   # logits of ±4e4
    X = np.abs(np.random.default_rng(0).normal(size=(6, 5))).astype(dtype)
    Y = one_hot(np.array([0, 1, 2, 0, 1, 2]), 3, dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # underflow to 0 is fine
        value, nabla_w, nabla_b = get_backend(backend).loss_and_gradients(net, X, Y)
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in nabla_w + nabla_b)
    # the independent value in float64: the true loss is huge but finite
    z1 = np.clip(X.astype(np.float64) @ net.weights[0] + net.biases[0], -700, 700)
    z = (1 / (1 + np.exp(-z1))) @ net.weights[1].astype(np.float64) + net.biases[1]
    if loss == "ce":
        m = z.max(axis=1, keepdims=True)
        expected = -np.mean(np.sum(Y * (z - m - np.log(np.exp(z - m).sum(1, keepdims=True))), 1))
    elif loss == "bce":
        expected = np.mean(np.sum(np.logaddexp(0, z) - Y * z, 1))
    else:
        yhat = 0.5 * (1 + np.tanh(z / 2))
        expected = np.mean(0.5 * np.sum((yhat - Y) ** 2, 1))
    assert value == pytest.approx(expected, rel=1e-4)
