"""MNIST accuracy beside published results: ``python benchmarks/bench_accuracy.py``.

Split: the first 50,000 MNIST training images train, the last 10,000 are the
validation set, the 10,000 test images test (Nielsen's split). Pixels are
scaled to [0, 1] as float32. Every row trains on the Numba backend by default
and reports test accuracy and training time (compilation and evaluation
excluded):

``nielsen1``  Nielsen, *Neural Networks and Deep Learning*, ch. 1: 784-30-10
              sigmoid, squared error, SGD η = 3.0, batch 10, 30 epochs.
              The book: best test accuracy 95.42%.
``nielsen3``  ch. 3: 784-100-10 sigmoid, cross-entropy, η = 0.5, batch 10,
              L2 λ = 5.0 with his penalty (λ/2n) Σw², i.e. ``alpha = λ/n =
              1e-4`` here, 60 epochs. The book: 98.04%. His network2.py puts
              sigmoid neurons at the output with the cross-entropy cost
              −Σ[y ln a + (1 − y) ln(1 − a)]: mlp's ``loss="bce"``.
``sklearn``   scikit-learn's MLPClassifier and mlp's, same split, the
              ``nielsen3`` network and hyper-parameters but softmax outputs
              (scikit-learn's only multi-class output; mlp's ``loss="ce"``);
              scikit-learn's alpha is per batch: ``alpha_sklearn = alpha ·
              batch``. Each trains by one ``fit``, side by side.
``best``      mlp's first sigmoid recipe, no data augmentation (see RECIPE):
              784-1024-10, dropout, Nesterov, η falling linearly per epoch.
``relu``      a plain ReLU MLP (no augmentation, convolution or ensemble):
              784-800-800-10, dropout 0.5 (inputs 0.2), max-norm, Nesterov,
              η 0.05 falling linearly per step to 0 over 350 epochs (see
              RELU_ARGS), chosen on the validation split, trained on all
              60,000 images with 2 threads. Srivastava et
              al. 2014 report 1.06% error (98.94%) for 3×1024 ReLU units with
              dropout and max-norm; the target is ≥ 98.9% in ≤ 20 minutes.
``sigmoid``   mlp's best sigmoid recipe (see SIGMOID_ARGS): 784-2048-10,
              dropout 0.5 (inputs 0.2), max-norm, Nesterov, batch 50, η
              falling linearly per step over 300 epochs, chosen on the validation split,
              trained on all 60,000 images. Srivastava et al.: 1.35% error
              (98.65%) for 3×1024 logistic units with dropout; the target is
              ≥ 98.7%.

The ``relu`` and ``sigmoid`` rows train as ``python -m mlp.train`` does, with
its arguments (``--threads``, ``--seed`` and ``--backend`` come from here),
since max-norm and the per-step schedules are the command line's; the others
train :class:`mlp.MLPClassifier` (the scikit-learn estimator) one epoch per
``partial_fit``. The relu and sigmoid rows' hyper-parameters were chosen on
the validation set only (docs/performance.md has
the trials), then the rows retrained on all 60,000 images: the test set
is evaluated after every epoch for the record, never to choose anything.

Every row but ``sklearn`` reports the best test accuracy over the epochs (and
its epoch: Nielsen picks his best epoch by it, so that is the figure to compare
with his) beside the final epoch's test and validation accuracy. Nielsen's first network started
from N(0, 1) weights, mlp's from N(0, 1/fan_in) (his chapter-3 initialisation).

A row can instead train on all 60,000 training images (``train_on="all"`` in
ROWS, or ``--train-on all`` for every row): its recipe chosen on the validation
split as above, then retrained on the 50,000 and the 10,000 validation images
for the same number of epochs, as Srivastava et al. and Hinton et al. report
theirs. There is no validation set then (the table says so), and the
command-line rows train as ``python -m mlp.train ... --validation 0``.

Options: ``--only nielsen1,best`` runs a subset, ``--epochs N`` overrides every
row's epoch count (a quick check), ``--train-on {split,all}`` every row's
training images, ``--threads N`` limits Numba and BLAS.
The table is printed as Markdown; everything (per-epoch curves, settings,
environment) goes to ``benchmarks/results/accuracy-<time>.json``.
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numba
import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SklearnMLP

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlp import train as cli  # noqa: E402
from mlp.backends import BACKENDS, get_backend, set_threads  # noqa: E402
from mlp.data import load_mnist  # noqa: E402
from mlp.errors import MLPError  # noqa: E402
from mlp.estimators import MLPClassifier  # noqa: E402
from mlp.network import Network  # noqa: E402
from mlp.trainer import evaluate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = np.arange(10)

#: Nielsen's chapter 1 and chapter 3 networks, as estimator parameters
NIELSEN1 = dict(hidden_layer_sizes=(30,), activation="logistic", loss="mse", solver="sgd",
                learning_rate_init=3.0, momentum=0.0, batch_size=10, alpha=0.0)
NIELSEN3 = dict(hidden_layer_sizes=(100,), activation="logistic", loss="bce", solver="sgd",
                learning_rate_init=0.5, momentum=0.0, batch_size=10, alpha=5.0 / 50_000)
#: the same with softmax outputs, as scikit-learn's MLPClassifier has them
SKLEARN_SETTINGS = dict(NIELSEN3, loss="ce")

#: mlp's first sigmoid recipe: one wide sigmoid layer regularised by dropout (50% of the
#: hidden units, 20% of the input pixels), Nesterov momentum, and a learning rate that
#: warms up for one epoch and then falls linearly (see warm_then_linear)
RECIPE = dict(hidden_layer_sizes=(1024,), activation="logistic", loss="ce", solver="sgd",
              learning_rate_init=0.1, momentum=0.9, nesterovs_momentum=True,
              batch_size=100, alpha=0.0, dropout=0.5, input_dropout=0.2)
RECIPE_EPOCHS = 150
RECIPE_SETUP = ("784-1024-10, cross-entropy, dropout 0.5 (inputs 0.2), Nesterov μ=0.9, "
                "η=0.1 falling linearly, batch 100")


def warm_then_linear(lr0, epoch, epochs):
    """η of epoch ``epoch`` (0-based) of ``epochs``: η₀/5 for the first, then η₀(1 − epoch/epochs).

    The gentle first epoch keeps the output layer from overshooting while the
    1024 sigmoid units (all near ½ at the start) push its logits the same way.
    """
    return lr0 / 5 if epoch == 0 else lr0 * (1 - epoch / epochs)


#: the rows that train as ``python -m mlp.train`` does (max-norm and per-step schedules are
#: the command line's, not the estimator's): its arguments, less --epochs, --seed and --backend;
#: every setting is spelled out, so that a change of the command line's defaults changes no row
def dropout_recipe(hidden, activation, batch_size, lr, extra=()):
    """The command line of a dropout recipe (Srivastava et al. 2014): dropout 0.5 (inputs 0.2),
    max-norm 3, Nesterov 0.9, η falling linearly per step; the rest as given (strings), and
    ``extra`` arguments at the end."""
    return ["--hidden", *hidden, "--activation", activation, "--batch-size", batch_size,
            "--optimizer", "sgd", "--lr", lr, "--lr-schedule", "linear",
            "--momentum", "0.9", "--nesterov",
            "--dropout", "0.5", "--input-dropout", "0.2", "--max-norm", "3", *extra]


#: the relu row: η falls from 0.05 to 0 over 350 epochs (chosen on validation against 120
#: epochs with and without weight averaging, and 3×1024 units: docs/performance.md, session 9)
RELU_ARGS = dropout_recipe(["800", "800"], "relu", "100", "0.05")
RELU_EPOCHS = 350
SIGMOID_ARGS = dropout_recipe(["2048"], "sigmoid", "50", "0.1")
SIGMOID_EPOCHS = 300


def cli_setup(argv):
    """A row's setup in words, from its command-line arguments."""
    args = cli_args(argv, 10**6, "numba", 0)
    sizes = "-".join(map(str, [784, *args.hidden, 10]))
    drop = " ".join(f"{p:g}" for p in args.dropout or [0.0])
    momentum = f"{'Nesterov ' if args.nesterov else ''}μ={args.momentum:g}"
    return (f"{sizes} {args.activation}, dropout {drop} (inputs {args.input_dropout:g}), "
            f"max-norm {args.max_norm:g}, {momentum}, η={args.lr:g} {args.lr_schedule}, "
            f"batch {args.batch_size}" + averaging_setup(args))


