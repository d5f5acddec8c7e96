"""What the estimators took from scikit-learn's MLP, each against scikit-learn on the same data.

Multilabel classification, the dtype that follows X, ``loss="poisson"``,
``n_iter_no_change=np.inf`` and sample weights with early stopping, on both
backends. scikit-learn's ``alpha=a`` with batch size b is mlp's ``alpha=a/b``
(see :mod:`mlp.estimators`); both start from their own random weights, so the
comparisons are of scores and losses within a margin, not of weights. Every fit names
``solver="sgd"``, the solver these comparisons were measured with, whatever the default.
"""

import warnings

import numpy as np
import pytest
import sklearn
from optional import backend_params
from sklearn.datasets import load_iris, make_multilabel_classification, make_regression
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
from sklearn.linear_model import PoissonRegressor
from sklearn.metrics import d2_tweedie_score, mean_poisson_deviance
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.preprocessing import StandardScaler
from sklearn.utils.fixes import parse_version

from mlp import DivergenceError, MLPClassifier, MLPRegressor
from mlp.losses import get_loss

BACKENDS = backend_params(["numpy", "numba"])
SKLEARN_1_7 = parse_version(sklearn.__version__) >= parse_version("1.7")


@pytest.fixture(autouse=True)
def _no_convergence_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def multilabel_data():
    X, Y = make_multilabel_classification(n_samples=600, n_features=20, n_classes=5,
                                          random_state=0)
    return train_test_split(StandardScaler().fit_transform(X), Y, random_state=0)


# ------------------------------------------------------------ multilabel
@pytest.mark.parametrize("backend", BACKENDS)
def test_multilabel_trains_like_scikit_learn(backend):
    X_tr, X_te, Y_tr, Y_te = multilabel_data()
    common = dict(hidden_layer_sizes=(30,), activation="relu", solver="sgd",
                  learning_rate_init=0.05, batch_size=50, max_iter=60, tol=0, random_state=0)
    ours = MLPClassifier(**common, alpha=1e-4 / 50, backend=backend).fit(X_tr, Y_tr)
    theirs = SkMLPClassifier(**common, alpha=1e-4).fit(X_tr, Y_tr)
    # measured: training subset accuracy 0.816 (both backends) / 0.793, final loss 0.751 /
    # 0.768, held-out subset accuracy 0.367 / 0.380
    assert ours.score(X_tr, Y_tr) == pytest.approx(theirs.score(X_tr, Y_tr), abs=0.05)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=0.1)
    assert ours.score(X_te, Y_te) == pytest.approx(theirs.score(X_te, Y_te), abs=0.08)
    pred, proba = ours.predict(X_te), ours.predict_proba(X_te)
    assert pred.shape == proba.shape == Y_te.shape and pred.dtype == np.int64
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    assert not np.allclose(proba.sum(axis=1), 1.0)       # sigmoid outputs, not a softmax
    np.testing.assert_array_equal(ours.classes_, np.arange(5))
    assert (ours.n_outputs_, ours.out_activation_) == (5, "logistic")


