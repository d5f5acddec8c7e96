"""SGD against the update rules written out by hand."""

import numpy as np
import pytest

from mlp.network import Network
from mlp.optimizers import SGD


def _grads(net, seed):
    rng = np.random.default_rng(seed)
    return ([rng.normal(size=w.shape) for w in net.weights],
            [rng.normal(size=b.shape) for b in net.biases])


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_sgd_follows_the_written_rule(momentum, nesterov, wd):
    net = Network([3, 4, 2], dtype="float64", seed=0)
    opt = SGD(lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    w, b = net.weights[0].copy(), net.biases[0].copy()
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    for step in range(3):
        gw, gb = _grads(net, step)
        opt.step(net, gw, gb)
        g = gw[0] + wd * w
        vw = momentum * vw - 0.1 * g
        vb = momentum * vb - 0.1 * gb[0]
        if nesterov:
            w = w + momentum * vw - 0.1 * g
            b = b + momentum * vb - 0.1 * gb[0]
        else:
            w, b = w + vw, b + vb
        np.testing.assert_allclose(net.weights[0], w, rtol=1e-13)
        np.testing.assert_allclose(net.biases[0], b, rtol=1e-13)


def test_plain_sgd_is_w_minus_lr_g():
    net = Network([2, 2], dtype="float64")
    w0 = net.weights[0].copy()
    gw, gb = [np.ones((2, 2))], [np.ones(2)]
    SGD(lr=0.5).step(net, gw, gb)
    np.testing.assert_allclose(net.weights[0], w0 - 0.5)
    np.testing.assert_allclose(net.biases[0], -0.5)


@pytest.mark.parametrize("kwargs, word", [
    (dict(lr=0), "learning rate"), (dict(lr=-1), "learning rate"),
    (dict(lr=float("nan")), "learning rate"), (dict(momentum=1.0), "momentum"),
    (dict(weight_decay=-1), "weight decay"), (dict(nesterov=True), "nesterov"),
])
def test_bad_hyperparameters(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SGD(**kwargs)
