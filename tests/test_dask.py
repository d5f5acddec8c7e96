"""GridSearchCV over mlp's estimators on a real Dask cluster, through joblib's dask backend.

Two worker processes on this machine (a LocalCluster on 127.0.0.1, no
dashboard) stand in for a cluster: each fit is pickled to a worker process,
run there, and its score sent back. The search must find what ``n_jobs=1``
finds in this process, to the last bit: the estimators are deterministic for
a given ``random_state`` and thread count, and every process here trains on
one thread. With ``backend="numba"`` the workers must also load the kernels
from Numba's on-disk cache (the reference fit here fills it) instead of
compiling them, which would take each worker about 45 s.

Optional: needs the ``distributed`` extra (``pip install -e ".[distributed]"``).
"""

import contextlib
import operator
import pickle
import threading

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from threadpoolctl import threadpool_limits

from mlp import MLPClassifier

pytest.importorskip("dask", reason="needs Dask: pip install -e '.[distributed]'")
distributed = pytest.importorskip(
    "distributed", reason="needs dask.distributed: pip install -e '.[distributed]'")
joblib = pytest.importorskip("joblib", reason="needs joblib (installed with scikit-learn)")

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")]

#: seconds allowed for the workers to start, and for one search on the cluster
START_TIMEOUT = 60
FIT_TIMEOUT = 120
#: every process trains on one thread: Numba's, BLAS's (the results depend on the thread count)
ONE_THREAD = {name: "1" for name in
              ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
GRID = {"hidden_layer_sizes": [(16,), (32,)], "learning_rate_init": [0.05, 0.2]}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A client of a two-process LocalCluster (one thread each) on 127.0.0.1, closed afterwards.

    No dashboard; the scheduler's plain HTTP server (health checks), which
    ``dashboard_address=None`` leaves on port 8787, goes to a free port instead.
    """
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        local_directory=str(tmp_path_factory.mktemp("dask")), env=ONE_THREAD)
    try:
        client = distributed.Client(cluster, timeout=f"{START_TIMEOUT}s")
        try:
            client.wait_for_workers(2, timeout=START_TIMEOUT)
            yield client
        finally:
            client.close(timeout=30)
    finally:
        cluster.close(timeout=30)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:600] / 16, y[:600]


def search(backend):
    # SGD: the rates of GRID are SGD's
    return GridSearchCV(MLPClassifier(max_iter=10, random_state=0, backend=backend,
                                      solver="sgd"), GRID, cv=3)


@contextlib.contextmanager
def one_thread(backend):
    """This process on one thread, as the workers are (Numba's count is put back afterwards)."""
    with threadpool_limits(limits=1):
        if backend != "numba":
            yield
            return
        import numba
        before = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            yield
        finally:
            numba.set_num_threads(before)


def fit_on_cluster(estimator, X, y):
    """``estimator.fit(X, y)`` under joblib's dask backend; fails after FIT_TIMEOUT seconds.

    The fit runs in a thread so that a hung cluster fails this test instead of
    stalling the run (the fixture then closes the cluster, which ends the thread's wait).
    """
    outcome = {}

    def run():
        try:
            with joblib.parallel_backend("dask"):    # per thread: set inside the thread
                estimator.fit(X, y)
        except BaseException as e:                    # re-raised in the test's thread
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(FIT_TIMEOUT)
    if thread.is_alive():
        pytest.fail(f"the search on the cluster did not finish in {FIT_TIMEOUT} s")
    if "error" in outcome:
        raise outcome["error"]
    return estimator


def kernel_cache_stats():
    """Run in a worker: (signatures loaded from Numba's cache, signatures compiled) over mlp's
    kernels, None if they were never imported there."""
    import sys
    kernels = sys.modules.get("mlp.kernels")
    if kernels is None:
        return None
    from numba.core.registry import CPUDispatcher
    stats = [f.stats for f in vars(kernels).values() if isinstance(f, CPUDispatcher)]
    return (sum(sum(s.cache_hits.values()) for s in stats),
            sum(sum(s.cache_misses.values()) for s in stats))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_grid_search_on_a_dask_cluster_finds_what_one_process_finds(client, digits, backend):
    X, y = digits
    with one_thread(backend):
        here = search(backend).fit(X, y)
    scores = here.cv_results_["mean_test_score"]
    assert len(set(scores)) == len(scores)          # the grid's points differ: the best is clear

    with distributed.get_task_stream(client) as tasks:
        there = fit_on_cluster(search(backend).set_params(n_jobs=-1), X, y)
    workers = {t["worker"] for t in tasks.data}
    assert workers and workers <= set(client.scheduler_info()["workers"])   # it ran there
    assert all(a.startswith("tcp://127.0.0.1:") for a in [client.scheduler.address, *workers])

    assert there.best_params_ == here.best_params_
    for key in ["mean_test_score"] + [f"split{k}_test_score" for k in range(3)]:
        np.testing.assert_array_equal(there.cv_results_[key], here.cv_results_[key], err_msg=key)

    if backend == "numba":
        # the workers loaded the kernels this process compiled (or loaded) and compiled none
        stats = {w: s for w, s in client.run(kernel_cache_stats).items() if s is not None}
        assert stats                                 # a worker that trained imported the kernels
        for worker, (hits, compiled) in stats.items():
            assert compiled == 0, f"{worker} compiled {compiled} kernel signatures"
            assert hits > 0


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_estimators_travel_to_workers_and_back(client, digits, backend):
    """Pickled both ways: fitted here and predicting there, fitted there and predicting here."""
    X, y = digits
    with one_thread(backend):
        here = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0,
                             backend=backend).fit(X, y)
        expected = here.predict_proba(X)
    assert pickle.loads(pickle.dumps(here)).get_params() == here.get_params()

    proba = client.submit(operator.methodcaller("predict_proba", X), here, pure=False)
    np.testing.assert_array_equal(proba.result(timeout=FIT_TIMEOUT), expected)

    unfitted = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0,
                             backend=backend)
    there = client.submit(operator.methodcaller("fit", X, y), unfitted, pure=False)
    there = there.result(timeout=FIT_TIMEOUT)
    for a, b in zip(there.coefs_ + there.intercepts_, here.coefs_ + here.intercepts_):
        np.testing.assert_array_equal(a, b)
    with one_thread(backend):
        np.testing.assert_array_equal(there.predict_proba(X), expected)
