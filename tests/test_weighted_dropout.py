"""Sample weights and dropout in the reference network, against independent computations.

* weighted loss  (1/n) Σ wᵢ lᵢ  against a loop over single rows (the unweighted path);
* integer weights against repeating rows;
* every gradient against central finite differences in float64;
* dropout's forward pass against a direct NumPy computation, its masks' statistics.
"""

import numpy as np
import pytest

from mlp.losses import get_loss, one_hot
from mlp.network import Network

LOSSES = [("ce", None), ("mse", "sigmoid"), ("mse", "identity"), ("bce", None)]


def make_net(loss, output, activation="sigmoid", sizes=(5, 4, 3, 3), seed=0):
    """A float64 network with non-zero biases, so every parameter matters."""
    net = Network(list(sizes), activation, loss, output, dtype="float64", seed=seed)
    rng = np.random.default_rng(seed + 100)
    for b in net.biases:
        b[:] = rng.normal(scale=0.5, size=b.shape)
    return net


def make_batch(net, n=7, seed=1):
    """Inputs, targets fit for the net's loss, and positive weights."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, net.sizes[0]))
    k = net.sizes[-1]
    if net.loss.name == "ce":
        Y = one_hot(rng.integers(0, k, n), k, np.float64)
    elif net.loss.output == "identity":
        Y = rng.normal(size=(n, k))
    else:
        Y = rng.random((n, k))
    w = rng.uniform(0.1, 3.0, n)
    return X, Y, w


def numerical_gradients(net, f, eps=1e-6):
    """Central differences of the scalar f() with respect to every parameter of net."""
    grads = []
    for p in net.params():
        g = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = f()
            p[i] = old - eps
            down = f()
            p[i] = old
            g[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def interleave(nabla_w, nabla_b):
    return [g for pair in zip(nabla_w, nabla_b) for g in pair]


# ------------------------------------------------------------------ sample weights
@pytest.mark.parametrize("loss,output", LOSSES)
def test_weighted_loss_is_mean_of_weighted_row_losses(loss, output):
    """(1/n) Σ wᵢ lᵢ, with each lᵢ from the unweighted path on the single row i."""
    net = make_net(loss, output)
    X, Y, w = make_batch(net)
    rows = [net.cost(X[i:i + 1], Y[i:i + 1]) for i in range(len(X))]
    expected = sum(wi * li for wi, li in zip(w, rows)) / len(X)
    assert net.cost(X, Y, sample_weight=w) == pytest.approx(expected, rel=1e-12)
    loss_value, _, _ = net.loss_and_gradients(X, Y, sample_weight=w)
    assert loss_value == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("loss,output", LOSSES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unit_weights_change_nothing(loss, output, dtype):
    """Weights of 1 reproduce the unweighted loss and gradients bit for bit."""
    net = Network([5, 4, 3], "tanh", loss, output, dtype=dtype, seed=2)
    X, Y, _ = make_batch(net)
    plain = net.loss_and_gradients(X, Y, weight_decay=0.01)
    ones = net.loss_and_gradients(X, Y, weight_decay=0.01, sample_weight=np.ones(len(X)))
    assert plain[0] == ones[0]
    for a, b in zip(interleave(*plain[1:]), interleave(*ones[1:])):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("loss,output", LOSSES)
def test_integer_weights_equal_repeated_rows(loss, output):
    """Weight k ≡ the row k times (0 ≡ absent), once both are means over their own rows."""
    net = make_net(loss, output)
    X, Y, _ = make_batch(net, n=9)
    w = np.array([0, 1, 2, 3, 0, 1, 4, 1, 2])
    loss_w, gw, bw = net.loss_and_gradients(X, Y, sample_weight=w)
    loss_r, gr, br = net.loss_and_gradients(X.repeat(w, axis=0), Y.repeat(w, axis=0))
    ratio = len(X) / w.sum()      # (1/n) Σ wᵢ lᵢ  vs  (1/Σw) Σ_repeated l
    assert loss_w * ratio == pytest.approx(loss_r, rel=1e-12)
    for a, b in zip(interleave(gw, bw), interleave(gr, br)):
        np.testing.assert_allclose(a * ratio, b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("loss,output", LOSSES)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_weighted_gradients_match_finite_differences(loss, output, activation):
    net = make_net(loss, output, activation)
    X, Y, w = make_batch(net)
    decay = 0.05
    _, nabla_w, nabla_b = net.loss_and_gradients(X, Y, decay, sample_weight=w)
    numeric = numerical_gradients(net, lambda: net.cost(X, Y, decay, sample_weight=w))
    for analytic, num in zip(interleave(nabla_w, nabla_b), numeric):
        np.testing.assert_allclose(analytic, num, rtol=1e-5, atol=1e-8)


def test_zero_weights_give_zero_loss_and_gradients():
    net = make_net("ce", None)
    X, Y, _ = make_batch(net)
    loss, nabla_w, nabla_b = net.loss_and_gradients(X, Y, sample_weight=np.zeros(len(X)))
    assert loss == 0.0
    assert all(not g.any() for g in nabla_w + nabla_b)


def test_sample_weight_of_wrong_length_is_a_value_error():
    net = make_net("ce", None)
    X, Y, _ = make_batch(net)
    with pytest.raises(ValueError, match="one weight per row"):
        net.loss_and_gradients(X, Y, sample_weight=np.ones(len(X) + 1))
    with pytest.raises(ValueError, match="one weight per row"):
        get_loss("bce").value(np.zeros((3, 1)), np.zeros((3, 1)), np.zeros((3, 1)),
                              np.ones((3, 1)))


# ------------------------------------------------------------------------ dropout
def test_dropout_forward_matches_direct_computation():
    """z¹ = (X ⊙ m⁰)W¹ + b¹, a¹ = σ(z¹), z² = (a¹ ⊙ m¹)W² + b², ŷ = softmax(z²)."""
    net = make_net("ce", None, sizes=(5, 6, 3))
    X, _, _ = make_batch(net)
    masks = net.dropout_masks([0.2, 0.5], 4, 0, np.arange(len(X)))
    W1, W2 = net.weights
    b1, b2 = net.biases
    a1 = 1 / (1 + np.exp(-((X * masks[0]) @ W1 + b1)))
    z2 = (a1 * masks[1]) @ W2 + b2
    expected = np.exp(z2) / np.exp(z2).sum(axis=1, keepdims=True)
    zs, acts = net.forward(X, masks)
    np.testing.assert_allclose(acts[1], a1, rtol=1e-12)   # activations are kept unmasked
    np.testing.assert_allclose(acts[-1], expected, rtol=1e-12)


@pytest.mark.parametrize("loss,output", LOSSES)
@pytest.mark.parametrize("rates", [[0.0, 0.5, 0.3], [0.25, 0.0, 0.5]])
def test_dropout_gradients_match_finite_differences(loss, output, rates):
    """With the masks held fixed the loss is a smooth function of the weights: check it."""
    net = make_net(loss, output, "tanh")
    X, Y, w = make_batch(net)
    masks = net.dropout_masks(rates, 7, 2, np.arange(len(X)))
    decay = 0.02
    for weights in (None, w):
        _, nabla_w, nabla_b = net.loss_and_gradients(X, Y, decay, weights, masks)
        numeric = numerical_gradients(
            net, lambda weights=weights: net.cost(X, Y, decay, sample_weight=weights,
                                                  dropout_masks=masks))
        for analytic, num in zip(interleave(nabla_w, nabla_b), numeric):
            np.testing.assert_allclose(analytic, num, rtol=1e-5, atol=1e-8)


def test_dropped_units_get_no_gradient():
    """A hidden unit dropped for every row receives no gradient on its outgoing weights,
    and the unit's incoming weights get none either."""
    net = make_net("ce", None, sizes=(4, 5, 3))
    X, Y, _ = make_batch(net)
    masks = [None, np.ones((len(X), 5))]
    masks[1][:, 2] = 0
    _, nabla_w, nabla_b = net.loss_and_gradients(X, Y, dropout_masks=masks)
    assert not nabla_w[1][2].any()          # outgoing: row 2 of W²
    assert not nabla_w[0][:, 2].any()       # incoming: column 2 of W¹
    assert nabla_b[0][2] == 0


