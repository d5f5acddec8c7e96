"""Gradient checking: every backend's backpropagation against 5-point finite differences.

The grid covers activation × loss × depth × batch size × weight decay ×
backend; the checker itself is shown to catch a dropped σ' factor, a missing
1/n, a relative error of 1e-6 in a single entry, NaN and misshaped gradients;
and the command line is run end to end.
"""

import math
import subprocess
import sys

import numpy as np
import pytest
from optional import backend_params

import mlp.activations as activations
import mlp.gradcheck as gradcheck
from mlp.backends import NumpyBackend, get_backend
from mlp.gradcheck import (
    DEFAULT_THRESHOLD,
    check_gradients,
    check_loss,
    random_problem,
    relative_error,
    stencil_derivative,
)
from mlp.losses import CrossEntropy
from mlp.network import Network

BACKENDS = backend_params()
WIDTH, INPUTS, OUTPUTS = 4, 5, 3          # 5-4-3, 5-4-4-3, 5-4-4-4-3


def problem(activation, loss, depth, batch_size, seed=0, output=None):
    """A small random float64 network and batch (see mlp.gradcheck.random_problem)."""
    return random_problem(INPUTS, [WIDTH] * depth, OUTPUTS, activation, loss, output,
                          batch_size, seed)


def assert_all_pass(rows, net):
    """Every tensor passed, every entry was drawn, and kinks swallowed few of them."""
    assert len(rows) == 2 * net.num_layers
    for row in rows:
        assert row.passed, row
        assert row.max_rel_error <= DEFAULT_THRESHOLD
        assert row.checked + row.skipped == row.total
        assert row.skipped <= row.total // 4, row     # the check is not vacuous
        if net.activation != "relu" and net.loss.output != "relu":
            assert row.skipped == 0


# --------------------------------------------------------------------- the grid
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("loss", ["ce", "mse", "bce"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "identity"])
def test_gradients_match_finite_differences(activation, loss, depth, batch_size,
                                            weight_decay, backend):
    net, X, Y = problem(activation, loss, depth, batch_size, seed=depth + 10 * batch_size)
    rows = check_gradients(net, X, Y, weight_decay, backend, max_entries=None)
    assert_all_pass(rows, net)
    loss_value, reference, rel = check_loss(net, X, Y, weight_decay, backend)
    assert rel <= gradcheck.LOSS_TOLERANCE, (loss_value, reference)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("loss", ["ce", "mse", "bce", "poisson"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "identity"])
def test_mostly_zero_inputs(activation, loss, depth, backend):
    """Image-like batches, 80% zeros: the numba backend's sparse first-layer kernel."""
    net, X, Y = random_problem(INPUTS, [WIDTH] * depth, OUTPUTS, activation, loss,
                               batch_size=5, seed=depth, zero_inputs=0.8)
    assert np.count_nonzero(X) <= 0.5 * X.size
    if backend == "numba":
        from mlp.numba_backend import use_sparse  # here: the numpy instances run without Numba
        assert use_sparse(X)
    assert_all_pass(check_gradients(net, X, Y, 0.01, backend, max_entries=None), net)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("output", ["identity", "tanh", "relu", "sigmoid"])
def test_squared_error_with_every_output_function(output, backend):
    net, X, Y = problem("tanh", "mse", 2, 5, seed=3, output=output)
    assert net.loss.output == output
    assert_all_pass(check_gradients(net, X, Y, 0.01, backend, max_entries=None), net)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", ["ce", "mse", "bce", "poisson"])
def test_no_hidden_layer(loss, backend):
    net, X, Y = problem("sigmoid", loss, 0, 5)
    assert net.sizes == [INPUTS, OUTPUTS]
    assert_all_pass(check_gradients(net, X, Y, 0.01, backend, max_entries=None), net)


# ------------------------------------------------ the loss, computed another way
PY_ACTIVATIONS = {"sigmoid": lambda z: 1.0 / (1.0 + math.exp(-z)), "tanh": math.tanh,
                  "relu": lambda z: max(z, 0.0), "identity": lambda z: z}


