"""The tutorial's programs, reproduced on mlp's own layers, losses and optimizer.

mlp grew from a TensorFlow 1.x backpropagation tutorial. Each of its programs
runs here as ``python -m mlp.demos NAME`` and prints what the tutorial printed,
in its format; every number comes from :class:`mlp.network.Network` (forward
and backward pass), :mod:`mlp.losses` and :class:`mlp.optimizers.SGD`:

=================  ==========================================================
regression         fit ``x·a`` to the target 10 (squared error, one sample a step)
classification     learn the boundary ``x + a = 0`` between two Gaussian classes
two-layer          the 2-3-1 linear network on 32 points, full-batch loss printed
mnist-sigmaprime   MNIST 784-30-10, sigmoid units, error ``ŷ − y`` backpropagated
                   through σ' (``sigmaprime``), lr 0.5, batch 10, 10,000 steps
lr-compare         measures what the learning rate does: speed, precision, divergence
=================  ==========================================================

Learning rates are the tutorial's. Where its loss differs from mlp's by a
constant factor, the demo converts the rate so that each update is exactly
the tutorial's update: TensorFlow's ``tf.square(ŷ − y)`` has no ½, so its
gradient is twice that of mlp's ``mse`` (½(ŷ − y)²), and TF's rate η is mlp's
rate 2η (:func:`tutorial_rate_to_mlp`).

Each demo is a function returning its results as a dict (the tests call them
directly); ``--out`` receives ``NAME.json`` with those results, and lr-compare
also writes ``lr_compare.png``.
"""

import argparse
import io
import math
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

from .backends import NumpyBackend
from .batches import batch_inputs, batch_targets
from .cli import nonnegative_int, positive_float, positive_int
from .data import load_dataset
from .errors import DivergenceError, MLPError
from .io import atomic_write_bytes, atomic_write_json
from .network import Network
from .optimizers import SGD
from .trainer import Trainer, epoch_order, evaluate

#: TensorFlow's squared error (ŷ − y)² over mlp's ½(ŷ − y)²: the factor between their gradients
SQUARE_FACTOR = 2.0


def tutorial_rate_to_mlp(lr):
    """mlp's SGD rate making the same step as TF's rate ``lr`` on ``tf.square(ŷ − y)``.

    TF minimises (ŷ − y)², whose gradient is 2(ŷ − y)·∂ŷ; mlp's ``mse`` is
    ½(ŷ − y)², gradient (ŷ − y)·∂ŷ. So TF's step η·2(ŷ − y)∂ŷ is mlp's step
    with rate 2η.
    """
    return SQUARE_FACTOR * lr


def _require_positive(**counts):
    """Raise ValueError naming the first argument that is not an integer >= 1."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _f32(*values):
    """Values as a float32 array, which prints like TF's fetched tensors: ``[6.326008]``."""
    return np.array(values, dtype=np.float32)


# --------------------------------------------------------------- regression
def regression(seed=0, lr=0.02, steps=100, every=25, say=print):
    """Fit ``x·a`` to the target 10 by SGD on one random sample per step.

    x ~ N(1, 0.1) (100 values), a ~ N(0, 1); the tutorial's loss is
    (x·a − 10)² with GradientDescentOptimizer(``lr``). The model is a 1-1
    :class:`Network` with identity output and ``mse`` loss whose single weight
    is a; the tutorial's model has no bias, so the bias stays 0 (its gradient
    is replaced by zero). The step is the tutorial's: see
    :func:`tutorial_rate_to_mlp`.

    Every ``every`` steps prints ``step #25 a = [...]`` and ``loss = [...]``,
    the loss being the tutorial's (x·a − 10)² on the sample just used.
    Returns a dict with the final ``a``, ``a_history`` (a after each step) and
    ``full_loss`` (the tutorial's loss averaged over all 100 points, after
    each step; NaN once a overflows).
    """
    _require_positive(steps=steps, every=every)
    rng = np.random.default_rng(seed)
    x_vals = rng.normal(1.0, 0.1, 100)
    y_vals = np.repeat(10.0, 100)
    net = Network([1, 1], activation="identity", loss="mse", output="identity",
                  dtype="float32")
    net.weights[0][0, 0] = rng.standard_normal()          # a ~ N(0, 1)
    opt = SGD(tutorial_rate_to_mlp(lr))
    no_bias = [np.zeros_like(b) for b in net.biases]       # x·a has no bias: keep it at 0
    X_all, Y_all = x_vals[:, None], y_vals[:, None]
    a_history = np.empty(steps)
    full_loss = np.empty(steps)
    printed = []
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(steps):
            k = rng.integers(100)
            X, Y = X_all[k:k + 1], Y_all[k:k + 1]
            _, nabla_w, _ = net.loss_and_gradients(X, Y)
            opt.step(net, nabla_w, no_bias)
            a_history[i] = net.weights[0][0, 0]
            full_loss[i] = SQUARE_FACTOR * net.cost(X_all, Y_all)
            if (i + 1) % every == 0:
                loss = SQUARE_FACTOR * net.cost(X, Y)     # the tutorial's (x·a − 10)²
                say(f"step #{i + 1} a = {net.weights[0][0]}")
                say(f"loss = {_f32(loss)}")
                printed.append({"step": i + 1, "a": float(a_history[i]), "loss": loss})
    return {"demo": "regression", "seed": seed, "lr": lr, "steps": steps,
            "a": float(a_history[-1]),
            "x": x_vals, "a_history": a_history, "full_loss": full_loss, "printed": printed}


