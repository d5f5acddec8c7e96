"""The scikit-learn estimators: scikit-learn's own checks, closed forms, weights, dropout, API.

Independent references: without hidden layers the regressor is ridge
regression and the classifier multinomial logistic regression, whose optima
scikit-learn's Ridge and LogisticRegression compute by other means; one epoch
of SGD is replayed by a hand-written loop.
"""

import inspect
import pickle
import warnings

import numpy as np
import pytest
from optional import HAVE_NUMBA, backend_params
from sklearn.datasets import load_digits, make_blobs
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from mlp.backends import BACKENDS
from mlp.errors import DivergenceError, MLPError
from mlp.estimator_training import FitRun
from mlp.estimators import MLPClassifier, MLPRegressor
from mlp.network import Network
from mlp.optimizers import SGD

BACKEND_PARAMS = backend_params(sorted(BACKENDS, reverse=True))     # numpy first
#: the learning rates the SGD tests were written for (the defaults before Adam was)
SGD_RATES = {"classifier": 0.1, "regressor": 0.01}

# Optimise to the optimum: full batches, no tolerance-based stop.
CONVERGE = dict(batch_size=10_000, tol=0.0, n_iter_no_change=10**6, dtype="float64",
                backend="numpy", random_state=0, solver="sgd")


def check_instances():
    """Small, fast instances for scikit-learn's checks: SGD on NumPy in the dtype of X (the
    default, float64 or float32) and in float32, and Adam (the default solver) on NumPy in the
    dtype of X and on Numba in float32 (its checks are skipped where Numba is missing)."""
    out = []
    for backend, dtype, solver in [("numpy", None, "sgd"), ("numpy", "float32", "sgd"),
                                   ("numpy", None, "adam"), ("numba", "float32", "adam")]:
        common = dict(hidden_layer_sizes=(20,), max_iter=50, backend=backend, dtype=dtype,
                      solver=solver)
        out += [MLPClassifier(**common, learning_rate_init=SGD_RATES["classifier"]),
                MLPRegressor(**common, learning_rate_init=SGD_RATES["regressor"])]
        if solver == "adam":                   # Adam's steps are ~η each: a larger rate
            for est in out[-2:]:
                est.set_params(learning_rate_init=0.01, max_iter=100)
    return out


def expected_failures(estimator):
    """Checks that fail, strictly: one that starts to pass is reported (XPASS(strict) fails)."""
    if estimator.dtype == "float32" and (isinstance(estimator, MLPClassifier)
                                         or estimator.solver == "adam"):
        # measured: the float32 classifiers' probabilities (some small) differ by 3e-7 … 5e-7
        # relative; the float32 SGD regressors' predictions (near 1) by 2e-8, and pass; the
        # Adam regressor's (one near 0.12) by 1.8e-7, on sparse data by 3.8e-7 since the
        # sparse layer's rows are summed in vector registers (#15; it passed before by luck)
        why = ("compares weighted and repeated fits' predict_proba at rtol=1e-7, finer than "
               "float32 resolution (eps 1.2e-7); the float64 instances pass it, and "
               "test_integer_weights_equal_repeated_rows checks float32 at rtol 1e-5")
        return {"check_sample_weight_equivalence_on_dense_data": why,
                "check_sample_weight_equivalence_on_sparse_data": why}
    return {}


#: strict expected failures where scikit-learn offers them (1.7 on): one that starts to pass is
#: reported; older versions (the declared floor, 1.6) run the same checks non-strictly
STRICT = ({"xfail_strict": True}
          if "xfail_strict" in inspect.signature(parametrize_with_checks).parameters else {})


