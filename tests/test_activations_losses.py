"""Activations, their derivatives, and the losses, against independent computations.

* each derivative against a 5-point finite difference of its function over
  z in [−30, 30], saturated tails included, in float32 and float64, with
  overflow / invalid / divide-by-zero turned into errors;
* the functions themselves against the math module;
* softmax, log_softmax and softplus at logits of ±1e4;
* each loss's value against a textbook formula computed with Python floats in
  loops, and its δ against finite differences of that value over z;
* one_hot.
"""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlp.activations import ACTIVATIONS, DERIVATIVES, softmax
from mlp.gradcheck import stencil_derivative
from mlp.losses import get_loss, log_softmax, one_hot, softplus

DTYPES = [np.float32, np.float64]
GRID = np.linspace(-30.0, 30.0, 6001)     # step 0.01, through 0 and the saturated tails


class strict:
    """Overflow, invalid operations, division by zero and any warning raise (not underflow to 0)."""

    def __enter__(self):
        self._err = np.errstate(over="raise", invalid="raise", divide="raise")
        self._warn = warnings.catch_warnings()
        self._err.__enter__()
        self._warn.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self._warn.__exit__(*exc)
        return self._err.__exit__(*exc)


# ------------------------------------------------------------------ activations
def math_activation(name, z):
    """The activation at a Python float, written with the math module."""
    return {"sigmoid": lambda t: 1.0 / (1.0 + math.exp(-t)) if t >= 0
            else math.exp(t) / (1.0 + math.exp(t)),
            "tanh": math.tanh,
            "relu": lambda t: max(t, 0.0),
            "identity": lambda t: t}[name](z)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_derivative_matches_finite_difference(name, dtype):
    f, fprime = ACTIVATIONS[name], DERIVATIVES[name]
    z = GRID.astype(dtype)
    if name == "relu":                    # the stencil must not straddle the kink
        z = z[np.abs(z) > 0.005]
    with strict(), np.errstate(under="raise"):
        a = f(z)
        d = fprime(z, a)
    assert a.dtype == dtype and d.dtype == dtype
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(d))
    with strict():
        reference = stencil_derivative(f, z.astype(np.float64), h=1e-3)
    # 5-point truncation (h⁴/30·f⁽⁵⁾) and rounding (ε/h) are both below 1e-12
    atol = 1e-11 if dtype == np.float64 else 4 * np.finfo(np.float32).eps
    np.testing.assert_allclose(d, reference, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_saturated_tails_are_flat_and_finite(name, dtype):
    z = np.array([-1e30, -1e4, -100, -30, 30, 100, 1e4, 1e30], dtype=dtype)
    with strict():
        a = ACTIVATIONS[name](z)
        d = DERIVATIVES[name](z, a)
    low = 0.0 if name == "sigmoid" else -1.0
    assert np.all((a >= low) & (a <= 1.0))
    assert np.all(d >= 0) and np.all(d <= 1e-12)
    assert np.array_equal(a[:2], [low, low]) and np.array_equal(a[-2:], [1.0, 1.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_math_module(name, dtype):
    z = GRID.astype(dtype)
    with strict():
        a = ACTIVATIONS[name](z)
    expected = np.array([math_activation(name, float(t)) for t in z])
    # absolute accuracy: σ = (1 + tanh(z/2))/2 is within ε of the truth, not within ε·σ
    np.testing.assert_allclose(a, expected, rtol=0, atol=2 * np.finfo(dtype).eps)


def test_relu_and_identity_derivatives_exactly():
    z = np.array([-2.0, -1e-300, 0.0, 1e-300, 3.0])
    a = ACTIVATIONS["relu"](z)
    assert np.array_equal(DERIVATIVES["relu"](z, a), [0, 0, 0, 1, 1])   # subgradient 0 at 0
    assert np.array_equal(DERIVATIVES["identity"](z, z), np.ones(5))


def test_sigmoid_prime_closed_form():
    """σ'(z) = e^{−|z|} / (1 + e^{−|z|})², written without σ."""
    z = GRID
    a = ACTIVATIONS["sigmoid"](z)
    e = np.exp(-np.abs(z))
    np.testing.assert_allclose(DERIVATIVES["sigmoid"](z, a), e / (1 + e) ** 2,
                               rtol=0, atol=2 * np.finfo(np.float64).eps)


# -------------------------------------------------- softmax, log_softmax, softplus
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_and_log_softmax_at_huge_logits(dtype):
    z = np.array([[1e4, 0.0, -1e4],
                  [-1e4, -1e4, -1e4],
                  [1e4, 1e4, 0.0],
                  [0.5, -0.25, 2.0]], dtype=dtype)
    with strict():
        p = softmax(z)
        log_p = log_softmax(z)
    assert p.dtype == dtype and log_p.dtype == dtype
    row = [math.exp(t) for t in (0.5, -0.25, 2.0)]
    expected_p = [[1, 0, 0], [1 / 3] * 3, [0.5, 0.5, 0], [t / sum(row) for t in row]]
    np.testing.assert_allclose(p, expected_p, rtol=4 * np.finfo(dtype).eps, atol=1e-300)
    expected_log = [[0, -1e4, -2e4], [-math.log(3)] * 3,
                    [-math.log(2), -math.log(2), -1e4 - math.log(2)],
                    [math.log(t / sum(row)) for t in row]]
    np.testing.assert_allclose(log_p, expected_log, rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softplus_at_huge_and_moderate_logits(dtype):
    z = np.array([-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4], dtype=dtype)
    with strict():
        s = softplus(z)
    assert s.dtype == dtype
    expected = [0.0, math.log1p(math.exp(-50)), math.log1p(math.exp(-1)), math.log(2),
                1 + math.log1p(math.exp(-1)), 50.0, 1e4]
    np.testing.assert_allclose(s, expected, rtol=4 * np.finfo(dtype).eps, atol=0)


# ----------------------------------------------------------------------- losses
LOSS_CASES = [("ce", None), ("mse", None), ("mse", "identity"), ("mse", "tanh"),
              ("mse", "relu"), ("bce", None)]


def direct_loss(name, output, z, y):
    """The batch-averaged loss from the textbook formula, with Python floats in loops."""
    total = []
    for zi, yi in zip(z.tolist(), y.tolist()):
        if name == "ce":                                      # −Σ y log softmax(z)
            norm = sum(math.exp(t) for t in zi)
            total.append(-sum(yk * math.log(math.exp(zk) / norm) for zk, yk in zip(zi, yi)))
        elif name == "bce":                                   # −Σ y log σ + (1−y) log(1−σ)
            total.append(-sum(yk * math.log(1 / (1 + math.exp(-zk)))
                              + (1 - yk) * math.log(1 / (1 + math.exp(zk)))
                              for zk, yk in zip(zi, yi)))
        else:                                                 # ½ Σ (g(z) − y)²
            g = output or "sigmoid"
            total.append(0.5 * sum((math_activation(g, zk) - yk) ** 2 for zk, yk in zip(zi, yi)))
    return math.fsum(total) / len(total)


def random_batch(name, output, n, k, seed):
    """Logits z (kept 0.05 away from relu's kink) and targets y of the right kind."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-6, 6, (n, k))
    z[np.abs(z) < 0.05] = 0.05
    if name == "ce":              # probability rows (one-hot or soft), each summing to 1
        y = (one_hot(rng.integers(0, k, n), k, np.float64) if seed % 2
             else rng.dirichlet(np.ones(k), n))
    elif name == "bce":
        y = rng.integers(0, 2, (n, k)).astype(np.float64) if seed % 2 else rng.random((n, k))
    elif output == "identity":
        y = rng.normal(size=(n, k))
    else:
        y = rng.random((n, k))
    return z, y


@settings(max_examples=40, deadline=None)
@given(case=st.sampled_from(LOSS_CASES), n=st.integers(1, 6), k=st.integers(1, 5),
       seed=st.integers(0, 2 ** 32 - 1))
def test_loss_value_matches_direct_computation(case, n, k, seed):
    name, output = case
    loss = get_loss(name, output)
    z, y = random_batch(name, output, n, k, seed)
    value = loss.value(z, loss.activate(z), y)
    assert isinstance(value, float)
    assert value == pytest.approx(direct_loss(name, output, z, y), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name, output", LOSS_CASES)
def test_loss_delta_matches_finite_differences(name, output, seed, n):
    """δ = ∂L/∂z of the batch-averaged loss, entry by entry, by the 5-point stencil."""
    loss = get_loss(name, output)
    z, y = random_batch(name, output, n, 3, seed)
    delta = loss.delta(z, loss.activate(z), y)
    assert delta.shape == z.shape
    numeric = np.empty_like(z)
    for i in np.ndindex(*z.shape):
        def value_at(t, i=i):
            zz = z.copy()
            zz[i] = t
            return loss.value(zz, loss.activate(zz), y)
        numeric[i] = stencil_derivative(value_at, z[i], h=1e-4)
    np.testing.assert_allclose(delta, numeric, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_at_huge_logits_are_exact(dtype):
    z = np.array([[1e4, -1e4], [-1e4, 1e4]], dtype=dtype)
    y = np.array([[0.0, 1.0], [0.0, 1.0]], dtype=dtype)
    with strict():
        ce = get_loss("ce")
        bce = get_loss("bce")
        mse = get_loss("mse")
        # row 0 is wrong by 2e4 nats, row 1 right: mean 1e4
        assert ce.value(z, ce.activate(z), y) == pytest.approx(1e4, rel=1e-6)
        # row 0: softplus(1e4) + softplus(1e4) = 2e4; row 1: 0
        assert bce.value(z, bce.activate(z), y) == pytest.approx(1e4, rel=1e-6)
        # row 0: ŷ = (1, 0) against (0, 1): ½·2; row 1: 0
        assert mse.value(z, mse.activate(z), y) == pytest.approx(0.5)
        for loss in (ce, bce, mse):
            delta = loss.delta(z, loss.activate(z), y)
            assert delta.dtype == dtype and np.all(np.isfinite(delta))


# ---------------------------------------------------------------------- one_hot
def test_one_hot():
    labels = np.array([2, 0, 1, 2])
    y = one_hot(labels, 4)
    assert y.dtype == np.float32 and y.shape == (4, 4)
    np.testing.assert_array_equal(y, np.eye(4, dtype=np.float32)[labels])
    assert one_hot(labels, 3, np.float64).dtype == np.float64
    assert one_hot(np.array([], dtype=np.int64), 5).shape == (0, 5)
    with pytest.raises(ValueError, match="0 … 2"):
        one_hot(np.array([3]), 3)


def test_one_hot_rejects_negative_labels():
    with pytest.raises(ValueError, match="found -1"):
        one_hot(np.array([-1, 0]), 3)


# ------------------------------- targets that are not one-hot (once a reported bug)


def test_cross_entropy_delta_for_targets_not_summing_to_one():
    """ce's δ is (ŷ·Σ_k y_k − y)/n: checked against finite differences on multi-hot and empty rows.

    (It used to be (ŷ − y)/n, right only for rows that sum to 1.)
    """
    loss = get_loss("ce")
    z = np.array([[0.3, -1.2, 2.0], [1.0, 0.5, -0.5]])
    y = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])       # multi-hot, and an empty row
    numeric = np.empty_like(z)
    for i in np.ndindex(*z.shape):
        def value_at(t, i=i):
            zz = z.copy()
            zz[i] = t
            return loss.value(zz, loss.activate(zz), y)
        numeric[i] = stencil_derivative(value_at, z[i], h=1e-4)
    np.testing.assert_allclose(loss.delta(z, loss.activate(z), y), numeric, rtol=1e-8, atol=1e-11)