# ----------------------------------------------------------- classification
def classification(seed=0, lr=0.05, steps=1400, every=200, say=print):
    """Learn a in ``sigmoid(x + a)`` separating N(−1, 1) (class 0) from N(3, 1) (class 1).

    50 samples of each class; a ~ N(10, 1); sigmoid cross-entropy
    (``tf.nn.sigmoid_cross_entropy_with_logits``, mlp's ``bce``, same
    gradient σ(z) − y); SGD with rate ``lr`` on one random sample per step.
    The model is a 1-1 :class:`Network` whose weight is fixed at 1 (its
    gradient is replaced by zero) and whose bias is a. The decision boundary
    is x = −a, which should end between the class means.

    Every ``every`` steps prints ``step #200 a = [...]`` and ``loss = [[...]]``
    (the loss on the sample just used). Returns a dict with the final ``a``,
    the data ``x``, ``y`` and the printed values.
    """
    _require_positive(steps=steps, every=every)
    rng = np.random.default_rng(seed)
    x_vals = np.concatenate((rng.normal(-1.0, 1.0, 50), rng.normal(3.0, 1.0, 50)))
    y_vals = np.concatenate((np.repeat(0.0, 50), np.repeat(1.0, 50)))
    net = Network([1, 1], loss="bce", dtype="float32")
    net.weights[0][0, 0] = 1.0                             # output x·1 + a
    net.biases[0][0] = rng.normal(10.0, 1.0)               # a ~ N(10, 1)
    opt = SGD(lr)
    fixed_weight = [np.zeros_like(w) for w in net.weights]
    X_all, Y_all = x_vals[:, None], y_vals[:, None]
    printed = []
    for i in range(steps):
        k = rng.integers(100)
        X, Y = X_all[k:k + 1], Y_all[k:k + 1]
        _, _, nabla_b = net.loss_and_gradients(X, Y)
        opt.step(net, fixed_weight, nabla_b)
        if (i + 1) % every == 0:
            loss = net.cost(X, Y)
            say(f"step #{i + 1} a = {net.biases[0]}")
            say(f"loss = {_f32([loss])}")
            printed.append({"step": i + 1, "a": float(net.biases[0][0]), "loss": loss})
    return {"demo": "classification", "seed": seed, "lr": lr, "steps": steps,
            "a": float(net.biases[0][0]), "x": x_vals, "y": y_vals, "printed": printed}


# ---------------------------------------------------------------- two-layer
def two_layer_data():
    """The tutorial's 32 points: X = RandomState(23455).rand(32, 2), y = int(x0 + x1 < 1)."""
    X = np.random.RandomState(23455).rand(32, 2)
    Y = np.array([[float(x0 + x1 < 1)] for x0, x1 in X])
    return X, Y


def two_layer(seed=0, lr=0.001, steps=3000, batch_size=8, every=500, say=print):
    """The 2-3-1 network without activations, trained on the tutorial's 32 points.

    ``Network([2, 3, 1], activation="identity", loss="mse", output="identity")``
    with weights drawn from N(0, 1) (seeded by ``seed``) and biases kept at 0
    (the tutorial has none). The tutorial minimises
    ``tf.reduce_mean(tf.square(y − ŷ))`` with GradientDescentOptimizer(``lr``)
    on batches of 8 taken in order (``start = i·8 mod 32``); its rate is
    converted by :func:`tutorial_rate_to_mlp`.

    Every ``every`` steps (and at the end) prints the tutorial's loss on all
    32 points, then the weights. Returns a dict with ``total_loss`` (a list of
    (steps done, loss)) and the final weights ``w1``, ``w2``.
    """
    _require_positive(steps=steps, batch_size=batch_size, every=every)
    X, Y = two_layer_data()
    net = Network([2, 3, 1], activation="identity", loss="mse", output="identity",
                  dtype="float32")
    rng = np.random.default_rng(seed)
    net.weights = [rng.standard_normal(w.shape).astype(net.dtype) for w in net.weights]
    opt = SGD(tutorial_rate_to_mlp(lr))
    no_bias = [np.zeros_like(b) for b in net.biases]
    total_loss = []

    def report(done):
        loss = SQUARE_FACTOR * net.cost(X, Y)              # mean of (y − ŷ)² over all 32
        total_loss.append((done, loss))
        say(f"After {done} training step(s), loss_mse on all data is {loss:g}")

    for i in range(steps):
        if i % every == 0:
            report(i)
        start = (i * batch_size) % len(X)
        _, nabla_w, _ = net.loss_and_gradients(X[start:start + batch_size],
                                               Y[start:start + batch_size])
        opt.step(net, nabla_w, no_bias)
    report(steps)
    say("w1:\n" + str(net.weights[0]))
    say("w2:\n" + str(net.weights[1]))
    return {"demo": "two-layer", "seed": seed, "lr": lr, "steps": steps,
            "total_loss": total_loss, "w1": net.weights[0], "w2": net.weights[1]}


