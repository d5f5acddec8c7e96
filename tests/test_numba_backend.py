"""The Numba backend against the NumPy reference backend.

Gradients of one step, weights after several steps, accuracy after an epoch,
predictions, and the backend's promises: determinism, chunking that changes
nothing, uint8 pixels equal to pre-scaled floats, prepare() leaving the
state alone, helpful errors. Float64 agrees to ~1e-12 (only sums are
reordered), float32 to float32 round-off.
"""

import numpy as np
import pytest

pytest.importorskip("numba", reason="numba is not installed: the numba backend needs it")

import mlp.numba_backend as nb  # noqa: E402
from mlp.backends import NumpyBackend, get_backend  # noqa: E402
from mlp.batches import Extras  # noqa: E402
from mlp.losses import one_hot  # noqa: E402
from mlp.network import Network  # noqa: E402
from mlp.optimizers import SGD, Adam  # noqa: E402
from mlp.schedules import Schedule  # noqa: E402
from mlp.trainer import Trainer, epoch_order, evaluate  # noqa: E402

NUMBA, NUMPY = nb.NumbaBackend(), NumpyBackend()
TOL = {"float64": 1e-11, "float32": 3e-5}
ACTIVATIONS = ["sigmoid", "tanh", "relu", "identity"]
LOSSES = [("ce", None), ("mse", None), ("mse", "identity"), ("mse", "tanh"), ("bce", None)]


def assert_close(got, ref, dtype):
    """Equal within round-off relative to the array's largest entry."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape
    scale = max(1e-3, float(np.abs(ref).max(initial=0.0)))
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL[dtype] * scale)


def image_data(n, n_in, n_classes, seed=0, density=0.2):
    """uint8 'images' (mostly zero), labels, and the scale that maps pixels to [0, 1]."""
    rng = np.random.default_rng(seed)
    X = rng.integers(1, 256, (n, n_in)).astype(np.uint8)
    X[rng.random((n, n_in)) > density] = 0
    return X, rng.integers(0, n_classes, n), 1 / 255


def targets_for(net, y):
    """2-D float targets that suit the network's loss."""
    if net.loss.name == "ce":
        return one_hot(y, net.sizes[-1], np.float64)
    rng = np.random.default_rng(len(y))
    return rng.random((len(y), net.sizes[-1]))


# ------------------------------------------------------ one step's gradients
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss, output", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradients_equal_the_reference(activation, loss, output, dtype):
    rng = np.random.default_rng(7)
    for depth, n, zeros, wd in [(1, 1, 0.0, 0.0), (2, 5, 0.8, 0.01), (3, 13, 0.3, 0.0)]:
        sizes = [11] + [6] * (depth - 1) + [4]
        net = Network(sizes, activation, loss, output, dtype=dtype, seed=depth)
        for b in net.biases:
            b[...] = 0.3 * rng.standard_normal(b.shape)
        X = rng.standard_normal((n, 11)).astype(dtype)
        X[rng.random(X.shape) < zeros] = 0      # 0.8: the sparse first-layer path
        Y = targets_for(net, rng.integers(0, 4, n)).astype(dtype)
        value, gw, gb = NUMBA.loss_and_gradients(net, X, Y, wd)
        value_ref, gw_ref, gb_ref = NUMPY.loss_and_gradients(net, X, Y, wd)
        assert value == pytest.approx(value_ref, rel=TOL[dtype], abs=TOL[dtype])
        for got, ref in zip(gw + gb, gw_ref + gb_ref):
            assert got.dtype == net.dtype
            assert_close(got, ref, dtype)


def test_sparse_and_dense_paths_agree():
    rng = np.random.default_rng(0)
    net = Network([30, 8, 3], "tanh", "ce", dtype="float64")
    X = rng.standard_normal((9, 30))
    X[rng.random(X.shape) < 0.9] = 0
    Y = one_hot(rng.integers(0, 3, 9), 3, np.float64)
    assert nb.use_sparse(X) and not nb.use_sparse(X + 1)
    K = nb.K
    data = K.Data(X, 1.0, np.empty(0, np.int64), Y, np.arange(9), K.no_csr(np.float64),
                  np.empty(0))
    sparse, dense = (np.empty(net.n_parameters) for _ in range(2))
    # with dropout: the sparse path drops non-zeros as they are gathered, the dense path masks
    args = (data, tuple(net.weights), tuple(net.biases), K.Model(K.TANH, K.CE, K.SOFTMAX),
            K.dropout_of([0.3, 0.4], 2, np.float64, seed=5, epoch=1))
    loss_sparse = K.block_gradient(*args, K.Plan(True, 1, 4), 0, 9, sparse)
    loss_dense = K.block_gradient(*args, K.Plan(False, 1, 4), 0, 9, dense)
    assert loss_sparse == pytest.approx(loss_dense, rel=1e-13)
    assert_close(sparse, dense, "float64")
    value, gw, gb = NUMBA.loss_and_gradients(net, X, Y,
                                             extras=Extras(dropout=[0.3, 0.4], seed=5, epoch=1))
    assert value == pytest.approx(loss_sparse / 9, rel=1e-13)
    assert_close(np.concatenate([g.ravel() for g in gw + gb]), sparse, "float64")


