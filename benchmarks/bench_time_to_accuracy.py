"""Wall-clock training seconds for the default recipe to reach 98.0% MNIST test accuracy.

Trains exactly as ``python -m mlp.train`` does with its defaults (the recipe
in :data:`mlp.train.DEFAULTS`: the first 50,000 training images, the last
10,000 held out), epoch by epoch, and after every epoch measures the
accuracy on the 10,000 test images. Only the training itself is timed (the
trainer's per-epoch ``seconds``): compilation, evaluation and data loading
are not. Prints per-epoch test accuracy with the cumulative training
seconds, and the first epoch at or above the target.

Usage (from the project root)::

    python benchmarks/bench_time_to_accuracy.py [--target 0.98] [--threads N] [--runs 1]
        [--hidden 512] [--lr 0.1] [--momentum 0.9] [--batch-size 64] [--epochs 10]
        [--backend numba] [--out FILE]

Options other than --target, --threads, --runs and --out override the defaults.
"""

import argparse
import sys
from pathlib import Path

from mlp.backends import get_backend
from mlp.network import Network
from mlp.optimizers import SGD
from mlp.train import DEFAULTS, split_train
from mlp.trainer import Trainer, evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def recipe(args):
    """The default recipe of mlp.train with this command's overrides."""
    r = dict(DEFAULTS)
    for key in ("hidden", "lr", "momentum", "batch_size", "epochs", "backend", "weight_decay",
                "seed", "activation"):
        value = getattr(args, key)
        if value is not None:
            r[key] = value
    if args.nesterov:
        r["nesterov"] = True
    return r


def run_once(r, data, target):
    """Train the recipe once; return the per-epoch records and the first epoch reaching target."""
    X_tr, y_tr, X_val, y_val = split_train(data, None, None)
    backend = get_backend(r["backend"])
    net = Network([X_tr.shape[1], *r["hidden"], data.n_classes], r["activation"], r["loss"],
                  dtype=r["dtype"], seed=r["seed"])
    opt = SGD(r["lr"], r["momentum"], r["nesterov"], r["weight_decay"])
    trainer = Trainer(net, opt, backend, r["batch_size"], r["seed"])
    records = []

    def after_epoch(tr):
        seconds = sum(h["seconds"] for h in tr.history)
        acc = evaluate(net, backend, data.X_test, data.y_test, data.scale)[1]
        records.append({"epoch": tr.epoch, "test_accuracy": acc, "train_seconds": seconds,
                        "epoch_seconds": tr.history[-1]["seconds"]})
        mark = "  <- target" if acc >= target and not any(
            x["test_accuracy"] >= target for x in records[:-1]) else ""
        print(f"  epoch {tr.epoch:3d}  test accuracy {acc:.4f}  training {seconds:6.2f} s{mark}",
              flush=True)

    trainer.on_epoch = after_epoch
    trainer.fit(X_tr, y_tr, r["epochs"], data.scale)
    hit = next((x for x in records if x["test_accuracy"] >= target), None)
    return records, hit, trainer.compile_seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", type=float, default=0.98, help="test accuracy to reach")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--runs", type=int, default=1, help="repeat the training (median reported)")
    p.add_argument("--hidden", type=int, nargs="+")
    p.add_argument("--activation")
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--backend", choices=["numba", "numpy"])
    p.add_argument("--out", help="JSON file (default: benchmarks/results/tta-<time>.json)")
    args = p.parse_args(argv)
    threads = common.set_threads(args.threads)
    r = recipe(args)
    data = common.load_mnist()
    print(f"recipe: {r}")
    print(f"threads: {threads}; target test accuracy {args.target:.3f}")
    runs = []
    for k in range(args.runs):
        print(f"run {k + 1}:")
        records, hit, compile_s = run_once(r, data, args.target)
        runs.append({"epochs": records, "hit": hit, "compile_seconds": compile_s})
        if hit:
            print(f"  reached {args.target:.1%} after epoch {hit['epoch']}: "
                  f"{hit['train_seconds']:.2f} s of training (+ {compile_s:.2f} s compiling)")
        else:
            print(f"  did not reach {args.target:.1%} in {r['epochs']} epochs "
                  f"(best {max(x['test_accuracy'] for x in records):.4f})")
    hits = [run["hit"]["train_seconds"] for run in runs if run["hit"]]
    result = {"benchmark": "bench_time_to_accuracy", "recipe": r, "target": args.target,
              "threads": threads, "runs": runs,
              "median_seconds_to_target": common.median(hits) if len(hits) == len(runs) else None,
              "machine": common.machine(), "command": " ".join(sys.argv)}
    if result["median_seconds_to_target"] is not None:
        print(f"\nseconds of training to {args.target:.1%} test accuracy "
              f"(median of {len(hits)}): {result['median_seconds_to_target']:.2f}")
    print(f"written to {common.write_json(result, args.out, 'tta')}")
    return 0 if result["median_seconds_to_target"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
