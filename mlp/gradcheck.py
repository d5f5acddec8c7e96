"""Gradient checking: backpropagation's gradients against finite differences.

``python -m mlp.gradcheck`` builds a random float64 network and a random batch,
asks a backend for the analytic gradient ``g`` of every weight matrix and bias
vector (:meth:`loss_and_gradients`), and compares it entry by entry with a
numerical gradient ``ĝ`` of the reference objective :meth:`Network.cost`
(batch-averaged loss + (λ/2) Σ‖W‖²). :func:`check_gradients` does the same for
any float64 network and batch.

The numerical gradient
----------------------
``ĝ`` is the 5-point (fourth-order) central difference, for each entry w::

    ĝ = [L(w − 2h) − 8 L(w − h) + 8 L(w + h) − L(w + 2h)] / (12 h)

Its truncation error is −h⁴ L⁽⁵⁾/30 and the rounding error of the four loss
values about ε·|L|·(1 + 8 + 8 + 1)/(12 h). With h = 1e-4 these are ~3e-18·L⁽⁵⁾
(negligible even where pre-activations reach hundreds) and ~3e-12·|L|. The
plain central difference [L(w + h) − L(w − h)] / (2h) cannot have both: its
truncation error −h² L'''/6 is ~2e-9·L''' at h = 1e-4, and at h = 1e-6, where
that is small, its rounding error is ~1e-10·|L| — a relative error of 1e-7 on
a gradient of 1e-3.

The comparison
--------------
For each tensor the row reports the largest, over the checked entries, of::

    |g − ĝ| / max(|g|, |ĝ|, tiny)            tiny = noise / threshold
    noise = NOISE_ULPS · ε · max(|L|, 1) / h  (ε = 2.2e-16, float64)

``noise`` bounds the rounding error of ``ĝ``. Entries whose gradient is larger
than ``tiny`` are judged by relative error; an entry whose gradient is
(nearly) zero is judged by absolute error, and fails only if
``|g − ĝ| > noise`` — so finite-difference noise never fails a zero gradient,
while a wrong nonzero gradient still does. The threshold is 1e-7.

Kinks
-----
relu is not differentiable at 0. Where the stencil w ± 2h moves a relu
pre-activation across 0, the one-sided slopes differ and ĝ is a mixture of
them, not a derivative: no threshold is meaningful there. Such entries are
detected (the sign pattern of every relu layer's z is compared at the five
stencil points), skipped and counted. Between kinks relu is linear, the
objective is smooth, and every other entry is held to the same threshold.

Large tensors are checked on a seeded random subset of ``max_entries`` entries.
"""

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from .activations import ACTIVATIONS, SMOOTH
from .backends import BACKENDS, get_backend
from .cli import nonnegative_float, nonnegative_int, positive_float, positive_int, proportion
from .errors import MLPError
from .losses import LOSSES, one_hot
from .network import Network

#: the 5-point stencil: offsets (in units of h) and weights (divided by 12 h)
STENCIL = ((-2, 1.0), (-1, -8.0), (1, 8.0), (2, -1.0))
STENCIL_DENOMINATOR = 12.0
#: default step h of the stencil
DEFAULT_EPS = 1e-4
#: default pass/fail threshold on the relative error (float64, smooth or between kinks)
DEFAULT_THRESHOLD = 1e-7
#: the rounding error of ĝ, in units of ε·max(|L|, 1)/h (see the module docstring)
NOISE_ULPS = 32
#: default number of entries checked per tensor (all of them if the tensor is smaller)
DEFAULT_MAX_ENTRIES = 100
#: largest relative difference between the backend's loss and Network.cost
LOSS_TOLERANCE = 1e-12


def stencil_derivative(f, x, h=DEFAULT_EPS):
    """The 5-point central difference of ``f`` at ``x`` (elementwise for array x)."""
    return sum(w * f(x + k * h) for k, w in STENCIL) / (STENCIL_DENOMINATOR * h)


