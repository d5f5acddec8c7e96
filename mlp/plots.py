"""Figures of a training run: loss and accuracy curves, and the confusion matrix.

Each figure is built by a function that returns the matplotlib Figure
(``curves_figure``, ``confusion_figure``), so that what is drawn can be
inspected, and written by one that saves it (``plot_curves``, ``plot_confusion``).
"""

import io

import numpy as np

from .io import atomic_write_bytes


def _new_figure(**kwargs):
    # A Figure of its own, not pyplot's: no global backend switch in the caller's process, no
    # figure left registered with pyplot for anyone to close, and savefig still renders PNGs
    # through Agg, without a display. Imported here because matplotlib is slow and large to
    # import and only these figures need it.
    from matplotlib.figure import Figure
    # constrained: the layout makes room for a run's title above the panels' own titles
    return Figure(layout="constrained", **kwargs)


def _save(fig, path):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def confusion_matrix(y_true, y_pred, n_classes):
    """counts[i, j] = number of samples of class i predicted as class j."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return counts


def confusion_rates(counts):
    """Each row of ``counts`` divided by its sum: the share of true class i predicted as j.

    Rows sum to 1; a class without samples gets a row of zeros rather than
    NaN, so that the heat map stays drawable.
    """
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def confusion_errors(counts):
    """The array the confusion heat map colours: :func:`confusion_rates`, diagonal masked.

    A trained network puts ~98% of each class on the diagonal; on a colour
    scale that includes it, every error (a fraction of a percent) is
    near-white. Without the diagonal the scale runs from 0 to the largest
    error rate, and the errors show.
    """
    rates = confusion_rates(counts)
    return np.ma.masked_array(rates, mask=np.eye(rates.shape[0], dtype=bool))


def confusion_figure(counts, title="test confusion matrix"):
    """The confusion matrix as a heat map of error rates per true class, cells annotated
    with their counts; returns the Figure."""
    counts = np.asarray(counts)
    k = counts.shape[0]
    errors = confusion_errors(counts)
    top = float(errors.max()) if errors.count() and errors.max() > 0 else 1.0
    fig = _new_figure(figsize=(6.5, 5.8))
    ax = fig.subplots()
    from matplotlib import colormaps  # see _new_figure for why matplotlib is imported late
    cmap = colormaps["Reds"].with_extremes(bad="0.85")      # the masked diagonal in grey
    im = ax.imshow(errors, cmap=cmap, vmin=0.0, vmax=top)
    for i in range(k):
        for j in range(k):
            if i != j and counts[i, j] == 0:
                continue                    # blank rather than 90 zeros: the errors stand out
            dark = i != j and errors[i, j] > top / 2
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                    fontweight="bold" if i == j else "normal",
                    color="white" if dark else "black")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true")
    ax.set_title(f"{title}\nnumbers: counts; grey: correct; colour: errors", fontsize=10)
    fig.colorbar(im, ax=ax, label="share of the true class predicted as this class")
    return fig


def plot_confusion(counts, path, title="test confusion matrix"):
    """:func:`confusion_figure`, saved as a PNG."""
    _save(confusion_figure(counts, title), path)


def curves_figure(history, title=None):
    """Train/validation loss per epoch, and validation accuracy where there is one.

    ``history`` is the trainer's list of epoch records. Without validation
    (``--validation 0``) there is no accuracy to draw, so the figure has the
    loss panel only rather than an empty one. ``title`` (the run's settings and
    result) goes above the panels. Returns the Figure.
    """
    epochs = [r["epoch"] for r in history]
    val = [(r["epoch"], r["val_loss"], r["val_accuracy"]) for r in history
           if r.get("val_loss") is not None]
    fig = _new_figure(figsize=(10, 4) if val else (5.5, 4))
    axes = fig.subplots(1, 2 if val else 1, squeeze=False)[0]
    ax1 = axes[0]
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    if val:
        ax1.plot([v[0] for v in val], [v[1] for v in val], "o-", label="validation")
        ax2 = axes[1]
        ax2.plot([v[0] for v in val], [v[2] for v in val], "o-", color="C1")
        ax2.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy")
        ax2.grid(alpha=0.3)
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax1.legend()
    from matplotlib.ticker import MaxNLocator  # see _new_figure for why matplotlib is late
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs are whole numbers
    if title:
        fig.suptitle(title)
    return fig


def plot_curves(history, path, title=None):
    """:func:`curves_figure`, saved as a PNG."""
    _save(curves_figure(history, title), path)


def format_confusion(counts):
    """The confusion matrix as text, rows true classes, columns predictions."""
    k = counts.shape[0]
    width = max(5, len(str(counts.max())) + 1)
    lines = ["true\\pred" + "".join(f"{j:>{width}}" for j in range(k))]
    for i in range(k):
        lines.append(f"{i:>9}" + "".join(f"{c:>{width}}" for c in counts[i]))
    return "\n".join(lines)
