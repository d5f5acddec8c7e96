"""The training loop: shuffling, chunking, divergence, state for resuming."""

import numpy as np
import pytest

from mlp.backends import NumpyBackend
from mlp.data import load_digits
from mlp.errors import DivergenceError
from mlp.network import Network
from mlp.optimizers import SGD
from mlp.trainer import Trainer, epoch_order, evaluate


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _trainer(batch_size=16, lr=0.5, momentum=0.9, chunk_size=None, seed=0):
    net = Network([64, 20, 10], seed=seed)
    return Trainer(net, SGD(lr, momentum), NumpyBackend(), batch_size, seed, chunk_size)


def test_epoch_order_is_a_seeded_permutation():
    a = epoch_order(3, 0, 100)
    assert sorted(a) == list(range(100))
    assert np.array_equal(a, epoch_order(3, 0, 100))
    assert not np.array_equal(a, epoch_order(3, 1, 100))
    assert not np.array_equal(a, epoch_order(4, 0, 100))


def test_training_learns_digits(digits):
    t = _trainer()
    t.fit(digits.X_train, digits.y_train, 5, digits.scale)
    loss, acc = evaluate(t.net, t.backend, digits.X_test, digits.y_test, digits.scale)
    assert acc > 0.9
    losses = [r["train_loss"] for r in t.history]
    assert losses[-1] < losses[0]


def test_chunking_does_not_change_the_result(digits):
    """One batch per backend call or 1000: the same arithmetic, the same weights."""
    a, b = _trainer(chunk_size=1), _trainer(chunk_size=1000)
    for t in (a, b):
        t.fit(digits.X_train, digits.y_train, 2, digits.scale)
    for p, q in zip(a.net.params(), b.net.params()):
        np.testing.assert_array_equal(p, q)
    assert a.history[-1]["train_loss"] == b.history[-1]["train_loss"]


