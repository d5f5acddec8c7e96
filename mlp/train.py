"""Train a network from the command line: ``python -m mlp.train [options]``.

The defaults are a tested recipe: a plain ``python -m mlp.train`` trains a
sigmoid network on MNIST (50,000 training images, 10,000 held out for
validation) and reports its accuracy on the 10,000 test images. Into
``--out`` (default: a new folder under ``runs/``) it writes ``model.npz``,
``history.json``, ``curves.png`` and ``confusion.png``.
"""

import argparse
import copy
import datetime
import os
import re
import signal
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from .activations import ACTIVATIONS
from .averaging import EpochAverage
from .backends import BACKENDS, get_backend, set_threads
from .batches import Extras
from .cli import fraction, nonnegative_float, nonnegative_int, number, positive_float, positive_int
from .data import DOWNLOAD_TIMEOUT, IDX_SETS, SHAPES, download_dataset, find_idx_dir
from .datasets import dataset_argument, load_dataset
from .errors import DataError, DivergenceError, MLPError
from .io import atomic_write_json, load_checkpoint, load_model, save_checkpoint, save_model
from .losses import LOSSES
from .network import Network
from .optimizers import SGD, Adam
from .plots import confusion_matrix, plot_confusion, plot_curves
from .schedules import SCHEDULES, Schedule
from .trainer import Trainer, evaluate

#: the default recipe (see README.md for what it reaches and how fast): of the recipes tried
#: (docs/performance.md, "Choosing the default recipe"), Adam at a rate falling linearly to 0
#: over 5 epochs of batches of 48 is the fastest whose MNIST validation accuracy reached 98%
#: for each of 5 seeds
DEFAULTS = dict(dataset="mnist", hidden=[256], activation="sigmoid", loss="ce",
                optimizer="adam", lr_schedule="linear", epochs=5, batch_size=48, lr=0.01,
                momentum=0.9, nesterov=False, weight_decay=0.0, seed=0, dtype="float32",
                backend="numba")
#: --lr when not given, by --optimizer: Adam's is the default recipe's (with its linear
#: schedule; Kingma & Ba's and scikit-learn's 0.001 learns MNIST slower), SGD's the rate of
#: the earlier default recipe (momentum 0.9, batch 64, 12 epochs at a constant rate)
DEFAULT_LR = {"sgd": 0.2, "adam": DEFAULTS["lr"], "adamw": DEFAULTS["lr"]}
#: the optimizers of --optimizer: adamw is Adam with decoupled weight decay
OPTIMIZER_CHOICES = ("sgd", "adam", "adamw")
#: SGD's own options: refused with --optimizer adam or adamw rather than ignored
SGD_ONLY = ("momentum", "nesterov")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with every option's default shown once.

    argparse appends "(default: X)" to each option's help. An option whose
    default is None (a value worked out at run time, or "not given") says in
    its own help what that means, "(default: ...)", where argparse would add
    a second, meaningless "(default: None)"; and a flag is simply off unless
    given, so "(default: False)" would be noise.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default is None or action.nargs == 0:
            return text
        return super()._get_help_string(action)


