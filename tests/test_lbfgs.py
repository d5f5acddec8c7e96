"""solver="lbfgs": the objective against finite differences and the reference, the final loss
against scikit-learn's own lbfgs from the same initial weights, and scikit-learn's rules
(max_iter, max_fun, ConvergenceWarning, no partial_fit, no epoch record).

mlp's ``alpha`` is λ per mean loss (mlp.estimators); scikit-learn's lbfgs penalty is
alpha/(2n) Σ‖W‖² (alpha/(2Σw) with weights), so its ``alpha=a`` is mlp's ``a/n`` (``a/Σw``).
"""

import warnings

import numpy as np
import pytest
import scipy.optimize
from optional import backend_params
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn.neural_network import MLPRegressor as SkRegressor

from mlp.backends import get_backend
from mlp.estimators import MLPClassifier, MLPRegressor
from mlp.lbfgs import Objective, pack, unpack
from mlp.network import Network

BACKENDS = backend_params(["numpy", "numba"])


def digits(n=300):
    X, y = load_digits(return_X_y=True)
    return X[:n] / 16, y[:n]


def set_weights(est, W, B):
    """Overwrite a fitted estimator's weights in place with copies of W and B."""
    for a, w in zip(est.coefs_, W):
        a[...] = w
    for a, b in zip(est.intercepts_, B):
        a[...] = b