@parametrize_with_checks(check_instances(), expected_failed_checks=expected_failures, **STRICT)
def test_sklearn_compatible(estimator, check):
    if estimator.backend == "numba" and not HAVE_NUMBA:
        pytest.skip("numba is not installed: the numba backend cannot run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# ------------------------------------------------------------ closed forms
def regression_data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = X @ [1.0, -2.0, 0.5, 0.0] + 0.3 + rng.normal(scale=0.1, size=n)
    return X, y


def classification_data(n=60, seed=0):
    X, _ = regression_data(n, seed)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    return X, y


@pytest.mark.parametrize("weighted", [False, True])
def test_linear_regressor_reaches_the_ridge_solution(weighted):
    """No hidden layer, identity output: minimises Σwr²/(2Σw) + (α/2)‖w‖², i.e. Ridge(α·Σw)."""
    X, y = regression_data()
    alpha = 0.05
    w = np.random.default_rng(1).integers(1, 4, len(y)).astype(float) if weighted else None
    total = len(y) if w is None else w.sum()
    ours = MLPRegressor((), learning_rate_init=0.1, alpha=alpha, max_iter=1000, **CONVERGE)
    ours.fit(X, y, sample_weight=w)
    ridge = Ridge(alpha=alpha * total).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(ours.coefs_[0].ravel(), ridge.coef_, rtol=1e-7)
    np.testing.assert_allclose(ours.intercepts_[0], [ridge.intercept_], rtol=1e-7)


@pytest.mark.parametrize("class_weight", [None, {0: 3.0, 1: 1.0, 2: 0.5}])
def test_linear_classifier_reaches_the_logistic_regression_optimum(class_weight):
    """No hidden layer, softmax + cross-entropy, L2 α: LogisticRegression with C = 1/(α Σs)."""
    X, y = classification_data()
    alpha = 0.05
    s = np.ones(len(y)) if class_weight is None else np.array([class_weight[c] for c in y])
    ours = MLPClassifier((), learning_rate_init=0.5, alpha=alpha, max_iter=2000,
                         class_weight=class_weight, **CONVERGE).fit(X, y)
    ref = LogisticRegression(C=1 / (alpha * s.sum()), class_weight=class_weight, tol=1e-10,
                             max_iter=10_000).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)


