"""The figures of a run (mlp.plots): what each draws, checked on the matplotlib Figure."""

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

from mlp import plots

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def labels():
    """True and predicted labels of 10 classes: mostly right, a few errors, one class unseen."""
    rng = np.random.default_rng(0)
    y_true = rng.choice(9, size=2000)                 # class 9 has no samples
    y_pred = np.where(rng.random(2000) < 0.95, y_true, rng.integers(0, 10, 2000))
    return y_true, y_pred


def test_confusion_rates_are_per_true_class(labels):
    y_true, y_pred = labels
    counts = plots.confusion_matrix(y_true, y_pred, 10)
    np.testing.assert_array_equal(counts, sklearn_confusion_matrix(y_true, y_pred,
                                                                   labels=range(10)))
    rates = plots.confusion_rates(counts)
    with np.errstate(invalid="ignore"):               # class 9's row is 0/0 in scikit-learn
        expected = sklearn_confusion_matrix(y_true, y_pred, labels=range(10), normalize="true")
    np.testing.assert_allclose(rates, np.nan_to_num(expected), rtol=1e-12)
    np.testing.assert_allclose(rates[:9].sum(axis=1), 1.0)
    assert not rates[9].any() and np.isfinite(rates).all()


def test_the_heat_map_colours_the_errors_and_annotates_counts(labels):
    y_true, y_pred = labels
    counts = plots.confusion_matrix(y_true, y_pred, 10)
    fig = plots.confusion_figure(counts)
    ax = fig.axes[0]
    (image,) = ax.images
    shown = image.get_array()
    # the diagonal is masked, every other cell is the share of its true class
    assert shown.mask.tolist() == np.eye(10, dtype=bool).tolist()
    off = ~np.eye(10, dtype=bool)
    per_class = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    np.testing.assert_allclose(shown.data[off], per_class[off], rtol=1e-12)
    # the colour scale ends at the largest error rate, not at the diagonal's ~0.95
    assert image.norm.vmin == 0 and image.norm.vmax == pytest.approx(per_class[off].max())
    assert image.norm.vmax < 0.1
    # each non-zero count is written in its cell, the diagonal's too
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
             for t in ax.texts}
    assert texts == {(i, j): str(counts[i, j]) for i in range(10) for j in range(10)
                     if counts[i, j] or i == j}


def test_confusion_errors_mask_only_the_diagonal():
    errors = plots.confusion_errors(np.array([[8, 2], [0, 5]]))
    assert errors.mask.tolist() == [[True, False], [False, True]]
    assert errors[0, 1] == pytest.approx(0.2) and errors[1, 0] == 0


def test_a_perfect_confusion_matrix_still_draws(tmp_path):
    plots.plot_confusion(np.diag([5, 7, 9]), tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG


def test_plot_confusion_writes_a_png(labels, tmp_path):
    y_true, y_pred = labels
    plots.plot_confusion(plots.confusion_matrix(y_true, y_pred, 10), tmp_path / "confusion.png")
    assert (tmp_path / "confusion.png").read_bytes()[:8] == PNG


def _history(validation):
    return [{"epoch": e, "train_loss": 1.0 / e, "seconds": 0.1,
             "val_loss": 1.1 / e if validation else None,
             "val_accuracy": 1 - 0.1 / e if validation else None} for e in (1, 2, 3)]


def test_curves_with_validation_have_a_loss_and_an_accuracy_panel():
    fig = plots.curves_figure(_history(True), title="a run\ntest accuracy 0.9")
    loss, accuracy = fig.axes
    assert [line.get_label() for line in loss.lines] == ["train", "validation"]
    np.testing.assert_allclose(accuracy.lines[0].get_ydata(), [0.9, 0.95, 1 - 0.1 / 3])
    assert fig._suptitle.get_text() == "a run\ntest accuracy 0.9"


def test_curves_without_validation_have_no_empty_accuracy_panel(tmp_path):
    fig = plots.curves_figure(_history(False))
    (loss,) = fig.axes
    assert [line.get_label() for line in loss.lines] == ["train"]
    assert fig._suptitle is None
    plots.plot_curves(_history(False), tmp_path / "curves.png", title="t")
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG
