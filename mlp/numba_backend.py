"""The Numba backend: the reference arithmetic in fused, cached, compiled kernels.

:class:`NumbaBackend` implements the interface of :mod:`mlp.backends` with
the kernels of :mod:`mlp.kernels`. One call of :func:`mlp.kernels.train_chunk`
runs a whole chunk of minibatches — gather, forward, loss, backward, SGD
or Adam update — with no Python in the batch loop. Its results equal the NumPy
reference's up to floating-point round-off (the order of some sums differs).

Choices made per call, from the data and the shapes only (never from the
chunk boundaries, so a chunked epoch equals one call):

* sparse first layer: when at most half of the input pixels are non-zero
  (MNIST: 19%), layer 1 reads only the rows of W¹ at non-zero pixels;
* threads: a batch whose product work exceeds :data:`PARALLEL_MIN_WORK`
  multiply-adds may be split between Numba's threads; smaller batches run
  on one thread (waking threads costs more than it saves). The parallel
  kernels compute every number exactly as the serial ones (they split
  outputs, never a sum), so the choice cannot change a result: by default
  (``parallel="auto"``) they run only while no other program keeps a core
  busy (see :meth:`NumbaBackend.threads_for`).
  BLAS calls inside the kernels use at most Numba's thread count, so
  ``--threads N`` bounds everything.
"""

import contextlib
import os
import threading
import time

import numba
import numpy as np

# SciPy's BLAS is the library np.dot inside njit calls: loaded here, threadpoolctl can limit it
import scipy.linalg.cython_blas  # noqa: F401
from threadpoolctl import ThreadpoolController

from . import kernels as K
from .batches import as_extras
from .compile_notice import install_listener
from .csr import as_csr, issparse, max_row_nnz
from .network import with_weight_decay

# a first use on a machine compiles the kernels for a minute: say so (mlp.compile_notice)
install_listener(K.__name__)

#: the parts of a run that :meth:`NumbaBackend.prepare` can compile: training's kernels,
#: prediction's
PARTS = ("train", "predict")

#: use the sparse first layer when at most this fraction of inputs is non-zero
SPARSE_MAX_DENSITY = 0.5
#: split a batch between threads when its layers hold at least this many
#: multiply-adds (dense count): below it, waking the threads costs more than it
#: saves (for 784-100-10, batches of 53 or more; the crossover measurements
#: are in docs/performance.md).
PARALLEL_MIN_WORK = 1 << 22
#: rows per sub-batch of a full-batch gradient (:func:`mlp.kernels.block_gradient`): enough
#: for the BLAS branches of a 64-100 layer (digits: 256 rows took 7.8 ms a gradient, 512 5.0),
#: few enough that the work arrays stay in the cache
FULL_BATCH_ROWS = 512


def model_of(net):
    """The :class:`mlp.kernels.Model` of ``net``: activation, loss and output as kernel codes."""
    return K.Model(K.ACTIVATION_CODES[net.activation], K.LOSS_CODES[net.loss.name],
                   K.ACTIVATION_CODES[net.loss.output])


def opt_params_of(opt, net, n):
    """The :class:`mlp.kernels.OptParams` of ``opt``'s next ``n`` steps, in ``net``'s dtype.

    The rates (the schedule's, and Adam's αₜ) are computed here, in Python,
    by the optimizer itself: the reference uses the very same numbers.
    """
    lrs = opt.rates(n)
    if opt.name == "adam":
        return K.opt_params(net.dtype, True, (lrs, opt.step_sizes(lrs)), opt.t,
                            wd=opt.weight_decay, max_norm=opt.max_norm,
                            adam_hyper=(opt.beta1, opt.beta2, opt.eps, opt.decoupled))
    return K.opt_params(net.dtype, False, (lrs, lrs[:0]), opt.t, mu=opt.momentum,
                        wd=opt.weight_decay, nesterov=opt.nesterov, max_norm=opt.max_norm)