# ------------------------------------------------------- several steps
def train_both(net, opt_kwargs, X, targets, order, start, stop, batch_size, scale, numba=NUMBA):
    """Run the same batches on copies with both backends; return (numba, numpy) nets and losses."""
    out = []
    for backend in (numba, NUMPY):
        n, opt = net.copy(), make_opt(opt_kwargs)
        losses = backend.train_batches(n, opt, X, targets, order, start, stop, batch_size, scale)
        out.append((n, opt, losses))
    return out


def make_opt(opt_kwargs):
    """SGD(**opt_kwargs), or Adam for kwargs with adam=True; a schedule given by its name."""
    kwargs = dict(opt_kwargs)
    if "schedule" in kwargs:
        kwargs["schedule"] = Schedule(kwargs["schedule"], 20, 7)
    return Adam(**kwargs) if kwargs.pop("adam", False) else SGD(**kwargs)


OPTS = [dict(lr=0.5), dict(lr=0.2, momentum=0.9), dict(lr=0.1, momentum=0.8, nesterov=True,
                                                          weight_decay=0.01),
        dict(lr=0.3, weight_decay=0.001),
        dict(lr=0.2, momentum=0.9, schedule="cosine", max_norm=0.8),
        dict(adam=True, lr=0.01, weight_decay=0.01, schedule="step"),
        dict(adam=True, lr=0.01, beta1=0.8, weight_decay=0.1, decoupled=True, max_norm=0.8)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("opt_kwargs", OPTS)
@pytest.mark.parametrize("activation, loss, output", [
    ("sigmoid", "ce", None), ("relu", "bce", None), ("tanh", "mse", "identity"),
    ("identity", "mse", None)])
def test_train_batches_equal_the_reference(activation, loss, output, opt_kwargs, dtype):
    X, y, scale = image_data(203, 40, 5, seed=1)          # 203 = 12 batches of 16 + 11
    net = Network([40, 12, 9, 5], activation, loss, output, dtype=dtype, seed=3)
    targets = y if loss == "ce" else targets_for(net, y)
    order = epoch_order(0, 0, len(X))
    (a, opt_a, la), (b, opt_b, lb) = train_both(net, opt_kwargs, X, targets, order, 0, 13, 16,
                                                 scale)
    assert la.dtype == np.float64 and la.shape == (13,)
    assert_close(la, lb, dtype)
    for p, q in zip(a.params() + opt_a.state_arrays(), b.params() + opt_b.state_arrays()):
        assert p.dtype == q.dtype
        assert_close(p, q, dtype)


def test_float_inputs_and_2d_targets_with_a_dense_first_layer():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((90, 6))                       # dense floats: no sparse path
    T = rng.random((90, 3))
    net = Network([6, 5, 3], "tanh", "mse", "identity", dtype="float64", seed=1)
    order = rng.permutation(90)
    (a, _, la), (b, _, lb) = train_both(net, dict(lr=0.1, momentum=0.5), X, T, order, 2, 9, 10,
                                        1.0)
    assert_close(la, lb, "float64")
    for p, q in zip(a.params(), b.params()):
        assert_close(p, q, "float64")


@pytest.fixture
def two_numba_threads():
    """Numba at two threads for the test, its count restored after (skip where it has one)."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here (NUMBA_NUM_THREADS=1): nothing runs in parallel")
    old = numba.get_num_threads()
    numba.set_num_threads(2)
    yield 2
    numba.set_num_threads(old)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_big_batches_take_the_parallel_and_blas_paths(monkeypatch, dtype, two_numba_threads):
    monkeypatch.setattr(nb, "PARALLEL_MIN_WORK", 0)
    X, y, scale = image_data(700, 300, 10, seed=2)
    net = Network([300, 64, 128, 10], "sigmoid", "ce", dtype=dtype, seed=0)
    parallel = nb.NumbaBackend(parallel=True)
    # the batches are split between two threads (with one, nothing parallel would run)
    assert parallel.threads_for(net, 350) == two_numba_threads
    assert nb.use_sparse(X)                                  # the parallel kernels' layer
    assert 350 * 64 * 128 >= nb.K.BLAS_MIN_FLOPS            # the hidden layer goes to BLAS
    order = epoch_order(1, 0, 700)
    (a, _, la), (b, _, lb) = train_both(net, dict(lr=0.3, momentum=0.9), X, y, order, 0, 2, 350,
                                        scale, numba=parallel)
    assert_close(la, lb, dtype)
    for p, q in zip(a.params(), b.params()):
        assert_close(p, q, dtype)


def test_one_epoch_accuracy_equals_the_reference_on_mnist(mnist_dir):
    """10,000 MNIST images, one epoch, batch 32: test accuracies within 0.1 percentage points."""
    from mlp.data import load_mnist
    data = load_mnist(mnist_dir)
    X, y = data.X_train[:10000], data.y_train[:10000]
    accuracy = {}
    for backend in (NUMBA, NUMPY):
        net = Network([784, 100, 10], "sigmoid", "ce", seed=0)
        Trainer(net, SGD(0.5), backend, batch_size=32, seed=0).fit(X, y, 1, data.scale)
        accuracy[backend.name] = evaluate(net, NUMPY, data.X_test, data.y_test, data.scale)[1]
    assert accuracy["numpy"] > 0.85
    assert abs(accuracy["numba"] - accuracy["numpy"]) <= 0.001, accuracy


# --------------------------------------------------------------- promises
def trained_params(backend, X, y, scale, chunk_size=None, seed=0):
    """Parameters of a 2-epoch training run with momentum, batches of 10, via the Trainer."""
    net = Network([X.shape[1], 16, 10], "sigmoid", "ce", seed=seed)
    trainer = Trainer(net, SGD(0.3, momentum=0.9), backend, batch_size=10, seed=seed,
                      chunk_size=chunk_size)
    trainer.fit(X, y, 2, scale)
    return net.params(), trainer


@pytest.mark.parametrize("parallel", [False, True, "auto"])
def test_same_seed_same_threads_same_bits(monkeypatch, parallel):
    monkeypatch.setattr(nb, "PARALLEL_MIN_WORK", 0)
    backend = nb.NumbaBackend(parallel=parallel)
    X, y, scale = image_data(300, 64, 10, seed=5)
    first, _ = trained_params(backend, X, y, scale, chunk_size=4)
    second, _ = trained_params(backend, X, y, scale, chunk_size=4)
    for p, q in zip(first, second):
        np.testing.assert_array_equal(p, q)
    other_seed, _ = trained_params(backend, X, y, scale, seed=1)
    assert not np.array_equal(first[0], other_seed[0])


def test_parallel_kernels_give_the_serial_bits(monkeypatch):
    monkeypatch.setattr(nb, "PARALLEL_MIN_WORK", 0)
    X, y, scale = image_data(300, 64, 10, seed=5)
    serial, _ = trained_params(nb.NumbaBackend(parallel=False), X, y, scale)
    parallel, _ = trained_params(nb.NumbaBackend(parallel=True), X, y, scale)
    for p, q in zip(serial, parallel):
        np.testing.assert_array_equal(p, q)


def test_auto_mode_goes_parallel_only_on_free_cores(monkeypatch):
    import numba
    monkeypatch.setattr(nb, "PARALLEL_MIN_WORK", 0)
    net = Network([8, 4, 2])
    n = numba.get_num_threads()
    backend = nb.NumbaBackend()
    monkeypatch.setattr(nb, "_other_load", lambda: 0.0)
    assert backend.threads_for(net, 5) == n
    monkeypatch.setattr(nb, "_other_load", lambda: 1.0)
    assert backend.threads_for(net, 5) == 1
    assert nb.NumbaBackend(parallel=True).threads_for(net, 5) == n
    assert nb.NumbaBackend(parallel=False).threads_for(net, 5) == 1
    monkeypatch.setattr(nb, "PARALLEL_MIN_WORK", 10**9)
    assert nb.NumbaBackend(parallel=True).threads_for(net, 5) == 1
    with pytest.raises(ValueError, match="parallel must be"):
        nb.NumbaBackend(parallel="yes")


def test_blocks_on_threads_start_no_parallel_loop_and_the_caller_keeps_its_count():
    """_on_threads (prediction in parts, L-BFGS's blocks): each run sees one Numba thread (its
    BLAS blocks run in turn, no nested parallel launch); the caller's count is as before."""
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here: nothing to restore")
    old = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        seen = {}
        nb._on_threads(lambda t: seen.setdefault(t, numba.get_num_threads()), 3)
        assert seen == {0: 1, 1: 1, 2: 1}
        assert numba.get_num_threads() == 2
    finally:
        numba.set_num_threads(old)


def test_other_load_is_machine_busy_time_minus_ours(monkeypatch):
    samples = iter([(0.0, 10.0, 3.0), (0.1, 10.1, 3.1), (1.0, 11.9, 3.9), (2.0, 12.9, 4.9)])
    monkeypatch.setattr(nb._OtherLoad, "_sample", staticmethod(lambda: next(samples)))
    load = nb._OtherLoad()
    assert load() == 0.0                 # first sample: nothing to compare with
    assert load() == 0.0                 # 0.1 s later: too short a window, estimate kept
    assert load() == pytest.approx(1.0)  # 1.9 s busy, 0.9 s of it ours, in 1 s: one core
    assert load() == pytest.approx(0.0)  # all of the machine's busy time was ours


def test_the_first_chunk_after_prepare_sees_the_other_load(monkeypatch, two_numba_threads):
    """prepare() opens the window of the other programs' load, so the first chunk of a fit
    already runs on one thread when another program keeps a core busy (before, the first
    call had nothing to compare with and took every thread)."""
    clock = iter(range(10**6))
    # each sample 1 s later; the machine 1.9 s busier, 0.9 s of it ours: another core busy
    monkeypatch.setattr(nb._OtherLoad, "_sample", staticmethod(
        lambda: (lambda t: (float(t), 1.9 * t, 0.9 * t))(next(clock))))
    monkeypatch.setattr(nb, "_other_load", nb._OtherLoad())
    net = Network([784, 100, 10], seed=0)
    X, y = np.zeros((256, 784), np.uint8), np.zeros(256, np.int64)
    backend = nb.NumbaBackend()
    assert nb.batch_threads(net, 128) == 2
    backend.prepare(net, SGD(0.1), X, y, 128, 1 / 255, parts=("train",))
    assert backend.threads_for(net, 128) == 1


def test_chunked_calls_equal_one_call():
    X, y, scale = image_data(257, 64, 10, seed=6)
    whole, t1 = trained_params(NUMBA, X, y, scale, chunk_size=10**6)
    pieces, t2 = trained_params(NUMBA, X, y, scale, chunk_size=3)   # stops mid-epoch
    for p, q in zip(whole, pieces):
        np.testing.assert_array_equal(p, q)
    assert [r["train_loss"] for r in t1.history] == [r["train_loss"] for r in t2.history]


def test_uint8_with_scale_equals_prescaled_floats():
    X, y, _ = image_data(120, 50, 10, seed=8)
    scale = 1 / 255
    floats = X.astype(np.float32) * np.float32(scale)      # what the reference does per batch
    a, _ = trained_params(NUMBA, X, y, scale)
    b, _ = trained_params(NUMBA, floats, y, 1.0)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p, q)