def test_one_epoch_replays_by_hand():
    """shuffle=False, momentum 0: W ← W − η(∇J_batch + αW), batches in order, last one short."""
    X, y = classification_data(n=23)
    params = dict(hidden_layer_sizes=(5,), solver="sgd", learning_rate_init=0.3, momentum=0.0,
                  alpha=0.01,
                  batch_size=5, shuffle=False, dtype="float64", backend="numpy",
                  random_state=3, max_iter=1, warm_start=True)
    est = MLPClassifier(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
        net = Network([4, 5, 3], dtype="float64")
        net.weights = [w.copy() for w in est.coefs_]
        net.biases = [b.copy() for b in est.intercepts_]
        est.fit(X, y)                         # warm start: one more epoch
    Y = np.eye(3)[y]
    for start in range(0, 23, 5):
        xb, yb = X[start:start + 5], Y[start:start + 5]
        _, nabla_w, nabla_b = net.loss_and_gradients(xb, yb)
        for w, g in zip(net.weights, nabla_w):
            w -= 0.3 * (g + 0.01 * w)
        for b, g in zip(net.biases, nabla_b):
            b -= 0.3 * g
    for ours, ref in zip(est.coefs_ + est.intercepts_, net.weights + net.biases):
        np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------ weights and dropout
def test_integer_weights_equal_repeated_rows():
    """One batch per epoch: weight k ≡ the row repeated k times (float32, rtol 1e-5)."""
    X, y = classification_data(n=30)
    w = np.random.default_rng(2).integers(0, 4, len(y))
    params = dict(hidden_layer_sizes=(8,), max_iter=30, random_state=0, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MLPClassifier(**params).fit(X, y, sample_weight=w)
        b = MLPClassifier(**params).fit(X.repeat(w, axis=0), y.repeat(w))
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=1e-5)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_equal_weights_change_nothing_and_class_weight_is_sample_weight(backend):
    X, y = classification_data(n=50)
    params = dict(hidden_layer_sizes=(6,), max_iter=3, batch_size=8, random_state=0,
                  backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = MLPClassifier(**params).fit(X, y)
        equal = MLPClassifier(**params).fit(X, y, sample_weight=np.full(len(y), 2.5))
        by_class = MLPClassifier(class_weight={0: 2.0, 1: 1.0, 2: 0.5}, **params).fit(X, y)
        by_sample = MLPClassifier(**params).fit(X, y, sample_weight=np.array([2.0, 1.0, 0.5])[y])
    for a, b in zip(plain.coefs_, equal.coefs_):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(by_class.coefs_, by_sample.coefs_):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(plain.coefs_[0], by_class.coefs_[0])


def test_balanced_class_weight_raises_recall_of_the_rare_class():
    X, y = make_blobs([900, 100], centers=[[0, 0], [1.5, 1.5]], random_state=0)
    params = dict(hidden_layer_sizes=(8,), max_iter=20, random_state=0, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = MLPClassifier(**params).fit(X, y)
        balanced = MLPClassifier(class_weight="balanced", **params).fit(X, y)
    recall = lambda m: (m.predict(X[y == 1]) == 1).mean()  # noqa: E731
    assert recall(balanced) > recall(plain) + 0.1


def test_dropout_trains_deterministically_and_predicts_without_masks():
    X, y = make_blobs(200, centers=3, random_state=0)
    X = StandardScaler().fit_transform(X)
    params = dict(hidden_layer_sizes=(30, 30), dropout=0.3, max_iter=30, batch_size=20,
                  random_state=0, learning_rate_init=0.05, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MLPClassifier(**params).fit(X, y)
        b = MLPClassifier(**params).fit(X, y)
        c = MLPClassifier(**{**params, "dropout": 0.0}).fit(X, y)
        d = MLPClassifier(**{**params, "dropout": (0.3, 0.0)}).fit(X, y)
        e = MLPClassifier(**{**params, "input_dropout": 0.2}).fit(X, y)
    for wa, wb in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(wa, wb)
    for other in (c, d, e):
        assert not np.array_equal(a.coefs_[0], other.coefs_[0])
    # prediction is the whole network, no mask and no 1/(1 − p): a forward pass written out
    # from coefs_ and intercepts_ (logistic hidden layers, softmax output), in float64
    h = X
    for W, b in zip(a.coefs_[:-1], a.intercepts_[:-1]):
        h = 1 / (1 + np.exp(-(h @ W.astype(np.float64) + b.astype(np.float64))))
    z = h @ a.coefs_[-1].astype(np.float64) + a.intercepts_[-1].astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(a.predict_proba(X), e / e.sum(axis=1, keepdims=True),
                               rtol=1e-10, atol=1e-14)
    assert a.score(X, y) > 0.9


# ------------------------------------------------------------ labels and targets
@pytest.mark.parametrize("loss", ["ce", "bce", "mse"])
@pytest.mark.parametrize("labels", [["cat", "dog"], [3, 10], ["a", "b", "c"], [-1, 7, 2, 40]])
def test_labels_of_any_kind(loss, labels):
    X, idx = make_blobs(120, centers=len(labels), random_state=1)
    X = StandardScaler().fit_transform(X)
    y = np.array(labels, dtype=object if isinstance(labels[0], str) else int)[idx]
    clf = MLPClassifier((10,), loss=loss, max_iter=40, batch_size=20, random_state=0,
                        backend="numpy", solver="sgd", learning_rate_init=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    assert list(clf.classes_) == sorted(labels)
    proba = clf.predict_proba(X)
    assert proba.shape == (120, len(labels))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))
    assert clf.score(X, y) > 0.85
    assert clf.coefs_[-1].shape[1] == (1 if loss == "bce" and len(labels) == 2 else len(labels))


def test_regressor_one_and_several_outputs():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, size=(400, 2))
    Y = np.column_stack([np.sin(X[:, 0]) + X[:, 1] ** 2 / 4, X[:, 0] * X[:, 1] / 2])
    for y in (Y[:, 0], Y):
        reg = MLPRegressor((30,), activation="tanh", learning_rate_init=0.05, max_iter=300,
                           random_state=0, backend="numpy").fit(X, y)
        assert reg.predict(X).shape == y.shape
        assert reg.predict(X).dtype == np.float64
        assert reg.score(X, y) > 0.9


# ------------------------------------------------------------ errors
@pytest.mark.parametrize("param,value,match", [
    ("hidden_layer_sizes", (10, 0), "hidden_layer_sizes"),
    ("activation", "softplus", "activation"),
    ("solver", "newton", "solver"),
    ("alpha", -1.0, "alpha"),
    ("batch_size", 0, "batch_size"),
    ("learning_rate", "cosine", "learning_rate"),
    ("learning_rate_init", 0.0, "learning_rate_init"),
    ("momentum", 1.0, "momentum"),
    ("max_iter", 0, "max_iter"),
    ("validation_fraction", 1.0, "validation_fraction"),
    ("dropout", 1.0, "dropout"),
    ("dropout", (0.1, 0.2), "one rate per hidden layer"),
    ("input_dropout", -0.1, "input_dropout"),
    ("backend", "torch", "backend"),
    ("dtype", "float16", "float16"),
    ("loss", "hinge", "loss"),
    ("class_weight", "auto", "class_weight"),
])
def test_bad_parameters_are_value_errors_naming_them(param, value, match):
    X, y = classification_data(n=20)
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**{param: value}).fit(X, y)


def test_bad_data_is_a_value_error_saying_what_is_wrong():
    X, y = classification_data(n=30)
    clf = MLPClassifier((5,), max_iter=2, backend="numpy")
    with pytest.raises(NotFittedError):
        clf.predict(X)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(bad, y)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        clf.fit(bad, y)
    with pytest.raises(ValueError, match="0 sample"):
        clf.fit(X[:0], y[:0])
    with pytest.raises(ValueError, match="one class"):
        clf.fit(X, np.zeros(30))
    with pytest.raises(ValueError, match="Unknown label type"):
        clf.fit(X, X[:, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    with pytest.raises(ValueError, match="4 features"):
        clf.predict(X[:, :3])
    with pytest.raises(ValueError, match="non-zero"):
        clf.fit(X, y, sample_weight=np.zeros(30))
    with pytest.raises(ValueError, match=">= 0"):
        clf.fit(X, y, sample_weight=-np.ones(30))
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier().partial_fit(X, y)
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="not in classes_"):
        MLPClassifier(backend="numpy").partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match="differ from those of the first call"):
        MLPClassifier(backend="numpy").partial_fit(X, y, classes=[0, 1, 2]).partial_fit(
            X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="same classes"):
        MLPClassifier(backend="numpy", warm_start=True, max_iter=1).fit(X, y).fit(X, y % 2)


def test_divergence_is_an_mlp_error_with_advice():
    X, y = regression_data()
    with pytest.raises(DivergenceError, match="learning_rate_init") as info:
        MLPRegressor((10,), solver="sgd", learning_rate_init=50.0, backend="numpy",
                     random_state=0).fit(
            X, 1000 * y)
    assert isinstance(info.value, MLPError)


# ------------------------------------------------------------ training loop
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_same_random_state_same_coefs(backend):
    X, y = classification_data(n=80)
    params = dict(hidden_layer_sizes=(7,), max_iter=5, batch_size=16, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MLPClassifier(random_state=4, **params).fit(X, y)
        b = MLPClassifier(random_state=4, **params).fit(X, y)
        c = MLPClassifier(random_state=5, **params).fit(X, y)
    for wa, wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_partial_fit_and_warm_start_continue_fit_exactly(backend):
    """Three partial_fit calls, or fit(2) then a warm fit(1), equal fit(3), bit for bit."""
    X, y = classification_data(n=70)
    params = dict(hidden_layer_sizes=(6,), batch_size=16, random_state=1, backend=backend,
                  n_iter_no_change=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        whole = MLPClassifier(max_iter=3, **params).fit(X, y)
        parts = MLPClassifier(**params)
        for _ in range(3):
            parts.partial_fit(X, y, classes=[0, 1, 2])
        warm = MLPClassifier(max_iter=2, warm_start=True, **params).fit(X, y)
        warm.set_params(max_iter=1).fit(X, y)
    for other in (parts, warm):
        for a, b in zip(whole.coefs_ + whole.intercepts_, other.coefs_ + other.intercepts_):
            np.testing.assert_array_equal(a, b)
    assert whole.t_ == parts.t_ == warm.t_ == 3 * 70
    np.testing.assert_allclose(warm.loss_curve_, whole.loss_curve_)
    assert parts.n_iter_ == 1 and whole.n_iter_ == 3


def test_stopping_rules_and_loss_curve():
    X, y = classification_data(n=120)
    clf = MLPClassifier((10,), max_iter=500, tol=1e-2, n_iter_no_change=3, random_state=0,
                        backend="numpy").fit(X, y)
    assert clf.n_iter_ < 500 and len(clf.loss_curve_) == clf.n_iter_
    assert clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    with pytest.warns(ConvergenceWarning):
        MLPClassifier((10,), max_iter=2, random_state=0, backend="numpy").fit(X, y)

    es = MLPClassifier((10,), max_iter=500, early_stopping=True, n_iter_no_change=4,
                       random_state=0, backend="numpy").fit(X, y)
    assert es.n_iter_ < 500 and len(es.validation_scores_) == es.n_iter_
    assert es.best_validation_score_ == max(es.validation_scores_)
    assert es.best_loss_ is None


def test_learning_rate_schedules():
    X, y = classification_data(n=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        inv = MLPClassifier((5,), solver="sgd", learning_rate="invscaling", learning_rate_init=0.5,
                            power_t=0.25, max_iter=4, random_state=0, backend="numpy").fit(X, y)
    assert inv._optimizer.lr == pytest.approx(0.5 / (inv.t_ + 1) ** 0.25)
    ada = MLPClassifier((5,), solver="sgd", learning_rate="adaptive", learning_rate_init=0.5,
                        tol=10.0,
                        n_iter_no_change=1, max_iter=30, random_state=0,
                        backend="numpy").fit(X, y)
    # only epoch 1 improves by tol=10 (on best_loss_ = inf); then every second epoch the
    # rate is divided by 5 (0.5 / 5⁹ < 1e-6 after epoch 19), and epoch 21 stops
    assert ada._optimizer.lr == pytest.approx(0.5 / 5**9)
    assert ada.n_iter_ == 1 + 2 * 10


# ------------------------------------------------------------ the training policy, piece by piece
def test_no_improvement_count_on_the_training_loss_counts_and_resets_by_tol():
    """An epoch improves if its loss is at most best_loss_ − tol; best_loss_ is the lowest loss."""
    est = MLPClassifier(tol=0.25)
    est._start_training_record()
    counts, bests = [], []
    for loss in [2.0, 1.75, 1.6, 1.4, 1.0]:
        est.loss_ = loss
        est._update_no_improvement_count(run=None)
        counts.append(est._no_improvement_count)
        bests.append(est.best_loss_)
    assert counts == [0, 0, 1, 2, 0]          # 1.75 = 2.0 − tol improves; 1.6, 1.4 do not
    assert bests == [2.0, 1.75, 1.6, 1.4, 1.0]


def test_no_improvement_count_on_the_validation_score_and_the_best_weights():
    """Improving needs a score >= best + tol; any higher score replaces the kept weights."""
    est = MLPClassifier(tol=0.25, early_stopping=True)
    est._start_training_record()
    est._net = Network([2, 3, 2], dtype="float64", seed=0)
    scores = [0.5, 0.75, 0.875, 0.875, 1.25]
    stream = iter(scores)
    est._validation_score = lambda backend, X, y, sw: next(stream)
    run = FitRun(optimizer=None, backend=None, n_samples=0, validation=(None, None, None))
    counts, kept = [], []
    for epoch in range(5):
        est._net.weights[0][0, 0] = epoch           # marks the weights of this epoch
        est._update_no_improvement_count(run)
        counts.append(est._no_improvement_count)
        kept.append(run.best_params[0][0, 0])
    assert counts == [0, 0, 1, 2, 0]
    assert kept == [0, 1, 2, 2, 4]
    assert est.validation_scores_ == scores and est.best_validation_score_ == 1.25
    est._net.weights[0][0, 0] = 99.0
    est._restore_best_weights(run)
    for p, best in zip(est._net.params(), run.best_params):
        np.testing.assert_array_equal(p, best)
    assert est._net.weights[0][0, 0] == 4


def test_adaptive_divides_the_rate_by_5_and_stops_at_1e_minus_6(capsys):
    est = MLPClassifier(solver="sgd", learning_rate="adaptive", n_iter_no_change=3, verbose=True)
    opt = SGD(1e-5)
    est._no_improvement_count = 4
    assert est._trigger_stopping(opt) is False
    assert opt.lr == 1e-5 / 5 and est._no_improvement_count == 0
    assert est._trigger_stopping(opt) is False      # 2e-6 is still above 1e-6
    assert opt.lr == 1e-5 / 5 / 5
    assert est._trigger_stopping(opt) is True       # 4e-7: stop, the rate stays
    assert opt.lr == 1e-5 / 5 / 5
    assert capsys.readouterr().out.splitlines() == [
        "Setting learning rate to 0.000002", "Setting learning rate to 0.000000",
        "Training loss did not improve more than tol=0.000100 for 3 consecutive epochs. "
        "Stopping."]
    assert est._trigger_stopping(SGD(1e-6)) is True
    for schedule in ("constant", "invscaling"):
        opt = SGD(0.3)
        assert est.set_params(learning_rate=schedule)._trigger_stopping(opt) is True
        assert opt.lr == 0.3


def test_invscaling_rate_is_the_closed_form_after_every_epoch():
    """lr = learning_rate_init / (t + 1) ** power_t, t the samples seen so far."""
    X, y = classification_data(n=100)
    est = MLPClassifier((5,), solver="sgd", learning_rate="invscaling", learning_rate_init=0.5,
                        power_t=0.25, random_state=0, backend="numpy")
    for epoch in range(1, 5):
        est.partial_fit(X, y, classes=[0, 1, 2])
        assert est.t_ == 100 * epoch
        assert est._optimizer.lr == 0.5 / (100 * epoch + 1) ** 0.25
    for schedule in ("constant", "adaptive"):         # these leave the rate to the stop rule
        opt = SGD(0.3)
        est.set_params(learning_rate=schedule)._update_learning_rate(opt)
        assert opt.lr == 0.3
    opt = SGD(0.3)                                    # but "constant" starts every call afresh
    est.set_params(learning_rate="constant")._initial_learning_rate(opt)
    assert opt.lr == 0.5


@pytest.mark.parametrize("params,message", [
    ({"momentum": 1.0}, "momentum must be a number >= 0 and < 1, got 1.0"),
    ({"learning_rate_init": 0.0}, "learning_rate_init must be a number > 0, got 0.0"),
    ({"tol": np.nan}, "tol must be a number >= 0, got nan"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"max_iter": True}, "max_iter must be an integer >= 1, got True"),
    ({"hidden_layer_sizes": (3, 0)},
     "hidden_layer_sizes must be an int or a sequence of ints >= 1, got (3, 0)"),
    ({"solver": "newton"}, "solver must be one of adam, sgd, lbfgs, got 'newton'"),
    ({"alpha": -1.0, "loss": "hinge"}, "loss must be one of ce, log_loss, mse, bce, got 'hinge'"),
    ({"alpha": -1.0, "activation": "elu"}, "activation must be one of logistic, sigmoid, tanh, "
                                           "relu, identity, got 'elu'"),
])
def test_parameter_checks_say_what_the_value_must_be_in_order(params, message):
    X, y = classification_data(n=20)
    with pytest.raises(ValueError) as info:
        MLPClassifier(**params).fit(X, y)
    assert str(info.value) == message
    with pytest.raises(ValueError,
                       match="'mse' \\(alias 'squared_error'\\) or 'poisson', got 'ce'"):
        MLPRegressor(loss="ce").fit(*regression_data(n=20))


def test_verbose_prints_the_loss(capsys):
    X, y = classification_data(n=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier((4,), max_iter=2, verbose=True, backend="numpy").fit(X, y)
    assert capsys.readouterr().out.count("Iteration") == 2


def test_pipeline_gridsearch_and_pickle():
    X, y = load_digits(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=20, random_state=0,
                                                         backend="numpy", solver="sgd",
                                                         learning_rate_init=0.1))
    grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(16,), (32,)],
                               "mlpclassifier__alpha": [1e-4, 1e-2]}, cv=2, n_jobs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    assert grid.best_score_ > 0.85
    again = pickle.loads(pickle.dumps(grid.best_estimator_))
    np.testing.assert_array_equal(again.predict_proba(X), grid.predict_proba(X))


@pytest.mark.skipif(not HAVE_NUMBA, reason="numba is not installed: the numba backend cannot run")
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_weights_and_dropout_train_on_the_fast_backend_as_on_the_reference(monkeypatch, solver):
    """class_weight, sample_weight, dropout and input dropout stay on Numba, and match NumPy.

    Both backends draw the same dropout masks (mlp.dropout), so the fits
    differ by round-off only. While the numba fit runs, the reference's
    batch step is made to fail: nothing falls back to it.
    """
    X, y = classification_data(n=60)
    w = np.random.default_rng(3).uniform(0.2, 2.0, len(y))
    params = dict(hidden_layer_sizes=(7, 5), dropout=(0.3, 0.2), input_dropout=0.25,
                  class_weight={0: 2.0, 1: 1.0, 2: 0.5}, max_iter=4, batch_size=8,
                  random_state=0, dtype="float64", solver=solver)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = MLPClassifier(backend="numpy", **params).fit(X, y, sample_weight=w)
        with monkeypatch.context() as m:
            m.setattr(Network, "loss_and_gradients", lambda *a, **k: 1 / 0)
            fast = MLPClassifier(backend="numba", **params).fit(X, y, sample_weight=w)
        no_input_dropout = MLPClassifier(backend="numba", **{**params, "input_dropout": 0.0})
        no_input_dropout.fit(X, y, sample_weight=w)
    for a, b in zip(fast.coefs_ + fast.intercepts_, ref.coefs_ + ref.intercepts_):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.loss_curve_, ref.loss_curve_, rtol=1e-12)
    assert not np.array_equal(fast.coefs_[0], no_input_dropout.coefs_[0])