def params_of(net, opt):
    """The :class:`mlp.kernels.Params` of ``net`` and ``opt``'s state (SGD: v twice, unused)."""
    state = opt.state_arrays()
    n = len(net.params())
    first, second = state[:n], state[n:] or state[:n]
    return K.Params(tuple(net.weights), tuple(net.biases), tuple(first[0::2]),
                    tuple(first[1::2]), tuple(second[0::2]), tuple(second[1::2]))


def _contiguous_params(net):
    """Make every weight and bias C-contiguous, in place in ``net``.

    The kernels can then update them.
    """
    for arrays in (net.weights, net.biases):
        for l, a in enumerate(arrays):
            if not a.flags.c_contiguous:
                arrays[l] = np.ascontiguousarray(a)


def input_density(X, sample=2048):
    """Fraction of non-zero entries in the first ``sample`` rows of X.

    A cheap, deterministic estimate.
    """
    head = X[:sample]
    return np.count_nonzero(head) / max(head.size, 1)


def use_sparse(X):
    """Whether the first layer should skip zero inputs for data X."""
    return X.shape[0] > 0 and input_density(X) <= SPARSE_MAX_DENSITY


def batch_threads(net, batch_size):
    """Threads to split one batch between: Numba's count if the batch has enough work, else 1."""
    sizes = net.sizes
    work = batch_size * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return numba.get_num_threads() if work >= PARALLEL_MIN_WORK else 1


def _scale_for(X, scale, dtype):
    """The per-pixel factor in the net's dtype.

    ``scale`` for uint8 X, 1 for float X (as the reference).
    """
    return dtype.type(scale) if X.dtype == np.uint8 else dtype.type(1)


def _check_X(X, net):
    """X as a C-contiguous uint8 or float array of shape (n, n_in); a ValueError otherwise."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != net.sizes[0]:
        raise ValueError(f"X must have shape (n, {net.sizes[0]}) for a network with "
                         f"{net.sizes[0]} inputs, got {X.shape}")
    if X.dtype != np.uint8 and X.dtype.kind != "f":
        X = X.astype(net.dtype)
    return np.ascontiguousarray(X)


def _dense_or_csr(X, net):
    """(X, its :class:`mlp.kernels.CSR`) for the kernels.

    A dense X (checked by :func:`_check_X`) comes with :func:`mlp.kernels.no_csr`;
    a scipy.sparse X is replaced by an empty (0, n_in) array and its canonical
    CSR arrays in the network's dtype (:func:`mlp.csr.as_csr`): its rows are
    copied from there, never densified.
    """
    if not issparse(X):
        return _check_X(X, net), K.no_csr(net.dtype)
    if X.ndim != 2 or X.shape[1] != net.sizes[0]:
        raise ValueError(f"X must have shape (n, {net.sizes[0]}) for a network with "
                         f"{net.sizes[0]} inputs, got {X.shape}")
    X = as_csr(X, net.dtype)
    return np.empty((0, X.shape[1]), net.dtype), K.CSR(X.indptr, X.indices, X.data)


def full_batch_blocks(net, n):
    """Blocks of rows of a full-batch gradient: one per Numba thread if the work is worth
    sharing (:data:`PARALLEL_MIN_WORK`, at least a sub-batch each), else 1.

    The blocks' gradients are added in order, so the result depends on this count: it
    depends on the data's size and the thread count only (never on the machine's load).
    """
    if n < 2 * FULL_BATCH_ROWS or batch_threads(net, n) == 1:
        return 1
    return min(numba.get_num_threads(), n // FULL_BATCH_ROWS)


def _targets(targets, net):
    """(labels, T) for the kernels: int64 labels with an empty T, or an empty labels with 2-D T
    in the network's dtype.

    One type each whatever the caller's (int16 labels, float64 targets for a
    float32 net): every other type would compile the training kernels again, a
    10–20 s cold compile each. The kernels copy targets into the net's dtype
    anyway, so converting first gives the same bits.
    """
    targets = np.asarray(targets)
    n_out = net.sizes[-1]
    if targets.ndim == 1:
        if targets.dtype.kind not in "iu":
            targets = targets.astype(np.int64)
        if targets.size and (targets.min() < 0 or targets.max() >= n_out):
            raise ValueError(f"labels must be integers in 0 … {n_out - 1} for a network with "
                             f"{n_out} outputs; found {targets.min()} … {targets.max()}")
        return (np.ascontiguousarray(targets, dtype=np.int64),
                np.empty((0, n_out), net.dtype))
    if targets.ndim != 2 or targets.shape[1] != n_out:
        raise ValueError(f"targets must be 1-D labels or an (n, {n_out}) array, "
                         f"got shape {targets.shape}")
    return np.empty(0, np.int64), np.ascontiguousarray(targets, dtype=net.dtype)


def _sample_weights(sample_weight, net, n):
    """The kernels' sample weights: one per row of X in the net's dtype, or empty for none."""
    if sample_weight is None:
        return np.empty(0, net.dtype)
    w = np.ascontiguousarray(sample_weight, dtype=net.dtype)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must hold one weight per row of X ({n}), "
                         f"got shape {w.shape}")
    return w


def _dropout(extras, net):
    """The kernels' :class:`mlp.kernels.Dropout` of ``extras`` (none when it has no rates)."""
    rates = extras.dropout
    if rates is not None and len(rates) != net.num_layers:
        raise ValueError(f"dropout needs one rate per weight layer ({net.num_layers}), "
                         f"got {len(rates)}")
    return K.dropout_of(rates, net.num_layers, net.dtype, extras.seed, extras.epoch)