def test_targets_of_any_type_train_one_compiled_kernel():
    """Labels of any integer type and 2-D targets of any float type reach the kernels as int64
    and the net's dtype: the same bits, and no compile of the training kernel for their types."""
    X, y, scale = image_data(120, 50, 10, seed=8)
    T = np.eye(10)[y]                                         # float64 targets, float32 net
    a, _ = trained_params(NUMBA, X, y.astype(np.int64), scale)
    signatures = set(nb.K.train_chunk.signatures)
    for targets in (y.astype(np.int16), y.astype(np.uint8), T, T.astype(np.float32)):
        b, _ = trained_params(NUMBA, X, targets, scale)
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p, q)
    assert set(nb.K.train_chunk.signatures) == signatures     # one type for all of them


def test_predict_output_equals_the_reference():
    X, y, scale = image_data(2500, 30, 4, seed=9)
    for loss, output in [("ce", None), ("bce", None), ("mse", "relu")]:
        net = Network([30, 7, 4], "tanh", loss, output, dtype="float64", seed=2)
        got = NUMBA.predict_output(net, X, scale)
        assert got.shape == (2500, 4) and got.dtype == np.float64
        assert_close(got, NUMPY.predict_output(net, X, scale), "float64")


def test_parallel_predict_holds_blas_to_one_thread(monkeypatch):
    """Rows cut into one part per thread, BLAS at one thread meanwhile, its limit restored after.

    (A multi-threaded BLAS call leaves its threads spinning; they slowed the
    next epoch's parallel kernels by up to 1.5 times.)
    """
    import threading

    import numba
    from threadpoolctl import threadpool_info
    monkeypatch.setattr(numba, "get_num_threads", lambda: 3)
    monkeypatch.setattr(numba, "set_num_threads", lambda n: None)   # 3 may be more than there are

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    calls, real = [], nb.K.predict

    def spy(X, *args):
        calls.append((X.shape[0], threading.current_thread(), blas_threads()))   # the object:
        # a thread that has ended can pass its get_ident() number on to the next one
        return real(X, *args)
    monkeypatch.setattr(nb.K, "predict", spy)
    nb._blas_controller()                # loads SciPy's BLAS too, so that `before` lists it
    before = blas_threads()
    X, y, scale = image_data(3100, 30, 4, seed=9)
    net = Network([30, 7, 4], "tanh", "ce", dtype="float64", seed=2)
    got = NUMBA.predict_output(net, X, scale)
    assert sorted(c[0] for c in calls) == [1033, 1033, 1034]      # three parts of the rows
    assert len({c[1] for c in calls}) == 3                         # on three threads
    assert all(c[2] and all(n == 1 for n in c[2]) for c in calls)  # BLAS held to one thread
    assert blas_threads() == before
    assert_close(got, NUMPY.predict_output(net, X, scale), "float64")