# --------------------------------------------------------- mnist-sigmaprime
def truncated_normal(rng, shape):
    """N(0, 1) samples, those beyond ±2 redrawn.

    TF's ``tf.truncated_normal``, the tutorial's initialisation.
    """
    w = rng.standard_normal(shape)
    while (outside := np.abs(w) > 2).any():
        w[outside] = rng.standard_normal(int(outside.sum()))
    return w


def sigmaprime_network(n_in, n_out, seed=0, hidden=30):
    """The tutorial's n_in-30-n_out sigmoid network with sigmoid outputs and squared error.

    ``Network([n_in, 30, n_out], "sigmoid", "mse")``: the output is σ(z) and
    the loss ½Σ(ŷ − y)², so the error at the output that
    :meth:`Network.backward` starts from is :meth:`mlp.losses.SquaredError.delta`,
    ``(ŷ − y) ⊙ σ'(z)`` — the tutorial's ``err = ŷ − y`` times
    ``sigmaprime(z)`` (:func:`mlp.activations.sigmoid_prime`). Weights and
    biases are drawn like the tutorial's, from a truncated N(0, 1).
    """
    net = Network([n_in, hidden, n_out], activation="sigmoid", loss="mse",
                  dtype="float32", seed=seed)
    rng = np.random.default_rng(seed)
    for p in net.params():
        p[...] = truncated_normal(rng, p.shape)
    return net


def sigmaprime_train(net, X, y, scale, lr, steps, batch_size=10, seed=0, every=0,
                     callback=None):
    """Train ``net`` for ``steps`` steps exactly as the tutorial does; ``callback`` every ``every``.

    Each line of the tutorial's training graph is a line of mlp::

        tutorial (TensorFlow)                   mlp
        y_hat = sigmoid(h_2) ...                Network.forward
        err = y_hat - y                         SquaredError.delta: (ŷ − y) ⊙ σ'(z) / n,
        delta_2 = err * sigmaprime(h_2)           σ' = activations.sigmoid_prime
        delta_w_2 = o_1ᵀ · delta_2              Network.backward: aˡ⁻¹ᵀ · δˡ
        wtd_error = delta_2 · W_outᵀ            Network.backward: δˡ · Wˡᵀ
        delta_1 = wtd_error * sigmaprime(h_1)     ⊙ fprime = sigmoid_prime
        delta_w_1 = x_inᵀ · delta_1             Network.backward: aˡ⁻¹ᵀ · δˡ
        W -= eta * delta_w                      SGD(eta).step
        b -= eta * reduce_mean(delta)

    mlp's δ carries the 1/n of the batch average; the tutorial's does not
    for the weights (``delta_w`` is a sum over the batch) but does for the
    biases (``reduce_mean``). So its update with rate η is exactly
    ``SGD(η).step`` fed ``n × ∂L/∂W`` and ``∂L/∂b``.

    Batches of ``batch_size`` are drawn in a shuffled order, reshuffled each
    epoch (:func:`mlp.trainer.epoch_order`). ``callback`` is called with the
    number of steps done: 0, ``every``, 2·``every``, … and ``steps``.
    """
    n_batches = X.shape[0] // batch_size
    if n_batches == 0:
        raise ValueError(f"batch_size {batch_size} exceeds the {X.shape[0]} training samples")
    opt = SGD(lr)
    for step in range(steps):
        if callback and every and step % every == 0:
            callback(step)
        epoch, b = divmod(step, n_batches)
        if b == 0:
            order = epoch_order(seed, epoch, X.shape[0])
        idx = order[b * batch_size:(b + 1) * batch_size]
        xb = batch_inputs(X, idx, scale, net.dtype)
        yb = batch_targets(y, idx, net.sizes[-1], net.dtype)
        _, nabla_w, nabla_b = net.loss_and_gradients(xb, yb)
        opt.step(net, [batch_size * g for g in nabla_w], nabla_b)
    if callback:
        callback(steps)


