"""Evaluate a saved model: ``python -m mlp.evaluate RUN_DIR_OR_MODEL``.

Reloads ``model.npz`` (without pickle), loads the test set of the dataset it
was trained on, and prints the test accuracy and the confusion matrix. For
your own data the model's metadata holds the file's path, its label column
and the seed that drew a held-out test set, so the same test set comes back.
"""

import argparse
import sys

from .backends import get_backend
from .datasets import dataset_argument, load_dataset
from .errors import MLPError
from .io import load_model
from .plots import confusion_matrix, format_confusion
from .trainer import evaluate


def evaluate_model(path, data_dir=None, dataset=None, backend="numpy", label_column=None):
    """(accuracy, confusion counts, dataset) of the model at ``path`` on its test set.

    ``dataset`` and ``label_column`` default to those recorded in the model.
    """
    net, meta = load_model(path, with_meta=True)
    name = dataset or meta.get("dataset", "mnist")
    if label_column is None and name == meta.get("dataset"):
        label_column = meta.get("label_column")  # the recorded column belongs to the recorded file
    data = load_dataset(name, data_dir=data_dir, label_column=label_column,
                        seed=meta.get("split_seed", 0))
    trained_on = meta.get("classes")
    if trained_on is not None and data.classes is not None and list(data.classes) != trained_on:
        # the same number of classes with other names would be scored as if they matched
        raise MLPError(f"{path}: the model was trained on the classes {trained_on[:10]}"
                       f"{' ...' if len(trained_on) > 10 else ''}, but {name} has "
                       f"{list(data.classes[:10])}{' ...' if len(data.classes) > 10 else ''}; "
                       "pass the dataset the model was trained on with --dataset")
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
    p.add_argument("--dataset", type=dataset_argument, metavar="NAME|PATH",
                   help="test set to use: mnist, digits, fashion-mnist, kmnist or the path of "
                        "your own data (default: the one recorded in the model)")
    p.add_argument("--label-column", metavar="NAME|INDEX",
                   help="label column of a .csv given with --dataset (default: the one recorded "
                        "in the model, for the file it was trained on)")
    p.add_argument("--data-dir", help="folder with the files of mnist, fashion-mnist or kmnist")
    p.add_argument("--backend", choices=["numba", "numpy"], default="numpy")
    args = p.parse_args(argv)
    try:
        acc, counts, data = evaluate_model(args.model, args.data_dir, args.dataset, args.backend,
                                           args.label_column)
    except MLPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in data.notes:                      # e.g. that the test set was held out
        print(f"mlp: {note}")
    print(f"{data.name} test set: {data.X_test.shape[0]} images")
    print(format_confusion(counts))
    print(f"test accuracy: {acc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