def test_multilabel_loss_is_binary_cross_entropy():
    """One full batch from a warm start: loss_ is the mean BCE of the previous weights'
    outputs, computed here from predict_proba, plus the L2 penalty of the epoch's end."""
    X, _, Y, _ = multilabel_data()
    clf = MLPClassifier((8,), solver="sgd", batch_size=len(X), max_iter=1, warm_start=True,
                        alpha=1e-3, random_state=0, backend="numpy").fit(X, Y)
    p = clf.predict_proba(X)
    bce = -(Y * np.log(p) + (1 - Y) * np.log(1 - p)).sum(axis=1).mean()
    clf.fit(X, Y)
    penalty = 1e-3 / 2 * sum((W.astype(float) ** 2).sum() for W in clf.coefs_)
    assert clf.loss_ == pytest.approx(bce + penalty, rel=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_multilabel_partial_fit_early_stopping_and_weights(backend):
    X, X_te, Y, Y_te = multilabel_data()
    params = dict(hidden_layer_sizes=(30,), activation="relu", solver="sgd",
                  learning_rate_init=0.05, random_state=0, backend=backend)
    clf = MLPClassifier(**params)
    for _ in range(20):
        clf.partial_fit(X, Y, classes=[0, 1, 2, 3, 4])
    fitted = MLPClassifier(**params, max_iter=20, tol=0).fit(X, Y)
    np.testing.assert_array_equal(clf.predict_proba(X), fitted.predict_proba(X))
    assert clf.score(X, Y) > 0.4                 # measured: 0.50 (all five right by chance: 1/32)
    early = MLPClassifier((30,), early_stopping=True, random_state=0, backend=backend)
    assert early.fit(X, Y).predict(X_te).shape == Y_te.shape   # not stratified: no error
    weights = np.where(Y[:, 0] == 1, 2.0, 1.0)
    MLPClassifier((30,), max_iter=5, random_state=0, backend=backend).fit(
        X, Y, sample_weight=weights)


def test_multilabel_errors():
    X, _, Y, _ = multilabel_data()
    with pytest.raises(ValueError, match="class_weight is not supported for multilabel"):
        MLPClassifier(class_weight="balanced", max_iter=2).fit(X, Y)
    with pytest.raises(ValueError, match="classes has 3 labels but the indicator matrix y "
                                         "has 5 columns"):
        MLPClassifier().partial_fit(X, Y, classes=[0, 1, 2])
    clf = MLPClassifier((4,), max_iter=2, warm_start=True, backend="numpy").fit(X, Y)
    with pytest.raises(ValueError, match="y is single-label but the fitted model is not"):
        clf.fit(X, Y[:, 0])
    with pytest.raises(ValueError, match="y has 4 label columns but the fitted model has 5"):
        clf.fit(X, Y[:, :4])


# ------------------------------------------------------------ dtype
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("Estimator, SkEstimator", [(MLPClassifier, SkMLPClassifier),
                                                    (MLPRegressor, SkMLPRegressor)])
def test_dtype_follows_X_as_in_scikit_learn(Estimator, SkEstimator, backend):
    X, y = make_regression(n_samples=60, n_features=4, random_state=0)
    y = y > 0 if Estimator is MLPClassifier else y / y.std()
    for X_dtype in (np.float32, np.float64, np.int64):
        Xd = (10 * X).astype(X_dtype)
        ours = Estimator((5,), max_iter=3, backend=backend).fit(Xd, y)
        theirs = SkEstimator(hidden_layer_sizes=(5,), max_iter=3).fit(Xd, y)
        assert {a.dtype for a in ours.coefs_ + ours.intercepts_} == {theirs.coefs_[0].dtype}
        if Estimator is MLPRegressor:
            assert ours.predict(Xd).dtype == theirs.predict(Xd).dtype
    explicit = Estimator((5,), max_iter=3, dtype="float32", backend=backend).fit(X, y)
    assert explicit.coefs_[0].dtype == np.float32
    warm = Estimator((5,), max_iter=3, warm_start=True, backend=backend).fit(
        X.astype(np.float32), y)
    warm.fit(X, y)                                  # a warm start keeps the model's dtype
    assert warm.coefs_[0].dtype == np.float32


# ------------------------------------------------------------ Poisson
@pytest.mark.parametrize("backend", BACKENDS)
def test_poisson_without_hidden_nonlinearity_is_the_poisson_glm(backend):
    """scikit-learn's test_mlp_vs_poisson_glm_equivalent, with full-batch SGD for L-BFGS."""
    n = 100
    rng = np.random.default_rng(42)
    X = np.linspace(0, 1, n)
    y = rng.poisson(np.exp(X + 1))
    X = X.reshape(n, -1)
    glm = PoissonRegressor(alpha=0, tol=1e-10).fit(X, y)
    mlp = MLPRegressor(loss="poisson", hidden_layer_sizes=(1,), activation="identity",
                       solver="sgd", alpha=0, batch_size=n, learning_rate_init=0.05,
                       max_iter=300, tol=0, n_iter_no_change=np.inf, random_state=0,
                       backend=backend).fit(X, y)
    # measured: 9e-9 relative after 300 epochs, on both backends
    np.testing.assert_allclose(mlp.predict(X), glm.predict(X), rtol=1e-6)
    assert mlp.out_activation_ == "exp"
    # half the mean Poisson deviance, as scikit-learn's MLP reports its loss
    deviance = mean_poisson_deviance(y, mlp.predict(X)) / 2
    assert mlp.loss_curve_[-1] == pytest.approx(deviance, rel=1e-6)


@pytest.mark.skipif(not SKLEARN_1_7,
                    reason="scikit-learn's MLPRegressor has loss='poisson' from 1.7 on")
@pytest.mark.parametrize("backend", BACKENDS)
def test_poisson_trains_like_scikit_learn(backend):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (600, 4))
    y = rng.poisson(np.exp(np.sin(2 * X[:, 0]) + X[:, 1] ** 2 - 0.5 * X[:, 2]))
    common = dict(hidden_layer_sizes=(20,), activation="tanh", solver="sgd",
                  learning_rate_init=0.01, batch_size=40, max_iter=200, random_state=0)
    ours = MLPRegressor(loss="poisson", **common, alpha=1e-4 / 40, backend=backend)
    theirs = SkMLPRegressor(loss="poisson", **common, alpha=1e-4)
    ours.fit(X[:400], y[:400])
    theirs.fit(X[:400], y[:400])
    # measured: D² 0.4641 (both backends) and 0.4643 on the held-out rows
    d2 = [d2_tweedie_score(y[400:], m.predict(X[400:]), power=1) for m in (ours, theirs)]
    assert d2[0] == pytest.approx(d2[1], abs=0.02)


