"""Evaluate a saved model: ``python -m mlp.evaluate RUN_DIR_OR_MODEL``.

Reloads ``model.npz`` (without pickle), loads the test set of the dataset it
was trained on, and prints the test accuracy and the confusion matrix.
"""

import argparse
import sys

from .backends import get_backend
from .data import load_dataset
from .errors import MLPError
from .io import load_model
from .plots import confusion_matrix, format_confusion
from .trainer import evaluate


def evaluate_model(path, data_dir=None, dataset=None, backend="numpy"):
    """(accuracy, confusion counts, dataset) of the model at ``path`` on its test set."""
    net, meta = load_model(path, with_meta=True)
    name = dataset or meta.get("dataset", "mnist")
    data = load_dataset(name, data_dir=data_dir)
    if net.sizes[0] != data.X_test.shape[1] or net.sizes[-1] != data.n_classes:
        raise MLPError(f"{path}: the model is {'-'.join(map(str, net.sizes))} but the {name} "
                       f"test set has {data.X_test.shape[1]} features and {data.n_classes} "
                       "classes; pass the dataset the model was trained on with --dataset")
    be = get_backend(backend)
    _, acc = evaluate(net, be, data.X_test, data.y_test, data.scale)
    pred = be.predict_output(net, data.X_test, data.scale).argmax(axis=1)
    return acc, confusion_matrix(data.y_test, pred, data.n_classes), data


def main(argv=None):
    """Entry point of ``python -m mlp.evaluate``; returns the exit status."""
    p = argparse.ArgumentParser(
        prog="python -m mlp.evaluate",
        description="Print a saved model's test accuracy and confusion matrix.")
    p.add_argument("model", help="a run folder (holding model.npz) or a model .npz file")
    p.add_argument("--dataset", choices=["mnist", "digits"],
                   help="test set to use (default: the one recorded in the model)")
    p.add_argument("--data-dir", help="folder with the MNIST files")
    p.add_argument("--backend", choices=["numba", "numpy"], default="numpy")
    args = p.parse_args(argv)
    try:
        acc, counts, data = evaluate_model(args.model, args.data_dir, args.dataset, args.backend)
    except MLPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{data.name} test set: {data.X_test.shape[0]} images")
    print(format_confusion(counts))
    print(f"test accuracy: {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
