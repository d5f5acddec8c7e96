"""Wall-clock training seconds for the default recipe to reach 98.0% MNIST test accuracy.

Trains exactly as ``python -m mlp.train`` does with its defaults (the recipe
in :data:`mlp.train.DEFAULTS`: the first 50,000 training images, the last
10,000 held out), epoch by epoch, and after every epoch measures the
accuracy on the 10,000 test images. Only the training itself is timed (the
trainer's per-epoch ``seconds``): compilation, evaluation and data loading
are not. Prints per-epoch test accuracy with the cumulative training
seconds, and the first epoch at or above the target.

Where PyTorch is installed, the same recipe is trained in eager PyTorch in
the same run (``--skip-torch`` to leave it out), in a child process (its
OpenMP runtime must not run beside Numba's threads): the same layer widths,
activation, softmax cross-entropy, ``torch.optim.SGD`` (the same learning
rate, momentum, Nesterov flag and weight decay) or ``torch.optim.Adam`` (the
same rate, betas, eps and weight decay), the rate of every step set by
mlp's own schedule (:mod:`mlp.schedules`, through ``LambdaLR``), the same
batch size, the same 50,000 training images scaled to [0, 1] as float32, a
new random order each epoch, ``torch.set_num_threads`` = the thread count,
and PyTorch's own initialisation. With a schedule it trains the recipe's
epochs (the rate has fallen to 0 by their end), at a constant rate up to
30. Its clock, too, covers the training steps only. The ratio printed is
PyTorch's median seconds to the target over mlp's.

Usage (from the project root)::

    python benchmarks/bench_time_to_accuracy.py [--target 0.98] [--threads N] [--runs 1]
        [--hidden 512] [--optimizer sgd] [--lr 0.1] [--lr-schedule constant]
        [--momentum 0.9] [--batch-size 64] [--epochs 10] [--backend numba]
        [--skip-torch] [--torch-runs R] [--torch-epochs N] [--out FILE]

Options other than --target, --threads, --runs and --out override the defaults.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mlp.backends import get_backend
from mlp.network import Network
from mlp.schedules import Schedule
from mlp.train import (
    DEFAULT_LR,
    DEFAULTS,
    make_optimizer,
    make_schedule,
    make_trainer,
    parse_args,
    split_train,
)
from mlp.trainer import evaluate

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def recipe(args):
    """The default recipe of mlp.train with this command's overrides."""
    r = dict(DEFAULTS)
    for key in ("hidden", "optimizer", "lr", "momentum", "batch_size", "epochs", "lr_schedule",
                "backend", "weight_decay", "seed", "activation"):
        value = getattr(args, key)
        if value is not None:
            r[key] = value
    if args.nesterov:
        r["nesterov"] = True
    if args.optimizer is not None and args.lr is None:   # that optimizer's own default rate
        r["lr"] = DEFAULT_LR[args.optimizer]
    return r


def settings(r):
    """``python -m mlp.train``'s settings (its parser's defaults) with the recipe ``r``."""
    args = parse_args([])
    vars(args).update(r)
    return args


def schedule_of(r, n_train):
    """The recipe's learning-rate schedule over its epochs (None: constant), as mlp.train's."""
    return make_schedule(settings(r), n_train)


def run_once(r, data, target):
    """Train the recipe once; return the per-epoch records and the first epoch reaching target."""
    X_tr, y_tr, X_val, y_val = split_train(data, None, None)
    backend = get_backend(r["backend"])
    net = Network([X_tr.shape[1], *r["hidden"], data.n_classes], r["activation"], r["loss"],
                  dtype=r["dtype"], seed=r["seed"])
    args = settings(r)
    trainer = make_trainer(args, net, make_optimizer(args), X_tr.shape[0], backend)
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


def torch_run(r, data, target, threads):
    """Train the recipe in eager PyTorch in this process; return records and the first hit.

    Called in a child process (see :func:`torch_in_child`).
    """
    import torch  # optional, and only in its own process (PyTorch brings its own OpenMP runtime)
    if r["optimizer"] not in ("sgd", "adam"):
        raise SystemExit(f"the PyTorch run covers --optimizer sgd and adam, not "
                         f"{r['optimizer']}: extend torch_run for this recipe")
    torch.set_num_threads(threads)
    torch.manual_seed(r["seed"])
    nn = torch.nn
    act = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}[r["activation"]]
    X_tr, y_tr, _, _ = split_train(data, None, None)
    scale = np.float32(data.scale)
    X = torch.from_numpy(X_tr.astype(np.float32) * scale)
    y = torch.from_numpy(y_tr.astype(np.int64))
    X_test = torch.from_numpy(data.X_test.astype(np.float32) * scale)
    y_test = torch.from_numpy(data.y_test.astype(np.int64))
    sizes = [X.shape[1], *r["hidden"], data.n_classes]
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    model = nn.Sequential(*layers[:-1])
    opt = torch_optimizer(torch, model, r)
    # mlp's own schedule, counted in the recipe's epochs, gives the rate of every step
    schedule = schedule_of(r, X.shape[0]) or Schedule()
    step = torch.optim.lr_scheduler.LambdaLR(opt, schedule.factor)
    loss_fn = nn.CrossEntropyLoss()
    n, bs, seconds, records = X.shape[0], r["batch_size"], 0.0, []
    for epoch in range(1, r["epochs"] + 1):
        order = torch.randperm(n)
        t0 = time.perf_counter()
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(X[idx]), y[idx]).backward()
            opt.step()
            step.step()
        seconds += time.perf_counter() - t0
        with torch.no_grad():
            acc = float((model(X_test).argmax(1) == y_test).float().mean())
        records.append({"epoch": epoch, "test_accuracy": acc, "train_seconds": seconds})
        print(json.dumps(records[-1]), flush=True)
        if acc >= target:
            break
    return records


