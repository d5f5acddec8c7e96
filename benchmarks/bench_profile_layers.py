"""Where an epoch's time goes, layer by layer, for any MNIST network (e.g. 784-1024-1024-10).

``bench_profile.py`` follows the default 784-100-10 step by step; this one
takes ``--sizes`` and times, on one thread, each kernel of a training step of
a sigmoid network with plain SGD as :func:`mlp.kernels.train_chunk` runs it
(sparse first layer; dense layers forward, error, and the SGD step fused with
the gradient, by BLAS where the product is large). Each kernel is called from
Python on ``--batches`` batches and timed with the thread's CPU time
(``time.thread_time``), not the wall clock, so that other programs on a busy
machine slow the figures less. Printed per kernel: milliseconds per batch,
seconds per epoch (scaled to 60,000 images), its share, and for the
multiply-add kernels GFMA/s (multiply-adds over seconds: a sparse layer counts
one per non-zero pixel and unit of its padded width, a dense one
batch × n_in × n_out).

Usage (from the project root)::

    python benchmarks/bench_profile_layers.py [--sizes 784 1024 1024 10] [--batch-size 128]
                                              [--batches 100] [--out FILE]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from mlp import kernels as K
from mlp.network import Network
from mlp.trainer import epoch_order

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def profile(data, sizes, batch_size, n_batches, seed=0, lr=0.1):
    """[(step, seconds over the batches, multiply-adds or 0)] for ``n_batches`` training steps."""
    f32 = np.float32
    net = Network(sizes, "sigmoid", "ce", seed=seed)
    params = K.Params(tuple(net.weights), tuple(net.biases), tuple(net.weights),
                      tuple(net.biases))
    wk = K._working_copies(params, True, f32(0))
    W0, Wts, bs = wk.W0, wk.Wts, wk.bs
    work = K._workspace(W0, Wts, batch_size, True, K.sparse_buffers(batch_size, W0))
    acts, deltas, batch = work.acts, work.deltas, work.batch
    X, scale, labels = data.X_train, f32(data.scale), data.y_train.astype(np.int64)
    T = np.empty((0, sizes[-1]), f32)
    order = epoch_order(seed, 0, X.shape[0]).astype(np.int64)
    model, lr, nl = K.Model(K.SIGMOID, K.CE, K.SOFTMAX), f32(lr), len(Wts)
    bias_sgd = K.sgd_params(f32, lr, 0, 0, False)
    seconds, fmas = {}, {}

    def timed(step, work_fmas, fn, *args):
        t0 = time.thread_time()
        fn(*args)
        seconds[step] = seconds.get(step, 0.0) + time.thread_time() - t0
        fmas[step] = fmas.get(step, 0) + work_fmas

    def step(rows):
        nb = rows.shape[0]
        timed("gather", 0, lambda: (K.gather_targets(labels, T, rows, work.Y[:nb]),
                                    K.gather_sparse(X, rows, scale, batch)))
        nnz = int(batch.nnz[:nb].sum())
        sparse = K.SparseBatch(batch.nnz[:nb], batch.cols, batch.vals)
        timed(f"layer 1 forward (sparse, {sizes[1]} units)", nnz * W0.shape[1], K.sparse_forward,
              sparse, W0, bs[0], K.SIGMOID, acts[1][:nb])
        for l in range(1, nl):
            kind = K.SIGMOID if l < nl - 1 else K.IDENTITY
            a, n_out = acts[l][:nb], Wts[l].shape[0]
            timed(f"layer {l + 1} forward ({a.shape[1]}→{n_out})", nb * a.shape[1] * n_out,
                  K.dense_forward, a, Wts[l], bs[l], kind, acts[l + 1][:nb])
        timed("softmax, loss, output delta", 0, K.output_delta, acts[nl][:nb], work.Y[:nb], model,
              deltas[nl][:nb])
        for l in range(nl - 1, 0, -1):
            a, d = acts[l][:nb], deltas[l + 1][:nb]
            n_in, n_out = a.shape[1], d.shape[1]
            timed("bias gradients and SGD", 0, lambda a=a, d=d, l=l: (
                K.column_sums(d, work.gbs[l]), K.sgd_update(bs[l], work.gbs[l], bs[l], bias_sgd)))
            timed(f"layer {l + 1} error δ·W ({n_out}→{n_in})", nb * n_in * n_out,
                  K.backprop_delta, d, Wts[l], a, K.SIGMOID, deltas[l][:nb])
            timed(f"layer {l + 1} SGD ({n_in}→{n_out})", nb * n_in * n_out, K.dense_sgd_plain,
                  a, d, Wts[l], lr)
        timed("bias gradients and SGD", 0, lambda: (
            K.column_sums(deltas[1][:nb], work.gbs[0]),
            K.sgd_update(bs[0], work.gbs[0], bs[0], bias_sgd)))
        timed("layer 1 SGD (sparse)", nnz * W0.shape[1], K.sparse_sgd_plain, sparse,
              deltas[1][:nb], W0, lr)

    for b in range(2):                          # compile or load every kernel
        step(order[b * batch_size:(b + 1) * batch_size])
    seconds.clear()
    fmas.clear()
    for b in range(n_batches):
        step(order[b * batch_size:(b + 1) * batch_size])
    return [(name, seconds[name], fmas[name]) for name in seconds]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[784, 1024, 1024, 10])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=100, help="training steps timed")
    p.add_argument("--out", help="JSON file (default: benchmarks/results/profile-layers-*.json)")
    args = p.parse_args(argv)
    if len(args.sizes) < 3 or args.sizes[0] != 784 or args.sizes[-1] != 10:
        p.error("--sizes must be 784, one or more hidden widths, then 10 (MNIST)")
    if args.batch_size < 1 or args.batches < 1:
        p.error("--batch-size and --batches must be positive")
    common.set_threads(1)
    data = common.load_mnist()
    n_batches = min(args.batches, data.X_train.shape[0] // args.batch_size)
    steps = profile(data, args.sizes, args.batch_size, n_batches)
    total = sum(s for _, s, _ in steps)
    per_epoch = data.X_train.shape[0] / args.batch_size / n_batches
    rows = [[name, f"{1e3 * s / n_batches:.3f}", f"{s * per_epoch:.3f}", f"{100 * s / total:.1f}%",
             f"{f / s / 1e9:.1f}" if f else "-"] for name, s, f in steps]
    rows.append(["sum", f"{1e3 * total / n_batches:.3f}", f"{total * per_epoch:.3f}", "100%", "-"])
    print(f"\nMNIST {'-'.join(map(str, args.sizes))} sigmoid, plain SGD, batch {args.batch_size}, "
          f"one thread, CPU time of {n_batches} steps\n")
    print(common.markdown_table(["kernel", "ms per batch", "s per epoch", "share", "GFMA/s"],
                                rows))
    result = {"benchmark": "bench_profile_layers", "network": args.sizes, "threads": 1,
              "batch_size": args.batch_size, "batches": n_batches, "machine": common.machine(),
              "command": " ".join(sys.argv),
              "steps": [{"kernel": n, "seconds": s, "fmas": f} for n, s, f in steps]}
    print(f"\nwritten to {common.write_json(result, args.out, 'profile-layers')}")


if __name__ == "__main__":
    main()