def mnist_sigmaprime(seed=0, lr=0.5, steps=10000, batch_size=10, every=1000,
                     dataset="mnist", data_dir=None, data=None, threads=1, say=print):
    """MNIST 784-30-10 with sigmoid units, trained by the tutorial's explicit backpropagation.

    lr 0.5, batch 10, 10,000 steps (100,000 images, 1⅔ epochs); see
    :func:`sigmaprime_network` for where σ' enters and :func:`sigmaprime_train`
    for the update. Prints the accuracy on the whole training and test sets
    every ``every`` steps. ``dataset="digits"`` uses scikit-learn's 8x8 digits
    (64-30-10) for offline use; ``data`` may pass an already loaded
    :class:`mlp.data.Dataset`. NumPy's matrix products run on ``threads``
    BLAS threads (one is fastest for matrices this small). Returns the
    accuracies as a dict.
    """
    _require_positive(steps=steps, batch_size=batch_size, every=every, threads=threads)
    if data is None:
        data = load_dataset(dataset, data_dir)
    with threadpool_limits(limits=threads):
        return _mnist_sigmaprime(data, seed, lr, steps, batch_size, every, say)


def _mnist_sigmaprime(data, seed, lr, steps, batch_size, every, say):
    """The body of :func:`mnist_sigmaprime`, once the data is loaded."""
    net = sigmaprime_network(data.X_train.shape[1], data.n_classes, seed)
    backend = NumpyBackend()
    say(f"{'-'.join(map(str, net.sizes))} sigmoid network, squared error, lr {lr:g}, "
        f"batch {batch_size}, {steps} steps on {data.name} "
        f"({data.X_train.shape[0]} train, {data.X_test.shape[0]} test images)")
    history = []

    def report(step):
        _, train_acc = evaluate(net, backend, data.X_train, data.y_train, data.scale)
        _, test_acc = evaluate(net, backend, data.X_test, data.y_test, data.scale)
        history.append({"step": step, "train_accuracy": train_acc, "test_accuracy": test_acc})
        say(f"Step: {step} Accuracy Train%: {100 * train_acc:.2f} "
            f"Accuracy Test%: {100 * test_acc:.2f}")

    sigmaprime_train(net, data.X_train, data.y_train, data.scale, lr, steps, batch_size,
                     seed, every, report)
    return {"demo": "mnist-sigmaprime", "seed": seed, "lr": lr, "steps": steps,
            "batch_size": batch_size, "dataset": data.name, "history": history,
            "train_accuracy": history[-1]["train_accuracy"],
            "test_accuracy": history[-1]["test_accuracy"]}


# --------------------------------------------------------------- lr-compare
#: the tutorial's rates on (x·a − 10)², from too small to divergent
REGRESSION_RATES = (0.001, 0.005, 0.02, 0.1, 0.5, 1.0, 2.0)
#: mlp's rates (``python -m mlp.train --lr``) for the 784-30-10 sigmoid network, squared error
MNIST_RATES = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def run_metrics(steps, curve, threshold, zero_output_loss, window=0.1):
    """Measure one training run from its loss curve.

    ``curve[i]`` is the loss after ``steps[i]`` steps. Returns a dict:

    * ``steps_to_threshold`` — the first step at which the loss is ≤
      ``threshold``, or None if it never gets there;
    * ``final_loss`` — the mean loss over the last ``window`` of the steps;
    * ``spread`` — the standard deviation of the loss around its straight-line
      trend over that window: the jitter that is left once the descent is
      taken out (how precisely the run has settled);
    * ``settled`` — the final loss is ≤ ``threshold``: the run not only
      reached the threshold at some step but ended there (a large rate can dip
      below it and jitter back above);
    * ``diverged`` — the loss became NaN or infinite, or ended no better than
      an output of zeros (``zero_output_loss``, within 1%): the weights ran
      away, to infinity or into saturated units whose σ' ≈ 0 stops learning.
    """
    steps = np.asarray(steps, dtype=float)
    curve = np.asarray(curve, dtype=float)
    reached = np.flatnonzero(curve <= threshold)
    last = steps > steps[-1] * (1 - window)
    tail = curve[last]
    finite = bool(np.all(np.isfinite(curve)))
    if finite and tail.size >= 2:
        t = steps[last]
        slope, intercept = np.polyfit(t, tail, 1)
        spread = float(np.std(tail - (slope * t + intercept)))
    else:
        spread = math.inf if not finite else 0.0
    final = float(tail.mean()) if finite else math.inf
    return {"steps_to_threshold": int(steps[reached[0]]) if reached.size else None,
            "final_loss": final, "spread": spread, "settled": finite and final <= threshold,
            "diverged": not finite or final >= 0.99 * zero_output_loss}


def least_squares_a(x, target=10.0):
    """The best a for the loss mean (x·a − target)² (closed form) and that minimum loss."""
    x = np.asarray(x, dtype=np.float64)
    a = target * x.sum() / (x * x).sum()
    return a, float(np.mean((x * a - target) ** 2))


