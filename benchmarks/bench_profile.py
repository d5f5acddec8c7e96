"""Where an epoch's time goes: each Numba kernel of one training step, timed over a whole epoch.

The network and data are those of ``bench_speed.py`` (MNIST 784-100-10,
sigmoid, softmax cross-entropy, plain SGD, sparse first layer padded to 112
units). For each batch size the epoch's batches are run step by step on one
thread, each kernel called from Python and timed apart, and the seconds per
epoch of every kernel are printed with their sum and, for comparison, the
seconds of the same epoch in one compiled call (``mlp.kernels.train_chunk``,
one thread). The sum is larger than the one-call epoch by the cost of calling
each kernel from Python (see docs/performance.md).

A second table gives the rate of the kernels that are multiply-add loops, in
GFMA/s per core (one thread): the multiply-adds each does in an epoch over its
seconds. The sparse first layer does one per non-zero pixel and unit of its
padded width (forward: x · W¹; SGD: W¹ += −η xᵀδ), the output layer one per
sample, padded hidden unit and output (forward, δ · Wᵀ, and SGD).

Usage (from the project root)::

    python benchmarks/bench_profile.py [--batch-sizes 10 32 128 1024] [--out FILE]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from mlp import kernels as K
from mlp.network import Network
from mlp.numba_backend import NumbaBackend
from mlp.optimizers import SGD
from mlp.trainer import epoch_order

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

#: the steps that are multiply-add loops, and their multiply-adds per epoch (see fmas_per_epoch)
FMA_STEPS = ("sparse forward", "output layer forward", "hidden delta", "output layer SGD",
             "sparse SGD")

STEPS = ("gather", "sparse forward", "output layer forward", "softmax, loss, output delta",
         "hidden delta", "output layer SGD", "bias gradients and SGD", "sparse SGD")


def profile(data, batch_size, seed=0, lr=0.1):
    """({step: seconds per epoch}, the one-call epoch's seconds) for one epoch at ``batch_size``."""
    net = Network(common.SIZES, "sigmoid", "ce", seed=seed)
    f32 = np.float32
    params = K.Params(tuple(net.weights), tuple(net.biases), tuple(net.weights),
                      tuple(net.biases), tuple(net.weights), tuple(net.biases))
    wk = K._working_copies(params, True, 0)               # plain SGD: no optimizer state
    W0, Wts, bs, vbs = wk.W0, wk.Wts, wk.bs, wk.vbs
    batch = K.sparse_buffers(batch_size, W0)
    nnz, cols, vals = batch
    model = K.Model(K.SIGMOID, K.CE, K.SOFTMAX)
    hp, n_out = W0.shape[1], common.SIZES[-1]
    a1, z2 = np.empty((batch_size, hp), f32), np.empty((batch_size, n_out), f32)
    d1, d2 = np.empty((batch_size, hp), f32), np.empty((batch_size, n_out), f32)
    Y, gb0, gb1 = np.empty((batch_size, n_out), f32), np.empty(hp, f32), np.empty(n_out, f32)
    labels, T = data.y_train.astype(np.int64), np.empty((0, n_out), f32)
    X, scale, n = data.X_train, f32(data.scale), data.X_train.shape[0]
    order = epoch_order(seed, 0, n).astype(np.int64)
    lr = f32(lr)
    bias_sgd = K.sgd_params(f32, lr, 0, 0, False)
    seconds = dict.fromkeys(STEPS, 0.0)

    def timed(step, fn, *args):
        t0 = time.perf_counter()
        fn(*args)
        seconds[step] += time.perf_counter() - t0

    def epoch():
        for lo in range(0, n, batch_size):
            rows = order[lo:lo + batch_size]
            m = rows.shape[0]
            timed("gather", lambda rows=rows, m=m: (
                K.gather_targets(labels, T, rows, Y[:m]),
                K.gather_sparse(X, rows, scale, batch)))
            rows_m = K.SparseBatch(nnz[:m], cols, vals)
            timed("sparse forward", K.sparse_forward, rows_m, W0, bs[0], K.SIGMOID, a1[:m])
            timed("output layer forward", K.dense_forward, a1[:m], Wts[1], bs[1], K.IDENTITY,
                  z2[:m])
            timed("softmax, loss, output delta", K.output_delta, z2[:m], Y[:m], model, d2[:m])
            timed("hidden delta", K.backprop_delta, d2[:m], Wts[1], a1[:m], K.SIGMOID, d1[:m])
            timed("bias gradients and SGD", lambda m=m: (
                K.column_sums(d2[:m], gb1), K.column_sums(d1[:m], gb0),
                K.sgd_update(bs[1], gb1, vbs[1], bias_sgd),
                K.sgd_update(bs[0], gb0, vbs[0], bias_sgd)))
            timed("output layer SGD", K.dense_sgd_plain, a1[:m], d2[:m], Wts[1], lr)
            timed("sparse SGD", K.sparse_sgd_plain, rows_m, d1[:m], W0, lr)

    epoch()                                     # compile or load every kernel
    for step in STEPS:
        seconds[step] = 0.0
    epoch()
    net = Network(common.SIZES, "sigmoid", "ce", seed=seed)
    backend, opt = NumbaBackend(parallel=False), SGD(float(lr))
    n_batches = -(-n // batch_size)
    backend.train_batches(net, opt, X, data.y_train, order, 0, 1, batch_size, data.scale)
    t0 = time.perf_counter()
    backend.train_batches(net, opt, X, data.y_train, order, 0, n_batches, batch_size, data.scale)
    return seconds, time.perf_counter() - t0


def fmas_per_epoch(data, hidden_width):
    """{step: multiply-adds in one epoch} for the steps of FMA_STEPS (padded hidden width)."""
    nnz = int(np.count_nonzero(data.X_train))
    dense = data.X_train.shape[0] * hidden_width * common.SIZES[-1]
    return {"sparse forward": nnz * hidden_width, "sparse SGD": nnz * hidden_width,
            "output layer forward": dense, "hidden delta": dense, "output layer SGD": dense}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 32, 128, 1024])
    p.add_argument("--out", help="JSON file (default: benchmarks/results/profile-<time>.json)")
    args = p.parse_args(argv)
    if min(args.batch_sizes) < 1:
        p.error("--batch-sizes must be positive")
    common.set_threads(1)
    data = common.load_mnist()
    results = {}
    for batch_size in args.batch_sizes:
        seconds, one_call = profile(data, batch_size)
        results[str(batch_size)] = {"seconds_per_epoch": seconds, "sum": sum(seconds.values()),
                                    "one_call_epoch": one_call}
    header = ["step"] + [f"batch {b}" for b in args.batch_sizes]
    rows = [[step] + [f"{results[str(b)]['seconds_per_epoch'][step]:.4f}"
                      for b in args.batch_sizes] for step in STEPS]
    rows.append(["sum (kernels called from Python)"]
                + [f"{results[str(b)]['sum']:.4f}" for b in args.batch_sizes])
    rows.append(["epoch in one compiled call"]
                + [f"{results[str(b)]['one_call_epoch']:.4f}" for b in args.batch_sizes])
    print("\nseconds per epoch, one thread, MNIST 784-100-10 (plain SGD, sparse first layer)\n")
    print(common.markdown_table(header, rows))
    q = 64 // np.dtype(np.float32).itemsize                 # the first layer's padded width
    fmas = fmas_per_epoch(data, -(-common.SIZES[1] // q) * q)
    for b in args.batch_sizes:
        seconds = results[str(b)]["seconds_per_epoch"]
        results[str(b)]["gfma_per_s"] = {step: fmas[step] / seconds[step] / 1e9
                                         for step in FMA_STEPS}
    rows = [[step] + [f"{results[str(b)]['gfma_per_s'][step]:.1f}" for b in args.batch_sizes]
            for step in FMA_STEPS]
    print("\nGFMA/s per core (one thread) of the multiply-add kernels\n")
    print(common.markdown_table(header, rows))
    result = {"benchmark": "bench_profile", "network": common.SIZES, "threads": 1,
              "machine": common.machine(), "command": " ".join(sys.argv), "results": results}
    print(f"\nwritten to {common.write_json(result, args.out, 'profile')}")


if __name__ == "__main__":
    main()