def fit_both(Mine, Theirs, X, y, params, alpha, max_iter, mine=None, sample_weight=None):
    """Fit scikit-learn's and mlp's lbfgs from the same random initial weights.

    Each is fitted once (max_iter=1) to set itself up, gets the same weights,
    then continues with warm_start for max_iter iterations.
    """
    sk = Theirs(solver="lbfgs", alpha=alpha, random_state=0, max_iter=1, **params)
    ours = Mine(solver="lbfgs", alpha=alpha / (len(X) if sample_weight is None
                                               else sample_weight.sum()),
                random_state=0, max_iter=1, dtype="float64", **params, **(mine or {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X, y, sample_weight=sample_weight)
        ours.fit(X, y, sample_weight=sample_weight)
        rng = np.random.default_rng(0)
        shapes = [w.shape for w in sk.coefs_]
        assert shapes == [w.shape for w in ours.coefs_]
        W = [rng.uniform(-1, 1, s) * np.sqrt(6 / sum(s)) for s in shapes]
        B = [rng.uniform(-0.1, 0.1, s[1]) for s in shapes]
        for est in (sk, ours):
            set_weights(est, W, B)
            est.set_params(warm_start=True, max_iter=max_iter)
            est.fit(X, y, sample_weight=sample_weight)
    return sk, ours


CASES = {
    "multiclass softmax, tanh": (MLPClassifier, SkClassifier, "digits", {"activation": "tanh",
                                 "hidden_layer_sizes": (15,)}, {}, 1e-2),
    "binary logistic, relu, two layers": (MLPClassifier, SkClassifier, "binary",
                                          {"activation": "relu", "hidden_layer_sizes": (10, 6)},
                                          {"loss": "bce"}, 0.3),
    "regression, logistic": (MLPRegressor, SkRegressor, "regression",
                             {"activation": "logistic", "hidden_layer_sizes": (12,)}, {}, 0.1),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES) + ["weighted multiclass"])
def test_final_loss_equals_scikit_learns_from_the_same_weights(case, backend):
    Mine, Theirs, data, params, mine, alpha = CASES.get(case, CASES["multiclass softmax, tanh"])
    X, y = digits()
    if data == "binary":
        y = y % 2
    elif data == "regression":
        X, y = make_regression(200, 8, noise=5.0, random_state=0)
        y = y / y.std()
    sw = np.random.default_rng(1).integers(1, 4, len(X)).astype(float) if "weighted" in case \
        else None
    # 40 iterations: long enough to move far from the start; the two runs' round-off is
    # amplified along a non-convex path (measured: 2e-8 relative after 50 iterations,
    # 1e-3 after 100 for the two-layer relu case)
    sk, ours = fit_both(Mine, Theirs, X, y, dict(params, tol=1e-9), alpha, 40,
                        dict(mine, backend=backend), sw)
    assert sk.n_iter_ == ours.n_iter_ == 40
    assert ours.loss_ == pytest.approx(sk.loss_, rel=1e-4)
    for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-3 * max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss, output", [("ce", None), ("bce", None), ("mse", "identity")])
def test_objective_gradient_against_finite_differences(backend, loss, output):
    rng = np.random.default_rng(0)
    net = Network([6, 5, 3], "tanh", loss, output, dtype="float64", seed=1)
    X = rng.standard_normal((23, 6))
    targets = rng.integers(0, 3, 23) if loss == "ce" else rng.random((23, 3))
    w = rng.random(23) * 2
    f = Objective(net, get_backend(backend), X, targets, w, weight_decay=0.03)
    theta = pack(net.weights, net.biases) + 0.1 * rng.standard_normal(net.n_parameters)
    err = scipy.optimize.check_grad(lambda t: f(t)[0], lambda t: f(t)[1], theta)
    assert err < 1e-6 * np.linalg.norm(f(theta)[1])
    # the value: the weighted mean loss plus (λ/2) Σ‖W‖², computed here by hand
    unpack(theta, net)
    yhat = net.feedforward(X)
    Y = np.eye(3)[targets] if loss == "ce" else targets
    if loss == "ce":
        per_row = -(Y * np.log(yhat)).sum(1)
    elif loss == "bce":
        per_row = -(Y * np.log(yhat) + (1 - Y) * np.log(1 - yhat)).sum(1)
    else:
        per_row = 0.5 * ((yhat - Y) ** 2).sum(1)
    penalty = 0.5 * 0.03 * sum((W ** 2).sum() for W in net.weights)
    assert f(theta)[0] == pytest.approx((w * per_row).mean() + penalty, rel=1e-12)


def test_numba_blocks_give_the_reference_and_the_same_bits_every_time():
    """2000 rows of 50 → 64 → 10: enough work for one block per thread (2 where Numba has
    two threads); the blocks' sum against the NumPy reference, and twice the same bits."""
    pytest.importorskip("numba", reason="numba is not installed")
    import mlp.numba_backend as nb  # here: the module needs Numba (skipped above without it)
    rng = np.random.default_rng(0)
    net = Network([50, 64, 10], "relu", "ce", dtype="float64")
    X = rng.standard_normal((2000, 50))
    y = rng.integers(0, 10, 2000)
    w = rng.random(2000)
    print("blocks:", nb.full_batch_blocks(net, 2000))
    first = nb.NumbaBackend().full_batch_gradients(net, X, y, w)
    again = nb.NumbaBackend().full_batch_gradients(net, X, y, w)
    ref = get_backend("numpy").full_batch_gradients(net, X, y, w)
    assert first[0] == again[0] and first[0] == pytest.approx(ref[0], rel=1e-13)
    for a, b, r in zip(first[1] + first[2], again[1] + again[2], ref[1] + ref[2]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, r, rtol=0, atol=1e-14)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_max_fun_and_max_iter_stop_with_a_convergence_warning(Est):
    X, y = digits(150)
    with pytest.warns(ConvergenceWarning, match="max_fun"):
        est = Est(solver="lbfgs", hidden_layer_sizes=20, max_fun=10, tol=0.0,
                  backend="numpy", random_state=0).fit(X, y)
    assert est.n_iter_ <= 10
    est = Est(solver="lbfgs", hidden_layer_sizes=20, max_iter=7, warm_start=True, tol=0.0,
              backend="numpy", random_state=0)
    for _ in range(2):                          # and again from where it stopped (warm start)
        with pytest.warns(ConvergenceWarning, match="max_iter"):
            est.fit(X, y)
        assert est.n_iter_ == 7


def test_lbfgs_is_scikit_learns_in_what_it_records_and_offers():
    X, y = digits(150)
    clf = MLPClassifier(solver="lbfgs", hidden_layer_sizes=20, max_iter=300, backend="numpy",
                        random_state=0).fit(X, y)
    assert not hasattr(clf, "partial_fit") and hasattr(MLPClassifier(), "partial_fit")
    assert not hasattr(MLPRegressor(solver="lbfgs"), "partial_fit")
    for name in ("loss_curve_", "best_loss_", "validation_scores_", "best_validation_score_"):
        assert not hasattr(clf, name)
    assert clf.score(X, y) == 1.0 and 0 < clf.n_iter_ < 300
    clf.set_params(solver="sgd", warm_start=True, max_iter=2)   # back to SGD: a new record
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    assert len(clf.loss_curve_) == 2
    with pytest.raises(ValueError, match="dropout .* need solver='sgd'"):
        MLPClassifier(solver="lbfgs", dropout=0.2).fit(X, y)


def test_verbose_reports_every_lbfgs_iteration(capsys):
    X, y = digits(100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(solver="lbfgs", hidden_layer_sizes=5, max_iter=4, verbose=True,
                      backend="numpy").fit(X, y)
    assert capsys.readouterr().out.count("Iteration") == 4