def python_loss(net, X, Y, weight_decay=0.0):
    """The batch's mean loss + (λ/2) Σ‖W‖², from Python floats and :mod:`math` alone.

    A loop over rows, units and inputs, with the losses written from their
    definitions (−Σ y log softmax, −Σ [y log σ + (1 − y) log(1 − σ)], ½ Σ (ŷ − y)²,
    Σ [y log(y/ŷ) − y + ŷ] with ŷ = e^z):
    no NumPy arithmetic and none of mlp's, so it shares no mistake with them.
    """
    W = [w.tolist() for w in net.weights]
    B = [b.tolist() for b in net.biases]
    f, g = PY_ACTIVATIONS[net.activation], PY_ACTIVATIONS.get(net.loss.output)
    total = 0.0
    for x, y in zip(X.tolist(), Y.tolist()):
        a = x
        for l, (w, b) in enumerate(zip(W, B)):
            z = [sum(a[i] * w[i][j] for i in range(len(a))) + b[j] for j in range(len(b))]
            if l < len(W) - 1:
                a = [f(v) for v in z]
        if net.loss.name == "ce":
            e = [math.exp(v) for v in z]
            total -= sum(yk * math.log(ek / sum(e)) for yk, ek in zip(y, e))
        elif net.loss.name == "bce":
            p = [1.0 / (1.0 + math.exp(-v)) for v in z]
            total -= sum(yk * math.log(pk) + (1 - yk) * math.log(1 - pk) for yk, pk in zip(y, p))
        elif net.loss.name == "poisson":
            yhat = [math.exp(v) for v in z]
            total += sum((yk * math.log(yk / pk) if yk > 0 else 0.0) - yk + pk
                         for yk, pk in zip(y, yhat))
        else:
            total += 0.5 * sum((g(v) - yk) ** 2 for v, yk in zip(z, y))
    penalty = 0.5 * weight_decay * sum(v * v for w in W for row in w for v in row)
    return total / len(X) + penalty


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation, loss, output", [
    ("sigmoid", "ce", None), ("tanh", "mse", None), ("relu", "mse", "identity"),
    ("tanh", "bce", None), ("relu", "poisson", None)])
def test_loss_equals_a_plain_python_loop(activation, loss, output, backend):
    """Two hidden layers: both backends' loss and check_loss's reference against python_loss."""
    net, X, Y = random_problem(INPUTS, [WIDTH, WIDTH], OUTPUTS, activation, loss, output,
                               batch_size=6, seed=4)
    assert net.num_layers == 3
    expected = python_loss(net, X, Y, 0.01)
    value, reference, _ = check_loss(net, X, Y, 0.01, backend)
    assert value == pytest.approx(expected, rel=gradcheck.LOSS_TOLERANCE)
    assert reference == pytest.approx(expected, rel=gradcheck.LOSS_TOLERANCE)


# ---------------------------------------------------- float32 against float64
#: float32 gradients against float64 ones of the same (float32-rounded) network and batch:
#: |g32 − g64| <= F32_TOL · max |g64| per tensor, and the loss within F32_TOL relative. That is
#: 17 float32 ε (1.2e-7): these sums of a few dozen rounded terms measured up to 4.1e-7
#: (3.4 ε) over 6 seeds of 7 configurations, both backends
F32_TOL = 2e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("zero_inputs", [0.0, 0.8])     # 0.8: numba's sparse first layer
@pytest.mark.parametrize("activation, loss, output", [
    ("sigmoid", "ce", None), ("tanh", "mse", None), ("relu", "mse", "identity"),
    ("sigmoid", "bce", None)])
