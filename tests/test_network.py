"""The reference network: shapes, initialisation, forward pass against a direct computation."""

import math

import numpy as np
import pytest

from mlp.activations import ACTIVATIONS
from mlp.losses import one_hot
from mlp.network import Network


@pytest.mark.parametrize("sizes", [[4, 3], [5, 7, 3], [6, 5, 4, 2], [3, 2, 2, 2, 1]])
@pytest.mark.parametrize("n", [1, 9])
def test_forward_shapes(sizes, n):
    net = Network(sizes, seed=1)
    X = np.random.default_rng(0).random((n, sizes[0]))
    zs, acts = net.forward(X)
    assert len(zs) == len(sizes) - 1 and len(acts) == len(sizes)
    for l, (z, a) in enumerate(zip(zs, acts[1:])):
        assert z.shape == a.shape == (n, sizes[l + 1])
        assert z.dtype == np.float32
    nabla_w, nabla_b = net.backward(zs, acts, one_hot(np.zeros(n, int), sizes[-1]))
    assert [g.shape for g in nabla_w] == [w.shape for w in net.weights]
    assert [g.shape for g in nabla_b] == [b.shape for b in net.biases]


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_forward_matches_a_loop_over_neurons(activation):
    """Each unit computes f(Σ_i a_i w_ij + b_j): check with explicit Python loops in float64."""
    f = {"sigmoid": lambda z: 1 / (1 + math.exp(-z)), "tanh": math.tanh,
         "relu": lambda z: max(z, 0.0), "identity": lambda z: z}[activation]
    net = Network([3, 4, 2], activation, loss="ce", dtype="float64", seed=3)
    for b in net.biases:
        b[:] = np.random.default_rng(1).normal(size=b.shape)
    x = [0.3, -1.2, 2.0]
    hidden = [f(sum(x[i] * net.weights[0][i, j] for i in range(3)) + net.biases[0][j])
              for j in range(4)]
    logits = [sum(hidden[i] * net.weights[1][i, k] for i in range(4)) + net.biases[1][k]
              for k in range(2)]
    exps = [math.exp(v) for v in logits]
    expected = [e / sum(exps) for e in exps]
    np.testing.assert_allclose(net.feedforward(np.array([x]))[0], expected, rtol=1e-12)


def test_init_is_seeded_normal_with_variance_one_over_fan_in():
    a, b = Network([400, 300, 10], seed=5), Network([400, 300, 10], seed=5)
    c = Network([400, 300, 10], seed=6)
    assert all(np.array_equal(x, y) for x, y in zip(a.params(), b.params()))
    assert not np.array_equal(a.weights[0], c.weights[0])
    w = a.weights[0].astype(np.float64)
    assert abs(w.mean()) < 0.002
    assert w.var() == pytest.approx(1 / 400, rel=0.02)
    assert all(not b.any() for b in a.biases)


def test_dtypes_and_copy():
    net = Network([3, 2], dtype="float64")
    assert all(p.dtype == np.float64 for p in net.params())
    twin = net.copy()
    twin.weights[0][0, 0] += 1
    assert twin.weights[0][0, 0] != net.weights[0][0, 0]
    assert net.n_parameters == 3 * 2 + 2


@pytest.mark.parametrize("kwargs, word", [
    (dict(sizes=[3]), "sizes"), (dict(sizes=[3, 0]), "sizes"),
    (dict(sizes=[3, 2], activation="swish"), "activation"),
    (dict(sizes=[3, 2], loss="hinge"), "loss"),
    (dict(sizes=[3, 2], dtype="float16"), "dtype"),
    (dict(sizes=[3, 2], loss="ce", output="sigmoid"), "output"),
])
def test_bad_arguments_name_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        Network(**kwargs)


def test_weight_decay_adds_lambda_w_to_the_gradient_and_half_lambda_w2_to_the_loss():
    net = Network([4, 3, 2], dtype="float64", seed=2)
    rng = np.random.default_rng(0)
    X, Y = rng.random((5, 4)), one_hot(rng.integers(0, 2, 5), 2, np.float64)
    loss0, gw0, gb0 = net.loss_and_gradients(X, Y)
    lam = 0.3
    loss1, gw1, gb1 = net.loss_and_gradients(X, Y, lam)
    assert loss1 - loss0 == pytest.approx(0.5 * lam * sum((w ** 2).sum() for w in net.weights))
    for g0, g1, w in zip(gw0, gw1, net.weights):
        np.testing.assert_allclose(g1, g0 + lam * w, rtol=1e-12)
    for g0, g1 in zip(gb0, gb1):
        np.testing.assert_array_equal(g0, g1)