def test_prepare_compiles_on_copies_and_reports_seconds(monkeypatch):
    import time

    import numba
    X, y, scale = image_data(100, 20, 3, seed=10)
    # int16 labels: the kernels get them widened to int64 (one compiled type for all labels)
    y = y.astype(np.int16)
    net = Network([20, 5, 3], seed=0)
    opt = SGD(0.1, momentum=0.9)
    opt.init_state(net)
    opt.state_arrays()[0][...] = 1.0
    before = [p.copy() for p in net.params() + opt.state_arrays()]
    called = []                         # the argument types of every training kernel call
    pick = nb.K.train_chunk_for

    def recording(opt_params):
        kernel = pick(opt_params)

        def call(*args):
            called.append((kernel, tuple(numba.typeof(a) for a in args)))
            return kernel(*args)
        return call
    monkeypatch.setattr(nb.K, "train_chunk_for", recording)
    t0 = time.perf_counter()
    seconds = NUMBA.prepare(net, opt, X, y, 32, scale)
    elapsed = time.perf_counter() - t0
    assert 0 < seconds <= elapsed                 # the call's own duration, in seconds
    for p, q in zip(net.params() + opt.state_arrays(), before):
        np.testing.assert_array_equal(p, q)
    # what prepare compiled is what training and prediction then run: no new specialisation
    assert len(called) == 1 and called[0][0] is nb.K.train_chunk
    assert called[0][1] in nb.K.train_chunk.signatures          # compiled (or loaded) by prepare
    assert called[0][1][0][2] == numba.int64[::1]                 # Data.labels: widened
    prepared = [set(k.signatures) for k in (nb.K.train_chunk, nb.K.predict)]
    NUMBA.train_batches(net, opt, X, y, np.arange(100), 0, 3, 32, scale)
    NUMBA.predict_output(net, X, scale)
    assert len(called) == 2 and called[1] == called[0]          # the types prepare compiled
    assert [set(k.signatures) for k in (nb.K.train_chunk, nb.K.predict)] == prepared