def averaging_setup(args):
    """``--lr-floor`` and ``--average-epochs`` in words (empty without them)."""
    k, floor = args.average_epochs, args.lr_floor
    if floor and k:
        return (f", η held at {floor * args.lr:g} over the last {k} epochs and the model the "
                f"mean of their weights")
    return ((f", η falling to {floor * args.lr:g}" if floor else "")
            + (f", the model the mean of the last {k} epochs' weights" if k else ""))


ROWS = {
    "nielsen1": dict(title="Nielsen ch. 1", setup="784-30-10, squared error, η=3.0, batch 10",
                     published=0.9542, params=NIELSEN1, epochs=30),
    "nielsen3": dict(title="Nielsen ch. 3",
                     setup="784-100-10, sigmoid outputs + cross-entropy, η=0.5, λ=5.0, batch 10",
                     published=0.9804, params=NIELSEN3, epochs=60),
    "sklearn": dict(title="scikit-learn",
                    setup="784-100-10, softmax + cross-entropy, η=0.5, λ=5.0, batch 10",
                    published=None, params=SKLEARN_SETTINGS, epochs=60),
    "best": dict(title="mlp's first sigmoid recipe", setup=RECIPE_SETUP, published=None,
                 target="(target: ≥ 98.50%)",
                 params=RECIPE, epochs=RECIPE_EPOCHS, schedule=warm_then_linear),
    "relu": dict(title="ReLU MLP", argv=RELU_ARGS, epochs=RELU_EPOCHS, train_on="all",
                 published=None,
                 target="98.94% (Srivastava et al. 2014, 3×1024 ReLU, dropout + max-norm); "
                        "target ≥ 98.90%"),
    "sigmoid": dict(title="sigmoid MLP", argv=SIGMOID_ARGS, epochs=SIGMOID_EPOCHS,
                    train_on="all", published=None,
                    target="98.65% (Srivastava et al. 2014, 3×1024 logistic, dropout); "
                           "target ≥ 98.70%"),
}