def test_poisson_loss_is_half_the_poisson_deviance():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(50, 1))
    y = rng.poisson(2.0, size=(50, 1)).astype(float)       # zeros included
    loss = get_loss("poisson")
    yhat = loss.activate(z)
    half_deviance = mean_poisson_deviance(y.ravel(), yhat.ravel()) / 2
    assert loss.value(z, yhat, y) == pytest.approx(half_deviance, rel=1e-12)
    assert loss.output_value(yhat, y) == pytest.approx(half_deviance, rel=1e-12)
    np.testing.assert_allclose(loss.delta(z, yhat, y), (np.exp(z) - y) / 50)


def test_poisson_refuses_negative_targets():
    with pytest.raises(ValueError, match=r"loss='poisson' needs targets y >= 0 .* found "
                                         r"min\(y\) = -1"):
        MLPRegressor(loss="poisson").fit([[0.0], [1.0]], [1.0, -1.0])


# ------------------------------------------------------------ stopping
@pytest.mark.parametrize("backend", BACKENDS)
def test_n_iter_no_change_inf_never_stops(backend):
    X, y = make_regression(n_samples=40, n_features=3, random_state=0)
    y = y > 0
    ours = MLPClassifier((4,), solver="sgd", tol=1e9, max_iter=30, n_iter_no_change=np.inf,
                         backend=backend).fit(X, y)
    theirs = SkMLPClassifier((4,), tol=1e9, max_iter=30, n_iter_no_change=np.inf,
                             solver="sgd").fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_ == 30
    with pytest.raises(ValueError, match="n_iter_no_change must be an integer >= 1 or np.inf"):
        MLPClassifier(n_iter_no_change=2.5).fit(X, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_weight_with_early_stopping(backend):
    """scikit-learn's test_mlp_sample_weight_with_early_stopping with SGD: weights of one
    change nothing, the split included; other weights change the fit."""
    X, y = make_regression(n_samples=100, n_features=2, n_informative=2, random_state=42)
    params = dict(hidden_layer_sizes=10, solver="sgd", early_stopping=True, tol=1e-2, batch_size=10,
                  learning_rate_init=0.01, random_state=42, backend=backend)
    y = y / y.std()
    plain = MLPRegressor(**params).fit(X, y)
    ones = MLPRegressor(**params).fit(X, y, sample_weight=np.ones_like(y))
    np.testing.assert_array_equal(ones.predict(X), plain.predict(X))
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    weighted = MLPRegressor(**params).fit(X, y, sample_weight=weights)
    assert not np.allclose(weighted.predict(X), plain.predict(X))


@pytest.mark.skipif(not SKLEARN_1_7, reason="scikit-learn's MLP takes sample_weight in fit "
                                            "from 1.7 on")
@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_weight_with_early_stopping_like_scikit_learn(backend):
    X, y = make_regression(n_samples=100, n_features=2, n_informative=2, random_state=42)
    y = y / y.std()
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    params = dict(hidden_layer_sizes=10, solver="sgd", early_stopping=True, tol=1e-2, batch_size=10,
                  learning_rate_init=0.01, random_state=42)
    ours = MLPRegressor(**params, backend=backend).fit(X, y, sample_weight=weights)
    theirs = SkMLPRegressor(**params, alpha=1e-4 * 10).fit(X, y,
                                                                          sample_weight=weights)
    # measured: weighted R² 0.986 (both backends) / 0.995, after 19 / 18 epochs
    assert ours.score(X, y, sample_weight=weights) == pytest.approx(
        theirs.score(X, y, sample_weight=weights), abs=0.03)


# ------------------------------------------------------------ divergence (a deliberate difference)
@pytest.mark.filterwarnings("ignore:One or more of the test scores are non-finite")
def test_grid_search_scores_a_diverging_fit_with_error_score():
    """README, "Divergence": DivergenceError where scikit-learn goes on with NaN; GridSearchCV
    gives such a fit error_score (NaN by default, ranked last) or, with "raise", raises."""
    X, y = load_iris(return_X_y=True)
    est = MLPRegressor(hidden_layer_sizes=20, activation="identity", solver="sgd", max_iter=5,
                       random_state=0, backend="numpy")
    grid = GridSearchCV(est, {"learning_rate_init": [1.0, 1e-4]}, cv=2)
    with pytest.warns(FitFailedWarning, match="DivergenceError"):
        grid.fit(X, y)
    assert np.isnan(grid.cv_results_["mean_test_score"][0])
    assert list(grid.cv_results_["rank_test_score"]) == [2, 1]
    assert grid.best_params_ == {"learning_rate_init": 1e-4}
    with pytest.raises(DivergenceError, match="Lower learning_rate_init"):
        grid.set_params(error_score="raise").fit(X, y)