def relative_error(g, g_hat, tiny):
    """|g − ĝ| / max(|g|, |ĝ|, tiny), elementwise."""
    g, g_hat = np.asarray(g, dtype=np.float64), np.asarray(g_hat, dtype=np.float64)
    return np.abs(g - g_hat) / np.maximum(np.maximum(np.abs(g), np.abs(g_hat)), tiny)


@dataclass
class GradRow:
    """The check of one parameter tensor.

    ``layer`` counts weight layers from 1 (``net.weights[layer - 1]``), ``name``
    is "W" or "b". ``checked`` entries of ``total`` were compared (a seeded
    subset when the tensor is large); ``skipped`` more were drawn but left out
    because their stencil crosses a relu kink. ``worst`` is the index of the
    entry with the largest relative error ``max_rel_error``, whose analytic and
    numerical values are ``analytic`` and ``numeric``.
    """

    layer: int
    name: str
    shape: tuple
    checked: int
    total: int
    skipped: int
    max_rel_error: float
    max_abs_error: float
    worst: tuple
    analytic: float
    numeric: float
    threshold: float
    passed: bool


def _kinked_layers(net):
    """Indices of the layers whose output function has a kink (relu hidden layers, relu output)."""
    L = net.num_layers
    kinked = [l for l in range(L - 1) if not SMOOTH[net.activation]]
    if not SMOOTH.get(net.loss.output, True):
        kinked.append(L - 1)
    return kinked


def _objective(net, X, Y, weight_decay, kinked):
    """Net.cost on the batch, and the sign pattern of the kinked layers' z (or None)."""
    cost = net.cost(X, Y, weight_decay)
    if not kinked:
        return cost, None
    zs, _ = net.forward(X)
    return cost, [zs[l] > 0 for l in kinked]


def _numeric_entry(net, param, j, X, Y, weight_decay, h, kinked, signs0):
    """ĝ for entry ``j`` of ``param`` (flat index), or None if the stencil crosses a kink."""
    flat = param.reshape(-1)
    w0 = flat[j]
    total = 0.0
    try:
        for k, weight in STENCIL:
            flat[j] = w0 + k * h
            cost, signs = _objective(net, X, Y, weight_decay, kinked)
            if signs is not None and any(np.any(s != s0) for s, s0 in zip(signs, signs0)):
                return None
            total += weight * cost
    finally:
        flat[j] = w0
    return total / (STENCIL_DENOMINATOR * h)


def _backend(backend):
    """A backend object from a name ("numpy", "numba") or the object itself."""
    return get_backend(backend) if isinstance(backend, str) else backend


def noise_floor(cost, eps=DEFAULT_EPS):
    """The rounding noise of ĝ for a loss ``cost`` and step ``eps``: NOISE_ULPS·ε·max(|L|, 1)/h."""
    return NOISE_ULPS * np.finfo(np.float64).eps * max(abs(cost), 1.0) / eps


def _check_inputs(net, X, Y):
    """X and Y as float64 arrays, after checking that they fit the network."""
    if net.dtype != np.float64:
        raise ValueError(f"gradient checking needs a float64 network, got {net.dtype}: "
                         "build it with Network(..., dtype='float64')")
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    n_in, n_out = net.sizes[0], net.sizes[-1]
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] != n_in:
        raise ValueError(f"X must have shape (n >= 1, {n_in}) for this network, got {X.shape}")
    if Y.shape != (X.shape[0], n_out):
        raise ValueError(f"Y must have shape {(X.shape[0], n_out)} (one row per row of X, "
                         f"{n_out} outputs), got {Y.shape}; one-hot encode labels "
                         "with mlp.losses.one_hot")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
        raise ValueError("X and Y must be finite (no NaN or infinity)")
    return X, Y


def check_gradients(net, X, Y, weight_decay=0.0, backend="numpy",
                    max_entries=DEFAULT_MAX_ENTRIES, seed=0, eps=DEFAULT_EPS,
                    threshold=DEFAULT_THRESHOLD):
    """Compare the backend's gradients on the batch (X, Y) with finite differences.

    Parameters
    ----------
    net : Network with dtype float64 (it is not modified)
    X, Y : the batch, shapes (n, n_in) and (n, n_out); Y one-hot for "ce"
    weight_decay : λ of the objective loss + (λ/2) Σ‖W‖²
    backend : "numpy", "numba", or an object with ``loss_and_gradients``
    max_entries : entries checked per tensor, a seeded random subset if the
        tensor has more (None: all)
    seed : seed of that subset
    eps : the stencil's step h
    threshold : largest relative error that passes

    Returns one :class:`GradRow` per tensor, in the order W¹, b¹, W², b², …
    A tensor passes when at least one entry was checked and every checked
    entry's relative error (see the module docstring) is at most ``threshold``.
    """
    X, Y = _check_inputs(net, X, Y)
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    if max_entries is not None and int(max_entries) < 1:
        raise ValueError(f"max_entries must be >= 1 or None, got {max_entries!r}")
    if not (np.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    backend = _backend(backend)
    _, nabla_w, nabla_b = backend.loss_and_gradients(net.copy(), X, Y, weight_decay)

    work = net.copy()                       # perturbed in place, entry by entry
    kinked = _kinked_layers(work)
    cost0, signs0 = _objective(work, X, Y, weight_decay, kinked)
    tiny = noise_floor(cost0, eps) / threshold
    rng = np.random.default_rng(seed)

    rows = []
    for l in range(work.num_layers):
        for name, param, grad in (("W", work.weights[l], nabla_w[l]),
                                  ("b", work.biases[l], nabla_b[l])):
            grad = np.asarray(grad, dtype=np.float64)
            if grad.shape != param.shape:   # a backend bug: report it, do not crash
                rows.append(GradRow(l + 1, name, param.shape, 0, param.size, 0, np.inf,
                                    np.inf, (), np.nan, np.nan, threshold, False))
                continue
            if max_entries is None or param.size <= max_entries:
                entries = np.arange(param.size)
            else:
                entries = np.sort(rng.choice(param.size, int(max_entries), replace=False))
            g, g_hat, kept = [], [], []
            for j in entries:
                value = _numeric_entry(work, param, j, X, Y, weight_decay, eps, kinked, signs0)
                if value is not None:
                    kept.append(j)
                    g.append(grad.flat[j])
                    g_hat.append(value)
            rows.append(_row(l + 1, name, param.shape, param.size, len(entries), kept,
                             np.array(g), np.array(g_hat), tiny, threshold))
    return rows


def _row(layer, name, shape, total, drawn, kept, g, g_hat, tiny, threshold):
    """Summarise one tensor's comparison as a GradRow."""
    if not kept:     # nothing could be compared: nothing is shown to be right
        return GradRow(layer, name, shape, 0, total, drawn, np.nan, np.nan, (),
                       np.nan, np.nan, threshold, False)
    rel = relative_error(g, g_hat, tiny)
    bad = ~np.isfinite(rel)                 # a NaN or infinite gradient is the worst error
    i = int(np.argmax(np.where(bad, np.inf, rel)))
    max_rel = float(np.inf if bad.any() else rel[i])
    max_abs = float(np.max(np.abs(g - g_hat))) if not bad.any() else np.inf
    worst = tuple(int(k) for k in np.unravel_index(kept[i], shape))
    return GradRow(layer, name, tuple(shape), len(kept), total, drawn - len(kept), max_rel,
                   max_abs, worst, float(g[i]), float(g_hat[i]), threshold,
                   bool(max_rel <= threshold))


def check_loss(net, X, Y, weight_decay=0.0, backend="numpy"):
    """(backend's loss, reference Net.cost, relative difference) on the batch (X, Y)."""
    X, Y = _check_inputs(net, X, Y)
    loss = float(_backend(backend).loss_and_gradients(net.copy(), X, Y, weight_decay)[0])
    ref = float(net.cost(X, Y, weight_decay))
    return loss, ref, abs(loss - ref) / max(abs(ref), 1e-300)


# ------------------------------------------------------------------ the tool
def random_problem(inputs, hidden, outputs, activation="sigmoid", loss="ce", output=None,
                   batch_size=7, seed=0, zero_inputs=0.0):
    """A random float64 network and batch (X, Y) to check.

    Weights are initialised as :class:`Network` does; biases, which start at
    zero there, are drawn from N(0, 0.5²) so that they take part too. X is
    N(0, 1) with a fraction ``zero_inputs`` of its entries set to 0 (like the
    blank pixels of images, for which the numba backend uses a sparse
    first-layer kernel); Y is one-hot for "ce", random 0/1 for "bce", uniform
    in [0, 1) for "mse" (N(0, 1) with an identity output) and "poisson".
    """
    if not 0 <= zero_inputs <= 1:
        raise ValueError(f"zero_inputs must be a fraction in [0, 1], got {zero_inputs!r}")
    rng = np.random.default_rng([int(seed), 1])
    net = Network([inputs, *hidden, outputs], activation, loss, output, "float64", seed)
    for b in net.biases:
        b[...] = 0.5 * rng.standard_normal(b.shape)
    X = rng.standard_normal((batch_size, inputs))
    X[rng.random(X.shape) < zero_inputs] = 0.0
    if net.loss.name == "ce":
        Y = one_hot(rng.integers(0, outputs, batch_size), outputs, np.float64)
    elif net.loss.name == "bce":
        Y = rng.integers(0, 2, (batch_size, outputs)).astype(np.float64)
    elif net.loss.output == "identity":
        Y = rng.standard_normal((batch_size, outputs))
    else:
        Y = rng.random((batch_size, outputs))
    return net, X, Y


def build_parser():
    """The argument parser of ``python -m mlp.gradcheck``."""
    p = argparse.ArgumentParser(
        prog="python -m mlp.gradcheck",
        description="Check backpropagation's gradient of every weight matrix and bias vector "
                    "against 5-point central differences of the loss, in float64, on a random "
                    "network and batch. Exit status 0 only if every tensor passes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--inputs", type=positive_int, default=20, metavar="N",
                   help="input features")
    p.add_argument("--hidden", type=positive_int, nargs="*", default=[16], metavar="N",
                   help="hidden layer widths (none: a single layer)")
    p.add_argument("--outputs", type=positive_int, default=5, metavar="N", help="output units")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="sigmoid",
                   help="hidden-layer function")
    p.add_argument("--loss", choices=list(LOSSES), default="ce",
                   help="ce: softmax + cross-entropy; mse: sigmoid + squared error; "
                        "bce: sigmoid + binary cross-entropy; poisson: exp + half the "
                        "Poisson deviance")
    p.add_argument("--output-activation", choices=sorted(ACTIVATIONS), default=None,
                   help="output function for --loss mse (None: sigmoid)")
    p.add_argument("--batch-size", type=positive_int, default=7, metavar="N",
                   help="rows in the random batch")
    p.add_argument("--zero-inputs", type=proportion, default=0.0, metavar="F",
                   help="fraction of input entries set to 0, as blank pixels are (the numba "
                        "backend switches to its sparse first-layer kernel for mostly-zero inputs)")
    p.add_argument("--weight-decay", type=nonnegative_float, default=0.0, metavar="λ",
                   help="λ of the objective loss + (λ/2) Σ‖W‖²")
    p.add_argument("--backend", choices=list(BACKENDS), default="numpy",
                   help="whose loss_and_gradients is checked")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the network, the batch and the checked subset")
    p.add_argument("--max-entries", type=positive_int, default=DEFAULT_MAX_ENTRIES,
                   metavar="N", help="check a random subset of N entries of larger tensors")
    p.add_argument("--eps", type=positive_float, default=DEFAULT_EPS,
                   help="step h of the finite differences")
    return p


