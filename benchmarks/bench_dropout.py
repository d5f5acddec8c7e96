"""Seconds per epoch of the dropout recipe: mlp-numba against mlp-numpy and PyTorch.

The recipe of ``bench_accuracy.py --only best`` (mlp's first sigmoid recipe in the
README): 784-1024-10, sigmoid hidden layer, softmax cross-entropy, dropout
0.5 on the hidden units and 0.2 on the input pixels (inverted dropout),
SGD with Nesterov momentum 0.9, learning rate 0.1, batch 100, one epoch over
the 50,000 training images of that benchmark's split.

* mlp-numba / mlp-numpy: :class:`mlp.trainer.Trainer` with the backend and
  the dropout rates in ``trainer.extras``, as ``python -m mlp.train
  --dropout 0.5 --input-dropout 0.2`` trains (uint8 pixels, chunks of batches);
  compilation happens before the clock starts.
* PyTorch (if installed): ``nn.Sequential(Dropout(0.2), Linear, Sigmoid,
  Dropout(0.5), Linear)``, ``CrossEntropyLoss``, ``optim.SGD(momentum=0.9,
  nesterov=True)``, eager mode, float32 tensors prepared before the clock
  starts, ``torch.set_num_threads`` = the thread count.

As in ``bench_speed.py``: every epoch runs in a fresh child process after a
``--warmup`` of training a throwaway copy, the frameworks are interleaved
over ``--runs`` rounds and the median is reported, with the speed-up of
mlp-numba over each. An epoch slower than ``--max-seconds`` is stopped and
extrapolated from the fraction done.

Usage (from the project root)::

    python benchmarks/bench_dropout.py [--runs 3] [--threads 2] [--skip torch]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from mlp.backends import get_backend
from mlp.batches import Extras
from mlp.network import Network
from mlp.optimizers import SGD
from mlp.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SIZES = [784, 1024, 10]
LR, MOMENTUM, BATCH = 0.1, 0.9, 100
HIDDEN_DROPOUT, INPUT_DROPOUT = 0.5, 0.2
N_TRAIN = 50_000
FRAMEWORKS = ("mlp-numba", "mlp-numpy", "torch")


def mlp_epoch(backend_name, X, y, scale, seed, budget, warmup):
    """(seconds per epoch, fraction of the epoch run) with an mlp backend."""
    backend = get_backend(backend_name)

    def trainer_for(net, limit):
        trainer = Trainer(net, SGD(LR, MOMENTUM, nesterov=True), backend, BATCH, seed)
        trainer.extras = Extras(dropout=[INPUT_DROPOUT, HIDDEN_DROPOUT], seed=seed)
        trainer.on_chunk = lambda tr: tr.epoch_seconds > limit and tr.request_stop()
        return trainer
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < warmup:
        trainer_for(Network(SIZES, "sigmoid", "ce", seed=seed + 1), warmup).fit(X, y, 1, scale)
    trainer = trainer_for(Network(SIZES, "sigmoid", "ce", seed=seed), budget)
    if trainer.fit(X, y, 1, scale):
        return trainer.history[-1]["seconds"], 1.0
    done = trainer.position / -(-X.shape[0] // BATCH)
    return trainer.epoch_seconds / done, done


def torch_epoch(X, y, seed, budget, warmup):
    """(seconds per epoch, fraction run) of the same network, dropout and SGD in eager PyTorch."""
    import torch  # optional, and only in its own worker (PyTorch brings its own OpenMP runtime)
    nn = torch.nn
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Dropout(INPUT_DROPOUT), nn.Linear(SIZES[0], SIZES[1]), nn.Sigmoid(),
                          nn.Dropout(HIDDEN_DROPOUT), nn.Linear(SIZES[1], SIZES[2]))
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    n = X.shape[0]

    def epoch(opt, budget=float("inf")):
        order = torch.randperm(n)
        t0 = time.perf_counter()
        for k, start in enumerate(range(0, n, BATCH)):
            idx = order[start:start + BATCH]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(X[idx]), y[idx]).backward()
            opt.step()
            if k % 50 == 49 and time.perf_counter() - t0 > budget:
                return time.perf_counter() - t0, (start + BATCH) / n
        return time.perf_counter() - t0, 1.0

    def sgd():
        return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < warmup:   # warm up the allocator, kernels and cores
        epoch(sgd(), warmup)
    model.load_state_dict(initial)
    seconds, done = epoch(sgd(), budget)
    return seconds / done, done


def worker(framework, seed, threads, budget, warmup):
    """One epoch of one framework in this (fresh) process; prints a JSON line with the result."""
    common.set_threads(threads)
    data = common.load_mnist()
    X, y = data.X_train[:N_TRAIN], data.y_train[:N_TRAIN]
    if framework == "torch":
        import torch  # optional, and only in its own worker (see torch_epoch)
        X32 = X.astype(np.float32) * np.float32(data.scale)
        seconds, done = torch_epoch(torch.from_numpy(X32), torch.from_numpy(y), seed, budget,
                                    warmup)
    else:
        seconds, done = mlp_epoch(framework.split("-")[1], X, y, data.scale, seed, budget,
                                  warmup)
    print(json.dumps({"seconds": seconds, "done": done}))


def measure(framework, seed, threads, budget, warmup):
    """Run :func:`worker` in a child process; return its result dict."""
    return common.run_worker(__file__, [framework, seed, threads, budget, warmup], framework)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="epochs per framework (median reported)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip", nargs="*", default=[], choices=FRAMEWORKS)
    p.add_argument("--max-seconds", type=float, default=15.0,
                   help="stop a slower epoch there and extrapolate")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON file (default: benchmarks/results/dropout-<time>.json)")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        framework, seed, threads, budget, warmup = argv[1:]
        worker(framework, int(seed), int(threads), float(budget), float(warmup))
        return 0
    args = build_parser().parse_args(argv)
    frameworks = [f for f in FRAMEWORKS if f not in args.skip]
    if "torch" in frameworks and not common.torch_available():
        frameworks.remove("torch")
        print("note: PyTorch is not installed; its column is skipped (pip install torch).")
    seconds = {f: [] for f in frameworks}
    for run in range(args.runs):                 # interleaved: a busy moment hits everyone
        for f in frameworks:
            seconds[f].append(measure(f, args.seed + run, args.threads, args.max_seconds,
                                      args.warmup)["seconds"])
            print(f"  run {run + 1}: {f:10s} {seconds[f][-1]:.3f} s/epoch", flush=True)
    med = {f: common.median(v) for f, v in seconds.items()}
    header = ["framework", "s/epoch (median)", "mlp-numba faster by"]
    rows = [[f, f"{med[f]:.3f}",
             "—" if f == "mlp-numba" or "mlp-numba" not in med
             else f"{med[f] / med['mlp-numba']:.1f}×"] for f in frameworks]
    print(f"\n784-1024-10 sigmoid/ce, dropout {HIDDEN_DROPOUT} (inputs {INPUT_DROPOUT}), "
          f"Nesterov {MOMENTUM}, batch {BATCH}, {N_TRAIN} images, {args.threads} threads, "
          f"median of {args.runs}\n")
    print(common.markdown_table(header, rows))
    result = {"seconds": seconds, "median": med, "threads": args.threads, "runs": args.runs,
              "machine": common.machine(), "recipe": {
                  "sizes": SIZES, "lr": LR, "momentum": MOMENTUM, "nesterov": True,
                  "batch_size": BATCH, "dropout": HIDDEN_DROPOUT,
                  "input_dropout": INPUT_DROPOUT, "n_train": N_TRAIN}}
    print(f"\nwritten: {common.write_json(result, args.out, 'dropout')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