# ------------------------------------------------------------------------ data
#: what a row trains on: the first 50,000 training images (the last 10,000 validate), or all
#: 60,000 (no validation set: for a recipe already chosen on the validation images)
TRAIN_ON = {"split": "50,000 training images (10,000 validation)",
            "all": "all 60,000 training images (no validation)"}


def load_split(data_dir=None):
    """(X_train, y_train, X_val, y_val, X_test, y_test): 50,000 / 10,000 / 10,000 images.

    Pixels are floats in [0, 1].
    """
    data = load_mnist(data_dir)
    scale = np.float32(data.scale)
    X = data.X_train.astype(np.float32) * scale
    X_test = data.X_test.astype(np.float32) * scale
    return X[:50_000], data.y_train[:50_000], X[50_000:], data.y_train[50_000:], X_test, data.y_test


def training_data(split, train_on):
    """The data a row trains on: ``split`` (:func:`load_split`'s) or, for "all", the 60,000
    training images in their file order (the 50,000 then the 10,000) with an empty validation set.
    """
    if train_on == "split":
        return split
    if train_on != "all":
        raise ValueError(f"train_on must be one of {', '.join(TRAIN_ON)}, got {train_on!r}")
    X, y, X_val, y_val, X_test, y_test = split
    return (np.concatenate([X, X_val]), np.concatenate([y, y_val]), X_val[:0], y_val[:0],
            X_test, y_test)


def score(model, X, y):
    """``model.score(X, y)``, or None for an empty set (a row trained on all 60,000 images)."""
    return model.score(X, y) if len(X) else None


