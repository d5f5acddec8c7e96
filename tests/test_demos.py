"""The tutorial's demos (mlp.demos): each run, its outcome checked from first principles."""

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import brentq

from mlp import demos
from mlp.data import load_mnist
from mlp.network import Network
from mlp.optimizers import SGD
from mlp.trainer import epoch_order


def quiet(line):
    """A ``say`` that prints nothing."""


def sigmoid64(z):
    return 1.0 / (1.0 + np.exp(-z))


# ----------------------------------------------------------------- regression
def test_tutorial_rate_conversion_matches_finite_differences():
    """One mlp step at tutorial_rate_to_mlp(η) is TF's step η·d/da (x·a − 10)²."""
    x, a, lr = 1.07, 3.5, 0.02
    net = Network([1, 1], activation="identity", loss="mse", output="identity", dtype="float64")
    net.weights[0][0, 0] = a
    _, nabla_w, nabla_b = net.loss_and_gradients(np.array([[x]]), np.array([[10.0]]))
    h = 1e-6
    tf_loss = lambda a: (x * a - 10.0) ** 2                    # noqa: E731 (the tutorial's loss)
    tf_grad = (tf_loss(a + h) - tf_loss(a - h)) / (2 * h)
    SGD(demos.tutorial_rate_to_mlp(lr)).step(net, nabla_w, [np.zeros(1)])
    assert net.weights[0][0, 0] == pytest.approx(a - lr * tf_grad, rel=1e-9)


def test_regression_reproduces_the_tutorial_program():
    """The trajectory of a equals a plain-NumPy transcription of the tutorial's loop."""
    seed, lr, steps = 3, 0.02, 100
    r = demos.regression(seed, lr, steps, say=quiet)
    rng = np.random.default_rng(seed)              # same draws, in the same order
    x = rng.normal(1.0, 0.1, 100)
    a = rng.standard_normal()
    expected = []
    for _ in range(steps):
        k = rng.integers(100)
        a -= lr * 2 * x[k] * (x[k] * a - 10.0)     # GradientDescentOptimizer on (x·a − 10)²
        expected.append(a)
    np.testing.assert_allclose(r["a_history"], expected, rtol=1e-4)


@pytest.mark.parametrize("seed", range(8))
def test_regression_a_ends_near_10(seed):
    r = demos.regression(seed, say=quiet)
    best_a, _ = demos.least_squares_a(r["x"])      # argmin of mean (x·a − 10)², closed form
    assert abs(r["a"] - 10) < 1.0
    assert abs(r["a"] - best_a) < 0.75


def test_regression_prints_the_tutorial_format():
    lines = []
    r = demos.regression(0, say=lines.append)
    assert len(lines) == 8
    for k, step in enumerate((25, 50, 75, 100)):
        assert re.fullmatch(rf"step #{step} a = \[-?\d+\.\d+\]", lines[2 * k])
        assert re.fullmatch(r"loss = \[\d+\.?\d*(e[-+]\d+)?\]", lines[2 * k + 1])
    assert float(lines[6][len("step #100 a = ["):-1]) == pytest.approx(r["a"], rel=1e-6)


def test_regression_is_deterministic():
    first = demos.regression(5, steps=30, say=quiet)["a_history"]
    np.testing.assert_array_equal(first, demos.regression(5, steps=30, say=quiet)["a_history"])


# ------------------------------------------------------------- classification
@pytest.mark.parametrize("seed", range(6))
def test_classification_boundary_between_the_class_means(seed):
    r = demos.classification(seed, say=quiet)
    # the boundary x = −a must lie between the means −1 and 3
    assert -1 < -r["a"] < 3
    # and near the maximum-likelihood a, where Σ σ(x + a) = Σ y (the score equation)
    x, y = r["x"], r["y"]
    best = brentq(lambda a: sigmoid64(x + a).sum() - y.sum(), -20, 20)
    assert abs(r["a"] - best) < 0.6


