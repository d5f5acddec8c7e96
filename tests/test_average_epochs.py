"""`python -m mlp.train --average-epochs K`: model.npz is the mean of the last K epochs' weights."""

import json
import os
import signal

import numpy as np
import pytest

import mlp.train
import mlp.trainer
from mlp.averaging import EpochAverage
from mlp.backends import BACKENDS, get_backend
from mlp.data import load_digits
from mlp.errors import ModelFileError
from mlp.io import load_checkpoint, load_model
from mlp.network import Network
from mlp.schedules import Schedule
from mlp.train import main


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    """The runs here draw no curves.png or confusion.png: matplotlib would take most of their
    time, and the plots have tests of their own."""
    monkeypatch.setattr(mlp.train, "plot_curves", lambda *a, **k: None)
    monkeypatch.setattr(mlp.train, "plot_confusion", lambda *a, **k: None)


def _args(out, backend, epochs=5, k=3, *extra):
    """A small SGD run on digits; dropout so that the epochs' weights differ by more than η·g."""
    return ["--dataset", "digits", "--epochs", str(epochs), "--batch-size", "16", "--hidden",
            "32", "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9", "--backend", backend,
            "--threads", "1", "--seed", "4", "--dropout", "0.3", "--out", str(out),
            "--average-epochs", str(k), *extra]


def _history(folder):
    return json.loads((folder / "history.json").read_text())


def _recording(monkeypatch, chunk_size=None, stop_at=None):
    """Trainer.__init__ patched: every epoch's final weights copied into the dict returned
    (on_chunk sees them after the epoch's last chunk, before the epoch is closed); with
    ``stop_at`` = (epoch, position), SIGINT once the trainer gets there."""
    epochs, sent = {}, []
    init = mlp.trainer.Trainer.__init__

    def recording_init(self, *a, **k):
        init(self, *a, **k)
        if chunk_size:
            self.chunk_size = chunk_size

        def on_chunk(trainer):
            epochs[trainer.epoch + 1] = [p.copy() for p in trainer.net.params()]
            if stop_at and (trainer.epoch, trainer.position) >= stop_at and not sent:
                sent.append(True)
                os.kill(os.getpid(), signal.SIGINT)
        self.on_chunk = on_chunk
    monkeypatch.setattr(mlp.trainer.Trainer, "__init__", recording_init)
    return epochs


def test_the_sum_is_the_mean_of_the_last_k_epochs_added():
    net = Network([5, 4, 3], "relu", seed=0)
    rng = np.random.default_rng(0)
    average = EpochAverage(3, 7)
    seen = {}
    for epoch in range(1, 8):
        for p in net.params():
            p[...] = rng.normal(size=p.shape)
        seen[epoch] = [p.copy() for p in net.params()]
        average.add(net, epoch)
        assert average.complete == (epoch == 7)
    assert (average.first_epoch, average.count) == (5, 3)
    average.apply(net)
    for i, p in enumerate(net.params()):
        expected = np.mean([seen[e][i].astype(np.float64) for e in (5, 6, 7)], axis=0)
        np.testing.assert_allclose(p, expected.astype(np.float32), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="K <= epochs"):
        EpochAverage(8, 7)
    with pytest.raises(ValueError, match="not been averaged|no epoch"):
        EpochAverage(2, 7).apply(net)


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_npz_is_the_mean_of_the_weights_after_the_last_epochs(tmp_path, backend,
                                                                    monkeypatch, capsys):
    """The weights after each epoch, copied by the test itself, averaged with NumPy: that is
    model.npz; its validation and test accuracy are those history.json reports."""
    epochs = _recording(monkeypatch)
    assert main(_args(tmp_path, backend)) == 0
    assert "the mean of the weights after epochs 3–5" in capsys.readouterr().out
    net = load_model(tmp_path)
    for i, p in enumerate(net.params()):
        mean = np.mean([epochs[e][i].astype(np.float64) for e in (3, 4, 5)], axis=0)
        np.testing.assert_allclose(p, mean.astype(np.float32), rtol=1e-6, atol=1e-7)
        assert not np.array_equal(p, epochs[5][i])          # not simply the last epoch's
    history = _history(tmp_path)
    assert history["config"]["average_epochs"] == 3
    assert {k: history["average"][k] for k in ("epochs", "first_epoch", "last_epoch")} == {
        "epochs": 3, "first_epoch": 3, "last_epoch": 5}
    data = load_digits()
    X_val, y_val = mlp.train.split_train(data, None, None)[2:]
    runner = get_backend(backend)
    assert history["average"]["val_accuracy"] == mlp.trainer.evaluate(
        net, runner, X_val, y_val, data.scale)[1]
    assert history["test_accuracy"] == mlp.trainer.evaluate(
        net, runner, data.X_test, data.y_test, data.scale)[1]


def test_stopped_inside_the_average_and_resumed_is_bit_identical(tmp_path, monkeypatch, capsys):
    """SIGINT in the middle of epoch 4, with epochs 3 and (part of) 4 of the average behind:
    the checkpoint holds the sum, and the resumed run ends with the same bits."""
    assert main(_args(tmp_path / "whole", "numba")) == 0
    patch = pytest.MonkeyPatch()
    _recording(patch, chunk_size=8, stop_at=(3, 40))
    assert main(_args(tmp_path / "cut", "numba")) == 130
    patch.undo()
    ckpt = load_checkpoint(tmp_path / "cut")
    assert ckpt["trainer"]["epoch"] == 3 and ckpt["trainer"]["average"]["count"] == 1
    assert [s.dtype for s in ckpt["sums"]] == [np.float64] * 4
    assert main(["--resume", str(tmp_path / "cut")]) == 0
    assert "resuming" in capsys.readouterr().out
    for p, q in zip(load_model(tmp_path / "whole").params(), load_model(tmp_path / "cut").params()):
        np.testing.assert_array_equal(p, q)
    assert _history(tmp_path / "whole")["average"] == _history(tmp_path / "cut")["average"]


