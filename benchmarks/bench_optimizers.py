"""Seconds per epoch of each optimizer on the default network: what Adam costs against SGD.

The network of ``python -m mlp.train``'s default recipe (784-256-10, sigmoid, softmax
cross-entropy, float32, uint8 MNIST pixels on the sparse first layer) at batch 64 (the
previous default recipe's; ``--batch-size``) trained for one epoch of the 50,000
training images through :class:`mlp.trainer.Trainer` and the chosen backend, once per optimizer:

* ``sgd``: momentum 0.9 (the previous recipe's; updated inside the backward pass);
* ``adam``: Adam, lr 0.001 (every weight's two moments updated each step);
* ``adamw-maxnorm``: AdamW (weight decay 1e-4) with max-norm 3 on the hidden units.

The optimizers take turns, run after run (``--runs``, median reported), in
one process: the ratios to SGD are measured under the same load. Each first
trains a throwaway network for ``--warmup`` seconds (compilation included).

Usage (from the project root)::

    python benchmarks/bench_optimizers.py [--runs 3] [--threads N] [--batch-size 64]
                                          [--backend numba] [--out FILE]
"""

import argparse
import sys
import time
from pathlib import Path

from mlp.backends import get_backend
from mlp.network import Network
from mlp.optimizers import SGD, Adam
from mlp.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SIZES = [784, 256, 10]
VALIDATION = 10_000
#: the optimizers compared, by name
OPTIMIZERS = {"sgd": lambda: SGD(0.2, momentum=0.9),
              "adam": lambda: Adam(0.001),
              "adamw-maxnorm": lambda: Adam(0.001, weight_decay=1e-4, decoupled=True,
                                            max_norm=3.0)}


def epoch_seconds(name, backend, X, y, scale, batch_size, seed, warmup):
    """Seconds of one training epoch with optimizer ``name`` (after ``warmup`` seconds)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < warmup:
        scratch = Trainer(Network(SIZES, seed=seed + 1), OPTIMIZERS[name](), backend, batch_size,
                          seed)
        scratch.on_chunk = lambda tr: time.perf_counter() - t0 > warmup and tr.request_stop()
        scratch.fit(X, y, 1, scale)
    trainer = Trainer(Network(SIZES, seed=seed), OPTIMIZERS[name](), backend, batch_size, seed)
    trainer.fit(X, y, 1, scale)
    return trainer.history[0]["seconds"]


def run(runs, threads, batch_size, backend_name, warmup):
    """Measure every optimizer ``runs`` times, interleaved; return the result dict."""
    threads = common.set_threads(threads)
    data = common.load_mnist()
    X, y = data.X_train[:-VALIDATION], data.y_train[:-VALIDATION]
    backend = get_backend(backend_name)
    times = {name: [] for name in OPTIMIZERS}
    for r in range(runs):
        for name in OPTIMIZERS:
            seconds = epoch_seconds(name, backend, X, y, data.scale, batch_size, r, warmup)
            times[name].append(seconds)
            print(f"  run {r + 1}  {name:14s} {seconds:7.3f} s", flush=True)
    median = {name: common.median(v) for name, v in times.items()}
    return {"benchmark": "bench_optimizers", "network": SIZES, "batch_size": batch_size,
            "backend": backend_name, "threads": threads, "runs": runs, "seconds": times,
            "median": median, "ratio_to_sgd": {k: v / median["sgd"] for k, v in median.items()},
            "machine": common.machine(), "command": " ".join(sys.argv)}


def table(result):
    """The markdown table of a result dict."""
    rows = [[name, f"{result['median'][name]:.3f}", f"{result['ratio_to_sgd'][name]:.2f}"]
            for name in result["median"]]
    return common.markdown_table(["optimizer", "s/epoch (median)", "× SGD"], rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--backend", default="numba", choices=["numba", "numpy"])
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    result = run(args.runs, args.threads, args.batch_size, args.backend, args.warmup)
    print(table(result))
    print(f"written to {common.write_json(result, args.out, 'bench_optimizers')}")


if __name__ == "__main__":
    main()