def compare_regression(rates=REGRESSION_RATES, seeds=(0, 1, 2, 3, 4), steps=1000,
                       tolerance=0.1):
    """Run the regression demo at each rate and seed; measure every run.

    The loss is the tutorial's, averaged over all 100 points, after every
    step. The threshold is ``(1 + tolerance)`` × the least-squares minimum of
    that loss (:func:`least_squares_a`); an output of zeros (a = 0) has loss 100.
    Returns one dict per rate: its ``runs`` (metrics per seed) and the
    ``curve`` of the first seed for plotting.
    """
    results = []
    for lr in rates:
        runs, curve = [], None
        for seed in seeds:
            r = regression(seed, lr, steps, every=steps + 1, say=lambda line: None)
            _, best = least_squares_a(r["x"])
            excess = r["full_loss"] - best
            runs.append(run_metrics(np.arange(1, steps + 1), r["full_loss"],
                                    (1 + tolerance) * best, zero_output_loss=100.0))
            if curve is None:
                curve = (np.arange(1, steps + 1), excess, tolerance * best)
        results.append({"lr": lr, "runs": runs, "curve": curve})
    return results


def compare_mnist(data, rates=MNIST_RATES, seeds=(0, 1, 2), steps=1500, batch_size=10,
                  threshold=0.2, every=10, window=0.1, n_eval=500):
    """Train mlp's 784-30-10 sigmoid/squared-error network at each rate and seed; measure every run.

    Each run is mlp's standard recipe — ``Network([784, 30, 10], "sigmoid",
    "mse")`` with its default initialisation, :class:`SGD` on the gradient
    averaged over the batch, driven by :class:`mlp.trainer.Trainer` on the
    NumPy backend — so the rates are those of ``python -m mlp.train --lr``.
    The loss is measured on a fixed sample of ``n_eval`` training images,
    every ``every`` steps and at every step of the last ``window`` of the run.
    Returns one dict per rate, as :func:`compare_regression`.
    """
    pick = np.random.default_rng(12345).choice(data.X_train.shape[0], n_eval, replace=False)
    results = []
    for lr in rates:
        runs, curve = [], None
        for seed in seeds:
            net, done, losses = _mnist_run(data, lr, seed, steps, batch_size, every, window, pick)
            runs.append(run_metrics(done, losses, threshold, zero_output_loss=0.5,
                                    window=window))
            if curve is None:
                curve = (np.array(done), np.array(losses), threshold)
        results.append({"lr": lr, "runs": runs, "curve": curve,
                        "sizes": "-".join(map(str, net.sizes))})
    return results


def _mnist_run(data, lr, seed, steps, batch_size, every, window, pick):
    """One run of :func:`compare_mnist`: (network, steps done, loss on rows ``pick`` after each)."""
    net = Network([data.X_train.shape[1], 30, data.n_classes], "sigmoid", "mse", seed=seed)
    X_eval = batch_inputs(data.X_train, pick, data.scale, net.dtype)
    Y_eval = batch_targets(data.y_train, pick, data.n_classes, net.dtype)
    trainer = Trainer(net, SGD(lr), NumpyBackend(), batch_size, seed, chunk_size=1)
    n_batches = math.ceil(data.X_train.shape[0] / batch_size)
    done, losses = [0], [net.cost(X_eval, Y_eval)]

    def measure(tr):
        step = tr.epoch * n_batches + tr.position
        if step % every == 0 or step > steps * (1 - window):
            done.append(step)
            losses.append(tr.net.cost(X_eval, Y_eval))
        if step >= steps:
            tr.request_stop()

    trainer.on_chunk = measure
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            trainer.fit(data.X_train, data.y_train, math.ceil(steps / n_batches), data.scale)
    except DivergenceError:       # a NaN or infinite batch loss
        done.append(done[-1] + 1)
        losses.append(math.inf)
    return net, done, losses


def summarize(results):
    """One row per rate: medians over the seeds, and how many seeds diverged.

    ``status`` is "diverged" when most seeds diverged; "converged" when most
    settled (ended with a loss within the threshold, see :func:`run_metrics`);
    "unsteady" when most reached the threshold but did not end within it;
    else "too slow" (did not reach it in the steps given). Reaching the
    threshold once is not converging: a rate whose loss jitters back above it
    has not converged to it.
    """
    rows = []
    for r in results:
        runs = r["runs"]
        reach = [m["steps_to_threshold"] if m["steps_to_threshold"] is not None else math.inf
                 for m in runs]
        n_diverged = sum(m["diverged"] for m in runs)
        median_steps = float(np.median(reach))
        if 2 * n_diverged > len(runs):
            status = "diverged"
        elif 2 * sum(m["settled"] for m in runs) > len(runs):
            status = "converged"
        elif math.isfinite(median_steps):
            status = "unsteady"
        else:
            status = "too slow"
        rows.append({"lr": r["lr"],
                     "steps_to_threshold": median_steps if math.isfinite(median_steps) else None,
                     "final_loss": float(np.median([m["final_loss"] for m in runs])),
                     "spread": float(np.median([m["spread"] for m in runs])),
                     "diverged": n_diverged, "seeds": len(runs), "status": status})
    return rows


def rank_correlation(x, y):
    """Spearman's rank correlation of x and y (NaN with fewer than 3 points or a constant)."""
    from scipy.stats import spearmanr  # slow and large to import: only lr-compare needs it
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(spearmanr(x, y).statistic)


