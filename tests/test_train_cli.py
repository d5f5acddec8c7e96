"""`python -m mlp.train` and `python -m mlp.evaluate` end to end."""

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mlp.backends
import mlp.data
import mlp.train
import mlp.trainer
from mlp.backends import BACKENDS
from mlp.data import load_digits
from mlp.io import load_model
from mlp.train import RESUME_OVERRIDES, build_parser, main, parse_args, run


def _cli(*args, env_extra=None, timeout=300):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _run_inprocess(argv):
    out = io.StringIO()
    history, status = run(parse_args(argv), stdout=out)
    return history, status, out.getvalue()


def test_short_mnist_run_reaches_90_percent(mnist_dir, tmp_path):
    history, status, text = _run_inprocess([
        "--data-dir", str(mnist_dir), "--limit", "10000", "--validation", "2000",
        "--epochs", "2", "--batch-size", "10", "--optimizer", "sgd", "--lr", "0.5", "--momentum",
        "0", "--lr-schedule", "constant", "--hidden", "100",
        "--backend", "numpy", "--out", str(tmp_path)])
    assert status == 0
    assert history["test_accuracy"] >= 0.90            # on all 10,000 test images
    assert f"test accuracy: {history['test_accuracy']:.4f}" in text
    saved = json.loads((tmp_path / "history.json").read_text())
    assert [e["epoch"] for e in saved["epochs"]] == [1, 2]
    assert set(saved["epochs"][0]) == {"epoch", "train_loss", "val_loss", "val_accuracy", "seconds"}
    assert saved["config"]["hidden"] == [100] and "compile_seconds" in saved
    for name in ("model.npz", "curves.png", "confusion.png", "checkpoint.npz"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_default_recipe_through_the_cli(mnist_dir, tmp_path):
    """``python -m mlp.train`` as a newcomer runs it (numba, float32, uint8 MNIST on the sparse
    first layer), shortened with --limit and --epochs."""
    r = _cli("mlp.train", "--data-dir", str(mnist_dir), "--limit", "10000", "--epochs", "1",
             "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "backend numba" in r.stdout
    saved = _history(tmp_path)
    assert saved["config"]["backend"] == "numba" and saved["config"]["dtype"] == "float32"
    assert saved["config"]["sizes"] == [784, 256, 10] and saved["config"]["n_train"] == 10000
    assert saved["test_accuracy"] >= 0.85                # all 10,000 test images; 0.89 seen
    net = load_model(tmp_path)
    assert net.dtype == np.float32


def test_cli_end_to_end_and_evaluate(tmp_path):
    r = _cli("mlp.train", "--dataset", "digits", "--epochs", "3", "--hidden", "32",
             "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9", "--batch-size", "10",
             "--backend", "numpy", "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sum(line.startswith("epoch") for line in lines) == 3
    acc = float(lines[-1].removeprefix("test accuracy: "))
    assert acc > 0.8
    e = _cli("mlp.evaluate", str(tmp_path / "run"))
    assert e.returncode == 0, e.stderr
    assert e.stdout.splitlines()[-1] == f"test accuracy: {acc:.4f}"
    # the confusion matrix printed sums to the test set size
    rows = [line.split()[1:] for line in e.stdout.splitlines()[2:-1]]
    assert sum(int(x) for row in rows for x in row) == 360
    # the saved model predicts what the run measured
    d = load_digits()
    net = load_model(tmp_path / "run")
    pred = net.predict(d.X_test.astype(np.float32) * np.float32(d.scale))
    assert np.mean(pred == d.y_test) == pytest.approx(acc, abs=1e-4)


@pytest.mark.parametrize("argv, word", [
    (["--batch-size", "0"], "--batch-size"), (["--lr", "-1"], "--lr"),
    (["--lr", "nan"], "--lr"), (["--activation", "swish"], "--activation"),
    (["--hidden", "10", "x"], "--hidden"), (["--momentum", "1.5"], "--momentum"),
    (["--dataset", "cifar"], "--dataset"), (["--epochs", "-2"], "--epochs"),
])
def test_nonsense_flags_get_argparse_errors(argv, word):
    r = _cli("mlp.train", *argv)
    assert r.returncode == 2
    assert "usage:" in r.stderr and word in r.stderr and "Traceback" not in r.stderr


def test_missing_data_is_a_clear_error(tmp_path):
    r = _cli("mlp.train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert str(tmp_path) in r.stderr and "train-images-idx3-ubyte" in r.stderr


def test_corrupt_data_is_a_clear_error(mnist_dir, tmp_path):
    for name in os.listdir(mnist_dir):
        (tmp_path / name).symlink_to(mnist_dir / name)
    bad = next(p for p in tmp_path.iterdir() if p.name.startswith("t10k-labels"))
    bad.unlink()
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    r = _cli("mlp.train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert bad.name in r.stderr


def test_validation_larger_than_the_training_set(tmp_path):
    r = _cli("mlp.train", "--dataset", "digits", "--validation", "5000", "--out", str(tmp_path))
    assert r.returncode == 2 and "--validation" in r.stderr and "Traceback" not in r.stderr


def test_divergence_stops_with_advice_and_keeps_a_finite_model(tmp_path):
    r = _cli("mlp.train", "--dataset", "digits", "--lr", "1e4", "--backend", "numpy",
             "--out", str(tmp_path))
    assert r.returncode == 1
    assert "diverged" in r.stdout and "--lr 1000" in r.stdout and "step" in r.stdout
    net = load_model(tmp_path)
    assert all(np.all(np.isfinite(p)) for p in net.params())


def _train_args(out, backend, epochs=12, extra=()):
    """SGD with momentum at a constant rate: a run resumed with more epochs equals a longer
    run (a schedule would span the epochs each was started with)."""
    return ["mlp.train", "--dataset", "digits", "--epochs", str(epochs), "--batch-size", "4",
            "--hidden", "64", "--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.05",
            "--lr-schedule", "constant", "--backend", backend,
            "--threads", "1", "--seed", "7", "--out", str(out), *extra]


#: dropout on the hidden units and the inputs (the mid-epoch resume runs with it)
DROPOUT = ("--dropout", "0.5", "--input-dropout", "0.2")


def _wait_for(proc, prefix, timeout=120):
    t0 = time.time()
    seen = []
    while time.time() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith(prefix):
            return seen
    raise AssertionError(f"never saw {prefix!r}: {''.join(seen)}")


# Each signal once, each backend once: the handler is the same for both backends (each run
# is three processes of a few seconds, so the full product of the two would double it).
@pytest.mark.parametrize("backend, sig", [("numba", signal.SIGINT), ("numpy", signal.SIGTERM)])
def test_interrupt_and_resume_is_bit_identical(tmp_path, backend, sig):
    whole = _cli(*_train_args(tmp_path / "whole", backend))
    assert whole.returncode == 0, whole.stderr

    proc = subprocess.Popen([sys.executable, "-m", *_train_args(tmp_path / "cut", backend)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(proc, "epoch   2")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "resume with: python -m mlp.train --resume" in out
    assert not (tmp_path / "cut" / "model.npz").exists()

    resumed = _cli("mlp.train", "--resume", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    a, b = load_model(tmp_path / "whole"), load_model(tmp_path / "cut")
    for p, q in zip(a.params(), b.params()):
        np.testing.assert_array_equal(p, q)
    ha = json.loads((tmp_path / "whole" / "history.json").read_text())
    hb = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert [e["train_loss"] for e in ha["epochs"]] == [e["train_loss"] for e in hb["epochs"]]
    assert ha["test_accuracy"] == hb["test_accuracy"]


def _history(folder):
    return json.loads((folder / "history.json").read_text())


def test_resume_trains_to_the_epochs_given_even_the_default(tmp_path, backend="numba"):
    """Regression: --epochs equal to the parser's default (12) was taken for "not given".

    One backend: the bug was in reading the command line, before any backend runs."""
    args = _train_args(tmp_path / "r", backend, epochs=3)
    assert _cli(*args).returncode == 0
    assert len(_history(tmp_path / "r")["epochs"]) == 3
    default = build_parser().get_default("epochs")
    r = _cli("mlp.train", "--resume", str(tmp_path / "r"), "--epochs", str(default))
    assert r.returncode == 0, r.stderr
    assert [e["epoch"] for e in _history(tmp_path / "r")["epochs"]] == list(range(1, default + 1))


def test_given_options_come_from_the_command_line_not_from_their_values():
    assert parse_args(["--epochs", "12"]).given == {"epochs"}
    assert parse_args([]).given == set()
    assert parse_args(["--resume", "r", "--threads", "1", "--no-download"]).given == {
        "resume", "threads", "no_download"}


@pytest.mark.parametrize("flag", [["--lr", "0.1"], ["--hidden", "64"], ["--seed", "0"],
                                  ["--out", "elsewhere"], ["--backend", "numpy"]])
def test_resume_refuses_what_it_cannot_change(tmp_path, flag, capsys):
    """A setting that belongs to the run is refused, even at its default value, not ignored."""
    assert main(["--resume", str(tmp_path), *flag]) == 2
    err = capsys.readouterr().err
    assert flag[0] in err and "--epochs" in err and "Traceback" not in err


def test_help_says_which_options_resume_accepts(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    accepted = text[text.index("--resume DIR"):]
    for key in RESUME_OVERRIDES:
        assert "--" + key.replace("_", "-") in accepted


@pytest.mark.parametrize("backend", BACKENDS)
def test_stopped_mid_epoch_then_resumed_with_more_epochs_is_bit_identical(
        tmp_path, backend, monkeypatch, capsys):
    """SIGINT in the middle of epoch 2 (a real signal, through main's handler), then
    ``--resume --epochs 4``: the same bits as an uninterrupted 4-epoch run, dropout masks
    included (they come back with the run's settings)."""
    whole = _cli(*_train_args(tmp_path / "whole", backend, epochs=4, extra=DROPOUT))
    assert whole.returncode == 0, whole.stderr

    init = mlp.trainer.Trainer.__init__

    def interrupting_init(self, *a, **k):
        init(self, *a, **k)
        self.chunk_size = 16             # chunks of 16 batches: an epoch has many boundaries

        def on_chunk(trainer):
            if trainer.epoch == 1 and trainer.position >= 48:
                os.kill(os.getpid(), signal.SIGINT)
        self.on_chunk = on_chunk
    monkeypatch.setattr(mlp.trainer.Trainer, "__init__", interrupting_init)
    argv = _train_args(tmp_path / "cut", backend, epochs=2, extra=DROPOUT)[1:]
    assert main(argv) == 128 + signal.SIGINT
    out = capsys.readouterr().out
    batch = int(out.split("interrupted at epoch 2, batch ")[1].split(":")[0])
    assert 0 < batch < 300                       # mid-epoch: digits has 300 batches of 4
    monkeypatch.undo()

    resumed = _cli("mlp.train", "--resume", str(tmp_path / "cut"), "--epochs", "4")
    assert resumed.returncode == 0, resumed.stderr
    assert f"at epoch 2, batch {batch + 1}" in resumed.stdout
    a, b = load_model(tmp_path / "whole"), load_model(tmp_path / "cut")
    for p, q in zip(a.params(), b.params()):
        np.testing.assert_array_equal(p, q)
    ha, hb = _history(tmp_path / "whole"), _history(tmp_path / "cut")
    assert [e["train_loss"] for e in ha["epochs"]] == [e["train_loss"] for e in hb["epochs"]]
    assert len(hb["epochs"]) == 4 and ha["test_accuracy"] == hb["test_accuracy"]


def test_dropout_flags_on_both_backends_agree_and_are_recorded(tmp_path):
    """--dropout/--input-dropout: in history.json's config, and numba's run is numpy's up to
    round-off (both draw the same masks); a --dropout of the wrong length is refused."""
    runs = {}
    for backend in BACKENDS:
        history, status, _ = _run_inprocess([*_train_args(tmp_path / backend, backend, 2,
                                                          DROPOUT)[1:], "--dtype", "float64"])
        assert status == 0
        runs[backend] = history
        assert _history(tmp_path / backend)["config"]["dropout"] == [0.5]
        assert _history(tmp_path / backend)["config"]["input_dropout"] == 0.2
    losses = [[e["train_loss"] for e in runs[b]["epochs"]] for b in BACKENDS]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-10)
    a, b = load_model(tmp_path / "numba"), load_model(tmp_path / "numpy")
    for p, q in zip(a.params(), b.params()):
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-10)
    plain, _, _ = _run_inprocess(_train_args(tmp_path / "plain", "numba", 2)[1:] + [
        "--dtype", "float64"])
    assert plain["epochs"][-1]["train_loss"] != runs["numba"]["epochs"][-1]["train_loss"]
    r = _cli(*_train_args(tmp_path / "bad", "numpy", 1, ("--dropout", "0.5", "0.2")))
    assert r.returncode == 2 and "--dropout 0.5 0.2" in r.stderr and "Traceback" not in r.stderr


def test_resume_without_checkpoint(tmp_path):
    r = _cli("mlp.train", "--resume", str(tmp_path))
    assert r.returncode == 2 and "checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_no_download_with_no_data_anywhere_says_where_to_put_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLP_DATA_DIR", raising=False)
    monkeypatch.setattr(mlp.data, "_PROJECT_MNIST_DIR", tmp_path / "nowhere")
    compiled = []
    monkeypatch.setattr(mlp.train, "compile_ahead", lambda *a: compiled.append(a) or 0.0)
    assert main(["--no-download"]) == 2
    assert compiled == []                      # the missing data stop the run before any compiling
    err = capsys.readouterr().err
    assert "download" in err and "digits" in err and "Traceback" not in err
    assert not (tmp_path / "data").exists()


def test_the_numpy_backend_never_imports_numba(tmp_path):
    """``--backend numpy`` is the reference path: it runs where Numba is not installed."""
    code = ("import sys, mlp.train; "
            f"status = mlp.train.main(['--dataset', 'digits', '--epochs', '1', '--backend', "
            f"'numpy', '--out', {str(tmp_path)!r}]); "
            "print(status, sorted(m for m in sys.modules if m.split('.')[0] in "
            "('numba', 'llvmlite') or m in ('mlp.kernels', 'mlp.numba_backend', "
            "'mlp.precompile')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "0 []"


# ------------------------------------------------- help, chance, batch size, timeout, plots
def _help_entries(text):
    """{first long option: its help text, whitespace collapsed} of ``--help`` output."""
    entries, key = {}, None
    for line in text.split("options:", 1)[1].splitlines():
        if line.startswith("  -"):                 # an option's first line: "  --x X  help..."
            invocation, _, rest = line.strip().partition("  ")
            key = next(w for w in invocation.replace(",", " ").split() if w.startswith("--"))
            entries[key] = rest
        elif key and line.startswith("   "):        # its help continued
            entries[key] += " " + line
    return {k: " ".join(v.split()) for k, v in entries.items()}


def test_help_shows_every_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in " ".join(text.split())
    entries = _help_entries(text)
    actions = [a for a in build_parser()._actions if a.option_strings and a.dest != "help"]
    assert set(entries) == {"--help"} | {a.option_strings[-1] for a in actions}
    for action in actions:
        shown = entries[action.option_strings[-1]]
        if action.nargs == 0:                       # a flag: off unless given
            assert "default" not in shown, (action.option_strings, shown)
            continue
        assert shown.count("(default") == 1, (action.option_strings, shown)
        if action.default is not None:
            assert f"(default: {action.default})" in shown, (action.option_strings, shown)


def _nielsen_ch1_on_digits(tmp_path, *extra):
    """README's Nielsen line as it was (SGD's momentum left at its default 0.9), on digits."""
    return ["--dataset", "digits", "--hidden", "30", "--loss", "mse", "--optimizer", "sgd",
            "--lr", "3.0", "--lr-schedule", "constant",
            "--batch-size", "10", "--epochs", "3", "--backend", "numpy", "--threads", "1",
            "--out", str(tmp_path), *extra]


def _chance_lines(text):
    return [line for line in text.splitlines() if "at chance level" in line]


def test_a_run_stuck_at_chance_warns_once_with_advice(tmp_path, capsys):
    assert main(_nielsen_ch1_on_digits(tmp_path)) == 0
    out, err = capsys.readouterr()
    saved = _history(tmp_path)
    val = [e["val_accuracy"] for e in saved["epochs"]]
    # chance on these validation labels, counted here: the larger of 1/10 and the share of the
    # most frequent class
    y_val = load_digits().y_train[-saved["config"]["n_validation"]:]
    chance = max(0.1, np.bincount(y_val).max() / len(y_val))
    assert max(val) <= chance + 0.01                  # stuck: the case the warning is for
    assert _chance_lines(out) == []
    (line,) = _chance_lines(err)                      # once, although all 3 epochs are stuck
    # after epoch 2, when the loss shows it stalled (epoch 1 of a run may still be starting)
    assert f"validation accuracy {val[1]:.4f} after epoch 2" in line
    assert f"{chance:.4f}" in line
    assert "--momentum 0" in line and "--lr 0.3" in line


def test_without_validation_the_test_accuracy_is_checked(tmp_path, capsys):
    assert main(_nielsen_ch1_on_digits(tmp_path, "--validation", "0")) == 0
    (line,) = _chance_lines(capsys.readouterr().err)
    assert f"test accuracy {_history(tmp_path)['test_accuracy']:.4f}" in line


def test_a_first_epoch_at_chance_whose_loss_falls_is_not_warned_about(tmp_path, capsys):
    """A small set that takes a few epochs to leave chance (iris-like) is not stuck."""
    assert main(["--dataset", "digits", "--limit", "300", "--hidden", "16", "--epochs", "6",
                 "--batch-size", "10", "--optimizer", "sgd", "--lr", "0.05",
                 "--lr-schedule", "constant", "--backend", "numpy",
                 "--out", str(tmp_path)]) == 0
    saved = _history(tmp_path)
    first, last = saved["epochs"][0], saved["epochs"][-1]
    assert first["val_accuracy"] < 0.2 < last["val_accuracy"]     # at chance, then learning
    assert _chance_lines(capsys.readouterr().err) == []


def test_a_healthy_run_does_not_warn(tmp_path, capsys):
    assert main(_nielsen_ch1_on_digits(tmp_path, "--momentum", "0")) == 0
    out, err = capsys.readouterr()
    assert _history(tmp_path)["epochs"][0]["val_accuracy"] > 0.3
    assert _chance_lines(out + err) == [] and "warning" not in out + err


def test_chance_accuracy_is_the_better_of_guessing_and_the_majority_class():
    assert mlp.train.chance_accuracy([0, 1, 2, 3] * 5, 4) == 0.25
    assert mlp.train.chance_accuracy([0] * 7 + [1] * 3, 2) == 0.7
    assert mlp.train.chance_accuracy(np.eye(3)[[2, 2, 2, 0]], 3) == 0.75   # one-hot rows
    assert mlp.train.chance_accuracy([0, 1], 10) == 0.5
    assert mlp.train.at_chance(0.14, 0.1) and not mlp.train.at_chance(0.2, 0.1)


def test_batch_size_larger_than_the_training_set_is_a_clear_error(tmp_path, capsys):
    n = load_digits().X_train.shape[0]
    n_train = n - n // 6                              # a sixth is held out for validation
    assert main(["--dataset", "digits", "--batch-size", "100000", "--backend", "numpy",
                 "--out", str(tmp_path / "big")]) == 2
    err = capsys.readouterr().err
    assert "--batch-size 100000" in err and f"--batch-size {n_train} or less" in err
    assert "Traceback" not in err and not (tmp_path / "big").exists()
    # the whole training set in one batch is allowed
    assert main(["--dataset", "digits", "--batch-size", str(n_train), "--epochs", "1",
                 "--backend", "numpy", "--out", str(tmp_path / "whole")]) == 0


def test_timeout_is_passed_to_the_downloader(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLP_DATA_DIR", raising=False)
    monkeypatch.setattr(mlp.data, "_PROJECT_MNIST_DIR", tmp_path / "nowhere")
    calls = []

    def offline(dataset, dest, **kwargs):
        calls.append(kwargs)
        raise mlp.data.DataError("offline")
    monkeypatch.setattr(mlp.train, "download_dataset", offline)
    assert main(["--timeout", "7.5"]) == 2
    assert main([]) == 2
    import inspect  # here, not at the top: this block of tests is appended to a shared file
    assert [c.get("timeout") for c in calls] == [
        7.5, inspect.signature(mlp.data.download_dataset).parameters["timeout"].default]
    assert parse_args(["--resume", "r", "--timeout", "3"]).given == {"resume", "timeout"}
    assert "timeout" in RESUME_OVERRIDES


@pytest.mark.parametrize("validation, panels", [(None, 2), ("0", 1)])
def test_curves_are_titled_with_the_run_and_have_no_empty_panel(tmp_path, monkeypatch,
                                                                validation, panels):
    drawn = []
    real = mlp.train.plot_curves

    def recording(history, path, title=None):
        drawn.append((mlp.plots.curves_figure(history, title), title))
        return real(history, path, title)
    monkeypatch.setattr(mlp.train, "plot_curves", recording)
    extra = [] if validation is None else ["--validation", validation]
    assert main(["--dataset", "digits", "--epochs", "2", "--optimizer", "sgd", "--lr", "0.3",
                 "--lr-schedule", "constant", "--batch-size", "32",
                 "--backend", "numpy", "--threads", "1", "--out", str(tmp_path), *extra]) == 0
    (fig, title), = drawn
    saved = _history(tmp_path)
    for part in ("64-256-10", "sigmoid/ce", "digits", "lr 0.3", "momentum 0.9", "batch 32",
                 "2 epochs", f"test accuracy {saved['test_accuracy']:.4f}"):
        assert part in title
    assert fig._suptitle.get_text() == title
    assert len(fig.axes) == panels
    assert all(ax.lines for ax in fig.axes)           # no empty panel
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------ Adam, schedules, max-norm, early stop
#: every training option of issue 13 at once: AdamW, a cosine schedule, max-norm, early stopping
FEATURES = ["--optimizer", "adamw", "--weight-decay", "0.01", "--lr", "0.003",
            "--lr-schedule", "cosine", "--max-norm", "1.5", "--early-stopping", "1"]


def _feature_args(out, backend, epochs=8, *extra):
    return ["--dataset", "digits", "--epochs", str(epochs), "--batch-size", "16", "--hidden",
            "32", "--activation", "relu", "--backend", backend, "--threads", "1", "--seed", "3",
            "--dtype", "float64", "--out", str(out), *FEATURES, *extra]


def test_adam_schedule_max_norm_and_early_stopping_agree_on_both_backends(tmp_path):
    """The same run on both backends: the same epochs, the same weights to round-off; the
    options are in history.json's config; model.npz holds the best validation epoch's weights
    (its validation accuracy, recomputed, is that epoch's) and stops `patience` epochs later."""
    runs = {}
    for backend in BACKENDS:
        history, status, text = _run_inprocess(_feature_args(tmp_path / backend, backend))
        assert status == 0, text
        runs[backend] = history
    a, b = runs["numba"], runs["numpy"]
    config = a["config"]
    assert (config["optimizer"], config["lr_schedule"], config["max_norm"],
            config["early_stopping"]) == ("adamw", "cosine", 1.5, 1)
    assert [e["val_accuracy"] for e in a["epochs"]] == [e["val_accuracy"] for e in b["epochs"]]
    fast, ref = load_model(tmp_path / "numba"), load_model(tmp_path / "numpy")
    for p, q in zip(fast.params(), ref.params()):
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-9)
    accs = [e["val_accuracy"] for e in a["epochs"]]
    best = a["early_stopping"]["best_epoch"]
    assert accs[best - 1] == max(accs) and accs.index(max(accs)) == best - 1
    assert a["early_stopping"]["stopped_after_epoch"] in (None, best + 1)
    if a["early_stopping"]["stopped_after_epoch"]:
        assert len(accs) == best + 1 < 8
    net = load_model(tmp_path / "numpy")
    data = load_digits()
    X_val, y_val = mlp.train.split_train(data, None, None)[2:]
    _, acc = mlp.trainer.evaluate(net, mlp.backends.NumpyBackend(), X_val, y_val, data.scale)
    assert acc == accs[best - 1]
    for w in net.weights[:-1]:                               # max-norm on the hidden units
        assert np.linalg.norm(w, axis=0).max() <= 1.5 + 1e-9


@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_with_schedule_and_early_stopping_resumes_bit_identically(
        tmp_path, backend, monkeypatch, capsys):
    """Stopped in the middle of epoch 2 and resumed: the same bits as a run never stopped
    (Adam's moments and step count, the schedule's position, the best epoch all survive)."""
    argv = _feature_args(tmp_path / "whole", backend, 4, "--early-stopping", "3")
    assert main(argv) == 0
    init = mlp.trainer.Trainer.__init__

    def interrupting_init(self, *a, **k):
        init(self, *a, **k)
        self.chunk_size = 8

        def on_chunk(trainer):
            if trainer.epoch == 1 and trainer.position >= 40:
                os.kill(os.getpid(), signal.SIGINT)
        self.on_chunk = on_chunk
    monkeypatch.setattr(mlp.trainer.Trainer, "__init__", interrupting_init)
    assert main(_feature_args(tmp_path / "cut", backend, 4, "--early-stopping", "3")) == 130
    monkeypatch.undo()
    assert main(["--resume", str(tmp_path / "cut")]) == 0
    assert "resuming" in capsys.readouterr().out
    for p, q in zip(load_model(tmp_path / "whole").params(), load_model(tmp_path / "cut").params()):
        np.testing.assert_array_equal(p, q)
    ha, hb = _history(tmp_path / "whole"), _history(tmp_path / "cut")
    assert [e["train_loss"] for e in ha["epochs"]] == [e["train_loss"] for e in hb["epochs"]]
    assert ha["early_stopping"] == hb["early_stopping"]
    assert hb["config"]["optimizer"] == "adamw" and hb["config"]["lr_schedule"] == "cosine"


def test_early_stopping_state_is_the_best_epoch_and_the_patience_since():
    history = [{"val_accuracy": a} for a in (0.5, 0.7, 0.7, 0.6, 0.65)]
    assert mlp.train.early_stopping_state(history, 3) == (2, True)     # a tie does not improve
    assert mlp.train.early_stopping_state(history, 4) == (2, False)
    assert mlp.train.early_stopping_state([], 2) == (None, False)


@pytest.mark.parametrize("argv, words", [
    (["--optimizer", "adam", "--momentum", "0.5"], ["--momentum", "--beta1"]),
    (["--nesterov"], ["--nesterov", "default optimizer is adam", "add --optimizer sgd"]),
    (["--early-stopping", "3", "--validation", "0"], ["--early-stopping", "--validation"]),
])
def test_options_that_do_not_go_together_are_refused(tmp_path, argv, words, capsys):
    assert main(["--dataset", "digits", "--backend", "numpy", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words) and "Traceback" not in err


def _bench_time_to_accuracy():
    """benchmarks/bench_time_to_accuracy.py as a module (benchmarks/ is not a package)."""
    import importlib.util  # here: only this test loads a benchmark script as a module
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_time_to_accuracy.py"
    spec = importlib.util.spec_from_file_location("bench_time_to_accuracy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_time_to_accuracy_benchmark_trains_the_default_recipe():
    """The benchmark's recipe is `python -m mlp.train`'s: the same optimizer, the same rate
    at every step (PyTorch's run takes its rates from the same schedule), batch and epochs;
    an optimizer named there brings its own default rate, as on the command line."""
    bench = _bench_time_to_accuracy()
    none = dict.fromkeys(["hidden", "optimizer", "lr", "momentum", "batch_size", "epochs",
                          "lr_schedule", "backend", "weight_decay", "seed", "activation"])
    r = bench.recipe(argparse.Namespace(**none, nesterov=False))
    cli = parse_args([])
    assert r["optimizer"] == cli.optimizer == "adam" and r["lr_schedule"] == cli.lr_schedule
    ours, theirs = mlp.train.make_optimizer(bench.settings(r)), mlp.train.make_optimizer(cli)
    assert type(ours) is type(theirs) and ours.config() == theirs.config()
    n = 50_000
    steps = bench.schedule_of(r, n).total
    assert steps == cli.epochs * -(-n // cli.batch_size)
    np.testing.assert_array_equal(bench.schedule_of(r, n).rates(r["lr"], 0, steps),
                                  mlp.train.make_schedule(cli, n).rates(cli.lr, 0, steps))
    sgd = bench.recipe(argparse.Namespace(**{**none, "optimizer": "sgd"}, nesterov=False))
    assert sgd["lr"] == parse_args(["--optimizer", "sgd"]).lr == 0.2
    assert bench.torch_epochs(r) == r["epochs"]            # a schedule ends at its last epoch
    assert bench.torch_epochs(dict(sgd, lr_schedule="constant")) == 30
