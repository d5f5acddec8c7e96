"""L-BFGS: full-batch training by ``scipy.optimize.minimize(method="L-BFGS-B")``.

The estimators' ``solver="lbfgs"`` (scikit-learn's, for small data sets).
The objective is the estimators' own (:mod:`mlp.estimators`) with the whole
training set as one batch::

    J(θ) = (1/n) Σᵢ wᵢ lᵢ  +  (λ/2) Σ_l ‖Wˡ‖²        ∇J = backprop's gradients + λW

(wᵢ = 1 without sample weights; the estimators normalise them to mean 1).
θ packs the parameters as scikit-learn does: every weight matrix row-major,
then every bias vector, in float64 (what L-BFGS-B works in) whatever the
network's dtype; the loss and gradients are computed in the network's
dtype by the backend's ``full_batch_gradients`` (:mod:`mlp.backends`: the
NumPy reference, or the Numba kernels in blocks of rows). scikit-learn's
penalty is ``alpha/(2n) Σ‖W‖²`` (its alpha is per sample): its ``alpha=a``
is ``λ = a/n`` here, or ``a/Σwᵢ`` with sample weights.

Threads. L-BFGS-B's own vector arithmetic (a few passes over θ per
iteration) runs on one BLAS thread, the objective on as many as before: the
level-1 BLAS calls inside SciPy's L-BFGS-B are too short to share, and
spinning BLAS threads made them 20× slower on a busy 2-core machine
(docs/performance.md).
"""

import numpy as np
import scipy.optimize
from threadpoolctl import ThreadpoolController

from .network import with_weight_decay


def pack(weights, biases):
    """θ: the weight matrices (row-major), then the bias vectors, as one float64 vector."""
    return np.concatenate([np.ravel(a) for a in list(weights) + list(biases)]).astype(np.float64)


def unpack(theta, net):
    """Copy θ into the network's arrays, in place (cast to its dtype)."""
    off = 0
    for a in net.weights + net.biases:
        a[...] = theta[off:off + a.size].reshape(a.shape)
        off += a.size


class Objective:
    """θ ↦ (J(θ), ∇J(θ)) on a fixed training set, for ``scipy.optimize.minimize(jac=True)``.

    It writes θ into ``net`` (so the network holds the last point
    evaluated), and keeps the last value in ``last``.
    """

    def __init__(self, net, backend, X, targets, sample_weight=None, weight_decay=0.0):
        self.net, self.backend = net, backend
        self.X, self.targets, self.sample_weight = X, targets, sample_weight
        self.weight_decay = float(weight_decay)
        self.calls = 0
        self.last = None
        self.blas_threads = None          # set by minimize: BLAS threads for the objective

    def __call__(self, theta):
        unpack(theta, self.net)
        with _blas_limit(self.blas_threads):
            loss, nabla_w, nabla_b = self.backend.full_batch_gradients(
                self.net, self.X, self.targets, self.sample_weight)
        loss, nabla_w = with_weight_decay(self.net.weights, loss, nabla_w, self.weight_decay)
        self.calls += 1
        self.last = float(loss)
        return self.last, pack(nabla_w, nabla_b)


def minimize(objective, max_iter, max_fun, tol, callback=None):
    """Run L-BFGS-B from the network's current parameters; leave it at the solution.

    scikit-learn's settings: at most ``max_iter`` iterations and ``max_fun``
    evaluations of J, stopping when every component of the projected
    gradient is below ``tol`` (``gtol``) or J stops decreasing (scipy's
    ``ftol``). ``callback(iteration, loss)`` runs after every iteration.
    Returns scipy's ``OptimizeResult`` (``status`` 0: converged; 1: a limit
    was reached; 2: the line search failed).
    """
    net = objective.net
    iteration = [0]
    blas = [info["num_threads"] for info in _controller().info() if info["user_api"] == "blas"]
    objective.blas_threads = max(blas, default=None)

    def after_iteration(theta):
        iteration[0] += 1
        if callback is not None:
            callback(iteration[0], objective.last)
    with _blas_limit(1):
        result = scipy.optimize.minimize(
            objective, pack(net.weights, net.biases), method="L-BFGS-B", jac=True,
            callback=after_iteration,
            options={"maxiter": int(max_iter), "maxfun": int(max_fun), "gtol": float(tol)})
    unpack(result.x, net)
    return result


_CONTROLLER = []


def _controller():
    """A threadpoolctl controller of the loaded BLAS libraries (made once: it inspects them)."""
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def _blas_limit(threads):
    """A context that holds BLAS at ``threads`` threads (None: as it is)."""
    return _controller().limit(limits=threads, user_api="blas")
