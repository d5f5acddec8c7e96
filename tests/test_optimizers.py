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
    """Every layer's weights and biases, over three steps (three layers: the loop must not stop
    at the first or skip the last)."""
    net = Network([3, 4, 5, 2], dtype="float64", seed=0)
    opt = SGD(lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    ws, bs = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    vws, vbs = [np.zeros_like(w) for w in ws], [np.zeros_like(b) for b in bs]
    for step in range(3):
        gw, gb = _grads(net, step)
        opt.step(net, gw, gb)
        for l in range(net.num_layers):
            g = gw[l] + wd * ws[l]                     # weights are decayed, biases are not
            vws[l] = momentum * vws[l] - 0.1 * g
            vbs[l] = momentum * vbs[l] - 0.1 * gb[l]
            if nesterov:
                ws[l] = ws[l] + momentum * vws[l] - 0.1 * g
                bs[l] = bs[l] + momentum * vbs[l] - 0.1 * gb[l]
            else:
                ws[l], bs[l] = ws[l] + vws[l], bs[l] + vbs[l]
            np.testing.assert_allclose(net.weights[l], ws[l], rtol=1e-13,
                                       err_msg=f"W{l + 1} after step {step + 1}")
            np.testing.assert_allclose(net.biases[l], bs[l], rtol=1e-13, atol=1e-16,
                                       err_msg=f"b{l + 1} after step {step + 1}")


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
