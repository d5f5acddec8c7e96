"""SGD and Adam against the update rules written out by hand, closed forms of Adam's first
steps, PyTorch's and scikit-learn's Adam; max-norm and the learning-rate schedules."""

import math

import numpy as np
import pytest
from optional import needs_torch

from mlp.network import Network
from mlp.optimizers import (
    SGD,
    Adam,
    adam_step_size,
    max_norm_step,
    optimizer_from_record,
    optimizer_record,
)
from mlp.schedules import Schedule


def _grads(net, seed):
    rng = np.random.default_rng(seed)
    return ([rng.normal(size=w.shape) for w in net.weights],
            [rng.normal(size=b.shape) for b in net.biases])


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_sgd_follows_the_written_rule(momentum, nesterov, wd):
    """Every layer's weights and biases, over three steps (three layers: the loop must not stop
    at the first or skip the last)."""
    net = Network([3, 4, 5, 2], dtype="float64", seed=0)
    opt = SGD(lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    ws, bs = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    vws, vbs = [np.zeros_like(w) for w in ws], [np.zeros_like(b) for b in bs]
    for step in range(3):
        gw, gb = _grads(net, step)
        opt.step(net, gw, gb)
        for l in range(net.num_layers):
            g = gw[l] + wd * ws[l]                     # weights are decayed, biases are not
            vws[l] = momentum * vws[l] - 0.1 * g
            vbs[l] = momentum * vbs[l] - 0.1 * gb[l]
            if nesterov:
                ws[l] = ws[l] + momentum * vws[l] - 0.1 * g
                bs[l] = bs[l] + momentum * vbs[l] - 0.1 * gb[l]
            else:
                ws[l], bs[l] = ws[l] + vws[l], bs[l] + vbs[l]
            np.testing.assert_allclose(net.weights[l], ws[l], rtol=1e-13,
                                       err_msg=f"W{l + 1} after step {step + 1}")
            np.testing.assert_allclose(net.biases[l], bs[l], rtol=1e-13, atol=1e-16,
                                       err_msg=f"b{l + 1} after step {step + 1}")


def test_plain_sgd_is_w_minus_lr_g():
    net = Network([2, 2], dtype="float64")
    w0 = net.weights[0].copy()
    gw, gb = [np.ones((2, 2))], [np.ones(2)]
    SGD(lr=0.5).step(net, gw, gb)
    np.testing.assert_allclose(net.weights[0], w0 - 0.5)
    np.testing.assert_allclose(net.biases[0], -0.5)


@pytest.mark.parametrize("kwargs, word", [
    (dict(lr=0), "learning rate"), (dict(lr=-1), "learning rate"),
    (dict(lr=float("nan")), "learning rate"), (dict(momentum=1.0), "momentum"),
    (dict(weight_decay=-1), "weight decay"), (dict(nesterov=True), "nesterov"),
])
def test_bad_hyperparameters(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SGD(**kwargs)


# ------------------------------------------------------------------ Adam
def test_adam_step_one_moves_each_weight_by_about_lr_times_the_sign_of_g():
    """Step 1: m = (1−β₁)g, v = (1−β₂)g², α₁ = η√(1−β₂)/(1−β₁), so Δw = −η g/(|g| + ε/√(1−β₂))
    exactly: about −η sign(g) wherever |g| ≫ ε."""
    net = Network([3, 4, 2], dtype="float64", seed=0)
    before = [p.copy() for p in net.params()]
    gw, gb = _grads(net, 7)
    opt = Adam(lr=0.01, eps=1e-3)
    opt.step(net, gw, gb)
    for p, p0, g in zip(net.params(), before, [a for pair in zip(gw, gb) for a in pair]):
        np.testing.assert_allclose(p - p0, -0.01 * g / (np.abs(g) + 1e-3 / math.sqrt(0.001)),
                                   rtol=1e-12, atol=1e-17)
    assert opt.t == 1


def test_adam_with_a_constant_gradient_moves_lr_per_step():
    """A constant g: m_t = (1−β₁ᵗ)g, v_t = (1−β₂ᵗ)g², so every step moves by
    η g/(|g| + ε/√(1−β₂ᵗ)): the bias correction makes the first steps full-sized."""
    net = Network([2, 3], dtype="float64", seed=1)
    gw, gb = [np.full((2, 3), -0.5)], [np.full(3, 2.0)]
    opt = Adam(lr=0.1, beta1=0.8, beta2=0.9, eps=1e-4)
    for t in range(1, 6):
        w0, b0 = net.weights[0].copy(), net.biases[0].copy()
        opt.step(net, gw, gb)
        shrink = 1e-4 / math.sqrt(1 - 0.9 ** t)
        np.testing.assert_allclose(net.weights[0] - w0, 0.1 * 0.5 / (0.5 + shrink), rtol=1e-11)
        np.testing.assert_allclose(net.biases[0] - b0, -0.1 * 2 / (2 + shrink), rtol=1e-11)


def test_adam_step_size_is_the_bias_correction():
    assert adam_step_size(0.1, 0.9, 0.999, 1) == pytest.approx(0.1 * math.sqrt(0.001) / 0.1)
    assert adam_step_size(0.1, 0.9, 0.999, 10**6) == pytest.approx(0.1)


def _grads_from(net, step, shift):
    """_grads moved ``shift`` away from 0 (g + shift·sign g)."""
    gw, gb = _grads(net, step)
    return [g + shift * np.sign(g) for g in gw], [g + shift * np.sign(g) for g in gb]


def _torch_adam(net, opt_kwargs, decoupled, steps, shift):
    """PyTorch's Adam (or AdamW) on copies of net's arrays fed the gradients of _grads_from;
    biases are in a group of their own, undecayed, as mlp leaves them."""
    import torch  # only where PyTorch is installed (needs_torch)
    ws = [torch.tensor(w.copy(), requires_grad=True) for w in net.weights]
    bs = [torch.tensor(b.copy(), requires_grad=True) for b in net.biases]
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    lr, (b1, b2), eps, wd = opt_kwargs
    opt = kind([{"params": ws, "weight_decay": wd}, {"params": bs, "weight_decay": 0.0}],
               lr=lr, betas=(b1, b2), eps=eps)
    for step in range(steps):
        gw, gb = _grads_from(net, step, shift)
        for p, g in zip(ws + bs, gw + gb):
            p.grad = torch.tensor(g)
        opt.step()
    return [p.detach().numpy() for p in ws + bs]


@needs_torch
@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("eps, shift, atol", [(0.0, 0.0, 0.0), (1e-8, 0.5, 5e-8)])
def test_adam_equals_pytorch_step_by_step(decoupled, eps, shift, atol):
    """PyTorch divides by √v̂ + ε where mlp (and scikit-learn) divide by √v + ε: with ε = 0 the
    same numbers to round-off; with ε = 1e-8 each step differs by about η ε / (|g| √(1−β₂ᵗ)),
    under 2e-9 for |g| ≥ 0.5."""
    net = Network([5, 4, 3], dtype="float64", seed=2)
    hyper = (0.01, (0.9, 0.99), eps, 0.1)
    for steps in (1, 2, 7):
        ours = net.copy()
        opt = Adam(lr=0.01, beta1=0.9, beta2=0.99, eps=eps, weight_decay=0.1,
                   decoupled=decoupled)
        for step in range(steps):
            opt.step(ours, *_grads_from(net, step, shift))
        theirs = _torch_adam(net, hyper, decoupled, steps, shift)
        for p, q in zip(ours.weights + ours.biases, theirs):
            np.testing.assert_allclose(p, q, rtol=1e-12, atol=atol, err_msg=f"after {steps}")


def test_adam_equals_scikit_learns_adam_optimizer():
    """scikit-learn's AdamOptimizer (the estimators' solver="adam") on the same gradients."""
    from sklearn.neural_network._stochastic_optimizers import AdamOptimizer  # private module
    net = Network([4, 3, 2], dtype="float64", seed=4)
    params = [p.copy() for p in net.params()]
    theirs = AdamOptimizer(params, learning_rate_init=0.02, beta_1=0.8, beta_2=0.95, epsilon=1e-6)
    ours = Adam(lr=0.02, beta1=0.8, beta2=0.95, eps=1e-6)
    for step in range(5):
        gw, gb = _grads(net, step)
        ours.step(net, gw, gb)
        theirs.update_params(params, [a for pair in zip(gw, gb) for a in pair])
        for p, q in zip(net.params(), params):
            np.testing.assert_allclose(p, q, rtol=1e-12, err_msg=f"step {step + 1}")


# ------------------------------------------------------------------ max-norm
def test_max_norm_clips_long_columns_to_c_and_leaves_the_others():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(6, 5)) * np.array([0.1, 1, 3, 0.2, 10])    # columns of norm ~0.2 … 25
    norms = np.linalg.norm(W, axis=0)
    c = 1.0
    out = max_norm_step(W.copy(), c)
    new = np.linalg.norm(out, axis=0)
    assert np.all(new <= c * (1 + 1e-12))
    short = norms <= c
    assert short.any() and (~short).any()
    np.testing.assert_array_equal(out[:, short], W[:, short])
    np.testing.assert_allclose(new[~short], c, rtol=1e-12)
    np.testing.assert_allclose(out[:, ~short] * norms[~short] / c, W[:, ~short], rtol=1e-12)


def test_the_optimizers_apply_max_norm_to_hidden_units_only():
    net = Network([3, 4, 4, 2], dtype="float64", seed=0)
    for W in net.weights:
        W *= 10
    out_before = net.weights[-1].copy()
    gw = [np.zeros_like(w) for w in net.weights]
    gb = [np.zeros_like(b) for b in net.biases]
    SGD(lr=0.1, max_norm=0.5).step(net, gw, gb)
    for W in net.weights[:-1]:
        assert np.linalg.norm(W, axis=0).max() <= 0.5 * (1 + 1e-12)
    np.testing.assert_array_equal(net.weights[-1], out_before)


# ------------------------------------------------------------------ schedules and records
def test_schedules_closed_forms():
    lin, cos = Schedule("linear", 10), Schedule("cosine", 10)
    assert lin.factor(0) == 1.0 and lin.factor(5) == 0.5 and lin.factor(9) == pytest.approx(0.1)
    assert cos.factor(0) == 1.0 and cos.factor(5) == pytest.approx(0.5)
    assert cos.factor(9) == pytest.approx(0.5 * (1 + math.cos(0.9 * math.pi)))
    step = Schedule("step", 100, per_epoch=5, every=2, gamma=0.1)
    assert [step.factor(t) for t in (0, 9, 10, 19, 20)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert Schedule("constant", 3).rates(0.5, 0, 4).tolist() == [0.5] * 4
    assert lin.factor(50) == lin.factor(9)             # past the end: the last step's rate
    with pytest.raises(ValueError, match="constant, linear, cosine, step"):
        Schedule("exponential", 10)


def test_the_schedule_sets_each_steps_rate():
    net = Network([2, 2], dtype="float64")
    opt = SGD(lr=1.0, schedule={"name": "linear", "total": 4})
    w = net.weights[0].copy()
    for t in range(4):
        opt.step(net, [np.ones((2, 2))], [np.zeros(2)])
        w -= 1.0 - t / 4
    np.testing.assert_allclose(net.weights[0], w, rtol=1e-15)


@pytest.mark.parametrize("opt", [SGD(0.1, 0.9, True, 0.01, 2.0, {"name": "cosine", "total": 9}),
                                 Adam(0.01, 0.8, 0.9, 1e-7, 0.1, True, 3.0)])
def test_optimizer_records_round_trip(opt):
    opt.t = 17
    back = optimizer_from_record(optimizer_record(opt))
    assert type(back) is type(opt) and back.config() == opt.config() and back.t == 17


def test_a_record_from_before_adam_is_an_sgd_and_an_unknown_name_is_refused():
    old = {"lr": 0.2, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}
    opt = optimizer_from_record(old)
    assert isinstance(opt, SGD) and opt.t == 0 and opt.max_norm == 0 and opt.schedule is None
    with pytest.raises(ValueError, match="unknown optimizer 'lion'.*sgd, adam"):
        optimizer_from_record({"name": "lion", "lr": 0.1})


@pytest.mark.parametrize("kwargs, word", [
    (dict(beta1=1.0), "beta1"), (dict(beta2=-0.1), "beta2"), (dict(eps=-1), "epsilon"),
    (dict(lr=0), "learning rate"), (dict(max_norm=-1), "max-norm"),
])
def test_bad_adam_hyperparameters(kwargs, word):
    with pytest.raises(ValueError, match=word):
        Adam(**kwargs)