def test_float32_gradients_match_float64(activation, loss, output, zero_inputs, backend):
    net, X, Y = random_problem(20, [16, 12], 5, activation, loss, output, batch_size=9, seed=6,
                               zero_inputs=zero_inputs)
    net32 = net.astype("float32")
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    value, gw, gb = get_backend(backend).loss_and_gradients(net32, X32, Y32, 0.01)
    ref_value, ref_w, ref_b = NumpyBackend().loss_and_gradients(
        net32.astype("float64"), X32.astype(np.float64), Y32.astype(np.float64), 0.01)
    assert value == pytest.approx(ref_value, rel=F32_TOL)
    for got, ref in zip(gw + gb, ref_w + ref_b):
        assert got.dtype == np.float32 and ref.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=0, atol=F32_TOL * np.abs(ref).max())


# ------------------------------------------------- the checker catches mistakes
def test_dropped_sigmoid_prime_fails(monkeypatch):
    """A backward pass without the σ'(z) factor fails on every layer below the output."""
    net, X, Y = problem("sigmoid", "ce", 2, 5)
    monkeypatch.setitem(activations.DERIVATIVES, "sigmoid", lambda z, a: np.ones_like(z))
    rows = check_gradients(net, X, Y, backend="numpy", max_entries=None)
    failed = {(r.layer, r.name) for r in rows if not r.passed}
    # the output layer's gradient does not involve σ'; both layers below it do
    assert failed == {(1, "W"), (1, "b"), (2, "W"), (2, "b")}
    assert all(r.max_rel_error > 1e-2 for r in rows if not r.passed)


def test_dropped_sigmoid_prime_makes_the_cli_fail(monkeypatch, capsys):
    monkeypatch.setitem(activations.DERIVATIVES, "sigmoid", lambda z, a: np.ones_like(z))
    status = gradcheck.main(["--hidden", "6", "--inputs", "4", "--outputs", "3"])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAIL layer 1 W" in out and "2 of 4 tensors FAIL" in out


def test_missing_one_over_n_fails(monkeypatch):
    """δ = ŷ − y instead of (ŷ − y)/n: the gradient is n times too large."""
    monkeypatch.setattr(CrossEntropy, "delta",
                        lambda self, z, yhat, y, sample_weight=None: yhat - y)
    net, X, Y = problem("tanh", "ce", 1, 5)
    rows = check_gradients(net, X, Y, max_entries=None)
    assert not any(r.passed for r in rows)
    assert all(r.max_rel_error == pytest.approx(0.8) for r in rows)   # |5g − g| / |5g|


class ScaledEntry(NumpyBackend):
    """The reference backend with the largest entry of layer ``layer``'s ∇W times ``factor``."""

    def __init__(self, factor, layer=0):
        self.factor, self.layer = factor, layer

    def loss_and_gradients(self, net, X, Y, weight_decay=0.0):
        loss, nabla_w, nabla_b = super().loss_and_gradients(net, X, Y, weight_decay)
        g = nabla_w[self.layer]
        g.flat[np.argmax(np.abs(g))] *= self.factor
        return loss, nabla_w, nabla_b


@pytest.mark.parametrize("layer", [0, 1])
def test_a_relative_error_of_1e6_in_one_entry_fails(layer):
    net, X, Y = problem("sigmoid", "bce", 1, 5)
    g = NumpyBackend().loss_and_gradients(net, X, Y)[1][layer]
    worst = np.unravel_index(np.argmax(np.abs(g)), g.shape)
    rows = check_gradients(net, X, Y, backend=ScaledEntry(1 + 1e-6, layer), max_entries=None)
    assert [r.passed for r in rows] == [layer != 0, True, layer != 1, True]
    bad = rows[2 * layer]
    assert bad.worst == worst and bad.max_rel_error == pytest.approx(1e-6, rel=0.01)
    # an error far below the threshold passes: the threshold, not noise, decides
    rows = check_gradients(net, X, Y, backend=ScaledEntry(1 + 1e-10, layer), max_entries=None)
    assert all(r.passed for r in rows)