# ------------------------------------------------------------------------ rows
def warm_up(params, X, y, backend):
    """Compile (or load) the backend's kernels for these types, untimed, on a throwaway model."""
    t0 = time.perf_counter()
    MLPClassifier(**params, backend=backend, random_state=0).partial_fit(X[:200], y[:200], CLASSES)
    return time.perf_counter() - t0


def summary(curve, compile_seconds, average=None):
    """The record of a run from its per-epoch ``curve``: final and best test accuracy, seconds.

    ``average``: with ``--average-epochs``, the averaged weights' record (epochs, validation
    and test accuracy), whose accuracies are then the final ones; the last epoch's own stay
    in the curve, and the best epoch is the best of the epochs' own weights.
    """
    best = max(curve, key=lambda r: r["test_accuracy"])
    final = average or curve[-1]
    return {"final_test_accuracy": final["test_accuracy"],
            "final_val_accuracy": final["val_accuracy"],
            "last_epoch_test_accuracy": curve[-1]["test_accuracy"],
            "best_test_accuracy": best["test_accuracy"], "best_epoch": best["epoch"],
            "train_seconds": curve[-1]["seconds"], "compile_seconds": compile_seconds,
            "average": average, "curve": curve}


def log_epoch(record, log):
    val = "—     " if record["val_accuracy"] is None else f"{record['val_accuracy']:.4f}"
    log(f"  epoch {record['epoch']:3d}  loss {record['loss']:.4f}  val {val}"
        f"  test {record['test_accuracy']:.4f}  {record['seconds']:7.1f}s")


def train_by_epochs(params, epochs, data, backend, seed, schedule=None, log=print):
    """Train one epoch per ``partial_fit`` call, evaluating after each; return the record.

    Only the ``partial_fit`` calls are timed. ``schedule(η₀, epoch, epochs)``
    sets the learning rate of each epoch (``set_params`` between calls).
    """
    X, y, X_val, y_val, X_test, y_test = data
    compile_seconds = warm_up(params, X, y, backend)
    clf = MLPClassifier(**params, backend=backend, random_state=seed)
    seconds, curve = 0.0, []
    for epoch in range(epochs):
        if schedule is not None:
            clf.set_params(learning_rate_init=schedule(params["learning_rate_init"], epoch, epochs))
        t0 = time.perf_counter()
        clf.partial_fit(X, y, classes=CLASSES)
        seconds += time.perf_counter() - t0
        record = {"epoch": epoch + 1, "loss": clf.loss_, "seconds": seconds,
                  "val_accuracy": score(clf, X_val, y_val),
                  "test_accuracy": clf.score(X_test, y_test)}
        curve.append(record)
        log_epoch(record, log)
    return summary(curve, compile_seconds)


def cli_args(argv, epochs, backend, seed):
    """``python -m mlp.train``'s parsed arguments for a row's ``argv`` and the bench's options.

    A row's ``--average-epochs K`` shrinks to the epochs there are when ``--epochs`` asks
    for too few (a quick check of a row), where the command line would refuse it: to all
    of them, or with ``--lr-floor`` to all but the first (which the schedule falls over).
    """
    args = cli.parse_args([*argv, "--epochs", str(epochs), "--backend", backend,
                           "--seed", str(seed)])
    args.average_epochs = min(args.average_epochs, args.epochs - (1 if args.lr_floor else 0))
    return args


