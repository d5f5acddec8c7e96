"""Seconds per epoch of MNIST training: mlp-numba against mlp-numpy, scikit-learn and PyTorch.

The network is 784-100-10 with a sigmoid hidden layer and softmax
cross-entropy, trained by plain minibatch SGD (learning rate 0.1, no
momentum) for one epoch over all 60,000 training images, at each batch size.
For every framework and batch size the epoch is run ``--runs`` times
(interleaved, so a busy moment of the machine hits everyone) and the median
is reported, with the speed-up of mlp-numba over each and the rate it
achieves in dense GFLOP/s (6 × samples × parameters per epoch) against the
machine's float32 matrix-multiply peak, measured here with the same threads.

* mlp-numba / mlp-numpy: :class:`mlp.trainer.Trainer` with the backend, the
  way ``python -m mlp.train`` trains (uint8 pixels, chunks of batches);
  compilation happens before the clock starts and is reported apart.
* scikit-learn: ``MLPClassifier(hidden_layer_sizes=(100,), activation="logistic",
  solver="sgd", momentum=0, alpha=0, max_iter=1)`` fitted on float32 pixels.
* PyTorch (if installed), two ways, eager mode, float32 tensors prepared
  before the clock starts, ``torch.set_num_threads`` = the thread count:

  - ``torch``: ``nn.Sequential(Linear, Sigmoid, …, Linear)``,
    ``CrossEntropyLoss``, ``optim.SGD`` — the usual loop;
  - ``torch-raw``: the same arithmetic on raw tensors (weights with
    ``requires_grad``, ``addmm``, ``cross_entropy``, ``loss.backward()``, an
    in-place ``sub_`` under ``no_grad``), which skips the module and
    optimizer machinery and is markedly faster at small batches.

  The speed-up "vs PyTorch" in the table is taken against the faster of the two.

``--sizes`` changes the network (default 784 100 10; e.g. ``--sizes 784 1024
1024 10`` for a deeper net whose dense layers are where BLAS and oneDNN are
strong); every hidden layer is sigmoid.

Each epoch runs in a fresh child process (data loading and compilation or
cache loading happen before its clock starts), so no framework's thread
pools or OpenMP runtime (PyTorch brings its own) run beside another's.
Before its clock starts, every framework also trains a throwaway copy of the
network for ``--warmup`` seconds (default 0.5) in that process: the first
moments of work after a quiet spell can run markedly slower while the cores
ramp up (measured: docs/performance.md), and that cost would otherwise be
charged to whoever happens to be measured first in a fresh process. The
table therefore reports steady-state seconds per epoch; a cold first epoch
of ``python -m mlp.train`` can be slower.

Usage (from the project root)::

    python benchmarks/bench_speed.py [--batch-sizes 10 32 128 1024] [--runs 3]
                                     [--sizes 784 100 10] [--threads N]
                                     [--skip sklearn torch torch-raw] [--max-seconds 30]
                                     [--warmup 0.5] [--out FILE]
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from mlp.backends import get_backend
from mlp.network import Network
from mlp.optimizers import SGD
from mlp.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

LR = 0.1
FRAMEWORKS = ("mlp-numba", "mlp-numpy", "sklearn", "torch", "torch-raw")
TORCH = ("torch", "torch-raw")


def mlp_epoch(backend_name, data, sizes, batch_size, seed, budget, warmup):
    """(seconds per epoch, fraction of the epoch run, compile seconds, CPU seconds) with mlp.

    The CPU seconds are the process's (every thread's) over the same epoch:
    on a machine that other programs keep busy they vary less than the wall
    clock (``bench_ab.py --cpu``).

    An epoch that would take longer than ``budget`` seconds is stopped at a
    chunk boundary and its time extrapolated from the fraction done. First a
    throwaway network trains for ``warmup`` seconds (compilation included).
    """
    backend = get_backend(backend_name)

    def trainer_for(net, limit):
        trainer = Trainer(net, SGD(LR), backend, batch_size, seed)
        trainer.on_chunk = lambda tr: tr.epoch_seconds > limit and tr.request_stop()
        return trainer
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < warmup:
        trainer_for(Network(sizes, "sigmoid", "ce", seed=seed + 1), warmup).fit(
            data.X_train, data.y_train, 1, data.scale)
    net = Network(sizes, "sigmoid", "ce", seed=seed)
    trainer = trainer_for(net, budget)
    cpu = time.process_time()
    if trainer.fit(data.X_train, data.y_train, 1, data.scale):
        return (trainer.history[0]["seconds"], 1.0, trainer.compile_seconds,
                time.process_time() - cpu)
    done = min(1.0, trainer.position * batch_size / data.X_train.shape[0])
    return (trainer.epoch_seconds / done, done, trainer.compile_seconds,
            (time.process_time() - cpu) / done)


def sklearn_epoch(X, y, sizes, batch_size, seed, warmup):
    """Seconds of one epoch of scikit-learn's MLPClassifier with the same network and SGD.

    First a throwaway classifier takes ``partial_fit`` steps for ``warmup`` seconds.
    """
    # scikit-learn only in its own worker: it loads its own OpenMP runtime (libgomp)
    from sklearn import exceptions, neural_network

    def classifier():
        return neural_network.MLPClassifier(
            hidden_layer_sizes=tuple(sizes[1:-1]), activation="logistic", solver="sgd", alpha=0.0,
            batch_size=batch_size, learning_rate_init=LR, momentum=0.0, nesterovs_momentum=False,
            max_iter=1, shuffle=True, random_state=seed, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", exceptions.ConvergenceWarning)
        scratch, classes, t0 = classifier(), np.unique(y), time.perf_counter()
        while time.perf_counter() - t0 < warmup:
            scratch.partial_fit(X[:4096], y[:4096], classes=classes)
        clf = classifier()
        return common.timed(lambda: clf.fit(X, y))


def torch_epoch(X, y, sizes, batch_size, seed, budget, warmup, raw=False):
    """(seconds per epoch, fraction run) of the same network and SGD in eager PyTorch on the CPU.

    ``raw`` trains raw tensors instead of ``nn.Sequential`` and ``optim.SGD``
    (see the module docstring). An epoch that would take longer than
    ``budget`` seconds is stopped and its time extrapolated from the fraction
    done. First the model trains for ``warmup`` seconds on a copy of its
    weights, which are then put back.
    """
    import torch  # optional, and only in its own worker (PyTorch brings its own OpenMP runtime)
    nn = torch.nn
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.Sigmoid()]
    model = nn.Sequential(*layers[:-1])
    n = X.shape[0]
    if raw:
        # nn.Linear's initialisation, then plain leaf tensors: W as (in, out) for addmm
        params = [(m.weight.detach().t().contiguous().requires_grad_(),
                   m.bias.detach().clone().requires_grad_())
                  for m in model if isinstance(m, nn.Linear)]

        def step(xb, yb):
            a = xb
            for k, (W, b) in enumerate(params):
                z = torch.addmm(b, a, W)
                a = torch.sigmoid(z) if k < len(params) - 1 else z
            loss = nn.functional.cross_entropy(a, yb)
            loss.backward()
            with torch.no_grad():
                for W, b in params:
                    W.sub_(W.grad, alpha=LR)
                    b.sub_(b.grad, alpha=LR)
                    W.grad = None
                    b.grad = None
        state = lambda: [t.detach().clone() for pair in params for t in pair]  # noqa: E731

        def restore(saved):
            with torch.no_grad():
                for t, v in zip((t for pair in params for t in pair), saved):
                    t.copy_(v)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        loss_fn = nn.CrossEntropyLoss()

        def step(xb, yb):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()
        state = lambda: {k: v.clone() for k, v in model.state_dict().items()}  # noqa: E731
        restore = model.load_state_dict

    def epoch(limit, budget=float("inf")):
        order = torch.randperm(n)
        t0 = time.perf_counter()
        for k, start in enumerate(range(0, min(n, limit), batch_size)):
            idx = order[start:start + batch_size]
            step(X[idx], y[idx])
            if k % 50 == 49 and time.perf_counter() - t0 > budget:
                return time.perf_counter() - t0, (start + batch_size) / n
        return time.perf_counter() - t0, 1.0

    initial = state()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < warmup:   # warm up the allocator, kernels and cores
        epoch(n, warmup)
    restore(initial)   # plain SGD keeps no state besides the weights
    seconds, done = epoch(n, budget)
    return seconds / done, done


def worker(framework, sizes, batch_size, seed, threads, budget, warmup):
    """One epoch of one framework in this (fresh) process; prints a JSON line with the result.

    Every measurement runs in its own process: OpenMP runtimes (PyTorch
    brings its own) and BLAS thread pools of one framework then cannot
    slow down another's threads.
    """
    common.set_threads(threads)
    data = common.load_mnist()
    done, compiled, cpu = 1.0, None, None
    if framework == "mlp-numba":
        seconds, done, compiled, cpu = mlp_epoch("numba", data, sizes, batch_size, seed, budget,
                                                 warmup)
    elif framework == "mlp-numpy":
        seconds, done, _, cpu = mlp_epoch("numpy", data, sizes, batch_size, seed, budget, warmup)
    else:
        X32 = data.X_train.astype(np.float32) * np.float32(data.scale)
        if framework == "sklearn":
            seconds = sklearn_epoch(X32, data.y_train, sizes, batch_size, seed, warmup)
        else:
            import torch  # optional, and only in its own worker (see torch_epoch)
            seconds, done = torch_epoch(torch.from_numpy(X32), torch.from_numpy(data.y_train),
                                        sizes, batch_size, seed, budget, warmup,
                                        raw=framework == "torch-raw")
    print(json.dumps({"seconds": seconds, "done": done, "compile_seconds": compiled,
                      "cpu_seconds": cpu}))


def measure(framework, sizes, batch_size, seed, threads, budget, warmup):
    """Run :func:`worker` in a child process; return its result dict."""
    return common.run_worker(__file__, [framework, ",".join(map(str, sizes)), batch_size, seed,
                                        threads, budget, warmup],
                             f"{framework} at batch {batch_size}")


def run(batch_sizes, runs, threads, skip, budget, warmup=0.5, sizes=tuple(common.SIZES)):
    """Measure everything; return the result dict (also printed as a table)."""
    threads = common.set_threads(threads)
    data = common.load_mnist()
    frameworks = [f for f in FRAMEWORKS if f not in skip]
    notes = []
    if any(f in frameworks for f in TORCH) and not common.torch_available():
        frameworks = [f for f in frameworks if f not in TORCH]
        notes.append("PyTorch is not installed: its column is skipped "
                     "(pip install torch to include it).")
    peak_before = common.matmul_peak()
    print(f"float32 matmul peak with {threads} threads: {peak_before:.1f} GFLOP/s", flush=True)

    results = {}
    for batch_size in batch_sizes:
        times = {f: [] for f in frameworks}
        fractions = {f: [] for f in frameworks}
        compile_seconds = None
        for r in range(runs):
            for f in frameworks:
                if f == "sklearn" and times[f] and min(times[f]) > budget:
                    continue                    # cannot be cut short: one slow run is enough
                m = measure(f, sizes, batch_size, r, threads, budget, warmup)
                seconds, done = m["seconds"], m["done"]
                if f == "mlp-numba" and compile_seconds is None:
                    compile_seconds = m["compile_seconds"]
                times[f].append(seconds)
                fractions[f].append(done)
                part = "" if done == 1.0 else f"  (extrapolated from {done:.0%} of the epoch)"
                print(f"  batch {batch_size:5d}  run {r + 1}  {f:10s} {seconds:8.3f} s{part}",
                      flush=True)
        partial = [f for f in frameworks if any(x < 1.0 for x in fractions[f])]
        if partial:
            notes.append(f"batch {batch_size}: {', '.join(partial)} took over {budget:g} s per "
                         f"epoch; their time is extrapolated from the part of the epoch run.")
        results[batch_size] = {"seconds": times, "fraction_of_epoch_run": fractions,
                               "median": {f: common.median(v) for f, v in times.items()},
                               "numba_compile_seconds": compile_seconds}
    peak_after = common.matmul_peak()
    peak = max(peak_before, peak_after)
    flops = common.epoch_flops(data.X_train.shape[0], sizes)
    for res in results.values():
        med = res["median"]
        if "mlp-numba" in med:
            res["speedup"] = {f: med[f] / med["mlp-numba"] for f in med if f != "mlp-numba"}
            torch_best = [med[f] for f in TORCH if f in med]
            if torch_best:   # the rule: ratios against the faster PyTorch loop
                res["speedup"]["pytorch-best"] = min(torch_best) / med["mlp-numba"]
            res["numba_gflops"] = flops / med["mlp-numba"] / 1e9
            res["numba_fraction_of_peak"] = res["numba_gflops"] / peak
        res["gflops"] = {f: flops / s / 1e9 for f, s in med.items()}
    return {"benchmark": "bench_speed", "network": list(sizes), "activation": "sigmoid",
            "loss": "ce", "optimizer": f"SGD lr={LR}, no momentum", "samples_per_epoch":
            int(data.X_train.shape[0]), "dense_flops_per_epoch": flops, "threads": threads,
            "runs": runs, "warmup_seconds": warmup, "matmul_peak_gflops": peak,
            "matmul_peak_gflops_before_after": [peak_before, peak_after],
            "machine": common.machine(), "notes": notes, "command": " ".join(sys.argv),
            "results": {str(k): v for k, v in results.items()}}


def table(result):
    """The markdown table of a result dict."""
    frameworks = [f for f in FRAMEWORKS
                  if any(f in r["median"] for r in result["results"].values())]
    others = [f for f in frameworks if f != "mlp-numba"]
    if sum(f in TORCH for f in frameworks) == 2:
        others.append("pytorch-best")
    header = (["batch"] + [f"{f} s/epoch" for f in frameworks]
              + [f"speed-up vs {f}" for f in others] + ["mlp-numba GFLOP/s", "% of peak"])
    rows = []
    for batch_size, r in result["results"].items():
        row = [batch_size] + [f"{r['median'][f]:.3f}" for f in frameworks]
        row += [f"{r['speedup'][f]:.1f}x" if f in r["speedup"] else "-" for f in others]
        row += [f"{r['numba_gflops']:.0f}", f"{100 * r['numba_fraction_of_peak']:.0f}%"]
        rows.append(row)
    return common.markdown_table(header, rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[10, 32, 128, 1024])
    p.add_argument("--runs", type=int, default=3, help="epochs per framework and batch size")
    p.add_argument("--sizes", type=int, nargs="+", default=common.SIZES,
                   help="layer widths, input to output (every hidden layer sigmoid)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for everyone (default: all cores)")
    p.add_argument("--skip", nargs="*", default=[], choices=FRAMEWORKS[1:],
                   help="frameworks to leave out")
    p.add_argument("--max-seconds", type=float, default=30.0,
                   help="stop an epoch that takes longer and extrapolate its time "
                        "(scikit-learn cannot be stopped: it runs once)")
    p.add_argument("--warmup", type=float, default=0.5,
                   help="seconds each framework trains a throwaway model before its clock starts")
    p.add_argument("--out", help="JSON file (default: benchmarks/results/speed-<time>.json)")
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        framework, sizes, batch_size, seed, threads, budget, warmup = sys.argv[2:9]
        return worker(framework, [int(w) for w in sizes.split(",")], int(batch_size), int(seed),
                      int(threads), float(budget), float(warmup))
    args = p.parse_args(argv)
    if args.runs < 1 or min(args.batch_sizes) < 1:
        p.error("--runs and --batch-sizes must be positive")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if len(args.sizes) < 3 or args.sizes[0] != 784 or args.sizes[-1] != 10 or min(args.sizes) < 1:
        p.error(f"--sizes must be 784, one or more hidden widths, then 10 (MNIST), "
                f"got {' '.join(map(str, args.sizes))}")
    result = run(args.batch_sizes, args.runs, args.threads, set(args.skip), args.max_seconds,
                 args.warmup, tuple(args.sizes))
    print()
    print(f"MNIST {'-'.join(map(str, args.sizes))} sigmoid/softmax-CE, plain SGD, "
          f"one epoch of 60,000 images, "
          f"{result['threads']} threads; median of {args.runs} runs; float32 matmul peak "
          f"{result['matmul_peak_gflops']:.0f} GFLOP/s")
    print()
    print(table(result))
    for note in result["notes"]:
        print(f"\nnote: {note}")
    compile_s = [r["numba_compile_seconds"] for r in result["results"].values()
                 if r.get("numba_compile_seconds") is not None]
    if compile_s:
        print(f"\nmlp-numba compile (or cache load) before the first epoch: {compile_s[0]:.2f} s, "
              f"not included above")
    print(f"\nwritten to {common.write_json(result, args.out, 'speed')}")


if __name__ == "__main__":
    main()
