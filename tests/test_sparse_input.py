"""scipy.sparse input: the same results as the same rows dense, on both backends and solvers,
and scikit-learn's accuracy on the same CSR data."""

import functools
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from optional import backend_params
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkClassifier

from mlp.estimators import MLPClassifier, MLPRegressor

BACKENDS = backend_params(["numpy", "numba"])


def sparse_teacher(n=600, n_in=400, density=0.02, classes=3, seed=0):
    """Rows with ``density`` non-zeros (TF-IDF-like, positive) labelled by a random linear
    teacher: a CSR X, its labels, and regression targets."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, n_in, density=density, format="csr", random_state=seed,
                  data_rvs=lambda k: rng.random(k) + 0.5)
    W = rng.standard_normal((n_in, classes))
    scores = X @ W
    return X, scores.argmax(1), scores[:, 0]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def assert_same_model(a, b, atol=1e-8):
    """Equal weights up to round-off: SciPy's sparse products add in another order than
    dense ones (the Numba kernels read the same non-zeros in the same order either way)."""
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(p, q, rtol=0, atol=atol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_csr_trains_and_predicts_as_the_same_rows_dense(Est, solver, backend):
    X, labels, values = sparse_teacher()
    y = labels if Est is MLPClassifier else values
    params = dict(hidden_layer_sizes=(16,), solver=solver, max_iter=15, random_state=0,
                  backend=backend, dtype="float64", batch_size=50)
    dense = Est(**params).fit(X.toarray(), y)
    csr = Est(**params).fit(X, y)
    assert_same_model(csr, dense)
    assert csr.loss_ == pytest.approx(dense.loss_, rel=1e-9)
    for fmt in ("csr", "csc", "coo"):
        np.testing.assert_allclose(csr.predict(X.asformat(fmt)), dense.predict(X.toarray()),
                                   rtol=1e-7, atol=1e-9)
    if Est is MLPClassifier:
        np.testing.assert_allclose(csr.predict_proba(X), dense.predict_proba(X.toarray()),
                                   rtol=0, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_csr_with_sample_weight_early_stopping_input_dropout_and_partial_fit(backend):
    X, y, _ = sparse_teacher(n=300)
    w = np.random.default_rng(0).integers(0, 3, 300).astype(float)
    for extra in ({"early_stopping": True}, {"input_dropout": 0.2}, {}):
        params = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0, backend=backend,
                      dtype="float64", **extra)
        dense = MLPClassifier(**params).fit(X.toarray(), y, sample_weight=w)
        csr = MLPClassifier(**params).fit(X, y, sample_weight=w)
        assert_same_model(csr, dense)
    params = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0, backend=backend,
                  dtype="float64", input_dropout=0.2)        # masked rows on the chosen backend
    assert_same_model(MLPClassifier(**params).fit(X, y), MLPClassifier(**params).fit(
        X.toarray(), y))
    dense, csr = (MLPClassifier((8,), backend=backend, dtype="float64", random_state=0)
                  for _ in range(2))
    for lo in (0, 100, 200):
        dense.partial_fit(X[lo:lo + 100].toarray(), y[lo:lo + 100], classes=[0, 1, 2])
        csr.partial_fit(X[lo:lo + 100], y[lo:lo + 100], classes=[0, 1, 2])
    assert_same_model(csr, dense)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_csr_with_int64_indices(backend):
    X, y, _ = sparse_teacher(n=200)
    X64 = sp.csr_matrix((X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64)),
                        shape=X.shape)
    params = dict(hidden_layer_sizes=(8,), max_iter=3, random_state=0, backend=backend)
    a = MLPClassifier(**params).fit(X64, y)
    b = MLPClassifier(**params).fit(X.astype(np.float32), y)
    assert_same_model(a, b, atol=0)
    assert a.coefs_[0].dtype == np.float32


ACCURACY_DATA = sparse_teacher(n=1500, n_in=1000, density=0.01)


def accuracy_setup(solver):
    common = dict(hidden_layer_sizes=(32,), solver=solver, max_iter=40, random_state=0)
    if solver == "sgd":      # the same SGD: η, momentum, batches; no penalty in either
        common.update(max_iter=20, batch_size=100, learning_rate_init=0.1, momentum=0.9,
                      alpha=0.0)
    return common


@functools.lru_cache
def sklearn_score(solver):
    """scikit-learn's test accuracy on ACCURACY_DATA (computed once for both backends)."""
    X, y, _ = ACCURACY_DATA
    theirs = SkClassifier(**accuracy_setup(solver)).fit(X[:1200], y[:1200])
    return theirs.score(X[1200:], y[1200:])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
def test_accuracy_of_scikit_learn_on_the_same_csr_data(solver, backend):
    X, y, _ = ACCURACY_DATA
    ours = MLPClassifier(backend=backend, **accuracy_setup(solver)).fit(X[:1200], y[:1200])
    assert sklearn_score(solver) > 0.6                # the data can be learnt
    assert ours.score(X[1200:], y[1200:]) >= sklearn_score(solver) - 0.03
