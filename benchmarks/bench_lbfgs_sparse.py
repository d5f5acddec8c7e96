"""L-BFGS and sparse (CSR) input: mlp's estimators against scikit-learn's MLPClassifier.

``lbfgs``: solver="lbfgs" on scikit-learn's digits (1,797 × 64) and on a 20,000-sample
tabular set (make_classification, 20 features, 3 classes), 100 tanh hidden units, the same
max_iter and tol=0 for everyone, in --dtype (float64; scikit-learn computes in X's
dtype); scikit-learn's alpha=1e-4 is mlp's 1e-4/n (mlp's alpha is per mean loss, see
mlp.estimators). Seconds per fit (median of --runs,
interleaved), iterations, final loss and train/test accuracy (80/20 split).

``sparse``: 1% dense CSR input, 10,000 features, 5 classes, rows like bags of words (a
class shows in a few words of its own vocabulary, :func:`sparse_set`); 100 relu hidden
units, solver="sgd" (η 0.05, --momentum 0.9 (Nesterov), batch 200, no penalty, --epochs
epochs, no early stop) for all; mlp on the CSR matrix (Numba and NumPy
backends), mlp on the same rows densified (float32, Numba), scikit-learn on the CSR matrix.
Seconds per fit and test accuracy.

    python benchmarks/bench_lbfgs_sparse.py [--part lbfgs sparse] [--runs 3] [--threads N]
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, markdown_table, median, set_threads, write_json  # noqa: E402

import mlp  # noqa: E402


def lbfgs_sets():
    from sklearn.datasets import load_digits, make_classification
    X, y = load_digits(return_X_y=True)
    Xt, yt = make_classification(n_samples=20000, n_features=20, n_informative=12,
                                 n_classes=3, random_state=0)
    return {"digits": (X / 16, y), "tabular 20k": (Xt, yt)}


def sparse_set(n=20000, n_in=10000, density=0.01, classes=5, seed=0):
    """Bag-of-words-like CSR rows: each row has density·n_in distinct features, about 5% of
    them from its class's own 200-word vocabulary, the rest from all; values 0.5 … 1.5."""
    import scipy.sparse as sp
    rng = np.random.default_rng(seed)
    k = int(density * n_in)
    y = rng.integers(0, classes, n)
    vocab = rng.permutation(n_in)[:classes * 200].reshape(classes, 200)
    indptr, indices = [0], []
    for c in y:
        own = rng.choice(vocab[c], rng.binomial(k, 0.05), replace=False)
        cols = np.unique(np.concatenate([own, rng.choice(n_in, k, replace=False)]))[:k]
        indices.append(np.sort(cols))
        indptr.append(indptr[-1] + len(cols))
    indices = np.concatenate(indices)
    values = (rng.random(len(indices)) + 0.5).astype(np.float32)
    return sp.csr_matrix((values, indices, np.array(indptr)), shape=(n, n_in)), y


def split(X, y, frac=0.8):
    k = int(frac * X.shape[0])
    return X[:k], y[:k], X[k:], y[k:]


def fit_lbfgs(who, X, y, max_iter):
    """An unfitted estimator (scikit-learn's, or mlp's with ``who``'s backend) for X."""
    from sklearn.neural_network import MLPClassifier as SkClassifier
    common = dict(hidden_layer_sizes=(100,), activation="tanh", solver="lbfgs",
                  max_iter=max_iter, tol=0.0, random_state=0)
    if who == "sklearn":
        return SkClassifier(alpha=1e-4, **common)
    return mlp.MLPClassifier(alpha=1e-4 / X.shape[0], dtype=X.dtype.name,
                             backend=who.split("-")[1], **common)


def fit_sparse(who, epochs, momentum):
    from sklearn.neural_network import MLPClassifier as SkClassifier
    common = dict(hidden_layer_sizes=(100,), activation="relu", solver="sgd",
                  learning_rate_init=0.05, momentum=momentum, batch_size=200, alpha=0.0,
                  max_iter=epochs, tol=0.0, n_iter_no_change=10**6, random_state=0)
    if who == "sklearn":
        return SkClassifier(**common)
    return mlp.MLPClassifier(dtype="float32", backend=who.split()[0].split("-")[1], **common)