def train_like_cli(argv, epochs, data, backend, seed, log=print):
    """Train as ``python -m mlp.train *argv`` does, on this split; return the record.

    The network, optimizer, schedule and dropout rates are built by the command
    line's own functions from its parsed arguments, and
    :class:`mlp.trainer.Trainer` runs the epochs, so the row needs what only the
    command line has (max-norm, the per-step schedules, ``--average-epochs``,
    whose mean weights are then the final model, as the command line's
    model.npz). The trainer times the batches only; test accuracy is evaluated
    after each epoch, outside the clock.
    """
    args = cli_args(argv, epochs, backend, seed)
    cli.check_optimizer_args(args)
    X, y, X_val, y_val, X_test, y_test = data
    net = Network([X.shape[1], *args.hidden, len(CLASSES)], args.activation, args.loss,
                  dtype=args.dtype, seed=args.seed)
    runner = get_backend(args.backend)
    trainer = cli.make_trainer(args, net, cli.make_optimizer(args), X.shape[0], runner)
    curve = []

    def after_epoch(tr):
        last = tr.history[-1]
        record = {"epoch": last["epoch"], "loss": last["train_loss"],
                  "seconds": sum(r["seconds"] for r in tr.history),
                  "val_accuracy": last["val_accuracy"],
                  "test_accuracy": evaluate(net, runner, X_test, y_test)[1]}
        curve.append(record)
        log_epoch(record, log)

    trainer.on_epoch = after_epoch
    trainer.fit(X, y, args.epochs, 1.0, X_val, y_val)
    average = None
    if trainer.average:
        average = cli.finish_average(trainer, net, runner, (X_val, y_val), 1.0)
        average["test_accuracy"] = evaluate(net, runner, X_test, y_test)[1]
        val = average["val_accuracy"]
        log(f"  mean of epochs {average['first_epoch']}–{average['last_epoch']}: val "
            f"{'—     ' if val is None else f'{val:.4f}'}  test {average['test_accuracy']:.4f}")
    return summary(curve, trainer.compile_seconds, average)


def sklearn_side_by_side(params, epochs, data, backend, seed, log=print):
    """scikit-learn's MLPClassifier and mlp's with the same settings, each by one ``fit``."""
    X, y, X_val, y_val, X_test, y_test = data
    no_stop = dict(max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1, shuffle=True,
                   random_state=seed)
    theirs = SklearnMLP(hidden_layer_sizes=params["hidden_layer_sizes"],
                        activation=params["activation"], solver="sgd",
                        learning_rate_init=params["learning_rate_init"],
                        momentum=params["momentum"], nesterovs_momentum=False,
                        batch_size=params["batch_size"],
                        alpha=params["alpha"] * params["batch_size"], **no_stop)
    compile_seconds = warm_up(params, X, y, backend)
    ours = MLPClassifier(**params, backend=backend, **no_stop)
    out = {}
    for name, model in (("sklearn", theirs), ("mlp", ours)):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y)
        seconds = time.perf_counter() - t0
        out[name] = {"test_accuracy": model.score(X_test, y_test),
                     "val_accuracy": score(model, X_val, y_val),
                     "train_seconds": seconds, "epochs": model.n_iter_}
        val = out[name]["val_accuracy"]
        log(f"  {name:8s} {model.n_iter_} epochs  test {out[name]['test_accuracy']:.4f}  "
            f"val {'—' if val is None else f'{val:.4f}'}  {seconds:.1f}s")
    out["mlp"]["compile_seconds"] = compile_seconds
    out["speedup"] = out["sklearn"]["train_seconds"] / out["mlp"]["train_seconds"]
    return out


# ------------------------------------------------------------------------ table
def pct(x):
    return "—" if x is None else f"{100 * x:.2f}%"


def table(results):
    """The Markdown table: row | published | measured test accuracy | training time."""
    lines = ["| row | published | mlp measured (test accuracy) | training time |",
             "|---|---|---|---|"]
    for key, res in results.items():
        row = ROWS[key]
        epochs = res["epochs"]
        if key == "sklearn":
            sk, ours = res["sklearn"], res["mlp"]
            lines.append(f"| scikit-learn's MLPClassifier, {row['setup']}, {epochs} epochs | — | "
                         f"{pct(sk['test_accuracy'])} (scikit-learn's) | "
                         f"{sk['train_seconds']:.1f} s |")
            lines.append(f"| mlp.MLPClassifier, the same settings | — | "
                         f"{pct(ours['test_accuracy'])} | {ours['train_seconds']:.1f} s "
                         f"({res['speedup']:.1f}× faster) |")
            continue
        validation = ("no validation: trained on all 60,000" if res.get("train_on") == "all"
                      else f"validation {pct(res['final_val_accuracy'])}")
        average = res.get("average")
        if average:
            validation = (f"the mean of the weights of epochs {average['first_epoch']}–"
                          f"{average['last_epoch']}, the last epoch's own: "
                          f"{pct(res['last_epoch_test_accuracy'])}; {validation}")
        measured = (f"{pct(res['best_test_accuracy'])} best (epoch {res['best_epoch']}), "
                    f"{pct(res['final_test_accuracy'])} final ({validation})")
        published = (pct(row["published"]) + " best" if row["published"] is not None
                     else row.get("target", "—"))
        setup = row["setup"] if "setup" in row else cli_setup(row["argv"])
        lines.append(f"| {row['title']}: {setup}, {epochs} epochs | {published} | "
                     f"{measured} | {res['train_seconds']:.1f} s |")
    return "\n".join(lines)