def test_classification_reproduces_the_tutorial_program():
    seed, lr, steps = 2, 0.05, 300
    lines = []
    r = demos.classification(seed, lr, steps, every=100, say=lines.append)
    rng = np.random.default_rng(seed)
    x = np.concatenate((rng.normal(-1, 1, 50), rng.normal(3, 1, 50)))
    y = np.concatenate((np.zeros(50), np.ones(50)))
    a = rng.normal(10, 1)
    for _ in range(steps):
        k = rng.integers(100)
        a -= lr * (sigmoid64(x[k] + a) - y[k])     # d/da of sigmoid cross-entropy
    assert r["a"] == pytest.approx(a, abs=1e-4)
    assert re.fullmatch(r"loss = \[\[\d+\.?\d*(e[-+]\d+)?\]\]", lines[1])


# ------------------------------------------------------------------ two-layer
@pytest.mark.parametrize("seed", range(4))
def test_two_layer_total_loss_decreases_to_the_least_squares_minimum(seed):
    """The tutorial's 3000 steps lower the loss at every report; run on, it reaches the floor.

    x·W1·W2 is a linear map without bias, and W1·W2 can be any 2 × 1 matrix: the lowest
    loss is least squares on X, computed here in closed form. In 3000 steps some seeds are
    still 20% above it (the rate is small); by 20,000 steps every seed is within 1e-5 of it,
    relative (measured: 2e-7 … 4e-6, float32 round-off and the minibatch cycle's bias).
    """
    r = demos.two_layer(seed, steps=20_000, say=quiet)
    done, losses = zip(*r["total_loss"])
    assert list(done) == list(range(0, 20_001, 500))
    tutorial = losses[:7]                           # the reports of the default 3000 steps
    assert all(later < earlier for earlier, later in zip(tutorial, tutorial[1:]))
    X, Y = demos.two_layer_data()
    w = np.linalg.lstsq(X, Y, rcond=None)[0]
    floor = float(np.mean((X @ w - Y) ** 2))
    assert losses[0] > 2 * floor                    # the start is far from it …
    assert floor * (1 - 1e-6) <= losses[-1] <= floor * (1 + 1e-5)    # … the end is at it
    product = r["w1"].astype(np.float64) @ r["w2"]
    assert np.mean((X @ product - Y) ** 2) == pytest.approx(losses[-1], rel=1e-4)
    # and the map it found is the least-squares one
    np.testing.assert_allclose(product, w, atol=1e-2)


def test_two_layer_data_is_the_tutorials():
    X, Y = demos.two_layer_data()
    assert X.shape == (32, 2) and Y.shape == (32, 1)
    np.testing.assert_array_equal(X, np.random.RandomState(23455).rand(32, 2))
    assert Y[0, 0] == float(X[0, 0] + X[0, 1] < 1)