def format_rows(rows):
    """The table of results, one line per tensor."""
    lines = [f"{'layer':>5}  {'name':4}  {'shape':10}  {'checked':>14}  "
             f"{'max rel error':>13}  {'|g-ĝ| max':>9}  result"]
    for r in rows:
        checked = f"{r.checked} of {r.total}"
        if r.skipped:
            checked += f" ({r.skipped} kink)"
        lines.append(f"{r.layer:>5}  {r.name:4}  {str(r.shape):10}  {checked:>14}  "
                     f"{r.max_rel_error:13.2e}  {r.max_abs_error:9.1e}  "
                     f"{'PASS' if r.passed else 'FAIL'}")
    return "\n".join(lines)


def run(args, stdout=None):
    """Run the check ``args`` describes, print the report, and return the exit status."""
    def say(text=""):
        print(text, file=stdout or sys.stdout, flush=True)

    if args.output_activation and args.loss != "mse":
        raise MLPError(f"--output-activation applies to --loss mse only; --loss {args.loss} "
                       f"has a fixed output ({LOSSES[args.loss].default_output})")
    net, X, Y = random_problem(args.inputs, args.hidden, args.outputs, args.activation,
                               args.loss, args.output_activation, args.batch_size, args.seed,
                               args.zero_inputs)
    rows = check_gradients(net, X, Y, args.weight_decay, args.backend, args.max_entries,
                           args.seed, args.eps)
    loss, ref, loss_diff = check_loss(net, X, Y, args.weight_decay, args.backend)
    loss_ok = loss_diff <= LOSS_TOLERANCE

    noise = noise_floor(ref, args.eps)
    hidden = args.activation if args.hidden else "no hidden layer"
    say(f"gradient check: {'-'.join(map(str, net.sizes))} {hidden}/{net.loss.name} "
        f"(output {net.loss.output}), float64, batch of {args.batch_size} random rows, "
        f"{args.zero_inputs:.0%} zero inputs, weight decay {args.weight_decay:g}, "
        f"backend {args.backend}, seed {args.seed}")
    say(f"numerical gradient: 5-point central differences of Network.cost, h = {args.eps:g}")
    say(f"relative error |g - ĝ| / max(|g|, |ĝ|, tiny), tiny = {noise / DEFAULT_THRESHOLD:.1e}: "
        f"an entry with |g| < tiny is judged by |g - ĝ| <= {noise:.1e}, the rounding noise of ĝ")
    say(f"threshold {DEFAULT_THRESHOLD:g} (float64)")
    if _kinked_layers(net):
        say("relu has a kink at z = 0: where the stencil w ± 2h moves some relu z across 0 "
            "the two one-sided slopes differ and no finite-difference threshold is "
            "meaningful, so those entries are skipped and counted (\"kink\"); relu is "
            "linear between kinks, so all other entries are held to the same "
            f"{DEFAULT_THRESHOLD:g}")
    subset = [r for r in rows if r.checked + r.skipped < r.total]
    if subset:
        say(f"tensors with more than {args.max_entries} entries: a random subset of "
            f"{args.max_entries} (seed {args.seed}) is checked")
    say()
    say(format_rows(rows))
    say()
    say(f"loss: backend {loss:.17g}, Network.cost {ref:.17g}, relative difference "
        f"{loss_diff:.1e} (tolerance {LOSS_TOLERANCE:g}): {'PASS' if loss_ok else 'FAIL'}")
    failed = [r for r in rows if not r.passed]
    if failed or not loss_ok:
        for r in failed:
            if r.checked:
                say(f"FAIL layer {r.layer} {r.name}{list(r.worst)}: backprop {r.analytic:.10g}, "
                    f"finite differences {r.numeric:.10g}")
            elif not r.skipped:
                say(f"FAIL layer {r.layer} {r.name}: the backend's gradient does not have "
                    f"the shape {r.shape} of the parameter")
            else:
                say(f"FAIL layer {r.layer} {r.name}: nothing checked — the stencil of every "
                    f"drawn entry crosses a relu kink; try another --seed")
        say(f"{len(failed)} of {len(rows)} tensors FAIL" + ("" if loss_ok else "; loss FAIL"))
        return 1
    say(f"all {len(rows)} tensors PASS")
    return 0




def main(argv=None):
    """Entry point of ``python -m mlp.gradcheck``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except MLPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