def test_resumed_with_more_epochs_averages_the_new_last_epochs(tmp_path, capsys):
    """A finished 3-epoch run resumed to 6 (constant rate: a longer run is the same run): its
    sum of epochs 2–3 is dropped, and it ends as a 6-epoch run, epochs 5–6 averaged; resumed
    to 4 instead, the average would need epoch 2's weights again: refused, saying why."""
    constant = ("--lr-schedule", "constant")
    assert main(_args(tmp_path / "six", "numpy", 6, 2, *constant)) == 0
    assert main(_args(tmp_path / "three", "numpy", 3, 2, *constant)) == 0
    assert main(["--resume", str(tmp_path / "three"), "--epochs", "4"]) == 2
    err = capsys.readouterr().err
    assert "epoch 3, whose weights were not kept" in err and "--epochs 3, or at least 5" in err
    assert main(["--resume", str(tmp_path / "three"), "--epochs", "6"]) == 0
    for p, q in zip(load_model(tmp_path / "six").params(),
                    load_model(tmp_path / "three").params()):
        np.testing.assert_array_equal(p, q)
    assert _history(tmp_path / "three")["average"]["first_epoch"] == 5


@pytest.mark.parametrize("argv, words", [
    (["--epochs", "3", "--average-epochs", "4"], ["--average-epochs 4", "--epochs 3",
                                                  "at most 3"]),
    (["--average-epochs", "2", "--early-stopping", "2"], ["--average-epochs", "--early-stopping",
                                                          "one of them"]),
])
def test_an_average_that_cannot_be_formed_is_refused(tmp_path, argv, words, capsys):
    assert main(["--dataset", "digits", "--backend", "numpy", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words) and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["--average-epochs", "-1"])
    assert "--average-epochs" in capsys.readouterr().err


def test_a_checkpoint_without_an_average_has_no_sums(tmp_path):
    assert main(_args(tmp_path, "numpy", 2, 0)) == 0
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["sums"] is None and ckpt["trainer"]["average"] is None
    assert "average" not in _history(tmp_path)


def test_a_floor_and_the_averaged_epochs_at_the_floor_closed_form():
    """--lr-floor F: the schedule's factor f becomes F + (1 − F) f over the steps before the
    last ``flat``, and F over them; without a floor, the schedules are as they were."""
    swa = Schedule("linear", 12, 1, floor=0.2, flat=4)
    np.testing.assert_allclose([swa.factor(t) for t in range(13)],
                               [1 - 0.8 * t / 8 for t in range(9)] + [0.2] * 4, rtol=1e-15)
    cos = Schedule("cosine", 10, floor=0.5)
    assert cos.factor(5) == pytest.approx(0.5 + 0.5 * 0.5) and cos.factor(0) == 1.0
    assert Schedule("linear", 10).factor(5) == 0.5 and Schedule("linear", 10).config()["flat"] == 0
    for bad in (dict(floor=1.0), dict(floor=-0.1), dict(flat=10)):
        with pytest.raises(ValueError, match="floor must be in"):
            Schedule("linear", 10, **bad)
    args = mlp.train.parse_args(["--epochs", "5", "--batch-size", "10", "--lr-floor", "0.25",
                                 "--average-epochs", "2"])
    schedule = mlp.train.make_schedule(args, 100)       # 10 steps an epoch, the last 20 flat
    assert (schedule.total, schedule.flat, schedule.floor) == (50, 20, 0.25)
    assert schedule.factor(29) > 0.25 and schedule.factor(30) == schedule.factor(49) == 0.25


def test_a_run_with_a_floor_agrees_on_both_backends(tmp_path):
    """--lr-floor with --average-epochs: recorded in the config, the same weights on both
    backends to round-off (the rates are computed once, in Python, for both)."""
    models = {}
    for backend in BACKENDS:
        argv = _args(tmp_path / backend, backend, 4, 2, "--lr-floor", "0.3", "--dtype", "float64")
        assert main(argv) == 0
        assert _history(tmp_path / backend)["config"]["lr_floor"] == 0.3
        models[backend] = load_model(tmp_path / backend)
    for p, q in zip(models["numba"].params(), models["numpy"].params()):
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-10)


def test_a_floor_on_a_constant_rate_is_refused(tmp_path, capsys):
    assert main(["--dataset", "digits", "--backend", "numpy", "--out", str(tmp_path),
                 "--lr-schedule", "constant", "--lr-floor", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--lr-floor 0.1" in err and "constant" in err and "Traceback" not in err
    assert main(["--dataset", "digits", "--backend", "numpy", "--out", str(tmp_path),
                 "--epochs", "3", "--average-epochs", "3", "--lr-floor", "0.1"]) == 2
    assert "nothing would be left" in " ".join(capsys.readouterr().err.split())


def test_a_checkpoint_with_bad_sums_is_refused_naming_the_array(tmp_path):
    """Sums of the wrong shape, or not finite, are refused with the file and array named."""
    assert main(_args(tmp_path, "numpy", 3, 2, "--checkpoint-every", "1")) == 0
    path = tmp_path / "checkpoint.npz"
    with np.load(path) as z:
        arrays = dict(z)
    for name, bad, words in (("S0", arrays["S0"][:-1], "'S0' has shape"),
                             ("S2", arrays["S2"] * np.nan, "'S2' contains NaN")):
        np.savez(tmp_path / "bad.npz", **{**arrays, name: bad})
        with pytest.raises(ModelFileError, match=words):
            load_checkpoint(tmp_path / "bad.npz")