# ---------------------------------------------------------- mnist-sigmaprime
def test_sigmaprime_step_is_the_tutorials_update():
    """One step equals the tutorial's hand-written graph, transcribed in NumPy (float64)."""
    rng = np.random.default_rng(0)
    X = rng.random((20, 6))
    y = rng.integers(0, 3, 20)
    net = demos.sigmaprime_network(6, 3, seed=1, hidden=4)
    net.weights = [w.astype(np.float64) for w in net.weights]
    net.biases = [b.astype(np.float64) for b in net.biases]
    net.dtype = np.dtype(np.float64)
    w1, b1, w2, b2 = (p.copy() for p in net.params())
    eta, batch = 0.5, 5
    demos.sigmaprime_train(net, X, y, 1.0, eta, steps=1, batch_size=batch, seed=7)

    idx = epoch_order(7, 0, 20)[:batch]
    x_in, target = X[idx], np.eye(3)[y[idx]]
    h_1 = x_in @ w1 + b1
    o_1 = sigmoid64(h_1)
    h_2 = o_1 @ w2 + b2
    y_hat = sigmoid64(h_2)
    err = y_hat - target
    sigmaprime = lambda h: sigmoid64(h) * (1 - sigmoid64(h))   # noqa: E731
    delta_2 = err * sigmaprime(h_2)
    delta_w_2 = o_1.T @ delta_2
    delta_1 = (delta_2 @ w2.T) * sigmaprime(h_1)
    delta_w_1 = x_in.T @ delta_1
    expected = [w1 - eta * delta_w_1, b1 - eta * delta_1.mean(axis=0),
                w2 - eta * delta_w_2, b2 - eta * delta_2.mean(axis=0)]
    for got, want in zip(net.params(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_mnist_sigmaprime_beats_90_percent(mnist_dir):
    """The documented default (lr 0.5, batch 10, 10,000 steps) on real MNIST."""
    lines = []
    r = demos.mnist_sigmaprime(seed=0, data_dir=mnist_dir, say=lines.append)
    assert r["steps"] == 10000 and r["batch_size"] == 10 and r["lr"] == 0.5
    assert [h["step"] for h in r["history"]] == list(range(0, 10001, 1000))
    assert r["history"][0]["test_accuracy"] < 0.3          # it starts at chance
    assert r["test_accuracy"] > 0.90
    assert re.fullmatch(r"Step: 10000 Accuracy Train%: \d+\.\d\d Accuracy Test%: \d+\.\d\d",
                        lines[-1])


def test_mnist_sigmaprime_digits_fallback():
    r = demos.mnist_sigmaprime(seed=0, steps=2000, dataset="digits", say=quiet)
    assert r["dataset"] == "digits" and r["test_accuracy"] > 0.9


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="steps"):
        demos.regression(steps=0, say=quiet)
    with pytest.raises(ValueError, match="learning rate"):
        demos.two_layer(lr=-1, say=quiet)
    with pytest.raises(ValueError, match="batch_size"):
        demos.sigmaprime_train(demos.sigmaprime_network(4, 2), np.zeros((3, 4)),
                               np.zeros(3, dtype=int), 1.0, 0.5, steps=1, batch_size=10)


# --------------------------------------------------------------- lr-compare
def test_run_metrics_on_known_curves():
    steps = np.arange(1, 101)
    line = 5.0 - 0.01 * steps
    m = demos.run_metrics(steps, line, threshold=4.5, zero_output_loss=100)
    assert m["steps_to_threshold"] == 50
    assert m["final_loss"] == pytest.approx(line[90:].mean())
    assert m["spread"] == pytest.approx(0, abs=1e-12)          # a straight line has no jitter
    jitter = line + 0.3 * (-1.0) ** steps
    assert demos.run_metrics(steps, jitter, 4.5, 100)["spread"] == pytest.approx(0.3, rel=0.05)
    assert demos.run_metrics(steps, line, 0.1, 100)["steps_to_threshold"] is None
    blown = np.where(steps > 60, np.inf, line)
    assert demos.run_metrics(steps, blown, 4.5, 100)["diverged"]
    stuck = np.full(100, 0.5)
    assert demos.run_metrics(steps, stuck, 0.2, zero_output_loss=0.5)["diverged"]


def _runs(curves, threshold, steps):
    return [demos.run_metrics(steps, c, threshold, zero_output_loss=100) for c in curves]


def test_a_rate_that_reaches_the_threshold_but_ends_above_it_has_not_converged():
    """A large rate dips below the threshold once and jitters back above: "unsteady"."""
    steps, threshold = np.arange(1, 201), 1.0
    descent = 5.0 * np.exp(-steps / 20.0) + 0.5          # settles at 0.5, below the threshold
    jitter = 1.5 + 0.7 * (-1.0) ** steps                 # touches 0.8, ends around 1.5
    jitter[:5] = 3.0
    slow = 5.0 - 0.01 * steps                            # never reaches it
    # the curves themselves, independent of mlp: where they end against the threshold
    assert jitter.min() <= threshold < jitter[180:].mean()
    assert descent[180:].mean() <= threshold < slow.min()
    rows = demos.summarize([
        {"lr": 0.1, "runs": _runs([slow, slow, slow], threshold, steps)},
        {"lr": 0.3, "runs": _runs([descent, descent, jitter], threshold, steps)},
        {"lr": 3.0, "runs": _runs([jitter, jitter, descent], threshold, steps)},
    ])
    status = {row["lr"]: row["status"] for row in rows}
    assert status == {0.1: "too slow", 0.3: "converged", 3.0: "unsteady"}
    first_dip = steps[np.flatnonzero(jitter <= threshold)[0]]
    assert rows[2]["steps_to_threshold"] == first_dip and rows[2]["final_loss"] > threshold
    table = demos.format_table(rows, "loss <= 1").splitlines()
    assert table[-1].split()[-1] == "unsteady" and table[-2].split()[-1] == "converged"
    t = demos.trends(rows)
    assert t["fastest"] == t["most_precise"] == 0.3           # among the converged only
    assert t["unsteady"] == [3.0] and t["too_slow"] == [0.1]
    assert "ended above it (not converged): lr 3." in demos.describe("task", t)
    assert all(m["settled"] for m in _runs([descent], threshold, steps))
    assert not any(m["settled"] for m in _runs([jitter, slow], threshold, steps))


def test_conclusion_follows_the_signs_of_the_measurement():
    fast_noisy = {"speed": -0.9, "jitter": 0.8}
    slow_precise = {"speed": 0.9, "jitter": -0.8}
    assert demos.conclusion([fast_noisy, fast_noisy]).startswith(
        "a large learning rate converges fast but imprecisely")
    assert "as the tutorial's table says" in demos.conclusion([slow_precise])
    assert demos.conclusion([fast_noisy, slow_precise]).startswith("the measurement is mixed")
    assert demos.conclusion([{"speed": -0.9, "jitter": math.nan}]).startswith(
        "the measurement is mixed")


def test_lr_compare_ranks_rates_as_measured(mnist_dir, tmp_path):
    lines = []
    r = demos.lr_compare(seed=0, out=tmp_path, data=load_mnist(mnist_dir),
                         regression=demos.REGRESSION_SWEEP._replace(seeds=3),
                         mnist=demos.Sweep((0.1, 0.3, 1.0, 3.0, 30.0), 2, 1200),
                         say=lines.append)
    for task, too_small, too_large in (("regression", 0.001, 2.0), ("mnist", 0.1, 30.0)):
        rows = {row["lr"]: row for row in r[task]["rows"]}
        assert rows[too_small]["status"] == "too slow"
        assert rows[too_large]["status"] == "diverged"
        converged = [row for row in r[task]["rows"] if row["status"] == "converged"]
        assert len(converged) >= 3
        # larger rates: fewer steps to the threshold, but more jitter once there
        steps = [row["steps_to_threshold"] for row in converged]
        spread = [row["spread"] for row in converged]
        assert steps == sorted(steps, reverse=True)
        assert spread == sorted(spread)
        assert r[task]["trends"]["speed"] < 0 < r[task]["trends"]["jitter"]
    # on the regression the precise small rates also end lower, near the least-squares floor
    finals = [row["final_loss"] for row in r["regression"]["rows"] if row["status"] == "converged"]
    assert finals == sorted(finals)
    assert r["conclusion"].startswith("a large learning rate converges fast but imprecisely")
    assert lines[-2] == "Conclusion (measured): " + r["conclusion"]
    with open(tmp_path / "lr_compare.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- command line
def test_cli_regression_prints_the_tutorial_format(tmp_path):
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    proc = subprocess.run([sys.executable, "-m", "mlp.demos", "regression", "--seed", "1",
                           "--out", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"step #25 a = \[-?\d+\.\d+\]", lines[0])
    assert re.fullmatch(r"loss = \[\d+\.?\d*(e[-+]\d+)?\]", lines[1])
    assert lines[6].startswith("step #100 a = [")
    saved = json.loads((tmp_path / "regression.json").read_text())
    assert saved["seed"] == 1 and abs(saved["a"] - 10) < 1.0
    assert saved["a"] == pytest.approx(demos.regression(1, say=quiet)["a"])


def test_cli_help_lists_every_demo(capsys):
    with pytest.raises(SystemExit) as exit:
        demos.main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    for name in ("regression", "classification", "two-layer", "mnist-sigmaprime", "lr-compare"):
        assert name in out


def test_cli_missing_mnist_is_a_clean_error(tmp_path, capsys):
    assert demos.main(["mnist-sigmaprime", "--data-dir", str(tmp_path / "nowhere"),
                       "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and "Traceback" not in err


def test_cli_lr_compare_passes_its_options_on(tmp_path):
    """Every lr-compare option of the command line reaches lr_compare (a Sweep per task)."""
    assert demos.main(["lr-compare", "--dataset", "digits", "--regression-seeds", "1",
                       "--regression-steps", "40", "--mnist-seeds", "2", "--mnist-steps", "30",
                       "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "lr_compare.json").read_text())
    assert saved["regression"]["steps"] == 40 and saved["mnist"]["steps"] == 30
    assert saved["dataset"] == "digits"