def test_get_backend_and_empty_range():
    backend = get_backend("numba")
    assert backend.name == "numba"
    X, y, scale = image_data(10, 4, 2)
    net = Network([4, 2])
    losses = backend.train_batches(net, SGD(0.1), X, y, np.arange(10), 3, 3, 5, scale)
    assert losses.shape == (0,)


def test_bad_arguments_raise_value_errors():
    X, y, scale = image_data(20, 8, 3)
    net = Network([8, 4, 3])
    with pytest.raises(ValueError, match="labels must be integers in 0 … 2"):
        NUMBA.train_batches(net, SGD(0.1), X, y + 5, np.arange(20), 0, 2, 10, scale)
    with pytest.raises(ValueError, match=r"X must have shape \(n, 8\)"):
        NUMBA.train_batches(net, SGD(0.1), X[:, :5], y, np.arange(20), 0, 2, 10, scale)
    with pytest.raises(ValueError, match=r"targets must be 1-D labels or an \(n, 3\) array"):
        NUMBA.train_batches(net, SGD(0.1), X, np.ones((20, 2)), np.arange(20), 0, 2, 10, scale)


def test_blas_threads_follow_numba_threads():
    import numba
    from threadpoolctl import threadpool_info, threadpool_limits
    n = numba.get_num_threads()
    with threadpool_limits(limits=n + 3, user_api="blas"):
        nb._blas_threads_at_most_numba()
        counts = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        assert counts and max(counts) <= n