def build_parser():
    """The argument parser of ``python -m mlp.train``."""
    d = DEFAULTS
    p = argparse.ArgumentParser(
        prog="python -m mlp.train",
        description="Train a multilayer perceptron by backpropagation.",
        formatter_class=HelpFormatter)
    p.add_argument("--dataset", type=dataset_argument, default=d["dataset"],
                   metavar="NAME|PATH",
                   help="mnist, fashion-mnist or kmnist (each needs its four IDX files), digits "
                        "(scikit-learn's bundled 8x8 digits), or the path of your own data: a "
                        ".npz with arrays X and y (and optionally X_test, y_test), a .csv with a "
                        "label column (see --label-column) or a folder of IDX files "
                        "(train-images-idx3-ubyte, ...; not checksum-verified). Without a test "
                        "set, a stratified 1/6 is held out (with --seed)")
    p.add_argument("--label-column", metavar="NAME|INDEX", default=None,
                   help="the column of a .csv dataset that holds the labels: a header name or a "
                        "0-based index, negative from the end (default: the column named label, "
                        "target, class or y)")
    p.add_argument("--data-dir",
                   help="folder with the files of mnist, fashion-mnist or kmnist (default: "
                        "$MLP_DATA_DIR for MNIST, else data/<dataset>)")
    p.add_argument("--no-download", action="store_true",
                   help="if mnist, fashion-mnist or kmnist is nowhere to be found, fail instead "
                        "of downloading it into data/<dataset>")
    p.add_argument("--timeout", type=positive_float, default=DOWNLOAD_TIMEOUT, metavar="SECONDS",
                   help="when downloading a dataset, how long to wait for a server to connect "
                        "or send more data before trying again or another mirror")
    p.add_argument("--hidden", type=positive_int, nargs="+", default=d["hidden"],
                   metavar="N", help="hidden layer widths")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default=d["activation"],
                   help="activation of the hidden layers")
    # the classification losses: poisson is a regression loss (MLPRegressor(loss="poisson"))
    p.add_argument("--loss", choices=[name for name in LOSSES if name != "poisson"],
                   default=d["loss"],
                   help="ce: softmax + cross-entropy; mse: sigmoid + squared error; "
                        "bce: sigmoid + binary cross-entropy")
    p.add_argument("--epochs", type=positive_int, default=d["epochs"],
                   help="passes over the training set")
    p.add_argument("--batch-size", type=positive_int, default=d["batch_size"],
                   help="images per step (at most the training set's size)")
    p.add_argument("--optimizer", choices=OPTIMIZER_CHOICES, default=d["optimizer"],
                   help="sgd: SGD with --momentum; adam: Adam (Kingma & Ba, with bias "
                        "correction); adamw: Adam whose --weight-decay is decoupled "
                        "(w ← w(1 − η λ) each step) instead of an L2 term of the gradient")
    p.add_argument("--lr", type=positive_float, default=None,
                   help=f"learning rate η (default: {DEFAULT_LR['adam']:g} for adam and "
                        f"adamw, {DEFAULT_LR['sgd']:g} for sgd)")
    p.add_argument("--momentum", type=fraction, default=d["momentum"],
                   help="SGD momentum μ, 0 for plain SGD (use 0 with --loss mse or bce: "
                        "momentum drives sigmoid outputs into saturation)")
    p.add_argument("--nesterov", action="store_true", help="use Nesterov momentum")
    p.add_argument("--beta1", type=fraction, default=0.9, help="Adam's β₁")
    p.add_argument("--beta2", type=fraction, default=0.999, help="Adam's β₂")
    p.add_argument("--eps", type=positive_float, default=1e-8, help="Adam's ε")
    p.add_argument("--weight-decay", type=nonnegative_float, default=d["weight_decay"],
                   help="weight decay λ of the weight matrices: sgd and adam minimise "
                        "loss + (λ/2) Σ‖W‖²; adamw decays the weights directly")
    p.add_argument("--lr-schedule", choices=list(SCHEDULES), default=d["lr_schedule"],
                   help="the learning rate of each step: constant; linear from --lr down to "
                        "0 at the last step; cosine from --lr to 0; step: × --lr-step-gamma "
                        "every --lr-step-every epochs")
    p.add_argument("--lr-floor", type=number(minimum=0.0, below=1.0), default=0.0,
                   metavar="F",
                   help="a falling --lr-schedule falls to F × --lr instead of 0; with "
                        "--average-epochs K it reaches F × --lr where the last K epochs begin "
                        "and stays there over them (stochastic weight averaging's constant "
                        "rate)")
    p.add_argument("--lr-step-every", type=positive_int, default=10, metavar="EPOCHS",
                   help="--lr-schedule step: epochs between two steps down")
    p.add_argument("--lr-step-gamma", type=number(above=0.0, maximum=1.0), default=0.1,
                   metavar="GAMMA",
                   help="--lr-schedule step: factor of each step down")
    p.add_argument("--max-norm", type=nonnegative_float, default=0.0, metavar="C",
                   help="after every step, scale each hidden unit's incoming weight vector "
                        "back to length C if it is longer (Srivastava et al. 2014); 0: off")
    p.add_argument("--early-stopping", type=nonnegative_int, default=0, metavar="N",
                   help="stop when the validation accuracy has not improved for N epochs, "
                        "and keep the weights of its best epoch in model.npz; 0: off")
    p.add_argument("--average-epochs", type=nonnegative_int, default=0, metavar="K",
                   help="end with the mean of the weights after each of the last K epochs "
                        "(stochastic weight averaging): model.npz holds it; 0: off")
    p.add_argument("--dropout", type=fraction, nargs="+", default=None, metavar="P",
                   help="inverted dropout of the hidden units: one rate for every hidden layer, "
                        "or one per hidden layer (default: none)")
    p.add_argument("--input-dropout", type=fraction, default=0.0, metavar="P",
                   help="inverted dropout of the input features")
    p.add_argument("--seed", type=nonnegative_int, default=d["seed"],
                   help="seed of the initial weights and of the order of the images")
    p.add_argument("--dtype", choices=["float32", "float64"], default=d["dtype"],
                   help="floating-point type of the weights and the arithmetic")
    p.add_argument("--backend", choices=list(BACKENDS), default=d["backend"],
                   help="numba: the fast kernels; numpy: the readable reference loop")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="threads for Numba and BLAS (default: all cores)")
    p.add_argument("--validation", type=nonnegative_int, default=None, metavar="N",
                   help="hold out the last N training images for validation, 0 for none "
                        "(default: 10000 for MNIST, a sixth of the training set otherwise)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="train on the first N training images only (default: all of them)")
    p.add_argument("--out", help="output folder (default: a new folder under runs/)")
    p.add_argument("--checkpoint-every", type=nonnegative_int, default=1, metavar="N",
                   help="write checkpoint.npz into --out every N epochs (0: only when interrupted)")
    p.add_argument("--resume", metavar="DIR",
                   help="continue the run whose --out folder is DIR, with its own settings; "
                        "only " + ", ".join(_flag(k) for k in RESUME_OVERRIDES)
                        + " may be given with it (default: start a new run)")
    return p


def parse_args(argv=None, parser=None):
    """Parse ``argv`` (default: sys.argv[1:]); ``args.given`` is the set of options it names.

    Whether an option was given comes from the command line itself, not from
    comparing its value with the default: ``--resume r --epochs 12`` must
    count as given even though 12 is the default.
    """
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    bare = copy.deepcopy(parser)
    for action in bare._actions:          # re-parse with no defaults: only what argv names remains
        action.default = argparse.SUPPRESS
    args.given = set(vars(bare.parse_args(argv)))
    if args.lr is None:
        args.lr = DEFAULT_LR[args.optimizer]
    return args


def _flag(dest):
    """The command-line spelling of the option stored as ``dest``."""
    return "--" + dest.replace("_", "-")


def default_out_dir(dataset):
    """A new, unused folder runs/<date-time>-<dataset>; for a path, the file's name
    without its suffix, in letters, digits, ".", "_" and "-" only."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    if dataset not in SHAPES:  # a path: its slashes must not make folders
        dataset = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(dataset).stem).strip("-.") or "data"
    base = Path("runs") / f"{stamp}-{dataset}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def split_train(data, validation, limit):
    """(X_train, y_train, X_val, y_val): the last ``validation`` images held out, then ``limit``."""
    n = data.X_train.shape[0]
    if validation is None:
        validation = 10000 if n > 20000 else n // 6
    if validation >= n:
        raise MLPError(f"--validation {validation} leaves no training images "
                       f"(the {data.name} training set has {n}); use a smaller value or 0")
    cut = n - validation
    X_tr, y_tr = data.X_train[:cut], data.y_train[:cut]
    X_val, y_val = data.X_train[cut:], data.y_train[cut:]
    if limit is not None:
        X_tr, y_tr = X_tr[:limit], y_tr[:limit]
    return X_tr, y_tr, X_val, y_val


def dropout_rates(args, n_hidden):
    """One dropout rate per weight layer (inputs first) from --input-dropout and --dropout.

    None without dropout; an MLPError if --dropout gives neither one rate nor
    one per hidden layer. Runs saved before these flags existed have none.
    """
    hidden = getattr(args, "dropout", None) or [0.0]
    if len(hidden) == 1:
        hidden = hidden * n_hidden
    if len(hidden) != n_hidden:
        raise MLPError(f"--dropout {' '.join(map(str, args.dropout))}: give one rate for every "
                       f"hidden layer or one per hidden layer ({n_hidden} with --hidden "
                       f"{' '.join(map(str, args.hidden))})")
    rates = [float(getattr(args, "input_dropout", 0.0))] + [float(p) for p in hidden]
    return rates if any(rates) else None


def check_batch_size(batch_size, n_train):
    """Refuse a batch larger than the training set, with an MLPError saying what to use.

    Otherwise each epoch would be a single full-batch step: one step an epoch
    learns next to nothing in the epochs a run has, and the whole set's
    activations are held in memory at once.
    """
    if batch_size > n_train:
        raise MLPError(f"--batch-size {batch_size} is larger than the training set "
                       f"({n_train} images after --validation and --limit): each epoch "
                       f"would be a single step. Use --batch-size {n_train} or less "
                       f"(the default is {DEFAULTS['batch_size']}).")


#: how far above chance an accuracy must be to count as learning: this share of the way from
#: chance to 1 (with 10 balanced classes, 0.1 + 0.045; with two, 0.5 + 0.025)
CHANCE_MARGIN = 0.05


#: a training loss above this share of the first epoch's has stalled (for the chance warning)
STALLED = 0.95


def chance_accuracy(y, n_classes):
    """The accuracy of a network that learnt nothing about the images, on labels ``y``.

    The larger of guessing (1 / n_classes) and always answering the most
    frequent class of ``y``, which a network can learn from the biases alone.
    ``y`` holds labels, or one-hot targets (a row per sample).
    """
    y = np.asarray(y)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    _, counts = np.unique(y, return_counts=True)
    return max(1.0 / n_classes, counts.max() / counts.sum()) if counts.size else 1.0 / n_classes


def at_chance(accuracy, chance):
    """True when ``accuracy`` is less than CHANCE_MARGIN of the way from ``chance`` to 1."""
    return accuracy <= chance + CHANCE_MARGIN * (1.0 - chance)


def chance_warning(what, accuracy, chance, args, when=""):
    """The one-line warning for a run whose ``what`` accuracy is at ``chance``, with advice."""
    advice = [f"a lower --lr (e.g. --lr {args.lr / 10:g})"]
    sgd = getattr(args, "optimizer", "sgd") == "sgd"
    if sgd and args.momentum > 0 and args.loss in ("mse", "bce"):
        # Nielsen's ch. 1 recipe (lr 3.0, batch 10) is plain SGD: with momentum 0.9 its
        # steps are ten times longer and drive the sigmoid outputs where σ' ≈ 0
        advice.insert(0, f"--momentum 0 (momentum {args.momentum:g} drives --loss "
                         f"{args.loss}'s sigmoid outputs into saturation)")
    elif sgd and args.momentum > 0:
        advice.append(f"a lower --momentum than {args.momentum:g}")
    advice.append("more --epochs if the loss is still falling")
    return (f"warning: {what} accuracy {accuracy:.4f}{when} is at chance level (guessing, or "
            f"always answering the most frequent class, scores {chance:.4f}): the network "
            f"is not learning. Try " + ", ".join(advice[:-1]) + " or " + advice[-1] + ".")


def run_title(config, epochs, test_accuracy):
    """The title of curves.png: the run's settings and its test accuracy."""
    momentum = f", momentum {config['momentum']:g}" if config["momentum"] else ""
    if momentum and config.get("nesterov"):
        momentum += " (Nesterov)"
    if config.get("optimizer", "sgd") != "sgd":
        momentum = f" ({config['optimizer']})"
    if config.get("lr_schedule", "constant") != "constant":
        momentum += f", {config['lr_schedule']} schedule"
    decay = f", weight decay {config['weight_decay']:g}" if config.get("weight_decay") else ""
    return (f"{'-'.join(map(str, config['sizes']))} {config['activation']}/{config['loss']} "
            f"on {config['dataset']}: lr {config['lr']:g}{momentum}{decay}, "
            f"batch {config['batch_size']}, {epochs} epochs\n"
            f"test accuracy {test_accuracy:.4f}")


def find_data(args, say):
    """The folder to load the dataset from (None: the loader's default).

    MNIST, Fashion-MNIST or KMNIST found nowhere is downloaded into
    data/<dataset>, but only when the user named no folder (no --data-dir,
    and for MNIST no $MLP_DATA_DIR) and did not pass --no-download; offline,
    the downloader's error says what to do. With your own data (a path),
    --data-dir has no meaning and is refused rather than ignored.
    """
    label_column = getattr(args, "label_column", None)
    if args.dataset in SHAPES:  # a dataset known by name
        if label_column is not None:
            raise MLPError(f"--label-column {label_column} given with --dataset {args.dataset}, "
                           "which has its own labels: --label-column is for a .csv given as "
                           "--dataset. Leave it out.")
    elif args.data_dir:
        raise MLPError(f"--data-dir {args.data_dir} given with --dataset {args.dataset}: "
                       "--data-dir is for mnist, fashion-mnist and kmnist; with your own data "
                       "the path given to --dataset says where they are. Leave --data-dir out.")
    if args.dataset not in IDX_SETS:
        return args.data_dir
    try:
        return find_idx_dir(args.dataset, args.data_dir)
    except DataError:
        named = args.data_dir or (args.dataset == "mnist" and os.environ.get("MLP_DATA_DIR"))
        if named or getattr(args, "no_download", False):
            raise
    dest = f"data/{args.dataset}"
    say(f"{IDX_SETS[args.dataset].title} not found: downloading it into {dest} "
        "(pass --no-download to refuse)")
    # getattr: a checkpoint written before --timeout existed has no such setting
    download_dataset(args.dataset, dest, timeout=getattr(args, "timeout", DOWNLOAD_TIMEOUT))
    return dest


#: settings a resumed run may change (where the data are, how long and on how many threads it
#: trains, how often it saves); everything else comes from the checkpoint
RESUME_OVERRIDES = ("epochs", "data_dir", "no_download", "timeout", "threads",
                    "checkpoint_every")


#: options added after checkpoints were first written, with the value older runs had
SETTINGS_SINCE = dict(optimizer="sgd", beta1=0.9, beta2=0.999, eps=1e-8, lr_schedule="constant",
                      lr_step_every=10, lr_step_gamma=0.1, max_norm=0.0, early_stopping=0,
                      average_epochs=0, lr_floor=0.0)


def check_optimizer_args(args):
    """Refuse SGD's options given with Adam, with an MLPError saying what Adam has instead."""
    if args.optimizer == "sgd":
        return
    given = [k for k in SGD_ONLY if k in getattr(args, "given", ())]
    if given and "optimizer" not in args.given:      # the default optimizer, not the user's
        raise MLPError(f"{', '.join(_flag(k) for k in given)} belong(s) to --optimizer sgd, "
                       f"and the default optimizer is {args.optimizer}: add --optimizer sgd "
                       f"(its default --lr is {DEFAULT_LR['sgd']:g}), or leave them out.")
    if given:
        raise MLPError(f"{', '.join(_flag(k) for k in given)} belong(s) to --optimizer sgd; "
                       f"--optimizer {args.optimizer} has --beta1, --beta2 and --eps instead. "
                       "Leave them out.")


def check_average_args(args):
    """Refuse an --average-epochs (or --lr-floor) that cannot be formed, with an MLPError."""
    if getattr(args, "lr_floor", 0.0) and args.lr_schedule == "constant":
        raise MLPError(f"--lr-floor {args.lr_floor:g} is where a falling --lr-schedule stops, "
                       "and --lr-schedule constant never falls: give --lr-schedule linear (or "
                       "cosine, step), or leave --lr-floor out")
    k = getattr(args, "average_epochs", 0)
    if not k:
        return
    if k > args.epochs:
        raise MLPError(f"--average-epochs {k} averages the last {k} epochs, and the run has "
                       f"--epochs {args.epochs}: give --average-epochs at most {args.epochs}")
    if k == args.epochs and getattr(args, "lr_floor", 0.0):
        raise MLPError(f"--lr-floor with --average-epochs {k} holds the rate at the floor over "
                       f"the last {k} epochs, and the run has --epochs {args.epochs}: nothing "
                       f"would be left for the --lr-schedule; average fewer epochs")
    if args.early_stopping:
        raise MLPError(f"--average-epochs {k} and --early-stopping {args.early_stopping} each "
                       "choose the weights model.npz ends with: give one of them")


def make_optimizer(args):
    """The optimizer ``args`` ask for (without schedule: see :func:`make_schedule`)."""
    if args.optimizer == "sgd":
        return SGD(args.lr, args.momentum, args.nesterov, args.weight_decay, args.max_norm)
    return Adam(args.lr, args.beta1, args.beta2, args.eps, args.weight_decay,
                decoupled=args.optimizer == "adamw", max_norm=args.max_norm)


def make_schedule(args, n_train):
    """The --lr-schedule over the run's --epochs (None for constant: the rate never changes)."""
    if args.lr_schedule == "constant":
        return None
    per_epoch = -(-n_train // args.batch_size)
    floor = getattr(args, "lr_floor", 0.0)
    flat = getattr(args, "average_epochs", 0) * per_epoch if floor else 0
    return Schedule(args.lr_schedule, args.epochs * per_epoch, per_epoch, args.lr_step_every,
                    args.lr_step_gamma, floor, flat)


def make_trainer(args, net, opt, n_train, backend, **options):
    """The :class:`Trainer` that ``args`` describe for ``net`` and ``opt``.

    Sets ``opt``'s schedule over ``n_train`` training rows and the dropout
    rates; ``options`` go to :class:`Trainer` (progress, log). Also used by
    the benchmarks, so that they train exactly as this command does.
    """
    opt.schedule = make_schedule(args, n_train)
    trainer = Trainer(net, opt, backend, args.batch_size, args.seed, **options)
    trainer.extras = Extras(dropout=dropout_rates(args, len(args.hidden)), seed=args.seed)
    if getattr(args, "average_epochs", 0):
        trainer.average = EpochAverage(args.average_epochs, args.epochs)
    return trainer


def finish_average(trainer, net, backend, validation, scale):
    """Put the mean of the last epochs' weights into ``net``; returns history.json's record.

    ``validation``: (X_val, y_val), evaluated on the averaged weights if not empty.
    """
    average = trainer.average
    record = {"epochs": average.k, "first_epoch": average.first_epoch,
              "last_epoch": average.epochs, "val_loss": None, "val_accuracy": None}
    average.apply(net)
    X_val, y_val = validation
    if len(y_val):
        record["val_loss"], record["val_accuracy"] = evaluate(net, backend, X_val, y_val, scale)
    return record


def early_stopping_state(history, patience):
    """(best epoch, whether to stop) under --early-stopping ``patience``, from the epochs' records.

    The best epoch is the first with the highest validation accuracy (a tie is
    no improvement); stop once ``patience`` epochs have passed since it.
    """
    accs = [record["val_accuracy"] for record in history]
    if not accs:
        return None, False
    best = int(np.argmax(accs)) + 1
    return best, patience > 0 and len(accs) - best >= patience


def resume_args(args):
    """The run's own settings from ``args.resume``'s checkpoint, with the allowed overrides.

    ``args.given`` (from :func:`parse_args`) names the options on the command
    line; one that a resumed run cannot change is refused with an MLPError.
    """
    given = getattr(args, "given", None)
    if given is None:
        raise TypeError("resume_args needs args from mlp.train.parse_args (args.given)")
    refused = sorted(given - set(RESUME_OVERRIDES) - {"resume"})
    if refused:
        raise MLPError(f"--resume continues {args.resume} with its own settings: "
                       f"{', '.join(_flag(k) for k in refused)} cannot change there. Only "
                       f"{', '.join(_flag(k) for k in RESUME_OVERRIDES)} may be given with "
                       "--resume; start a new run (--out) to change the others")
    ckpt = load_checkpoint(Path(args.resume) / "checkpoint.npz")
    # a checkpoint written before an option existed ran with that option's default
    saved = {**SETTINGS_SINCE, **ckpt["config"]["args"]}
    saved.update({key: getattr(args, key) for key in RESUME_OVERRIDES if key in given})
    saved.update(resume=args.resume, out=args.resume, given=given)
    return argparse.Namespace(**saved), ckpt


class StopOnSignal:
    """While active, SIGINT and SIGTERM ask the trainer to stop at the next batch boundary."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.signum = None
        self.previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None:          # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum
        self.trainer.request_stop()

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def compile_ahead(args, ckpt=None):
    """Load the numba backend's kernels for this run (0 s for numpy); returns seconds.

    Called before the data are loaded and before this process imports
    Numba: on a cold Numba cache, short-lived child processes compile the
    kernels (:mod:`mlp.precompile`), so that this process never holds the
    compiler's memory, and never together with the data.
    """
    if args.backend != "numba" or not (ckpt or args.dataset in SHAPES):
        # numpy: nothing to compile. Your own data (a path): the network's shape is known only
        # once the file is read, so the kernels compile in this process on first use instead.
        return 0.0
    from . import precompile  # the Numba path's module: a numpy run never imports it (nor Numba)
    if ckpt:
        net, opt = ckpt["net"], ckpt["optimizer"]
        spec = precompile.make_spec(net.sizes, net.activation, net.loss.name, net.loss.output,
                                    net.dtype, opt.name, args.batch_size)
    else:
        n_in, n_out = SHAPES[args.dataset]
        spec = precompile.make_spec([n_in, *args.hidden, n_out], args.activation, args.loss,
                                    None, args.dtype, "sgd" if args.optimizer == "sgd" else "adam",
                                    args.batch_size)                 # adamw is an Adam
    return precompile.compile_ahead(spec, threads=args.threads)


def use_threads(backend, threads):
    """Hold the run to ``threads`` threads (None: as many as there are); returns how many it uses.

    The numba backend: Numba's parallel loops and BLAS (:func:`mlp.backends.set_threads`).
    The numpy backend's only threads are BLAS's, limited here without importing Numba.
    """
    if backend == "numba":
        import numba  # only on the numba path: `--backend numpy` never loads Numba
        set_threads(threads)
        return numba.get_num_threads()
    if threads is not None:
        threadpool_limits(limits=threads)
    blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    return max(blas) if blas else (os.cpu_count() or 1)


def run(args, stdout=None):
    """Train as ``args`` (from :func:`parse_args`) says, write the run's files.

    Prints to ``stdout`` (default: sys.stdout at the time of the call).
    Returns (history dict, exit status).
    """
    def say(line):
        print(line, file=stdout or sys.stdout, flush=True)

    ckpt = None
    if args.resume:
        args, ckpt = resume_args(args)
    check_optimizer_args(args)
    check_average_args(args)
    dropout_rates(args, len(args.hidden))        # a bad --dropout stops the run before anything
    data_dir = find_data(args, say)              # a missing dataset stops the run before compiling
    compile_seconds = compile_ahead(args, ckpt)  # before Numba is imported: see there
    threads = use_threads(args.backend, args.threads)
    backend = get_backend(args.backend)
    label_column = getattr(args, "label_column", None)  # absent from older checkpoints
    data = load_dataset(args.dataset, data_dir=data_dir, label_column=label_column,
                        seed=args.seed)
    for note in data.notes:                      # how the data were read, one line each
        say(f"mlp: {note}")
    X_tr, y_tr, X_val, y_val = split_train(data, args.validation, args.limit)
    check_batch_size(args.batch_size, X_tr.shape[0])
    sizes = [X_tr.shape[1], *args.hidden, data.n_classes]
    if ckpt:
        net, opt = ckpt["net"], ckpt["optimizer"]
        if net.sizes != sizes:
            raise MLPError(f"{args.resume}: the checkpoint's network is {net.sizes}, "
                           f"but the data give {sizes}")
    else:
        net = Network(sizes, args.activation, args.loss, dtype=args.dtype, seed=args.seed)
        opt = make_optimizer(args)
    if args.early_stopping and not len(y_val):
        raise MLPError(f"--early-stopping {args.early_stopping} watches the validation "
                       "accuracy, and --validation 0 leaves none: give --validation N > 0")
    out = Path(args.out) if args.out else default_out_dir(args.dataset)
    out.mkdir(parents=True, exist_ok=True)

    config = {k: v for k, v in vars(args).items() if k not in ("resume", "given")}
    config.update(sizes=sizes, threads=threads,
                  n_train=int(X_tr.shape[0]), n_validation=int(X_val.shape[0]))
    # what mlp.evaluate needs to load the same test set again: for a path, the absolute path,
    # the label column, and the seed that drew a held-out test set
    meta = {"dataset": data.name, "scale": data.scale, "image_shape": list(data.image_shape),
            "classes": list(data.classes) if data.classes is not None else None,
            "label_column": label_column, "split_seed": args.seed}
    trainer = make_trainer(args, net, opt, X_tr.shape[0], backend,
                           progress=sys.stderr.isatty(), log=say)
    if ckpt:
        trainer.load_state(ckpt["trainer"])
        if trainer.average:
            try:
                trainer.average.load_state(ckpt["trainer"]["average"], ckpt["sums"],
                                           trainer.epoch)
            except ValueError as e:
                raise MLPError(f"{args.resume}: {e}") from None
        say(f"mlp: resuming {out} at epoch {trainer.epoch + 1}, batch {trainer.position + 1}")
    else:
        say(f"mlp: {'-'.join(map(str, sizes))} {args.activation}/{args.loss} on {data.name} "
            f"({X_tr.shape[0]} train, {X_val.shape[0]} validation, {data.X_test.shape[0]} test), "
            f"backend {backend.name}, {config['threads']} threads, output in {out}")

    def checkpoint(tr):
        save_checkpoint(out / "checkpoint.npz", net, opt, tr.state(), {"args": config}, meta,
                        sums=tr.average.sums if tr.average else None)

    def checkpoint_on_schedule(tr):
        if args.checkpoint_every and tr.epoch % args.checkpoint_every == 0:
            checkpoint(tr)

    # A run stuck at chance (e.g. saturated sigmoid outputs) otherwise trains on silently
    # and exits with status 0: say so, once. Not for a first epoch that is still at chance
    # while its loss falls (small data sets take several epochs to get going): only once the
    # loss has stalled (within STALLED of the first epoch's), or at the last epoch.
    warned = []

    def warn_once(what, accuracy, chance, when=""):
        if not warned and at_chance(accuracy, chance):
            warned.append(what)
            print(chance_warning(what, accuracy, chance, args, when), file=sys.stderr,
                  flush=True)

    val_chance = chance_accuracy(y_val, data.n_classes) if len(y_val) else None

    stopped_early = []

    def keep_best(tr):
        """--early-stopping: save the best epoch's weights, and stop once it is too far back."""
        best, stop = early_stopping_state(tr.history, args.early_stopping)
        if best == tr.epoch:
            save_model(out / BEST_MODEL, net, meta)
        if stop and not stopped_early:
            stopped_early.append(tr.epoch)
            say(f"early stopping: no better validation accuracy for {args.early_stopping} "
                f"epochs since epoch {best}; keeping epoch {best}'s weights")
            tr.request_stop()

    def after_epoch(tr):
        if args.early_stopping:
            keep_best(tr)                    # before the checkpoint, which then agrees with it
        checkpoint_on_schedule(tr)
        losses = [record["train_loss"] for record in tr.history]
        stalled = len(losses) >= 2 and losses[-1] > STALLED * losses[0]
        if val_chance is not None and (stalled or tr.epoch >= args.epochs):
            warn_once("validation", tr.history[-1]["val_accuracy"], val_chance,
                      f" after epoch {tr.epoch}")

    trainer.on_epoch = after_epoch

    history = {"config": config, "epochs": trainer.history, "test_accuracy": None,
               "compile_seconds": 0.0}
    status = 0
    if args.early_stopping and early_stopping_state(trainer.history, args.early_stopping)[1]:
        stopped_early.append(trainer.epoch)      # resumed after it stopped: train no further
        trainer.request_stop()
    with StopOnSignal(trainer) as stopper:
        try:
            finished = trainer.fit(X_tr, y_tr, args.epochs, data.scale, X_val, y_val)
        except DivergenceError as e:
            say(f"error: {e}")
            history["diverged"] = str(e)
            finished, status = True, 1
    if stopped_early and stopper.signum is None:
        finished = True
    if not finished:
        checkpoint(trainer)
        say(f"interrupted at epoch {trainer.epoch + 1}, batch {trainer.position}: "
            f"checkpoint saved in {out / 'checkpoint.npz'}")
        say(f"resume with: python -m mlp.train --resume {out}")
        return history, 128 + (stopper.signum or 2)
    history["compile_seconds"] = compile_seconds + trainer.compile_seconds
    if args.early_stopping:
        best, _ = early_stopping_state(trainer.history, args.early_stopping)
        history["early_stopping"] = {"patience": args.early_stopping, "metric": "val_accuracy",
                                     "best_epoch": best,
                                     "stopped_after_epoch": stopped_early[0] if stopped_early
                                     else None}
        if best is not None:
            _load_weights(net, out / BEST_MODEL)
    if trainer.average and trainer.average.complete and not status:
        history["average"] = finish_average(trainer, net, backend, (X_val, y_val), data.scale)
        val = history["average"]["val_accuracy"]
        say(f"model.npz: the mean of the weights after epochs {trainer.average.first_epoch}–"
            f"{trainer.average.epochs}" + ("" if val is None else
                                          f", validation accuracy {val:.4f}"))
    save_model(out / "model.npz", net, meta)
    _, test_acc = evaluate(net, backend, data.X_test, data.y_test, data.scale)
    history["test_accuracy"] = test_acc
    if val_chance is None:        # --validation 0: the test set is the only measure there is
        warn_once("test", test_acc, chance_accuracy(data.y_test, data.n_classes))
    history["train_seconds"] = sum(r["seconds"] for r in trainer.history)
    atomic_write_json(out / "history.json", history)
    pred = backend.predict_output(net, data.X_test, data.scale).argmax(axis=1)
    if trainer.history:
        plot_curves(trainer.history, out / "curves.png",
                    title=run_title(config, len(trainer.history), test_acc))
    plot_confusion(confusion_matrix(data.y_test, pred, data.n_classes), out / "confusion.png")
    say(f"training time {history['train_seconds']:.2f}s "
        f"(+ {history['compile_seconds']:.2f}s compiling)")
    say(f"test accuracy: {test_acc:.4f}")
    return history, status


#: --early-stopping: the best epoch's weights, kept beside the checkpoint until the run ends
BEST_MODEL = "best.npz"


def _load_weights(net, path):
    """Copy the weights and biases of the model file ``path`` into ``net``."""
    for p, q in zip(net.params(), load_model(path).params()):
        p[...] = q


def main(argv=None):
    """Entry point of ``python -m mlp.train``; returns the exit status."""
    args = parse_args(argv)
    try:
        _, status = run(args)
    except MLPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:       # before training (e.g. compiling), or a second Ctrl-C
        print("interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