def test_nan_and_misshaped_gradients_fail():
    net, X, Y = problem("tanh", "ce", 1, 5)

    class Broken(NumpyBackend):
        def loss_and_gradients(self, net, X, Y, weight_decay=0.0):
            loss, nabla_w, nabla_b = super().loss_and_gradients(net, X, Y, weight_decay)
            nabla_w[0][1, 1] = np.nan
            nabla_b[1] = nabla_b[1][:-1]
            return loss, nabla_w, nabla_b

    rows = check_gradients(net, X, Y, backend=Broken(), max_entries=None)
    assert [r.passed for r in rows] == [False, True, True, False]
    assert rows[0].max_rel_error == np.inf and rows[0].worst == (1, 1)
    assert rows[3].checked == 0 and rows[3].max_rel_error == np.inf


# ------------------------------------------------------- the comparison rules
def test_relative_error_rule():
    tiny = 1e-3
    assert relative_error(2.0, 2.0 * (1 + 1e-8), tiny) == pytest.approx(1e-8, rel=1e-6)
    # below tiny the error is absolute, measured in units of tiny
    assert relative_error(1e-13, 0.0, tiny) == pytest.approx(1e-10)
    assert relative_error(0.0, 0.0, tiny) == 0.0
    assert relative_error(1e-5, -1e-5, tiny) == pytest.approx(2e-2)


def test_zero_gradients_pass():
    """Inputs that are all zero give weight rows whose gradient is exactly 0."""
    net, X, Y = problem("sigmoid", "ce", 1, 5)
    X[:, 2] = 0.0
    g = NumpyBackend().loss_and_gradients(net, X, Y)[1][0]
    assert np.all(g[2] == 0)
    assert_all_pass(check_gradients(net, X, Y, max_entries=None), net)


def test_stencil_is_fourth_order_accurate():
    x = np.linspace(-3, 3, 61)
    for h in (1e-2, 1e-3, 1e-4):
        error = np.abs(stencil_derivative(np.sin, x, h) - np.cos(x)).max()
        assert error <= h ** 4 / 30 + 1e-15 / h
    # the plain central difference at the same h is far worse
    plain = np.abs((np.sin(x + 1e-2) - np.sin(x - 1e-2)) / 2e-2 - np.cos(x)).max()
    assert plain > 1e3 * np.abs(stencil_derivative(np.sin, x, 1e-2) - np.cos(x)).max()


def test_relu_entries_whose_stencil_crosses_the_kink_are_skipped():
    """Put sample 0's unit 0 exactly at the kink: its entries are skipped, not failed."""
    net, X, Y = problem("relu", "ce", 1, 3, seed=1)
    w, b = net.weights[0], net.biases[0]
    b[0] = -(X[0] @ w[:, 0])
    z = net.forward(X)[0][0]
    assert abs(z[0, 0]) < 1e-14 and np.all(np.abs(z[1:, 0]) > 1e-2)
    rows = check_gradients(net, X, Y, max_entries=None)
    assert all(r.passed for r in rows)
    assert rows[0].skipped == INPUTS and rows[1].skipped == 1        # W[:, 0] and b[0]
    assert rows[2].skipped == rows[3].skipped == 0
    # there the finite difference averages the two one-sided slopes: no derivative
    g = NumpyBackend().loss_and_gradients(net, X, Y)[2][0][0]

    def cost(value):
        old, b[0] = b[0], value
        try:
            return net.cost(X, Y)
        finally:
            b[0] = old
    fd = stencil_derivative(np.vectorize(cost), np.array(b[0]))
    assert relative_error(g, fd, 1e-3) > 1e-3


def test_relu_output_kinks_are_detected_too():
    """An output z at the kink: every parameter below it moves that z, so none is checkable."""
    net, X, Y = problem("tanh", "mse", 1, 3, seed=1, output="relu")
    w, b = net.weights[1], net.biases[1]
    b[0] = -(np.tanh(X[0] @ net.weights[0] + net.biases[0]) @ w[:, 0])
    rows = check_gradients(net, X, Y, max_entries=None)
    assert [(r.checked, r.skipped) for r in rows] == [(0, 20), (0, 4), (8, 4), (2, 1)]
    # nothing of layer 1 was shown to be right: that is a FAIL, not a PASS
    assert [r.passed for r in rows] == [False, False, True, True]


