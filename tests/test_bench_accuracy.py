"""benchmarks/bench_accuracy.py: its rows that train "as python -m mlp.train does" really do."""

import importlib.util
from pathlib import Path

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


def test_a_command_line_row_trains_exactly_as_the_command_line(bench, mnist_dir, tmp_path):
    """The bench's epochs against ``python -m mlp.train``'s on the same 2,000 images.

    The command line reads uint8 pixels and scales each batch, the bench hands
    float pixels scaled once: the same float32 products, so every epoch's loss
    and validation accuracy, and the final test accuracy, must agree exactly.
    """
    argv = ["--hidden", "32", "16", "--activation", "relu", "--batch-size", "50",
            "--optimizer", "sgd", "--lr", "0.2",
            "--lr-schedule", "linear", "--momentum", "0.9", "--nesterov", "--dropout", "0.5",
            "--input-dropout", "0.2", "--max-norm", "1.5"]
    X, y, X_val, y_val, X_test, y_test = bench.load_split(mnist_dir)
    data = (X[:2000], y[:2000], X_val, y_val, X_test, y_test)
    ours = bench.train_like_cli(argv, 2, data, "numpy", 5, log=lambda line: None)
    args = parse_args([*argv, "--epochs", "2", "--seed", "5", "--backend", "numpy",
                       "--limit", "2000", "--data-dir", str(mnist_dir), "--no-download",
                       "--out", str(tmp_path / "run"), "--checkpoint-every", "0"])
    with open(tmp_path / "log.txt", "w") as log:
        theirs, status = run(args, stdout=log)
    assert status == 0
    assert [r["loss"] for r in ours["curve"]] == [r["train_loss"] for r in theirs["epochs"]]
    assert [r["val_accuracy"] for r in ours["curve"]] == [
        r["val_accuracy"] for r in theirs["epochs"]]
    assert ours["final_test_accuracy"] == theirs["test_accuracy"]
    assert ours["curve"][-1]["val_accuracy"] > 0.5          # it learned: the runs say something