# ------------------------------------------------------------ Adam
@pytest.mark.parametrize("backend", backend_params(["numba"]))
def test_adam_trains_alike_on_both_backends(backend):
    """solver="adam" (the default) with scikit-learn's parameters on the fast backend and on
    the NumPy reference: the same weights up to float64 round-off."""
    X, y = classification_data(n=90)
    params = dict(hidden_layer_sizes=(7,), beta_1=0.8, beta_2=0.99, epsilon=1e-7, alpha=0.01,
                  learning_rate_init=0.01, max_iter=5, batch_size=16, dtype="float64",
                  random_state=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fast = MLPClassifier(**params, backend=backend).fit(X, y)
        ref = MLPClassifier(**params, backend="numpy").fit(X, y)
    assert fast._optimizer.t == ref._optimizer.t == 5 * 6
    for a, b in zip(fast.coefs_ + fast.intercepts_, ref.coefs_ + ref.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert fast.loss_curve_[-1] < fast.loss_curve_[0]


def test_adam_ignores_the_sgd_schedules_as_scikit_learn_does():
    X, y = classification_data(n=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPClassifier((5,), learning_rate="invscaling", learning_rate_init=0.01,
                            max_iter=3, random_state=0, backend="numpy").fit(X, y)
    assert est.solver == "adam" and est._optimizer.name == "adam"
    assert est._optimizer.lr == 0.01                   # invscaling would have lowered it
    est.set_params(learning_rate="adaptive")
    est._no_improvement_count = 11
    assert est._trigger_stopping(est._optimizer) is True and est._optimizer.lr == 0.01


def test_adam_follows_scikit_learns_mlp_step_for_step():
    """From the same weights, full batches in order, no penalty: scikit-learn's
    MLPClassifier(solver="adam") and mlp's take the same steps (float64 round-off)."""
    from sklearn.neural_network import MLPClassifier as SklearnMLP  # the reference here
    X, y = classification_data(n=40)
    common = dict(hidden_layer_sizes=(6,), activation="logistic", solver="adam", alpha=0.0,
                  batch_size=40, shuffle=False, learning_rate_init=0.05, beta_1=0.8,
                  beta_2=0.95, epsilon=1e-6, tol=0.0, n_iter_no_change=100, warm_start=True,
                  random_state=0)
    ours = MLPClassifier(**common, max_iter=1, dtype="float64", backend="numpy")
    theirs = SklearnMLP(**common, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y)
        theirs.fit(X, y)
        start = [p.copy() for p in ours.coefs_ + ours.intercepts_]
        for p, q in zip(theirs.coefs_ + theirs.intercepts_, start):
            p[...] = q
        ours._optimizer = None                     # both start Adam afresh: step 1 next
        for p, q in zip(ours.coefs_ + ours.intercepts_, start):
            p[...] = q
        ours.set_params(max_iter=7).fit(X, y)      # each refits from these weights, with a
        theirs.set_params(max_iter=7).fit(X, y)    # new Adam (scikit-learn's fit always)
    assert ours._optimizer.t == theirs._optimizer.t == 7
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(ours.loss_curve_[-7:], theirs.loss_curve_[-7:], rtol=1e-10)