def run(makers, data, runs):
    """{name: [seconds]} and {name: fitted estimator}, the makers interleaved run by run."""
    seconds, fitted = {name: [] for name in makers}, {}
    for _ in range(runs):
        for name, (make, X, y) in makers.items():
            est = make()
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.fit(X, y)
            seconds[name].append(time.perf_counter() - t0)
            fitted[name] = est
    return seconds, fitted


def bench_lbfgs(args):
    rows = []
    for name, (X, y) in lbfgs_sets().items():
        X = X.astype(args.dtype)
        X_tr, y_tr, X_te, y_te = split(X, y)
        whos = ["mlp-numba", "mlp-numpy", "sklearn"]
        makers = {w: (lambda w=w, X=X_tr, y=y_tr: fit_lbfgs(w, X, y, args.max_iter), X_tr, y_tr)
                  for w in whos}
        fit_lbfgs("mlp-numba", X_tr[:300], y_tr[:300], 2).fit(X_tr[:300], y_tr[:300])  # compile
        seconds, fitted = run(makers, None, args.runs)
        for w in whos:
            est = fitted[w]
            rows.append([name, w, f"{median(seconds[w]):.2f}", est.n_iter_,
                         f"{1e3 * median(seconds[w]) / max(est.n_iter_, 1):.1f}",
                         f"{est.loss_:.5f}", f"{est.score(X_tr, y_tr):.4f}",
                         f"{est.score(X_te, y_te):.4f}",
                         f"{median(seconds['sklearn']) / median(seconds[w]):.1f}x"])
    return ["data", "who", "s/fit", "iters", "ms/iter", "final loss", "train acc",
            "test acc", "vs sklearn"], rows


def bench_sparse(args):
    X, y = sparse_set(n=args.samples)
    X_tr, y_tr, X_te, y_te = split(X, y)
    dense = X_tr.toarray()
    def maker(who):
        return lambda: fit_sparse(who, args.epochs, args.momentum)
    makers = {"mlp-numba CSR": (maker("mlp-numba"), X_tr, y_tr),
              "mlp-numpy CSR": (maker("mlp-numpy"), X_tr, y_tr),
              "mlp-numba dense": (maker("mlp-numba"), dense, y_tr),
              "sklearn CSR": (maker("sklearn"), X_tr, y_tr)}
    for name in ("mlp-numba CSR", "mlp-numba dense"):                     # compile first
        make, Xc, yc = makers[name]
        est = make().set_params(max_iter=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(Xc[:400], yc[:400])
    seconds, fitted = run(makers, None, args.runs)
    rows = []
    for name, est in fitted.items():
        rows.append([name, f"{median(seconds[name]):.2f}", est.n_iter_,
                     f"{est.score(X_te, y_te):.4f}",
                     f"{median(seconds['sklearn CSR']) / median(seconds[name]):.1f}x"])
    return ["who", "s/fit", "epochs", "test acc", "vs sklearn CSR"], rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", nargs="+", default=["lbfgs", "sparse"],
                        choices=["lbfgs", "sparse"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-iter", type=int, default=200, help="L-BFGS iterations")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                        help="of X and the L-BFGS fits")
    parser.add_argument("--epochs", type=int, default=5, help="SGD epochs of the sparse part")
    parser.add_argument("--samples", type=int, default=20000, help="rows of the sparse set")
    parser.add_argument("--momentum", type=float, default=0.9, help="of the sparse part's SGD")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    print(f"threads: {threads}; load average: {os.getloadavg()}")
    result = {"machine": machine(), "threads": threads, "args": vars(args)}
    for part in args.part:
        header, rows = {"lbfgs": bench_lbfgs, "sparse": bench_sparse}[part](args)
        print(f"\n{part}:\n" + markdown_table(header, rows))
        result[part] = {"header": header, "rows": rows}
    print(f"\nload average after: {os.getloadavg()}")
    print(f"written: {write_json(result, args.out, 'lbfgs-sparse')}")


if __name__ == "__main__":
    main()
