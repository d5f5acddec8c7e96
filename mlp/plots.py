"""Figures of a training run: loss and accuracy curves, and the confusion matrix."""

import io

import numpy as np

from .io import atomic_write_bytes


def _figure():
    import matplotlib  # only when a figure is drawn: importing it is slow and large
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the Agg backend, which needs no display
    return plt


def _save(fig, path):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def confusion_matrix(y_true, y_pred, n_classes):
    """counts[i, j] = number of samples of class i predicted as class j."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return counts


def plot_curves(history, path):
    """Train/validation loss and validation accuracy per epoch, saved as a PNG."""
    plt = _figure()
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    val = [(r["epoch"], r["val_loss"], r["val_accuracy"]) for r in history
           if r.get("val_loss") is not None]
    if val:
        ax1.plot([v[0] for v in val], [v[1] for v in val], "o-", label="validation")
        ax2.plot([v[0] for v in val], [v[2] for v in val], "o-", color="C1")
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax1.legend()
    ax2.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy")
    ax2.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def plot_confusion(counts, path, title="test confusion matrix"):
    """A confusion matrix as an annotated heat map, saved as a PNG."""
    plt = _figure()
    k = counts.shape[0]
    fig, ax = plt.subplots(figsize=(6, 5.5))
    im = ax.imshow(counts, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if counts[i, j] > counts.max() / 2 else "black")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax)
    _save(fig, path)
    plt.close(fig)


def format_confusion(counts):
    """The confusion matrix as text, rows true classes, columns predictions."""
    k = counts.shape[0]
    width = max(5, len(str(counts.max())) + 1)
    lines = ["true\\pred" + "".join(f"{j:>{width}}" for j in range(k))]
    for i in range(k):
        lines.append(f"{i:>9}" + "".join(f"{c:>{width}}" for c in counts[i]))
    return "\n".join(lines)