def environment(args):
    """What the timings depend on."""
    return {"python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "scikit-learn": sklearn.__version__,
            "numba_threads": numba.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "machine": platform.machine(), "backend": args.backend, "seed": args.seed}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(ROWS),
                   help=f"comma-separated rows to run, of: {', '.join(ROWS)}")
    p.add_argument("--epochs", type=int, default=None,
                   help="override every row's epoch count (for a quick check)")
    p.add_argument("--backend", choices=BACKENDS, default="numba")
    p.add_argument("--threads", type=int, default=None, help="Numba and BLAS threads")
    p.add_argument("--train-on", choices=list(TRAIN_ON), default=None,
                   help="train every row on " + "; or ".join(f"{k}: {v}" for k, v in
                                                             TRAIN_ON.items())
                        + " (default: each row's own, 'split' unless the row says 'all')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="MNIST folder (else $MLP_DATA_DIR, ...)")
    p.add_argument("--out", default=None, help="JSON file (default benchmarks/results/...)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    rows = [r.strip() for r in args.only.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown row(s) {', '.join(unknown)}: choose from {', '.join(ROWS)}")
    if args.epochs is not None and args.epochs < 1:
        raise SystemExit("--epochs must be >= 1")
    set_threads(args.threads)
    try:
        split = load_split(args.data_dir)
    except MLPError as e:
        raise SystemExit(f"error: {e}") from None
    results = {}
    for key in rows:
        row = ROWS[key]
        epochs = args.epochs or row["epochs"]
        train_on = args.train_on or row.get("train_on", "split")
        data = training_data(split, train_on)
        print(f"{key}: {row['title']}, {epochs} epochs on {TRAIN_ON[train_on]}", flush=True)
        log = lambda line: print(line, flush=True)  # noqa: E731
        if key == "sklearn":
            results[key] = sklearn_side_by_side(row["params"], epochs, data, args.backend,
                                                args.seed, log)
        elif "argv" in row:
            results[key] = train_like_cli(row["argv"], epochs, data, args.backend, args.seed,
                                          log)
            results[key]["mlp_train_args"] = row["argv"]
        else:
            results[key] = train_by_epochs(row["params"], epochs, data, args.backend, args.seed,
                                           row.get("schedule"), log)
        if "params" in row:
            results[key]["params"] = {k: list(v) if isinstance(v, tuple) else v
                                      for k, v in row["params"].items()}
        results[key]["epochs"] = epochs
        results[key]["train_on"] = train_on
    command = "python benchmarks/bench_accuracy.py " + " ".join(argv if argv is not None
                                                                 else sys.argv[1:])
    env = environment(args)
    print()
    print(table(results))
    print(f"\nTraining time only (compilation and per-epoch evaluation excluded); "
          f"{env['numba_threads']} Numba threads on {env['cpu_count']} CPUs, load average "
          f"{env['load_average'][0]:.1f} at the end.")
    print(f"\ncommand: {command.strip()}")
    for key, res in results.items():
        if "mlp_train_args" in res:
            validation = " --validation 0" if res["train_on"] == "all" else ""
            print(f"{key}: the same training as python -m mlp.train "
                  f"{' '.join(res['mlp_train_args'])} --epochs {res['epochs']} --seed {args.seed}"
                  f"{validation}")
    out = Path(args.out) if args.out else RESULTS / (
        "accuracy-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": command.strip(), "environment": env,
                               "results": results}, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