def test_masks_of_ones_change_nothing():
    net = Network([5, 4, 3], seed=1)
    X, Y, _ = make_batch(net)
    ones = [np.ones((len(X), 5), np.float32), np.ones((len(X), 4), np.float32)]
    a = net.loss_and_gradients(X, Y)
    b = net.loss_and_gradients(X, Y, dropout_masks=ones)
    assert a[0] == b[0]
    for x, y in zip(interleave(*a[1:]), interleave(*b[1:])):
        np.testing.assert_array_equal(x, y)


def test_dropout_masks_statistics_and_validation():
    net = Network([300, 200, 10], seed=0)
    masks = net.dropout_masks([0.0, 0.3], 0, 0, np.arange(400))
    assert masks[0] is None
    m = masks[1]
    assert m.shape == (400, 200) and m.dtype == np.float32
    assert set(np.unique(m)) == {0.0, np.float32(1 / 0.7)}
    assert (m == 0).mean() == pytest.approx(0.3, abs=0.01)
    assert m.mean() == pytest.approx(1.0, abs=0.02)          # inverted dropout: E[m] = 1
    again = net.dropout_masks([0.0, 0.3], 0, 0, np.arange(400))
    np.testing.assert_array_equal(m, again[1])
    with pytest.raises(ValueError, match="one rate per weight layer"):
        net.dropout_masks([0.5], 0, 0, np.arange(4))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        net.dropout_masks([0.0, 1.0], 0, 0, np.arange(4))