def trends(rows):
    """What the table says about the learning rate, as numbers.

    * ``speed`` — rank correlation of the rate with the steps to the
      threshold, over the rates that did not diverge (not reaching it counts
      as slowest): negative means larger rates converge faster;
    * ``jitter`` — rank correlation of the rate with the spread, over the
      rates that reached the threshold, converged or unsteady (before that,
      the spread measures the descent, not the noise): positive means larger
      rates settle less precisely;
    * ``final`` — the same for the final loss;
    * the fastest and the most precise rate that converged, the rates above
      the fastest that did not diverge but were slower or unsteady
      (``overshooting``: the edge of stability), and the rates that were
      unsteady, too slow or diverged.
    """
    stable = [r for r in rows if r["status"] != "diverged"]
    converged = [r for r in rows if r["status"] == "converged"]
    reached = [r for r in rows if r["status"] in ("converged", "unsteady")]
    reach = [r["steps_to_threshold"] if r["steps_to_threshold"] is not None else math.inf
             for r in stable]
    fastest = min(converged, key=lambda r: r["steps_to_threshold"])["lr"] if converged else None
    return {
        "speed": rank_correlation([r["lr"] for r in stable], reach),
        "jitter": rank_correlation([r["lr"] for r in reached], [r["spread"] for r in reached]),
        "final": rank_correlation([r["lr"] for r in reached],
                                  [r["final_loss"] for r in reached]),
        "fastest": fastest,
        "most_precise": min(converged, key=lambda r: r["spread"])["lr"] if converged else None,
        "overshooting": [r["lr"] for r in stable if fastest is not None and r["lr"] > fastest],
        "unsteady": [r["lr"] for r in rows if r["status"] == "unsteady"],
        "too_slow": [r["lr"] for r in rows if r["status"] == "too slow"],
        "diverged": [r["lr"] for r in rows if r["status"] == "diverged"],
    }


def describe(name, t):
    """One paragraph stating what the measurement of one task shows."""
    def trend(rho, up, down):
        if math.isnan(rho):
            return "showed no measurable trend"
        return f"{up if rho > 0 else down} (rank correlation {rho:+.2f})"

    text = (f"{name}: as the rate grows, the steps to the threshold "
            f"{trend(t['speed'], 'grow', 'fall')}; among the rates that reached it, the "
            f"spread {trend(t['jitter'], 'grows', 'shrinks')} and the final loss "
            f"{trend(t['final'], 'grows', 'shrinks')}.")
    if t["fastest"] is not None:
        text += f" Fastest: lr {t['fastest']:g}; most precise: lr {t['most_precise']:g}."
    if t["overshooting"]:
        text += (f" Above lr {t['fastest']:g} the steps overshoot and convergence slows or fails "
                 f"(lr {', '.join(f'{lr:g}' for lr in t['overshooting'])}): the edge of "
                 f"stability.")
    if t["unsteady"]:
        text += (f" Reached the threshold but ended above it (not converged): "
                 f"lr {', '.join(f'{lr:g}' for lr in t['unsteady'])}.")
    if t["too_slow"]:
        text += (f" Too slow to reach the threshold: "
                 f"lr {', '.join(f'{lr:g}' for lr in t['too_slow'])}.")
    if t["diverged"]:
        text += f" Diverged: lr {', '.join(f'{lr:g}' for lr in t['diverged'])}."
    return text


def conclusion(all_trends):
    """The verdict on the tutorial's learning-rate table, from the measured trends.

    "Large rate: fast but imprecise" needs, in every task, larger rates to
    converge faster (speed < 0) and to settle with more jitter (jitter > 0);
    the tutorial's "large rate: slow but precise" needs the opposite signs.
    """
    fast_noisy = all(t["speed"] < 0 and t["jitter"] > 0 for t in all_trends)
    slow_precise = all(t["speed"] > 0 and t["jitter"] < 0 for t in all_trends)
    if fast_noisy:
        return ("a large learning rate converges fast but imprecisely (its loss keeps "
                "jittering around the minimum); a small one converges slowly but precisely; "
                "too large a rate diverges. The tutorial's table (大學習率: 收斂慢,但是結果精確 / "
                "小學習率: 收斂快,但是結果不精確) states it backwards.")
    if slow_precise:
        return ("a large learning rate converges slowly but precisely and a small one fast "
                "but imprecisely, as the tutorial's table says.")
    return ("the measurement is mixed: the tasks do not agree on how the rate trades "
            "speed for precision (see the trends above); neither the tutorial's table nor "
            "its reverse is supported by all of them.")


def format_table(rows, threshold_text):
    """The per-rate table that lr-compare prints."""
    lines = [f"  threshold: {threshold_text}",
             f"  {'lr':>8}  {'steps to threshold':>18}  {'final loss':>10}  {'spread':>9}  "
             f"{'diverged':>8}  status"]
    for r in rows:
        steps = "never" if r["steps_to_threshold"] is None else f"{r['steps_to_threshold']:g}"
        lines.append(f"  {r['lr']:>8g}  {steps:>18}  {r['final_loss']:>10.4g}  "
                     f"{r['spread']:>9.2g}  {r['diverged']:>4}/{r['seeds']:<3}  {r['status']}")
    return "\n".join(lines)


