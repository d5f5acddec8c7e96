"""Thread counts, bit for bit: 1, 2 and 3 threads each repeatable, parallel kernels = serial ones.

The Numba backend splits a batch between threads only when its work is at
least :data:`mlp.numba_backend.PARALLEL_MIN_WORK`, and then only in the
sparse first layer's kernels (``sparse_gather_forward_par``,
``sparse_update_par``), which promise to compute every number exactly as the
serial kernels do. Products of at least :data:`mlp.kernels.BLAS_MIN_FLOPS`
multiply-adds go to BLAS, which promises only to be deterministic for a fixed
thread count. So, for each thread count: the same run twice gives the same
bits, and ``NumbaBackend(parallel=True)`` gives the bits of
``NumbaBackend(parallel=False)`` (the same BLAS threads in both, so the two
differ only in the Numba kernels). The networks are big enough that the
parallel path is really taken (``threads_for`` > 1 is asserted) and one layer
goes to BLAS.

Numba cannot use more threads than ``NUMBA_NUM_THREADS`` (fixed when Numba is
first imported; the number of cores by default), so a count above it runs in
a child process started with that variable set.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

numba = pytest.importorskip("numba", reason="thread counts are the Numba backend's")

from threadpoolctl import threadpool_limits  # noqa: E402

import mlp.numba_backend as nb  # noqa: E402
from mlp.network import Network  # noqa: E402
from mlp.optimizers import SGD  # noqa: E402

BATCH, BATCHES = 128, 3
#: sparse: uint8 images (19% non-zero: the sparse first layer and its parallel kernels), with a
#: 512 → 64 layer for BLAS; dense: float inputs, every layer dense, 784 → 256 in BLAS. Both are
#: over the thresholds, and small: BLAS threads that outnumber the cores (3 on 2) spin slowly.
CASES = {"sparse": [784, 512, 64, 10], "dense": [784, 256, 10]}
OPTIMIZERS = {"plain": dict(lr=0.1),
              "nesterov": dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)}
#: plain SGD takes sparse_update_par's fused branch, momentum with decay its other one; the
#: dense case has no parallel kernel (only BLAS threads), one optimizer is enough there
RUNS = [("sparse", "plain"), ("sparse", "nesterov"), ("dense", "nesterov")]


def data(case):
    rng = np.random.default_rng(11)
    n = BATCH * BATCHES
    if case == "sparse":
        X = ((rng.random((n, 784)) < 0.19) * rng.integers(1, 256, (n, 784))).astype(np.uint8)
        return X, rng.integers(0, 10, n), 1 / 255
    return rng.standard_normal((n, 784)).astype(np.float32), rng.integers(0, 10, n), 1.0


def train(case, optimizer, parallel, threads):
    """Three batches of one run: (losses + parameters + velocities, threads the backend used)."""
    X, y, scale = data(case)
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        net = Network(CASES[case], "sigmoid", "ce", dtype="float32", seed=2)
        opt = SGD(**OPTIMIZERS[optimizer])
        backend = nb.NumbaBackend(parallel=parallel)
        with threadpool_limits(limits=threads, user_api="blas"):
            losses = backend.train_batches(net, opt, X, y, np.arange(len(X)), 0, BATCHES, BATCH,
                                           scale)
        return [losses] + net.params() + opt.state_arrays(), backend.threads_for(net, BATCH)
    finally:
        numba.set_num_threads(old)


def check_thread_count(threads):
    """Every case and optimizer at ``threads`` threads: repeatable, and parallel = serial."""
    for case, optimizer in RUNS:
        sizes = CASES[case]
        X, _, _ = data(case)
        assert nb.use_sparse(X) == (case == "sparse")
        # a dense layer's product goes to BLAS (np.dot in the kernels; a sparse first layer never)
        dense = list(zip(sizes[:-1], sizes[1:]))[1 if case == "sparse" else 0:]
        assert max(BATCH * a * b for a, b in dense) >= nb.K.BLAS_MIN_FLOPS
        first, used = train(case, optimizer, True, threads)
        # the batch is big enough to be split (with one thread there is nothing to split)
        assert used == threads, (case, optimizer, used)
        again, _ = train(case, optimizer, True, threads)
        serial, used_serial = train(case, optimizer, False, threads)
        assert used_serial == 1
        for k, (a, b, c) in enumerate(zip(first, again, serial)):
            where = f"{case} {optimizer}, {threads} threads, array {k} (losses, W¹, b¹, …)"
            np.testing.assert_array_equal(a, b, err_msg="not repeatable: " + where)
            np.testing.assert_array_equal(a, c, err_msg="parallel != serial: " + where)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_each_thread_count_is_repeatable_and_parallel_equals_serial(threads):
    assert all(BATCH * sum(a * b for a, b in zip(s[:-1], s[1:])) >= nb.PARALLEL_MIN_WORK
               for s in CASES.values())
    if threads <= numba.config.NUMBA_NUM_THREADS:
        check_thread_count(threads)
        return
    # more threads than this process's Numba allows: a child process with NUMBA_NUM_THREADS set
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    path = os.pathsep.join([here, root] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), PYTHONPATH=path)
    child = subprocess.run(
        [sys.executable, "-c", f"import test_threads; test_threads.check_thread_count({threads})"],
        capture_output=True, text=True, env=env, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