def torch_optimizer(torch, model, r):
    """torch.optim's SGD or Adam with the recipe's settings (Adam's betas and eps: mlp.train's)."""
    if r["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=r["lr"], momentum=r["momentum"],
                               nesterov=r["nesterov"], weight_decay=r["weight_decay"])
    args = settings(r)
    return torch.optim.Adam(model.parameters(), lr=r["lr"], betas=(args.beta1, args.beta2),
                            eps=args.eps, weight_decay=r["weight_decay"])


def torch_in_child(r, target, threads):
    """Run :func:`torch_run` in a child process, echoing its epochs; (records, first hit)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--torch-worker",
           json.dumps({"recipe": r, "target": target, "threads": threads})]
    records = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as child:
        for line in child.stdout:
            rec = json.loads(line)
            records.append(rec)
            print(f"  epoch {rec['epoch']:3d}  test accuracy {rec['test_accuracy']:.4f}  "
                  f"training {rec['train_seconds']:6.2f} s", flush=True)
    if child.returncode != 0:
        sys.exit(f"error: the PyTorch run failed (exit status {child.returncode})")
    return records, next((x for x in records if x["test_accuracy"] >= target), None)


def torch_epochs(r):
    """Most epochs the PyTorch run may take: the larger of 30 and the recipe's at a constant
    rate; the recipe's own with a schedule, which has brought the rate down to 0 by then."""
    return r["epochs"] if r["lr_schedule"] != "constant" else max(30, r["epochs"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", type=float, default=0.98, help="test accuracy to reach")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--runs", type=int, default=1, help="repeat the training (median reported)")
    p.add_argument("--hidden", type=int, nargs="+")
    p.add_argument("--activation")
    p.add_argument("--optimizer", choices=["sgd", "adam"])
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-schedule", choices=["constant", "linear", "cosine", "step"])
    p.add_argument("--momentum", type=float)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--backend", choices=["numba", "numpy"])
    p.add_argument("--skip-torch", action="store_true", help="leave the PyTorch run out")
    p.add_argument("--torch-epochs", type=int, default=None,
                   help="most epochs PyTorch may take to reach the target (it stops there; "
                        "default: the recipe's epochs with a --lr-schedule, else the larger of "
                        "30 and the recipe's epochs; a schedule spans these epochs)")
    p.add_argument("--torch-runs", type=int, default=None,
                   help="PyTorch runs (default: as many as --runs)")
    p.add_argument("--out", help="JSON file (default: benchmarks/results/tta-<time>.json)")
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--torch-worker":
        job = json.loads(sys.argv[2])
        common.set_threads(job["threads"])
        torch_run(job["recipe"], common.load_mnist(), job["target"], job["threads"])
        return 0
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
    if not args.skip_torch and not common.torch_available():
        print("\nPyTorch is not installed: its run is skipped (pip install torch to include it).")
    elif not args.skip_torch:
        torch_recipe = dict(r, epochs=args.torch_epochs or torch_epochs(r))
        torch_runs = []
        for k in range(args.torch_runs or args.runs):
            print(f"PyTorch run {k + 1} (same recipe, up to {torch_recipe['epochs']} epochs):")
            records, hit = torch_in_child(torch_recipe, args.target, threads)
            torch_runs.append({"epochs": records, "hit": hit})
            if not hit:
                print(f"  did not reach {args.target:.1%} in {torch_recipe['epochs']} epochs "
                      f"(best {max(x['test_accuracy'] for x in records):.4f}, "
                      f"{records[-1]['train_seconds']:.2f} s of training)")
        torch_hits = [run["hit"]["train_seconds"] for run in torch_runs if run["hit"]]
        torch_median = (common.median(torch_hits) if len(torch_hits) == len(torch_runs)
                        else None)
        result["torch"] = {"recipe": torch_recipe, "runs": torch_runs,
                           "median_seconds_to_target": torch_median}
        if torch_median is not None:
            print(f"\nPyTorch: seconds of training to {args.target:.1%} (median of "
                  f"{len(torch_hits)}): {torch_median:.2f}")
            if result["median_seconds_to_target"]:
                ratio = torch_median / result["median_seconds_to_target"]
                result["speedup_vs_torch"] = ratio
                print(f"mlp reaches it in 1/{ratio:.1f} of PyTorch's training time")
    print(f"written to {common.write_json(result, args.out, 'tta')}")
    return 0 if result["median_seconds_to_target"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