def _splitmix(z):
    """SplitMix64's finalizer on a Python int, modulo 2⁶⁴: an independent check of mlp.dropout."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 % 2**64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB % 2**64
    return z ^ (z >> 31)


def test_masks_are_the_documented_hash_of_their_position():
    """Unit j of layer l at position pos of epoch e: kept iff mix(key + γ(j+1)) >> 11 ≥ ⌈p·2⁵³⌉,
    computed here with Python integers; a batch's masks depend on its positions only."""
    gamma, seed, epoch, p = 0x9E3779B97F4A7C15, 12345, 3, 0.4
    net = Network([6, 5, 2], dtype="float64", seed=0)
    positions = np.array([0, 7, 99, 100000])
    masks = net.dropout_masks([p, p], seed, epoch, positions)
    for layer in (0, 1):
        for row, pos in enumerate(positions.tolist()):
            k = _splitmix((_splitmix(seed) + gamma * (epoch + 1)) % 2**64)
            k = _splitmix((_splitmix((k + gamma * (pos + 1)) % 2**64) + gamma * (layer + 1))
                          % 2**64)
            for j in range(net.sizes[layer]):
                bits = _splitmix((k + gamma * (j + 1)) % 2**64) >> 11
                expected = 1 / (1 - p) if bits >= np.ceil(p * 2.0**53) else 0.0
                assert masks[layer][row, j] == expected
    one_by_one = [net.dropout_masks([p, p], seed, epoch, [pos])[1][0] for pos in positions]
    np.testing.assert_array_equal(np.array(one_by_one), masks[1])
    other_epoch = net.dropout_masks([p, p], seed, epoch + 1, positions)[1]
    assert not np.array_equal(other_epoch, masks[1])


def test_astype_is_an_independent_copy_in_another_precision():
    net = Network([5, 4, 3], seed=1)
    X, _, _ = make_batch(net)
    wide = net.astype("float64")
    assert wide.dtype == np.float64 and all(p.dtype == np.float64 for p in wide.params())
    for a, b in zip(net.params(), wide.params()):
        np.testing.assert_array_equal(a.astype(np.float64), b)    # float32 → float64 is exact
    np.testing.assert_allclose(wide.feedforward(X), net.feedforward(X), rtol=1e-5)
    wide.weights[0][0, 0] += 1
    assert net.weights[0][0, 0] != wide.weights[0][0, 0]