def _blas_threads_at_most_numba():
    """Keep BLAS (NumPy's and the SciPy BLAS Numba calls) at no more threads than Numba uses."""
    controller = _blas_controller()
    n = numba.get_num_threads()
    if any(info.get("num_threads", 1) > n for info in controller.info()
           if info.get("user_api") == "blas"):
        controller.limit(limits=n, user_api="blas")


def _predict_in_parts(args, parts):
    """K.predict on ``parts`` consecutive blocks of rows, each on its own thread; returns out."""
    X, scale, weights, biases, model, out = args
    n = X.shape[0]
    bounds = [n * t // parts for t in range(parts + 1)]

    def run(t):
        lo, hi = bounds[t], bounds[t + 1]
        K.predict(X[lo:hi], scale, weights, biases, model, out[lo:hi])
    _on_threads(run, parts)
    return out


def _on_threads(run, parts):
    """run(0) here and run(1) … run(parts − 1) on threads of their own (the kernels release
    the GIL), returning when all are done; a failure in run(0) still waits for the others.

    Each run sees one Numba thread (Numba's count is per thread), so the kernels it calls
    start no parallel loop of their own (a BLAS product's blocks, :func:`K._gemm_blocks`,
    run in turn): the parts are the parallelism. This thread's count is restored after.
    """
    def alone(t):
        numba.set_num_threads(1)
        run(t)
    threads = [threading.Thread(target=alone, args=(t,)) for t in range(1, parts)]
    for th in threads:
        th.start()
    n = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        run(0)
    finally:
        numba.set_num_threads(n)
        for th in threads:
            th.join()


def _predict_sparse(net, X, chunk=4096):
    """ŷ for the rows of a scipy.sparse X: the reference's forward pass (SciPy's sparse
    products), ``chunk`` rows at a time."""
    out = np.empty((X.shape[0], net.sizes[-1]), dtype=net.dtype)
    X = as_csr(X, net.dtype)
    for lo in range(0, X.shape[0], chunk):
        out[lo:lo + chunk] = net.feedforward(X[lo:lo + chunk])
    return out


def _unflatten(flat, net):
    """([∂L/∂W], [∂L/∂b]) as views of ``flat``, packed as :func:`mlp.kernels.block_gradient`
    writes it: every weight matrix row-major, then every bias vector."""
    gw, gb, off = [], [], 0
    for w in net.weights:
        gw.append(flat[off:off + w.size].reshape(w.shape))
        off += w.size
    for b in net.biases:
        gb.append(flat[off:off + b.size])
        off += b.size
    return gw, gb


_CONTROLLER = []


def _blas_controller():
    """A threadpoolctl controller of the loaded BLAS libraries (made once: it inspects them all)."""
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


@contextlib.contextmanager
def _one_pool_of_threads(net, plan):
    """Train ``plan``'s batches of ``net`` on plan.threads of Numba's threads, BLAS on one.

    The kernels split large BLAS products into blocks that Numba's threads
    share (:func:`mlp.kernels._gemm_blocks`), so training needs no BLAS
    threads; they would only spin beside Numba's between calls and take
    cores from them. Numba's count is lowered to plan.threads for the call
    (the blocks, and so the bits, do not depend on it). Nothing changes for
    networks whose products all stay below :data:`mlp.kernels.BLAS_MIN_FLOPS`.
    """
    dense = list(zip(net.sizes[:-1], net.sizes[1:]))[1 if plan.sparse else 0:]
    if plan.sparse and dense:         # the layer after a sparse one reads its padded width
        per_line = 64 // net.dtype.itemsize
        dense[0] = (-(-dense[0][0] // per_line) * per_line, dense[0][1])
    if all(plan.batch_size * a * b < K.BLAS_MIN_FLOPS for a, b in dense):
        yield                           # no BLAS: nothing to set (that costs ~60 µs a call)
        return
    numba_threads = numba.get_num_threads()
    numba.set_num_threads(min(plan.threads, numba_threads))
    try:
        with _blas_controller().limit(limits=1, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(numba_threads)


class _OtherLoad:
    """How many cores other programs kept busy lately: the machine's busy time minus ours.

    Read from /proc/stat (Linux) and :func:`os.times`, over at least 0.2 s of
    wall-clock time; 0 where /proc/stat is not available.
    """

    def __init__(self):
        self.last = None
        self.cores = 0.0

    @staticmethod
    def _sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        ticks = os.sysconf("SC_CLK_TCK")
        # user nice system idle iowait irq softirq steal (guest time is inside user/nice)
        busy = (sum(fields[:8]) - fields[3] - (fields[4] if len(fields) > 4 else 0)) / ticks
        mine = os.times()
        return time.monotonic(), busy, mine.user + mine.system

    def __call__(self):
        try:
            now = self._sample()
        except (OSError, ValueError, IndexError):
            return 0.0
        if self.last is not None and now[0] - self.last[0] >= 0.2:
            wall = now[0] - self.last[0]
            self.cores = max(0.0, (now[1] - self.last[1]) - (now[2] - self.last[2])) / wall
            self.last = now
        elif self.last is None:
            self.last = now
        return self.cores


_other_load = _OtherLoad()


class NumbaBackend:
    """Fused Numba kernels: one compiled call per chunk of batches.

    ``parallel``: "auto" (default) splits big batches between threads while
    no other program keeps a core busy, True whenever they are big enough,
    False never. Results are the same bits in all three cases.
    """

    name = "numba"

    def __init__(self, parallel="auto"):
        if parallel not in ("auto", True, False):
            raise ValueError(f"parallel must be 'auto', True or False, got {parallel!r}")
        self.parallel = parallel
        self._buffers = (None, None)

    def _sparse_buffers(self, batch_size, net, sparse, width=None):
        """The sparse-batch buffers for this batch size, kept from call to call.

        ``width``: the most entries of a row of a CSR X (rows of a dense X
        may have up to n_in).
        """
        rows = batch_size if sparse else 0
        key = (rows, net.sizes[0], net.dtype.name, width)
        if self._buffers[0] != key:
            self._buffers = (key, K.sparse_buffers(rows, net.weights[0]) if width is None else
                             K.SparseBatch(np.zeros(rows, np.int64),
                                           np.empty((rows, width), np.int32),
                                           np.empty((rows, width), net.dtype)))
        return self._buffers[1]

    def threads_for(self, net, batch_size):
        """Threads for the next call's batches.

        1 for batches too small to share (:data:`PARALLEL_MIN_WORK`) or with
        parallel=False. With parallel="auto", the parallel kernels run only
        while other programs leave the cores free: a parallel step waits for
        every thread, and a thread whose core another program holds can wait
        a whole scheduler time slice, far longer than the step itself.
        """
        threads = batch_threads(net, batch_size)
        if threads == 1 or self.parallel is False:
            return 1
        if self.parallel is True:
            return threads
        return threads if _other_load() < 0.5 else 1

    def loss_and_gradients(self, net, X, Y, weight_decay=0.0, extras=None):
        """Loss and gradients of one float batch, as :meth:`Network.loss_and_gradients`
        returns them: :meth:`full_batch_gradients` of (X, Y) plus the L2 penalty.

        ``extras`` (an :class:`mlp.batches.Extras`) may add sample weights
        (one per row) and dropout, row s being sample position s of
        ``extras.epoch``.
        """
        X = X if issparse(X) else np.asarray(X, dtype=net.dtype)
        Y = np.asarray(Y, dtype=net.dtype)
        if Y.ndim != 2 or Y.shape != (X.shape[0], net.sizes[-1]):
            raise ValueError(f"Y must have shape ({X.shape[0]}, {net.sizes[-1]}), got {Y.shape}")
        extras = as_extras(1.0 if extras is None else extras)
        value, nabla_w, nabla_b = self.full_batch_gradients(net, X, Y, extras.sample_weight,
                                                            extras)
        value, nabla_w = with_weight_decay(net.weights, value, nabla_w, weight_decay)
        return value, [np.array(g) for g in nabla_w], [np.array(g) for g in nabla_b]

    def full_batch_gradients(self, net, X, targets, sample_weight=None, extras=None):
        """Loss and gradients over all rows of X, as :meth:`Network.loss_and_gradients` with
        ``sample_weight`` gives them for the whole set (no weight decay).

        ``extras``: an :class:`mlp.batches.Extras` whose dropout (rates, seed,
        epoch) masks row s as sample position s of that epoch; None: no dropout.

        X: float rows, or a scipy.sparse matrix (never densified). The rows
        are cut into :func:`full_batch_blocks` blocks, each computed by
        :func:`mlp.kernels.block_gradient` on a thread of its own (BLAS held
        to one thread meanwhile); their gradients are added in block order,
        so a given thread count gives the same bits. Returns (loss, [∂L/∂W],
        [∂L/∂b]), views of one flat array in scikit-learn's packing order.
        """
        _contiguous_params(net)
        Xk, csr = _dense_or_csr(X, net)
        labels, T = _targets(targets, net)
        n = X.shape[0]
        data = K.Data(Xk, net.dtype.type(1), labels, T, np.arange(n, dtype=np.int64), csr,
                      _sample_weights(sample_weight, net, n))
        plan = K.Plan(len(csr.indptr) > 0 or use_sparse(Xk), 1, FULL_BATCH_ROWS)
        blocks = full_batch_blocks(net, n)
        parts = np.zeros((blocks, net.n_parameters), net.dtype)
        sums = [0.0] * blocks
        args = (data, tuple(net.weights), tuple(net.biases), model_of(net),
                _dropout(as_extras(1.0 if extras is None else extras), net), plan)

        def run(b):
            sums[b] = K.block_gradient(*args, n * b // blocks, n * (b + 1) // blocks, parts[b])
        if blocks == 1:
            run(0)
        else:
            with _blas_controller().limit(limits=1, user_api="blas"):
                _on_threads(run, blocks)
        grad = parts[0]
        for b in range(1, blocks):          # in block order: the same bits every time
            grad += parts[b]
        return float(np.sum(sums) / n), *_unflatten(grad, net)

    def train_batches(self, net, opt, X, targets, order, start, stop, batch_size, extras=1.0):
        """Train on batches start … stop-1 of ``order`` in one compiled call.

        Returns their losses. ``extras``: an :class:`mlp.batches.Extras` (or the scale).
        """
        extras = as_extras(extras)
        opt.ensure_state(net)
        _contiguous_params(net)
        X_in = X
        X, csr = _dense_or_csr(X, net)
        labels, T = _targets(targets, net)
        losses = np.empty(stop - start, dtype=np.float64)
        if stop <= start:
            return losses
        data = K.Data(X, _scale_for(X, extras.scale, net.dtype), labels, T,
                      np.ascontiguousarray(order, dtype=np.int64), csr,
                      _sample_weights(extras.sample_weight, net, X_in.shape[0]))
        is_csr = len(csr.indptr) > 0           # CSR rows always take the sparse first layer
        plan = K.Plan(is_csr or use_sparse(X), self.threads_for(net, batch_size),
                      int(batch_size))
        buffers = self._sparse_buffers(plan.batch_size, net, plan.sparse,
                                       max_row_nnz(X_in) if is_csr else None)
        with _one_pool_of_threads(net, plan):
            opt_params = opt_params_of(opt, net, len(losses))
            K.train_chunk_for(opt_params)(data, params_of(net, opt), model_of(net), opt_params,
                                          plan, int(start), int(stop), losses, buffers,
                                          _dropout(extras, net))
        opt.t += len(losses)
        return losses

    def predict_output(self, net, X, scale=1.0):
        """ŷ for every row of X, computed in chunks of 1024 rows.

        With several threads (Numba's count) the rows are cut into one part
        per thread, each predicted by :func:`mlp.kernels.predict` (which
        releases the GIL) on a thread of its own, and BLAS is held to one
        thread meanwhile. A multi-threaded BLAS call leaves its threads
        spinning for a while afterwards, and they would take cores from the
        next training epoch's parallel kernels. (Python threads rather than a
        Numba parallel loop: one compilation less, so less never-freed
        compiler memory on a first run.)
        """
        _contiguous_params(net)
        if issparse(X):
            return _predict_sparse(net, X)
        X = _check_X(X, net)
        out = np.empty((X.shape[0], net.sizes[-1]), dtype=net.dtype)
        args = (X, _scale_for(X, scale, net.dtype), tuple(net.weights), tuple(net.biases),
                model_of(net), out)
        if numba.get_num_threads() < 2:
            return K.predict(*args)
        parts = min(numba.get_num_threads(), X.shape[0] // 1024)
        with _blas_controller().limit(limits=1, user_api="blas"):
            if parts < 2:
                return K.predict(*args)
            return _predict_in_parts(args, parts)

    def prepare(self, net, opt, X, targets, batch_size, scale=1.0, parts=PARTS):
        """Compile (or load from cache) the kernels for these exact types, on copies.

        Returns the seconds taken. ``parts``: those of :data:`PARTS` to
        prepare (training's, prediction's).
        """
        t0 = time.perf_counter()
        # open the window of the other programs' load now: the first chunk then chooses its
        # threads from the seconds this takes, not blind (on a busy machine a first chunk on
        # two threads took 0.5-2 s against 0.03 s on one: docs/performance.md, session 7)
        _other_load()
        _blas_threads_at_most_numba()
        net2 = net.copy()
        opt2 = type(opt)(**opt.config())
        opt2.init_state(net2)
        X = X if issparse(X) else _check_X(X, net)
        n = min(X.shape[0], 2 * batch_size)
        warmup = NumbaBackend(parallel=True)        # its timings are not ours to keep
        if n > 0 and "train" in parts:
            order = np.arange(n, dtype=np.int64)
            n_batches = -(-n // batch_size)
            warmup.train_batches(net2, opt2, X[:n], np.asarray(targets)[:n], order, 0, n_batches,
                                 batch_size, scale)
        if n > 0 and "predict" in parts:
            warmup.predict_output(net2, X[:n], scale)
        return time.perf_counter() - t0