# --------------------------------------------------------- subsets and inputs
def test_large_tensors_are_checked_on_a_seeded_subset():
    net, X, Y = random_problem(30, [20], 4, "tanh", "ce", batch_size=3)
    rows = check_gradients(net, X, Y, max_entries=25, seed=7)
    assert [(r.checked, r.total) for r in rows] == [(25, 600), (20, 20), (25, 80), (4, 4)]
    assert all(r.passed for r in rows)
    again = check_gradients(net, X, Y, max_entries=25, seed=7)
    other = check_gradients(net, X, Y, max_entries=25, seed=8)
    assert [r.max_rel_error for r in again] == [r.max_rel_error for r in rows]
    assert rows[0].max_rel_error != other[0].max_rel_error


def test_the_network_is_left_unchanged():
    net, X, Y = problem("relu", "bce", 2, 5)
    before = [p.copy() for p in net.params()]
    check_gradients(net, X, Y, 0.01, max_entries=None)
    assert all(np.array_equal(p, q) for p, q in zip(net.params(), before))


def test_bad_arguments_raise_value_errors():
    net, X, Y = problem("sigmoid", "ce", 1, 5)
    with pytest.raises(ValueError, match="float64"):
        check_gradients(Network([5, 4, 3], dtype="float32"), X, Y)
    with pytest.raises(ValueError, match=r"X must have shape \(n >= 1, 5\)"):
        check_gradients(net, X[:, :4], Y)
    with pytest.raises(ValueError, match="Y must have shape"):
        check_gradients(net, X, Y[:, :2])
    with pytest.raises(ValueError, match="eps"):
        check_gradients(net, X, Y, eps=0.0)
    with pytest.raises(ValueError, match="max_entries"):
        check_gradients(net, X, Y, max_entries=0)
    with pytest.raises(ValueError, match="weight_decay"):
        check_gradients(net, X, Y, weight_decay=-1.0)
    with pytest.raises(ValueError, match="unknown backend"):
        check_gradients(net, X, Y, backend="cuda")


# ------------------------------------------------------------ the command line
def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mlp.gradcheck", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_default_run_passes():
    result = run_cli()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    lines = [line.split() for line in out.splitlines()]
    rows = [line for line in lines if line and line[0].isdigit()]
    assert [(r[0], r[1]) for r in rows] == [("1", "W"), ("1", "b"), ("2", "W"), ("2", "b")]
    assert all(r[-1] == "PASS" for r in rows)
    assert "100 of 320" in out and "random subset of 100" in out
    assert "threshold 1e-07" in out and "all 4 tensors PASS" in out


def test_cli_relu_says_which_threshold_applies_at_the_kink():
    result = run_cli("--activation", "relu", "--hidden", "8", "6", "--loss", "mse",
                     "--weight-decay", "0.1", "--batch-size", "9", "--seed", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "kink" in result.stdout and "no finite-difference threshold" in result.stdout
    assert "all 6 tensors PASS" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--hidden", "0"], "must be >= 1"),
    (["--activation", "swish"], "invalid choice"),
    (["--eps", "-1"], "must be > 0"),
    (["--weight-decay", "nan"], "must be finite"),
    (["--backend", "cuda"], "invalid choice"),
    (["--batch-size", "two"], "is not an integer"),
    (["--zero-inputs", "1.5"], "must be in [0, 1]"),
])
def test_cli_rejects_nonsense_flags(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "usage: python -m mlp.gradcheck" in result.stderr and message in result.stderr


def test_cli_reports_mlp_errors_without_traceback():
    result = run_cli("--loss", "ce", "--output-activation", "identity")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --output-activation applies to --loss mse only")
    assert "Traceback" not in result.stderr
