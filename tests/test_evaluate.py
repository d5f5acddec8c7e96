"""The confusion matrix, entry by entry: rows are true classes, columns predictions.

Checked against counts made here by a plain loop over (true, predicted)
pairs, on data whose matrix is not symmetric, so that a transposed matrix
(or a swapped pair of arguments) fails; then through ``mlp.evaluate`` on a
saved model, in its return value and in the table it prints.
"""

import numpy as np
import pytest

from mlp import evaluate
from mlp.backends import NumpyBackend
from mlp.data import load_digits
from mlp.io import save_model
from mlp.network import Network
from mlp.optimizers import SGD
from mlp.plots import confusion_matrix, format_confusion
from mlp.trainer import Trainer


def counted(y_true, y_pred, n_classes):
    """counts[t][p] = how many samples of true class t were predicted as p (a plain loop)."""
    counts = [[0] * n_classes for _ in range(n_classes)]
    for t, p in zip(y_true.tolist(), y_pred.tolist()):
        counts[t][p] += 1
    return np.array(counts)


def table_rows(text):
    """The rows of a printed confusion matrix: {true class: [counts]}."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("true\\pred"))
    rows = {}
    for line in lines[start + 1:]:
        fields = line.split()
        if not fields or not fields[0].isdigit():
            break
        rows[int(fields[0])] = [int(x) for x in fields[1:]]
    return rows


def test_rows_are_true_classes_and_columns_predictions():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 3, 300))
    y_pred[y_true == 3] = 1                     # every 3 predicted as 1, and nothing as 3
    expected = counted(y_true, y_pred, 4)
    assert not np.array_equal(expected, expected.T)
    counts = confusion_matrix(y_true, y_pred, 4)
    np.testing.assert_array_equal(counts, expected)
    assert counts[3, 1] == np.sum(y_true == 3) and counts[1, 3] == 0
    # a class that never occurs keeps its row and column, of zeros
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, 6)[:4, :4], expected)
    assert not confusion_matrix(y_true, y_pred, 6)[4:].any()


def test_the_printed_table_has_true_classes_as_rows():
    counts = np.array([[5, 0, 1], [2, 7, 0], [0, 30, 4]])
    rows = table_rows(format_confusion(counts))
    assert rows == {0: [5, 0, 1], 1: [2, 7, 0], 2: [0, 30, 4]}


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_evaluate_counts_a_saved_models_predictions(digits, tmp_path, capsys):
    """A briefly trained model (so that it errs): evaluate's matrix against our own count."""
    net = Network([64, 10, 10], seed=0)
    Trainer(net, SGD(0.5), NumpyBackend(), batch_size=20, seed=0).fit(
        digits.X_train, digits.y_train, 1, digits.scale)
    save_model(tmp_path / "model.npz", net, {"dataset": "digits"})
    pred = net.predict(digits.X_test.astype(np.float32) * np.float32(digits.scale))
    expected = counted(digits.y_test, pred, 10)
    assert 0.3 < np.trace(expected) / expected.sum() < 0.95     # right often, wrong often
    assert not np.array_equal(expected, expected.T)
    acc, counts, data = evaluate.evaluate_model(tmp_path)
    assert data.name == "digits"
    np.testing.assert_array_equal(counts, expected)
    assert acc == pytest.approx(np.trace(expected) / expected.sum(), abs=1e-12)
    assert evaluate.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert table_rows(out) == {t: expected[t].tolist() for t in range(10)}
