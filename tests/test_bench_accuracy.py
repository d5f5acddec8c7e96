"""benchmarks/bench_accuracy.py: its rows that train "as python -m mlp.train does" really do."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from mlp.train import parse_args, run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module (benchmarks/ is no package)."""
    path = ROOT / "benchmarks" / "bench_accuracy.py"
    spec = importlib.util.spec_from_file_location("bench_accuracy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_command_line_row_parses_and_says_its_settings(bench):
    rows = {key: row for key, row in bench.ROWS.items() if "argv" in row}
    assert {"relu", "sigmoid"} <= set(rows)
    for row in rows.values():
        args = bench.cli_args(row["argv"], 7, "numba", 3)
        assert (args.epochs, args.seed, args.backend) == (7, 3, "numba")
        assert args.optimizer == "sgd"          # spelled out: the defaults may change
        setup = bench.cli_setup(row["argv"])
        assert "-".join(map(str, [784, *args.hidden, 10])) in setup
        assert f"max-norm {args.max_norm:g}" in setup and f"η={args.lr:g}" in setup
        k = bench.cli_args(row["argv"], 10**6, "numba", 3).average_epochs     # not cut to 7
        assert (f"last {k} epochs" in setup) == bool(k)
    swa = bench.dropout_recipe(["8"], "relu", "10", "0.05", ["--lr-floor", "0.2",
                                                            "--average-epochs", "4"])
    assert "η held at 0.01 over the last 4 epochs" in bench.cli_setup(swa)
    assert bench.cli_args(swa, 3, "numba", 0).average_epochs == 2     # a quick check: 2 of 3
    assert bench.cli_args(swa[:-4], 3, "numba", 0).average_epochs == 0
    assert bench.cli_args([*swa[:-4], "--average-epochs", "5"], 3, "numba", 0).average_epochs == 3


@pytest.fixture(scope="module")
def split(bench, mnist_dir):
    """load_split's six arrays, loaded once for this file."""
    return bench.load_split(mnist_dir)


@pytest.mark.parametrize("train_on", ["split", "all"])
def test_a_command_line_row_trains_exactly_as_the_command_line(bench, split, mnist_dir, tmp_path,
                                                               train_on):
    """The bench's epochs against ``python -m mlp.train``'s on the same 2,000 images.

    The command line reads uint8 pixels and scales each batch, the bench hands
    float pixels scaled once: the same float32 products, so every epoch's loss
    and validation accuracy, and the final test accuracy, must agree exactly.
    Trained on all images, the bench has no validation set, as the command line
    with ``--validation 0``. On the split, the run ends with the mean of its two
    epochs' weights (``--average-epochs 2``), in the bench as in model.npz.
    """
    argv = ["--hidden", "32", "16", "--activation", "relu", "--batch-size", "50",
            "--optimizer", "sgd", "--lr", "0.2",
            "--lr-schedule", "linear", "--momentum", "0.9", "--nesterov", "--dropout", "0.5",
            "--input-dropout", "0.2", "--max-norm", "1.5"]
    if train_on == "split":
        argv += ["--average-epochs", "2"]
    X, y, X_val, y_val, X_test, y_test = bench.training_data(split, train_on)
    data = (X[:2000], y[:2000], X_val, y_val, X_test, y_test)
    ours = bench.train_like_cli(argv, 2, data, "numpy", 5, log=lambda line: None)
    validation = ["--validation", "0"] if train_on == "all" else []
    args = parse_args([*argv, "--epochs", "2", "--seed", "5", "--backend", "numpy",
                       "--limit", "2000", "--data-dir", str(mnist_dir), "--no-download",
                       "--out", str(tmp_path / "run"), "--checkpoint-every", "0", *validation])
    with open(tmp_path / "log.txt", "w") as log:
        theirs, status = run(args, stdout=log)
    assert status == 0
    assert [r["loss"] for r in ours["curve"]] == [r["train_loss"] for r in theirs["epochs"]]
    assert [r["val_accuracy"] for r in ours["curve"]] == [
        r["val_accuracy"] for r in theirs["epochs"]]
    assert ours["final_test_accuracy"] == theirs["test_accuracy"]
    assert ours["final_test_accuracy"] > 0.5                # it learned: the runs say something
    if train_on == "all":
        assert ours["final_val_accuracy"] is None and ours["average"] is None
    else:
        assert ours["curve"][-1]["val_accuracy"] > 0.5
        assert ours["final_val_accuracy"] == theirs["average"]["val_accuracy"]
        assert ours["final_test_accuracy"] != ours["last_epoch_test_accuracy"]


def test_training_on_all_takes_the_60000_training_images_in_file_order(bench, split):
    """The 50,000 then the 10,000 (load_split's order, the file's), the test set unchanged."""
    X, y, X_val, y_val, X_test, y_test = bench.training_data(split, "all")
    assert X.shape == (60_000, 784) and y.shape == (60_000,)
    np.testing.assert_array_equal(X[:50_000], split[0])
    np.testing.assert_array_equal(X[50_000:], split[2])
    np.testing.assert_array_equal(y, np.concatenate([split[1], split[3]]))
    assert len(X_val) == len(y_val) == 0 and X_val.shape[1] == 784
    assert X_test is split[4] and y_test is split[5]        # the test set is the same
    assert bench.training_data(split, "split") is split
    with pytest.raises(ValueError, match="train_on must be one of split, all, got 'some'"):
        bench.training_data(split, "some")


@pytest.mark.parametrize("option, expected", [([], None), (["--train-on", "all"], "all"),
                                              (["--train-on", "split"], "split")])
def test_main_trains_each_row_on_the_images_it_says(bench, mnist_dir, tmp_path, monkeypatch,
                                                    capsys, option, expected):
    """main hands each row the data its --train-on (else the row's own setting) names.

    The training itself is replaced by a stub that records the rows it is given
    (the equivalence test above trains for real).
    """
    given = {}

    def fake_training(argv, epochs, data, backend, seed, log=print):
        given[tuple(argv)] = (len(data[0]), len(data[2]))
        curve = [{"epoch": 1, "loss": 0.1, "seconds": 1.0, "test_accuracy": 0.5,
                  "val_accuracy": 0.5 if len(data[2]) else None}]
        return bench.summary(curve, 0.0)

    monkeypatch.setattr(bench, "train_like_cli", fake_training)
    rows = [k for k, row in bench.ROWS.items() if "argv" in row]
    bench.main(["--only", ",".join(rows), "--epochs", "1", "--data-dir", str(mnist_dir),
                "--out", str(tmp_path / "a.json"), *option])
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "a.json").read_text())["results"]
    for key in rows:
        train_on = expected or bench.ROWS[key].get("train_on", "split")
        n_val = 0 if train_on == "all" else 10_000
        assert given[tuple(bench.ROWS[key]["argv"])] == (60_000 - n_val, n_val)
        assert results[key]["train_on"] == train_on
        assert (results[key]["final_val_accuracy"] is None) == (train_on == "all")
        assert bench.TRAIN_ON[train_on] in out
    assert ("no validation: trained on all 60,000" in out) == (
        "all" in {results[key]["train_on"] for key in rows})
    assert ("--validation 0" in out) == ("no validation" in out)
