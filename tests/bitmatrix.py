"""A fixed set of short training runs that covers the kernels' configurations.

Used by tests/test_same_bits.py (the two backends agree, every thread count
gives the same bits) and, run as a script, to record the exact results of a
commit so that a refactoring can be checked bit for bit against the one
before it: ``python tests/bitmatrix.py OUT.npz`` at both commits, then
``python tests/bitmatrix.py --compare A.npz B.npz``.
"""

import itertools
import sys

import numpy as np

DTYPES = ("float32", "float64")
OPTIMIZERS = {"plain": dict(momentum=0.0), "momentum": dict(momentum=0.9),
              "nesterov": dict(momentum=0.9, nesterov=True, weight_decay=1e-3),
              "adamw-maxnorm": dict(adam=True, weight_decay=1e-2, decoupled=True, max_norm=1.0)}
THREADS = (1, 2)
BATCHES = (10, 128)
HIDDEN = ((64,), (64, 32))
BACKENDS = ("numba", "numpy")


def sparse_data(n=768, n_in=784, seed=5):
    """MNIST-like uint8 rows (about 19% non-zero pixels), labelled by a random linear teacher."""
    rng = np.random.default_rng(seed)
    X = ((rng.random((n, n_in)) < 0.19) * rng.integers(1, 256, (n, n_in))).astype(np.uint8)
    teacher = rng.standard_normal((n_in, 10))
    y = (X.astype(np.float64) @ teacher).argmax(axis=1).astype(np.int64)
    return X, y


def configs():
    """Every (backend, dtype, optimizer, threads, batch, hidden) of the matrix."""
    return list(itertools.product(BACKENDS, DTYPES, OPTIMIZERS, THREADS, BATCHES, HIDDEN))


def run(backend, dtype, optimizer, threads, batch, hidden, data=None):
    """One epoch on :func:`sparse_data`.

    Returns {name: array} of weights, biases, losses, accuracy.
    """
    from mlp.backends import get_backend, set_threads
    from mlp.network import Network
    from mlp.optimizers import SGD, Adam
    from mlp.trainer import Trainer, evaluate
    X, y = data if data is not None else sparse_data()
    set_threads(threads)
    net = Network([X.shape[1], *hidden, 10], dtype=dtype, seed=1)
    kwargs = dict(OPTIMIZERS[optimizer])
    opt = Adam(lr=0.002, **kwargs) if kwargs.pop("adam", False) else SGD(lr=0.05, **kwargs)
    be = get_backend(backend)
    if backend == "numba":
        be.parallel = True              # the parallel kernels whenever the batch is big enough
    trainer = Trainer(net, opt, be, batch, seed=3)
    trainer.fit(X[:640], y[:640], 1, scale=1 / 255)
    loss, acc = evaluate(net, be, X[640:], y[640:], 1 / 255)
    out = {f"W{l}": w for l, w in enumerate(net.weights)}
    out.update({f"b{l}": b for l, b in enumerate(net.biases)})
    out["train_loss"] = np.array([trainer.history[-1]["train_loss"], loss, acc])
    return out


def key(cfg):
    return "-".join(str(c) if not isinstance(c, tuple) else "x".join(map(str, c)) for c in cfg)


def record(path):
    data = sparse_data()
    arrays = {}
    for cfg in configs():
        for name, a in run(*cfg, data=data).items():
            arrays[f"{key(cfg)}/{name}"] = a
    np.savez(path, **arrays)


def compare(a, b):
    A, B = np.load(a), np.load(b)
    bad = [k for k in A.files if k not in B.files or not np.array_equal(A[k], B[k])]
    print(f"{len(A.files) - len(bad)} of {len(A.files)} arrays identical")
    for k in bad:
        print("  differs:", k)
    return 1 if bad or set(A.files) != set(B.files) else 0


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    record(sys.argv[1])