def moving_average(values, width):
    """Trailing mean over ``width`` points (fewer at the start); NaN and inf propagate."""
    values = np.asarray(values, dtype=float)
    sums = np.cumsum(np.concatenate(([0.0], values)))
    counts = np.minimum(np.arange(1, len(values) + 1), width)
    starts = np.arange(1, len(values) + 1) - counts
    with np.errstate(invalid="ignore"):
        return (sums[1:] - sums[starts]) / counts


def plot_lr_compare(regression_results, mnist_results, path, mnist_name="MNIST", smooth=20):
    """Loss curves per rate (first seed), log scale, both tasks side by side; written atomically.

    The regression's loss jumps with every random sample, so its panel shows
    the excess over the least-squares minimum as a ``smooth``-step moving
    average: the level each rate settles at.
    """
    import matplotlib  # only lr-compare draws: the other demos never import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the Agg backend, which needs no display

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    panels = [
        (axes[0], regression_results, smooth,
         "regression x·a → 10 (the tutorial's rate)",
         f"loss − least-squares minimum\n({smooth}-step moving average)"),
        (axes[1], mnist_results, 1,
         f"{mnist_name} {mnist_results[0]['sizes']} sigmoid, squared error (mlp's rate)",
         "loss on 500 training images"),
    ]
    for ax, results, width, title, ylabel in panels:
        for i, r in enumerate(results):
            steps, curve, threshold = r["curve"]
            curve = moving_average(curve, width) if width > 1 else np.asarray(curve)
            shown = np.where(np.isfinite(curve) & (curve < 1e6), curve, np.nan)
            diverged = 2 * sum(m["diverged"] for m in r["runs"]) > len(r["runs"])
            ax.plot(steps, shown, color=f"C{i}", lw=1.0,
                    label=f"lr {r['lr']:g}" + (" (diverged)" if diverged else ""))
        ax.axhline(threshold, color="black", ls="--", lw=0.8, label="threshold")
        ax.set(yscale="log", xlabel="step", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, ncol=2)
    fig.suptitle("Loss curves per learning rate (first seed)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


class Sweep(NamedTuple):
    """One task of :func:`lr_compare`: which learning rates, how many seeds, how many steps."""
    rates: tuple
    seeds: int
    steps: int


REGRESSION_SWEEP = Sweep(REGRESSION_RATES, 5, 1000)
MNIST_SWEEP = Sweep(MNIST_RATES, 3, 1500)


def lr_compare(seed=0, out=None, dataset="mnist", data_dir=None, data=None,
               regression=REGRESSION_SWEEP, mnist=MNIST_SWEEP, threads=1, say=print):
    """Measure what the learning rate does, on the regression and on a short MNIST run.

    ``regression`` and ``mnist`` are the :class:`Sweep` of each task. For
    each rate and each of several seeds (``seed``, ``seed + 1``, …) it
    records the loss curve and measures (:func:`run_metrics`) the steps to
    reach a loss threshold, the final loss, its spread over the last 10% of
    the steps and whether the run diverged. It prints a table per task, the
    trends (:func:`trends`) and the conclusion they support
    (:func:`conclusion`), and writes ``lr_compare.png`` into ``out`` (if given).
    NumPy's matrix products run on ``threads`` BLAS threads. Returns a dict
    with the per-rate rows, the trends and the conclusion.
    """
    _require_positive(regression_seeds=regression.seeds, regression_steps=regression.steps,
                      mnist_seeds=mnist.seeds, mnist_steps=mnist.steps, threads=threads)
    if data is None:
        data = load_dataset(dataset, data_dir)
    with threadpool_limits(limits=threads):
        reg = compare_regression(regression.rates, range(seed, seed + regression.seeds),
                                 regression.steps)
        mn = compare_mnist(data, mnist.rates, range(seed, seed + mnist.seeds), mnist.steps)
    reg_rows = summarize(reg)
    say(f"regression (x·a → 10, the tutorial's rate on (x·a − 10)², one sample a step), "
        f"{regression.seeds} seeds × {regression.steps} steps; loss averaged over the 100 points")
    say(format_table(reg_rows, "loss ≤ 1.1 × its least-squares minimum (a = 10·Σx/Σx²)"))
    mn_rows = summarize(mn)
    say(f"{data.name} ({data.X_train.shape[1]}-30-10 sigmoid, squared error, mlp's rate, "
        f"batch 10), {mnist.seeds} seeds × {mnist.steps} steps; loss on 500 training images")
    say(format_table(mn_rows, "loss ≤ 0.2"))
    reg_trends, mn_trends = trends(reg_rows), trends(mn_rows)
    say(describe("regression", reg_trends))
    say(describe(data.name, mn_trends))
    verdict = conclusion([reg_trends, mn_trends])
    say("Conclusion (measured): " + verdict)
    figure = None
    if out is not None:
        figure = str(plot_lr_compare(reg, mn, Path(out) / "lr_compare.png",
                                     "MNIST" if data.name == "mnist" else data.name))
        say(f"figure: {figure}")
    return {"demo": "lr-compare", "seed": seed, "dataset": data.name,
            "regression": {"rows": reg_rows, "trends": reg_trends, "steps": regression.steps},
            "mnist": {"rows": mn_rows, "trends": mn_trends, "steps": mnist.steps},
            "conclusion": verdict, "figure": figure}


# ---------------------------------------------------------- command line
DEMOS = {
    "regression": (regression, "fit x·a to the target 10 (squared error, SGD lr 0.02, 100 steps)"),
    "classification": (classification,
                       "learn the boundary x = −a between N(−1, 1) and N(3, 1) "
                       "(sigmoid cross-entropy, lr 0.05, 1400 steps)"),
    "two-layer": (two_layer, "the 2-3-1 linear network on 32 points (GD lr 0.001, batch 8, "
                             "3000 steps)"),
    "mnist-sigmaprime": (mnist_sigmaprime,
                         "MNIST 784-30-10 sigmoid, err = ŷ − y backpropagated through σ' "
                         "(lr 0.5, batch 10, 10,000 steps)"),
    "lr-compare": (lr_compare, "measure speed, precision and divergence across a ladder of "
                               "learning rates; writes lr_compare.png"),
}


def to_json(value):
    """``value`` with NumPy arrays and scalars made plain, non-finite floats made None."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, np.generic):
        return to_json(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def build_parser():
    """The argument parser of ``python -m mlp.demos``: one subcommand per demo."""
    p = argparse.ArgumentParser(
        prog="python -m mlp.demos",
        description="The backpropagation tutorial's programs, run on mlp's own network, "
                    "losses and optimizer.",
        epilog="Every demo takes --seed and --out. Help on one demo: "
               "python -m mlp.demos NAME --help")
    sub = p.add_subparsers(dest="demo", metavar="NAME", required=True,
                           title="demos")

    def demo_parser(name):
        q = sub.add_parser(name, help=DEMOS[name][1], description=DEMOS[name][1],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        q.add_argument("--seed", type=nonnegative_int, default=0, help="random seed")
        q.add_argument("--out", default="runs/demos",
                       help="output folder: the results as NAME.json "
                            "(lr-compare also writes lr_compare.png)")
        return q

    for name, lr, steps in (("regression", 0.02, 100), ("classification", 0.05, 1400),
                            ("two-layer", 0.001, 3000)):
        q = demo_parser(name)
        q.add_argument("--lr", type=positive_float, default=lr,
                       help="the tutorial's learning rate")
        q.add_argument("--steps", type=positive_int, default=steps)

    sigmaprime = demo_parser("mnist-sigmaprime")
    sigmaprime.add_argument("--lr", type=positive_float, default=0.5, help="the tutorial's eta")
    sigmaprime.add_argument("--steps", type=positive_int, default=10000)
    sigmaprime.add_argument("--batch-size", type=positive_int, default=10)
    compare = demo_parser("lr-compare")
    for q in (sigmaprime, compare):
        q.add_argument("--dataset", choices=["mnist", "digits"], default="mnist",
                       help="MNIST, or scikit-learn's 8x8 digits to work offline")
        q.add_argument("--data-dir", help="folder with the MNIST files (else $MLP_DATA_DIR, "
                                          "else data/mnist)")
        q.add_argument("--threads", type=positive_int, default=1,
                       help="BLAS threads (one is fastest for these small matrices)")
    compare.add_argument("--regression-seeds", type=positive_int, default=5)
    compare.add_argument("--regression-steps", type=positive_int, default=1000)
    compare.add_argument("--mnist-seeds", type=positive_int, default=3)
    compare.add_argument("--mnist-steps", type=positive_int, default=1500)
    return p


def run(args, stdout=sys.stdout):
    """Run the demo ``args`` names, print its output, write its results into ``args.out``."""
    def say(line):
        print(line, file=stdout, flush=True)

    options = {k: v for k, v in vars(args).items() if k not in ("demo", "out")}
    if args.demo == "lr-compare":
        options["out"] = args.out
        for task, default in (("regression", REGRESSION_SWEEP), ("mnist", MNIST_SWEEP)):
            options[task] = default._replace(seeds=options.pop(f"{task}_seeds"),
                                             steps=options.pop(f"{task}_steps"))
    result = DEMOS[args.demo][0](say=say, **options)
    path = Path(args.out) / f"{args.demo.replace('-', '_')}.json"
    atomic_write_json(path, to_json(result))
    say(f"results: {path}")
    return result


def main(argv=None):
    """Entry point of ``python -m mlp.demos``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except MLPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
