"""What an epoch of the dropout recipe is made of: the recipe with and without its parts.

The network and data of ``bench_dropout.py`` (784-1024-10 sigmoid, softmax
cross-entropy, batch 100, the first 50,000 MNIST training images), trained
by mlp-numba's :class:`mlp.trainer.Trainer` in five variants: the recipe
(input dropout 0.2, hidden dropout 0.5, Nesterov momentum 0.9), without
momentum, without dropout, with hidden dropout only, and with neither. The
variants alternate, one epoch each per round, after an untimed first round
(compilation, caches); the median of ``--runs`` rounds is printed per
variant, with every epoch's seconds.

Usage (from the project root)::

    python benchmarks/bench_dropout_parts.py [--runs 3] [--threads N] [--out FILE]
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from mlp.backends import get_backend
from mlp.batches import Extras
from mlp.network import Network
from mlp.optimizers import SGD
from mlp.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_dropout import BATCH, HIDDEN_DROPOUT, INPUT_DROPOUT, LR, N_TRAIN, SIZES  # noqa: E402

#: name: (momentum, Nesterov, dropout rates of the input and the hidden layer, or None)
VARIANTS = {
    "the recipe (dropout, Nesterov)": (0.9, True, [INPUT_DROPOUT, HIDDEN_DROPOUT]),
    "dropout, no momentum": (0.0, False, [INPUT_DROPOUT, HIDDEN_DROPOUT]),
    "Nesterov, no dropout": (0.9, True, None),
    "Nesterov, hidden dropout only": (0.9, True, [0.0, HIDDEN_DROPOUT]),
    "neither": (0.0, False, None),
}


def epoch_seconds(variant, X, y, scale, backend, seed=0):
    """Training seconds of one epoch of ``variant`` (a value of :data:`VARIANTS`)."""
    mu, nesterov, dropout = variant
    trainer = Trainer(Network(SIZES, "sigmoid", "ce", seed=seed),
                      SGD(LR, mu, nesterov=nesterov), backend, BATCH, seed)
    if dropout is not None:
        trainer.extras = Extras(dropout=dropout, seed=seed)
    trainer.fit(X, y, 1, scale)
    return trainer.history[-1]["seconds"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="timed rounds (median reported)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", help="JSON file (default: benchmarks/results/dropout-parts-*.json)")
    args = p.parse_args(argv)
    threads = common.set_threads(args.threads)
    data = common.load_mnist()
    X, y = data.X_train[:N_TRAIN], data.y_train[:N_TRAIN]
    backend = get_backend("numba")
    seconds = {name: [] for name in VARIANTS}
    for round_ in range(args.runs + 1):
        for name, variant in VARIANTS.items():
            t = epoch_seconds(variant, X, y, data.scale, backend)
            if round_:                       # the first round compiles and warms up
                seconds[name].append(t)
    print(f"784-1024-10, batch {BATCH}, {N_TRAIN} images, mlp-numba, {threads} threads, "
          f"median of {args.runs}\n")
    print("| variant | s/epoch (median) | epochs |\n|---|---:|---|")
    for name, times in seconds.items():
        print(f"| {name} | {np.median(times):.3f} | {', '.join(f'{t:.3f}' for t in times)} |")
    result = {"seconds": seconds, "threads": threads, "runs": args.runs}
    print(f"\nwritten: {common.write_json(result, args.out, 'dropout-parts')}")


if __name__ == "__main__":
    main()