def test_chunks_adapt_to_about_chunk_seconds_and_change_nothing(digits, monkeypatch):
    """Without chunk_size the first chunk has FIRST_CHUNK_SAMPLES samples and each later one
    about CHUNK_SECONDS of the last one's seconds per batch; the weights are those of a run
    in one call per epoch. A chunk_size given, or set later, stays."""
    import mlp.trainer as trainer_module
    clock = iter(np.arange(0.0, 1e6, 0.02))        # every reading 20 ms after the last
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: next(clock))
    auto, whole = _trainer(batch_size=8), _trainer(batch_size=8, chunk_size=10**6)
    assert auto.chunk_size == trainer_module.FIRST_CHUNK_SAMPLES // 8
    sizes = []
    auto.on_chunk = lambda tr: sizes.append(tr.chunk_size)
    for t in (auto, whole):
        t.fit(digits.X_train, digits.y_train, 2, digits.scale)
    # each chunk took 20 ms on the fake clock, so the next gets 0.1 s / (20 ms / its batches)
    n_batches = -(-digits.X_train.shape[0] // 8)
    first = min(n_batches, trainer_module.FIRST_CHUNK_SAMPLES // 8)
    assert abs(sizes[0] - trainer_module.CHUNK_SECONDS / 0.02 * first) <= 1   # float round-off
    for p, q in zip(auto.net.params(), whole.net.params()):
        np.testing.assert_array_equal(p, q)
    assert whole.chunk_size == 10**6
    auto.chunk_size = 5
    auto.fit(digits.X_train, digits.y_train, 3, digits.scale)
    assert auto.chunk_size == 5


@pytest.mark.parametrize("step", [0.5, 4.0])
def test_chunks_keep_first_chunk_samples_unless_too_slow(digits, monkeypatch, step):
    """A chunk slower than CHUNK_SECONDS still gets FIRST_CHUNK_SAMPLES samples (the fixed
    cost of a call is spread over them), unless those would take over MAX_CHUNK_SECONDS."""
    import mlp.trainer as trainer_module
    clock = iter(np.arange(0.0, 1e6, step))        # every reading `step` s after the last
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: next(clock))
    auto = _trainer(batch_size=8)
    sizes = []
    auto.on_chunk = lambda tr: sizes.append(tr.chunk_size)
    auto.fit(digits.X_train, digits.y_train, 1, digits.scale)
    n_batches = -(-digits.X_train.shape[0] // 8)
    first = min(n_batches, trainer_module.FIRST_CHUNK_SAMPLES // 8)
    per_batch = step / first
    floor = trainer_module.FIRST_CHUNK_SAMPLES // 8
    by_time = trainer_module.CHUNK_SECONDS / per_batch
    assert by_time < floor                          # time alone would shrink the chunk
    expected = min(floor, int(trainer_module.MAX_CHUNK_SECONDS / per_batch))
    assert sizes[0] == expected


def test_stop_and_continue_from_state_matches_an_uninterrupted_run(digits):
    full = _trainer(chunk_size=7)
    full.fit(digits.X_train, digits.y_train, 2, digits.scale)

    first = _trainer(chunk_size=7)
    calls = []

    def stop_after_three(tr):
        calls.append(tr.position)
        if len(calls) == 3:
            tr.request_stop()
    first.on_chunk = stop_after_three
    assert first.fit(digits.X_train, digits.y_train, 2, digits.scale) is False
    assert (first.epoch, first.position) == (0, 21)

    second = _trainer(chunk_size=5)       # a different chunking after the resume, too
    for p, q in zip(second.net.params(), first.net.params()):
        p[...] = q
    second.optimizer.set_state_arrays([v.copy() for v in first.optimizer.state_arrays()])
    second.load_state(first.state())
    assert second.fit(digits.X_train, digits.y_train, 2, digits.scale) is True
    for p, q in zip(full.net.params(), second.net.params()):
        np.testing.assert_array_equal(p, q)
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in second.history]


def test_divergence_is_reported_with_the_step_and_restores_the_last_finite_model(digits):
    t = _trainer(lr=1e4, momentum=0.0, chunk_size=4)
    seen = []
    t.on_chunk = lambda tr: seen.append([p.copy() for p in tr.net.params()])
    with pytest.raises(DivergenceError, match=r"step \d+.*--lr 1000"):
        t.fit(digits.X_train, digits.y_train, 1, digits.scale)
    assert all(np.all(np.isfinite(p)) for p in t.net.params())
    last_good = seen[-1] if seen else Network([64, 20, 10], seed=0).params()
    for p, q in zip(t.net.params(), last_good):
        np.testing.assert_array_equal(p, q)


def test_evaluate_against_a_direct_computation(digits):
    net = Network([64, 10, 10], seed=1)
    loss, acc = evaluate(net, NumpyBackend(), digits.X_test, digits.y_test, digits.scale)
    X = digits.X_test.astype(np.float32) * np.float32(digits.scale)
    p = net.feedforward(X).astype(np.float64)
    assert acc == pytest.approx(np.mean(p.argmax(1) == digits.y_test))
    direct = -np.mean(np.log(p[np.arange(len(p)), digits.y_test]))
    assert loss == pytest.approx(direct, rel=1e-5)


def test_empty_training_set_and_bad_batch_size():
    with pytest.raises(ValueError, match="batch size"):
        Trainer(Network([2, 2]), SGD(), NumpyBackend(), batch_size=0)
    t = Trainer(Network([2, 2]), SGD(), NumpyBackend(), batch_size=4)
    with pytest.raises(ValueError, match="empty"):
        t.fit(np.zeros((0, 2)), np.zeros(0, int), 1)


def test_a_brief_overshoot_is_tolerated_but_a_sustained_explosion_is_not():
    t = _trainer()
    t.initial_loss = 2.0
    one_spike = np.array([2.0, 30.0, 2.0, 1.5, 1.0, 1.0, 1.0, 1.0])
    assert t._first_diverged(one_spike) is None
    exploding = np.array([2.0, 15.0, 40.0, 80.0, 90.0])
    # the chunk's mean passes 10 × 2.0: the step reported is its first batch above that
    assert t._first_diverged(exploding) == 2
    assert t._first_diverged(np.array([1.0, np.nan, 1.0])) == 1
    t.divergence_factor = None                         # only NaN and infinity then
    assert t._first_diverged(exploding) is None
    assert t._first_diverged(np.array([1.0, np.inf])) == 1
