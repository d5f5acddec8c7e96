"""Numba kernels of the fast backend; their plain NumPy twins are in :mod:`mlp.kernels_reference`.

Every kernel ``name`` here has a twin ``mlp.kernels_reference.name`` that
computes the same thing by calling the reference code (:mod:`mlp.network`,
:mod:`mlp.losses`, :mod:`mlp.optimizers`, :mod:`mlp.batches`), and
tests/test_kernels.py checks each pair. This module imports nothing from
mlp, so that the reference never depends on Numba. The kernels fuse what
NumPy does in separate passes::

    gather_dense, gather_sparse    x = X[rows] · scale   (sparse: each row's non-zeros only)
    gather_csr                     the same from a CSR matrix (its rows' entries, copied)
    sparse_forward, dense_forward  a = f(x · W + b)     (bias and activation fused in)
    output_delta                   ŷ = g(z), the loss and δᴸ = ∂L/∂z, one pass per row
    backprop_delta                 δˡ⁻¹ = (δˡ · Wˡᵀ) ⊙ f'(aˡ⁻¹)
    dense_gradient, sparse_gradient   ∂L/∂W = aᵀ · δ,  ∂L/∂b = Σ δ
    sgd_update                     v ← μv − η(g + λw);  w ← w + v   (Nesterov, plain SGD)
    sgd_update_rows                the same for the sparse first layer, on its touched rows
    sparse_update                  the sparse first layer's gradient and step fused, row by row
    sparse_sgd_plain, dense_sgd_plain   plain SGD fused with the gradient (no gradient array)
    adam_update                    m, v ← the moments of g;  w ← w − αₜ m/(√v + ε)   (AdamW)
    max_norm_rows, max_norm_cols   each hidden unit's incoming weights scaled to norm ≤ c
    drop_entries, drop_rows        inverted dropout: a sparse batch's dropped non-zeros removed,
                                   a dense layer's input masked (masks from row_key, below)

and parallel kernels for the sparse first layer, which split the work between threads::

    sparse_gather_forward_par      gather_sparse, then sparse_forward (blocks of batch rows);
                                   the forward pass only for a batch gathered already (CSR)
    sparse_update_par              its SGD step: sparse_sgd_plain or sparse_update
                                   (blocks of rows of W)
    sparse_adam_par                its Adam step: sparse_gradient and adam_update (blocks
                                   of rows of W)

Adam takes every layer's full gradient (:func:`_backward` without its
update), then updates every weight: the moments decay everywhere, so
unlike SGD no row of the sparse first layer can be skipped.

and :func:`train_chunk` runs whole minibatches with them — gather, forward,
loss, backward, update — without returning to Python. :func:`block_gradient`
sums the loss and gradient of a block of rows for a full-batch objective
(L-BFGS, :mod:`mlp.lbfgs`); blocks run on threads of their own.

Arguments come in named bundles (NamedTuples, which Numba compiles as
typed records): :class:`Model` (the codes of the activation, loss and
output), :class:`OptParams` (a chunk's optimizer: SGD or Adam, the rate of
each batch, max-norm; one step's settings are an :class:`SGDParams` or an
:class:`AdamParams`), :class:`Params` (the
network's and optimizer's arrays), :class:`Data` (the training set, its
sample weights and its epoch order, or :class:`CSR` rows), :class:`Plan`
(sparse or dense, threads, batch size), :class:`Dropout` (rates per layer, seed, epoch),
:class:`SparseBatch` (a gathered sparse batch). A new hyper-parameter is a
new field of one of them; "off" is a value (no sample weights: an empty
array; no dropout: zero thresholds), so one compiled train_chunk serves
every combination.

Dropout. Whether unit j of layer l's input is dropped for the sample at
position pos of the epoch's order is a hash of (seed, epoch, pos, l, j)
(:func:`row_key`, :func:`_keep_bits`; the formulas and their NumPy version
are in :mod:`mlp.dropout`): the masks are the reference's bit for bit and
depend on no thread or chunk boundary. They are computed where they are
used: a sparse batch's dropped inputs are removed when it is gathered
(fewer multiply-adds); a hidden layer's mask is drawn once per batch into
the workspace, which also keeps the masked outputs ã = a ⊙ m that the next
layer reads, beside a for f'(a).

Conventions as in the reference: rows are samples, ``W`` is (n_in, n_out),
hidden layers compute ``a = f(a_prev · W + b)``, the loss is averaged over
the batch. Derivatives are taken from a layer's output a (relu'(z) = 1 where
a > 0, which is where z > 0), so only outputs are kept.

Layouts. The first layer of sparse data (MNIST: 19% of pixels are non-zero)
works on rows of W¹, one row per non-zero pixel: x · W¹ adds up those rows,
the gradient xᵀ · δ adds x · δ to them. Inside :func:`train_chunk` that
layer trains on a copy whose rows start on 64-byte boundaries and are
padded with zero columns to a multiple of 64 bytes (vector loops that
straddle cache lines are slower); the padding units stay exactly zero. The
other ("dense") layers work on the *transpose* ``Wt = Wᵀ`` (n_out, n_in), so
that every inner loop runs along n_in, the long side of a layer like
100 → 10. Both copies are made on entry and written back on exit.

Numerics. All arithmetic happens in the network's dtype (float32 or
float64). ``fastmath`` is limited to ``contract`` (fused multiply-add) and,
for dot products, ``reassoc`` (a vectorised sum): both change results at
round-off level only; NaN and infinity propagate as usual, so a diverging
loss is still seen. The NumPy error model is used (x/0 is inf, no check
that would stop vectorisation). float32 exponentials use a polynomial
accurate to under one ulp that vectorises (:func:`_exp`). The SGD and Adam
updates are the reference's arithmetic in the reference's order (Adam's
without fused multiply-adds: the same gradient gives the same bits), with
the rates of each batch computed in Python (:class:`OptParams`). Sparse inputs skip
exact zeros, which changes nothing unless W holds infinities.

Threads. The ``_par`` kernels split a batch's *outputs* between threads
(rows of the batch, or rows of W¹) and never share a sum: every number is
computed exactly as by the serial kernel, whatever the thread count.
Products with at least :data:`BLAS_MIN_FLOPS` multiply-adds go to BLAS in
blocks of :data:`BLAS_BLOCK` rows or columns of the weight matrix
(:func:`_gemm_blocks`), one single-threaded BLAS call each, shared out
between Numba's threads: one pool of threads for the whole step, and
blocks that depend on the shapes only, so again the same bits whatever the
thread count (for a given BLAS library and CPU).

Vectors. The sparse first layer's inner loops are written in LLVM vectors
of 64 bytes (:func:`_rows_axpy`): a block of up to :data:`MAX_LINES` such
vectors of the row being summed stays in registers while the other
operand's rows stream through, one load per vector multiply-add. Their
speed is then that of the cache the streamed rows come from (profile:
docs/performance.md), hence the 64-byte alignment of W¹ and of the layer's
outputs and errors, and the loops over blocks of columns outside the loops
over rows.

Memory. Numba never frees what it compiled (numba/numba#5976, #6707), so
every specialisation compiled here stays in memory for the life of the
process. Hence some habits, each with a name: copies are plain loops
(:func:`_copy_into`: array assignment would compile Numba's run-time
string formatting), row kernels start at :func:`_row0` and flags are
passed as :func:`_runtime_true` / :func:`_runtime_one` (a literal argument
compiles a second copy of the callee), no cfunc wrappers (:func:`_kernel`),
and the orchestration functions are inlined into :func:`train_chunk`
(:func:`_inline`). On a cold cache, ``python -m mlp.train`` compiles in
short-lived child processes (:mod:`mlp.precompile`). Figures:
docs/performance.md.
"""

import math
from typing import NamedTuple

import numpy as np
from llvmlite import binding, ir
from numba import config, njit, prange
from numba.core import cgutils
from numba.core import types as nbtypes
from numba.extending import intrinsic, overload
from numba.np.linalg import check_blas_return, ensure_blas, get_blas_kind

# numba.get_num_threads() compiled: the threading layer's symbol by name, so that the caller can
# be cached (numba.get_num_threads in njit code holds a ctypes pointer, which cannot)
from numba.np.ufunc.parallel import _iget_num_threads, _launch_threads

# The threading layer is launched (its symbols made known to LLVM) on import, before any kernel is
# loaded from the cache. Numba launches it on loading a cached function only if that function's
# entry says it needs it, and an entry says so only when its parallel callees were compiled in
# the same process (numba/numba#8578, #4807). train_chunk compiled with its parallel kernels from
# the cache (mlp.precompile's "train" child does that) and loaded by a later process that had not
# launched the layer got no address for any external symbol, and crashed on its first call
# (a segmentation fault; tests/test_cache_reload.py). Launching costs 17-29 ms.
_launch_threads()

# Activation codes (hidden layers, and the output of mse); SOFTMAX and EXP (poisson's)
# only as outputs.
SIGMOID, TANH, RELU, IDENTITY, SOFTMAX, EXP = 0, 1, 2, 3, 4, 5
ACTIVATION_CODES = {"sigmoid": SIGMOID, "tanh": TANH, "relu": RELU, "identity": IDENTITY,
                    "softmax": SOFTMAX, "exp": EXP}
ACTIVATION_NAMES = {code: name for name, code in ACTIVATION_CODES.items()}
# Loss codes.
CE, MSE, BCE, POISSON = 0, 1, 2, 3
LOSS_CODES = {"ce": CE, "mse": MSE, "bce": BCE, "poisson": POISSON}
LOSS_NAMES = {code: name for name, code in LOSS_CODES.items()}

#: Products of at least this many multiply-adds go to BLAS; below it the loops
#: here can win (no call overhead, no packing of small matrices). From 1M on,
#: OpenBLAS was faster than the loops on every product of a layer with 10
#: outputs (docs/performance.md), where 2M (the earlier bound) left them to loops.
BLAS_MIN_FLOPS = 1 << 20
#: ... except the forward pass and backpropagated error of a layer with fewer
#: outputs than this (a 10-class output layer): those stay in the row loops at
#: every batch size, so that :class:`Head` can run them on the threads, rows
#: apart, with the serial kernels' bits (with BLAS the batch is one product).
BLAS_MIN_WIDTH = 16
#: BLAS products are cut into blocks of about this many rows or columns of the
#: weight matrix (:func:`_gemm_blocks`), which Numba's threads share.
BLAS_BLOCK = 256
#: :func:`transpose_into` copies square tiles of this side
TRANSPOSE_TILE = 8
#: a dense layer's SGD step and max-norm pass run on the threads from this many weights on
PARALLEL_MIN_WEIGHTS = 1 << 16

_FAST = {"contract"}                 # FMA only: a round-off-level change
_FAST_SUM = {"contract", "reassoc"}  # and a reordered (vectorised) sum


def _kernel(**options):
    """``njit`` as every kernel here is compiled: cached on disk, NumPy's error model.

    No cfunc wrapper: nothing passes these functions as first-class values, and
    each wrapper is more never-freed compiler memory on a cold cache (see
    "Memory" in the module docstring).
    """
    return njit(cache=True, no_cfunc_wrapper=True, error_model="numpy", **options)


def _inline(**options):
    """``njit`` for small helpers that Numba inlines into each caller (never compiled alone)."""
    return njit(inline="always", no_cfunc_wrapper=True, error_model="numpy", **options)


@_inline()
def _row0():
    """Row 0 as a run-time int64.

    A literal 0 would make Numba compile another copy of the row kernel.
    """
    return np.int64(0)


@_inline()
def _runtime_true(n):
    """True typed as a run-time bool (from n >= 0, n any count).

    A literal True compiles another copy.
    """
    return n >= 0


@_inline()
def _runtime_false(n):
    """False typed as a run-time bool (from n < 0, n any count), as :func:`_runtime_true`."""
    return n < 0


@_inline()
def _runtime_one(n):
    """1 typed as a run-time int64 (n any int64).

    A literal 1 compiles another copy of the callee.
    """
    return n * 0 + 1


# ----------------------------------------------------------------- dropout's hash

# SplitMix64's increment and finalizer constants (see mlp.dropout), as uint64 so that every
# operation stays in unsigned 64-bit arithmetic (an int64 operand would make it float64)
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SH30, _SH27, _SH31, _SH11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_U1 = np.uint64(1)


@_inline()
def _mix(z):
    """SplitMix64's finalizer of the uint64 z."""
    z = (z ^ (z >> _SH30)) * _MIX1
    z = (z ^ (z >> _SH27)) * _MIX2
    return z ^ (z >> _SH31)


@_inline()
def _step(key, count):
    """key + γ · (count + 1) modulo 2⁶⁴, count an integer >= 0."""
    return key + _GAMMA * (np.uint64(count) + _U1)


@_inline()
def row_key(seed, epoch, pos, layer):
    """The dropout key of sample position ``pos`` of epoch ``epoch`` at layer ``layer``.

    mix(mix(mix(mix(seed) + γ(epoch+1)) + γ(pos+1)) + γ(layer+1)), as
    :func:`mlp.dropout.row_keys`.
    """
    k = _mix(_step(_mix(np.uint64(seed)), epoch))
    return _mix(_step(_mix(_step(k, pos)), layer))


@_inline()
def _keep_bits(key, j):
    """The 53 uniform bits of unit j under row key ``key``: mix(key + γ(j+1)) >> 11."""
    return _mix(_step(key, j)) >> _SH11


# ----------------------------------------------------------------- bundles


class Model(NamedTuple):
    """What the network computes, as kernel codes."""
    act: int          #: hidden layers' activation (SIGMOID, TANH, RELU, IDENTITY)
    loss: int         #: CE, MSE, BCE or POISSON
    out_kind: int     #: the output function of MSE (an activation code; unused by the others)


class SGDParams(NamedTuple):
    """One SGD step's settings, as scalars of the network's dtype (see :mod:`mlp.optimizers`)."""
    lr: float         #: η, the learning rate
    mu: float         #: μ, the momentum (0: plain SGD)
    wd: float         #: λ, the L2 weight decay of the weight matrices
    nesterov: bool    #: Nesterov's momentum instead of the classical one


class AdamParams(NamedTuple):
    """One Adam step's settings, as scalars of the network's dtype (see :mod:`mlp.optimizers`)."""
    step: float       #: αₜ = η √(1 − β₂ᵗ) / (1 − β₁ᵗ)
    beta1: float      #: β₁
    beta2: float      #: β₂
    eps: float        #: ε
    wd: float         #: Adam's L2 λ, added to the gradient (0 for AdamW and for biases)
    decay: float      #: AdamW's ηλ (η, λ rounded first): p ← p(1 − ηλ) first (0: none)


class OptParams(NamedTuple):
    """A chunk's optimizer (see :mod:`mlp.optimizers`); scalars in the network's dtype.

    The rates come per batch, computed in Python (:mod:`mlp.schedules`), as
    float64: batch k of the chunk uses ``lrs[k]`` (and Adam ``steps[k]``),
    rounded to the network's dtype as the reference rounds them.
    """
    adam: bool        #: Adam (else SGD)
    lrs: np.ndarray   #: float64 η of each batch of the chunk
    steps: np.ndarray  #: float64 Adam's αₜ of each batch (any float64 array for SGD)
    t0: int           #: steps taken before the chunk (the twin's record; αₜ is in steps)
    mu: float         #: SGD's μ
    wd: float         #: λ, the weight decay of the weight matrices (SGD's, Adam's or AdamW's)
    nesterov: bool    #: SGD: Nesterov's momentum
    beta1: float      #: Adam's β₁
    beta2: float      #: Adam's β₂
    eps: float        #: Adam's ε
    decoupled: bool   #: Adam: λ is AdamW's decoupled decay, not an L2 term of the gradient
    max_norm: float   #: c of max-norm on the hidden units' incoming weights (0: none)


class Params(NamedTuple):
    """The arrays training updates in place: tuples with one array per layer."""
    weights: tuple    #: W¹ … Wᴸ, (n_in, n_out), C-contiguous
    biases: tuple     #: b¹ … bᴸ
    vel_w: tuple      #: the weights' velocities, or Adam's m (any arrays of the right types
    #: when unused)
    vel_b: tuple      #: the biases' velocities, or Adam's m
    sq_w: tuple       #: Adam's v of the weights (any arrays of the right types for SGD)
    sq_b: tuple       #: Adam's v of the biases


class Data(NamedTuple):
    """The training set and the sample order of the current epoch."""
    X: np.ndarray     #: (n, n_in) uint8 pixels or floats, C-contiguous
    scale: float      #: factor applied to uint8 pixels (1 for float X), in the network's dtype
    labels: np.ndarray  #: int class labels (one-hot targets), or empty when T is used
    T: np.ndarray     #: (n, n_out) float targets, or (0, n_out) when labels are used
    order: np.ndarray  #: int64 sample order: batch b is order[b*batch_size:(b+1)*batch_size]
    csr: "CSR"        #: X as compressed sparse rows (X is then (0, n_in)), or :func:`no_csr`
    weights: np.ndarray  #: (n,) sample weights in the network's dtype, or empty for none


class CSR(NamedTuple):
    """Rows of X in scipy's CSR format: row r's non-zeros are values[p], in columns indices[p],
    for p in indptr[r] … indptr[r+1]-1, columns increasing (scipy's canonical form)."""
    indptr: np.ndarray   #: (n + 1,) int32 or int64
    indices: np.ndarray  #: (nnz,) of indptr's dtype
    values: np.ndarray   #: (nnz,) in the network's dtype


def no_csr(dtype):
    """The :class:`CSR` of a dense X: three empty arrays (the types a CSR X would have)."""
    return CSR(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, dtype))


class Dropout(NamedTuple):
    """Inverted dropout of each weight layer's input (see "Dropout" in the module docstring).

    Layer l's input unit is kept when its 53 bits are >= thresholds[l] (then
    multiplied by scales[l] = 1/(1 − p)), else zeroed; thresholds[l] = 0 is no
    dropout at layer l (:func:`dropout_of` builds one).
    """
    thresholds: np.ndarray  #: (L,) uint64: ⌈p · 2⁵³⌉ per layer (0: off)
    scales: np.ndarray      #: (L,) 1/(1 − p) per layer, in the network's dtype
    seed: np.uint64         #: the run's dropout seed
    epoch: np.int64         #: the epoch the batches belong to
    rates: np.ndarray       #: (L,) float64: the rates p themselves (what the twins take)


class Plan(NamedTuple):
    """How the batches run (chosen by the backend from the data and shapes)."""
    sparse: bool      #: the first layer reads only the rows of W¹ at non-zero inputs
    threads: int      #: > 1: split each batch's work between Numba's threads
    batch_size: int   #: rows per batch (the last batch of an epoch may be shorter)


class SparseBatch(NamedTuple):
    """A gathered sparse batch: the non-zeros of each row.

    Row s has nnz[s] non-zeros at cols[s, :nnz[s]] with vals[s, :nnz[s]].
    """
    nnz: np.ndarray   #: (batch,) int64
    cols: np.ndarray  #: (batch, n_in) int32, increasing along each row
    vals: np.ndarray  #: (batch, n_in) in the network's dtype


class FirstLayer(NamedTuple):
    """The sparse first layer's arrays for one SGD step (:func:`sparse_update_par`)."""
    W: np.ndarray     #: (n_in, h) weights, updated in place
    V: np.ndarray     #: their velocity (unused for plain SGD)
    G: np.ndarray     #: gradient buffer, zero on entry and on exit
    gb: np.ndarray    #: (h,) bias gradient, written
    touched: np.ndarray  #: (n_in,) uint8, written: 1 where the batch has a non-zero input


class Head(NamedTuple):
    """The output layer of a net with one (sparse) hidden layer, for
    :func:`sparse_gather_forward_par` to run on its blocks of rows (``on``) right after
    their hidden outputs: the hidden layer's dropout, z = ã · W² + b², ŷ, the rows' losses
    and δ², and δ¹ = (δ² · W²ᵀ) ⊙ m ⊙ f'(a), as :func:`drop_rows`, :func:`dense_forward`,
    :func:`output_delta` and :func:`backprop_delta` compute them row by row."""
    on: bool          #: False: nothing (the fields are then any arrays of these types)
    Wt: np.ndarray    #: (n_out, hp) the output layer's Wᵀ (read)
    b: np.ndarray     #: (n_out,) its bias
    z: np.ndarray     #: (batch, n_out) written: ŷ
    Y: np.ndarray     #: (batch, n_out) the targets (gathered before)
    delta: np.ndarray   #: (batch, n_out) written: δ²
    w: np.ndarray     #: (batch,) sample weights, or empty
    d1: np.ndarray    #: (batch, hp) written: δ¹
    mask: np.ndarray  #: (batch, hp) written: the hidden layer's dropout mask (if it has dropout)
    dropped: np.ndarray  #: (batch, hp) written: a ⊙ mask (idem)
    terms: np.ndarray    #: (batch,) float64 written: each row's weighted loss
    act: int          #: the :class:`Model`'s codes (a Model field would be a tuple inside
    loss: int         #: a tuple, which Numba cannot hand to a parallel loop's body)
    out_kind: int
    h: int            #: the hidden layer's true width: columns h … hp-1 of a are set to 0


def no_head(dtype):
    """A :class:`Head` that is off, in ``dtype``: :func:`sparse_gather_forward_par` alone."""
    e2, e1 = np.empty((0, 0), dtype), np.empty(0, dtype)
    return Head(False, e2, e1, e2, e2, e2, e1, e2, e2, e2, np.empty(0, np.float64),
                IDENTITY, MSE, IDENTITY, 0)


class Working(NamedTuple):
    """The arrays :func:`train_chunk` trains on (see :func:`_working_copies`)."""
    W0: np.ndarray    #: sparse first layer's padded, aligned W¹ (empty when dense)
    V0: np.ndarray    #: its velocity (Adam: m)
    Wts: list         #: dense layers' Wᵀ (Wts[0] empty when the first layer is sparse)
    Vts: list         #: their velocities (Adam: m)
    bs: list          #: every layer's bias (the first one padded when sparse)
    vbs: list         #: their velocities (Adam: m)
    h: int            #: the first layer's true width (W0 has padding columns past it)
    S0: np.ndarray    #: Adam's v of W0, Sts of the Wts, sbs of the biases (SGD: aliases of W)
    Sts: list
    sbs: list


class Workspace(NamedTuple):
    """Work arrays for batches of up to batch_size rows (see :func:`_workspace`)."""
    acts: list        #: acts[l]: layer l's input (acts[0] the dense batch, empty when sparse)
    masks: list       #: masks[l]: layer l's input's dropout mask (0 or 1/(1 − p)), or empty
    dropped: list     #: dropped[l] = acts[l] ⊙ masks[l], what layer l reads, or empty
    weights: np.ndarray  #: the batch's sample weights (unused without weights)
    deltas: list      #: deltas[l]: the error at layer l's output
    grads: list       #: layer l's weight gradient (transposed, except a sparse first layer's)
    gbs: list         #: layer l's bias gradient
    Y: np.ndarray     #: the batch's targets
    batch: SparseBatch  #: the gathered sparse batch
    touched: np.ndarray  #: (n_in,) uint8 for a sparse first layer, else empty
    terms: np.ndarray    #: (batch,) float64: the rows' losses of a :class:`Head`


def dropout_of(rates, n_layers, dtype, seed=0, epoch=0):
    """A :class:`Dropout` of ``rates``, one per weight layer (input features first), in ``dtype``.

    ``rates`` None (or all 0): no dropout at any of the ``n_layers`` layers.
    The thresholds and scales are computed as :mod:`mlp.dropout` computes
    them (the same bits), here without importing it (this module imports
    nothing from mlp).
    """
    rates = [0.0] * n_layers if rates is None else [float(p) for p in rates]
    t = np.dtype(dtype).type
    thresholds = np.array([math.ceil(p * 2.0 ** 53) for p in rates], np.uint64)
    scales = np.array([t(1) / t(1 - p) for p in rates], dtype)
    return Dropout(thresholds, scales, np.uint64(int(seed) % 2 ** 64), np.int64(epoch),
                   np.array(rates, np.float64))


@_inline()
def _no_dropout(weights):
    """A :class:`Dropout` that drops nothing, for the layers of ``weights`` (inside the kernels)."""
    n = len(weights)
    return Dropout(np.zeros(n, np.uint64), np.ones(n, weights[0].dtype), np.uint64(0),
                   np.int64(0), np.zeros(n, np.float64))


def sgd_params(dtype, lr, momentum, weight_decay, nesterov):
    """An :class:`SGDParams` as the kernels take it: the scalars in ``dtype`` (the network's)."""
    t = np.dtype(dtype).type
    return SGDParams(t(lr), t(momentum), t(weight_decay), bool(nesterov))


@_inline()
def _without_decay(sgd):
    """The same step with λ = 0: biases are not decayed."""
    return SGDParams(sgd.lr, sgd.mu, sgd.wd * 0, sgd.nesterov)


def opt_params(dtype, adam, rates, t0, mu=0.0, wd=0.0, nesterov=False,
               adam_hyper=(0.9, 0.999, 1e-8, False), max_norm=0.0):
    """An :class:`OptParams` as the kernels take it (scalars in ``dtype``, rates in float64).

    ``rates``: (η of each batch, Adam's αₜ of each batch); ``adam_hyper``:
    Adam's (β₁, β₂, ε, decoupled).
    """
    t = np.dtype(dtype).type
    lrs, steps = rates
    b1, b2, eps, decoupled = adam_hyper
    return OptParams(bool(adam), np.ascontiguousarray(lrs, np.float64),
                     np.ascontiguousarray(steps, np.float64), np.int64(t0), t(mu), t(wd),
                     bool(nesterov), t(b1), t(b2), t(eps), bool(decoupled), t(max_norm))


@_inline()
def _sgd_of(opt, k, like):
    """The :class:`SGDParams` of batch k of the chunk (``like``: an array of the dtype)."""
    return SGDParams(like.dtype.type(opt.lrs[k]), opt.mu, opt.wd, opt.nesterov)


@_inline()
def _adam_of(opt, k, like):
    """The :class:`AdamParams` of batch k of the chunk's weight matrices."""
    t = like.dtype.type
    zero = t(0)
    if opt.decoupled:
        return AdamParams(t(opt.steps[k]), opt.beta1, opt.beta2, opt.eps, zero,
                          t(opt.lrs[k]) * opt.wd)
    return AdamParams(t(opt.steps[k]), opt.beta1, opt.beta2, opt.eps, opt.wd, zero)


@_inline()
def _adam_without_decay(adam, like):
    """The same step with no decay of either kind (``like``: an array of the dtype), for biases."""
    zero = like.dtype.type(0)
    return AdamParams(adam.step, adam.beta1, adam.beta2, adam.eps, zero, zero)


# ----------------------------------------------------------------- scalars

# exp in float32 without a library call, so that loops over it vectorise
# (Cephes' expf: e^x = 2^n · e^r with |r| ≤ ln2/2, a degree-6 polynomial for
# e^r; error below one ulp). float64 likewise (Cephes' exp: a Padé form
# 1 + 2r P(r²)/(Q(r²) − r P(r²)); 1.1 ulps measured against long double, and 12×
# faster than math.exp in a loop, which is a library call per number).
_F = np.float32
_LOG2E, _LN2_HI, _LN2_LO = _F(1.4426950408889634), _F(0.693359375), _F(-2.12194440e-4)
_EXP_P = tuple(_F(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_EXP_LO, _EXP_HI, _ROUND = _F(-87.3), _F(88.3), _F(12582912.0)   # 1.5 · 2²³ rounds to integers
_EXP64_P = (1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1)
_EXP64_Q = (3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1,
            2.00000000000000000009e0)
_LN2_HI64, _LN2_LO64 = 6.93145751953125e-1, 1.42860682030941723212e-6
_EXP64_LO, _EXP64_HI, _ROUND64 = -708.0, 709.0, 6755399441055744.0   # 1.5 · 2⁵² rounds


@intrinsic
def _pow2_f32(typingctx, n):
    """2ⁿ for a float32 n holding an integer in [-126, 127], built from its bits."""
    if not (isinstance(n, nbtypes.Float) and n.bitwidth == 32):
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        k = builder.add(builder.fptosi(args[0], i32), ir.Constant(i32, 127))
        return builder.bitcast(builder.shl(k, ir.Constant(i32, 23)), ir.FloatType())
    return nbtypes.float32(nbtypes.float32), codegen


@intrinsic
def _pow2_f64(typingctx, n):
    """2ⁿ for a float64 n holding an integer in [-1022, 1023], built from its bits."""
    if not (isinstance(n, nbtypes.Float) and n.bitwidth == 64):
        return None

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        k = builder.add(builder.fptosi(args[0], i64), ir.Constant(i64, 1023))
        return builder.bitcast(builder.shl(k, ir.Constant(i64, 52)), ir.DoubleType())
    return nbtypes.float64(nbtypes.float64), codegen


@intrinsic
def _prefetch(typingctx, arr, offset):
    """Ask the CPU to fetch the cache line at byte ``offset`` of arr's data (it does not wait)."""
    if not isinstance(arr, nbtypes.Array) or not isinstance(offset, nbtypes.Integer):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, value=args[0]).data
        i8p, i32, i64 = ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(64)
        off = args[1] if args[1].type.width == 64 else builder.sext(args[1], i64)
        addr = builder.gep(builder.bitcast(data, i8p), [off])
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0")
        builder.call(fn, [addr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return nbtypes.void(arr, offset), codegen


@intrinsic
def _gemm(typingctx, alpha, A, ta, B, tb, beta, C):
    """C ← α·op(A)·op(B) + β·C by BLAS gemm, the routine ``np.dot`` calls (op(X) = Xᵀ where t).

    A, B and C are 2-D arrays of one float dtype whose rows are contiguous
    (unit inner stride: C-contiguous arrays and their row or column blocks),
    so a column block is passed without a copy: its pointer and its parent's
    row stride. Unlike ``np.dot`` this takes α and β, so that plain SGD can
    add −η δᵀa to W in the product itself. The caller guarantees the shapes
    agree and that C is not empty and the inner dimension is not zero.
    """
    arrays = (A, B, C)
    if not all(isinstance(t, nbtypes.Array) and t.ndim == 2 for t in arrays):
        return None
    if len({t.dtype for t in arrays}) != 1 or A.dtype not in (nbtypes.float32, nbtypes.float64):
        return None
    ensure_blas()
    dtype = A.dtype

    def codegen(context, builder, sig, args):
        alpha_, a_, ta_, b_, tb_, beta_, c_ = args
        i8, i64, ptr = ir.IntType(8), ir.IntType(64), ir.IntType(8).as_pointer()
        itemsize = ir.Constant(i64, context.get_abi_sizeof(context.get_value_type(dtype)))

        def parts(k):
            arr = context.make_array(sig.args[k])(context, builder, value=args[k])
            rows, cols = cgutils.unpack_tuple(builder, arr.shape, 2)
            row_stride = cgutils.unpack_tuple(builder, arr.strides, 2)[0]
            ld = builder.sdiv(row_stride, itemsize)
            # BLAS wants ld >= the row length even for a single row
            ld = builder.select(builder.icmp_signed("<", ld, cols), cols, ld)
            return rows, cols, ld, builder.bitcast(arr.data, ptr)

        def trans(flag):
            return builder.select(flag, ir.Constant(i8, ord("t")), ir.Constant(i8, ord("n")))

        a_rows, a_cols, lda, a_ptr = parts(1)
        _, _, ldb, b_ptr = parts(3)
        m, n, ldc, c_ptr = parts(6)
        k = builder.select(ta_, a_rows, a_cols)

        def slot(value, ty):
            return builder.bitcast(cgutils.alloca_once_value(
                builder, context.cast(builder, value, ty, dtype)), ptr)
        fnty = ir.FunctionType(ir.IntType(32), [i8, i8, i8, i64, i64, i64, ptr, ptr, i64, ptr,
                                                i64, ptr, ptr, i64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        # row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: B first, same flags
        res = builder.call(fn, (ir.Constant(i8, ord(get_blas_kind(dtype))), trans(tb_),
                                trans(ta_), n, m, k, slot(alpha_, sig.args[0]), b_ptr, ldb,
                                a_ptr, lda, slot(beta_, sig.args[5]), c_ptr, ldc))
        check_blas_return(context, builder, res)
        return context.get_dummy_value()
    return nbtypes.void(alpha, A, ta, B, tb, beta, C), codegen


#: the most 64-byte vector registers :func:`_rows_axpy` keeps a block of Y in
MAX_LINES = 8


@intrinsic
def _rows_axpy(typingctx, Y, y, j0, lines, X, rows, coef, p0, p1):
    """Y[y, j0:j0+w] += Σ_{p0 ≤ p < p1} coef[p] · X[rows[p], j0:j0+w], w = ``lines`` × 64 bytes.

    The block of Y stays in vector registers (``lines`` ≤ :data:`MAX_LINES`
    of them, 64 bytes each) while the rows of X stream through: one load per
    vector of multiply-adds, where a loop over Y's columns would load and
    store Y again for every term. One fused multiply-add per term, in order
    of p, so each Y[y, j] is the same sequence of roundings as the scalar
    loop ``Y[y, j] += coef[p] * X[rows[p], j]`` with contraction. LLVM's
    vectors of 64 bytes (16 float32 or 8 float64) are split into what the
    CPU has (AVX-512: one register; AVX2: two). Y and X are 2-D float arrays
    of one dtype with contiguous rows; rows and coef are contiguous 1-D
    arrays (int row indices, coefficients of X's dtype); the caller keeps
    j0 + w within both arrays' rows and the indices in range.
    """
    if not (isinstance(Y, nbtypes.Array) and isinstance(X, nbtypes.Array)
            and Y.ndim == 2 and X.ndim == 2 and Y.dtype == X.dtype
            and X.dtype in (nbtypes.float32, nbtypes.float64)
            and isinstance(rows, nbtypes.Array) and rows.ndim == 1
            and isinstance(rows.dtype, nbtypes.Integer) and rows.layout == "C"
            and isinstance(coef, nbtypes.Array) and coef.dtype == X.dtype and coef.layout == "C"):
        return None
    dtype = X.dtype
    bits = dtype.bitwidth

    def codegen(context, builder, sig, args):
        Y_, y_, j0_, lines_, X_, rows_, coef_, p0_, p1_ = args
        i8, i64 = ir.IntType(8), ir.IntType(64)
        t = context.get_value_type(dtype)
        lanes = 512 // bits
        vec = ir.VectorType(t, lanes)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                             f"llvm.fma.v{lanes}f{bits}")

        def arr(k):
            return context.make_array(sig.args[k])(context, builder, value=args[k])

        def as_i64(k):
            return context.cast(builder, args[k], sig.args[k], nbtypes.int64)
        ya, xa, ra, ca = arr(0), arr(4), arr(5), arr(6)
        offset = builder.mul(as_i64(2), ir.Constant(i64, bits // 8))
        y_stride = cgutils.unpack_tuple(builder, ya.strides, 2)[0]
        x_stride = cgutils.unpack_tuple(builder, xa.strides, 2)[0]
        y_base = builder.gep(builder.bitcast(ya.data, i8.as_pointer()),
                             [builder.add(builder.mul(as_i64(1), y_stride), offset)])
        x_data = builder.bitcast(xa.data, i8.as_pointer())

        def line(base, k):
            return builder.bitcast(builder.gep(base, [ir.Constant(i64, 64 * k)]),
                                   vec.as_pointer())
        accs = [cgutils.alloca_once(builder, vec) for _ in range(MAX_LINES)]
        done = builder.append_basic_block("axpy.done")
        switch = builder.switch(as_i64(3), done)
        for n_lines in range(1, MAX_LINES + 1):
            block = builder.append_basic_block(f"axpy.lines{n_lines}")
            switch.add_case(ir.Constant(i64, n_lines), block)
            builder.position_at_end(block)
            for k in range(n_lines):
                builder.store(builder.load(line(y_base, k), align=bits // 8), accs[k])
            with cgutils.for_range_slice(builder, as_i64(7), as_i64(8), ir.Constant(i64, 1),
                                         inc=True) as (p, _):
                r = builder.load(builder.gep(ra.data, [p]))
                r = builder.sext(r, i64) if r.type.width < 64 else r
                c = builder.load(builder.gep(ca.data, [p]))
                cv = builder.insert_element(ir.Constant(vec, ir.Undefined), c,
                                            ir.Constant(ir.IntType(32), 0))
                cv = builder.shuffle_vector(cv, cv, ir.Constant(ir.VectorType(ir.IntType(32),
                                                                              lanes), [0] * lanes))
                x_base = builder.gep(x_data, [builder.add(builder.mul(r, x_stride), offset)])
                for k in range(n_lines):
                    xk = builder.load(line(x_base, k), align=bits // 8)
                    builder.store(builder.call(fma, [cv, xk, builder.load(accs[k])]), accs[k])
            for k in range(n_lines):
                builder.store(builder.load(accs[k]), line(y_base, k), align=bits // 8)
            builder.branch(done)
        builder.position_at_end(done)
        return context.get_dummy_value()
    return nbtypes.void(Y, y, j0, lines, X, rows, coef, p0, p1), codegen


def _exp(x):
    """e^x: a vectorisable polynomial (float32) or rational function (float64) of x.

    Arguments beyond ±87 (float32) or −708 … 709 (float64) are clipped there:
    e^x stays finite and normal; NaN stays NaN."""
    return math.exp(x)


@overload(_exp)
def _exp_impl(x):
    if isinstance(x, nbtypes.Float) and x.bitwidth == 32:
        p0, p1, p2, p3, p4, p5 = _EXP_P

        def exp32(x):
            x = _EXP_HI if x > _EXP_HI else (_EXP_LO if x < _EXP_LO else x)
            n = (x * _LOG2E + _ROUND) - _ROUND          # nearest integer, no call
            r = x - n * _LN2_HI - n * _LN2_LO
            p = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5
            return (p * r * r + r + _F(1)) * _pow2_f32(n)
        return exp32
    if isinstance(x, nbtypes.Float) and x.bitwidth == 64:
        p0, p1, p2 = _EXP64_P
        q0, q1, q2, q3 = _EXP64_Q

        def exp64(x):
            x = _EXP64_HI if x > _EXP64_HI else (_EXP64_LO if x < _EXP64_LO else x)
            n = (x * 1.4426950408889634 + _ROUND64) - _ROUND64   # nearest integer, no call
            r = x - n * _LN2_HI64 - n * _LN2_LO64
            rr = r * r
            pr = r * ((p0 * rr + p1) * rr + p2)
            e = 1.0 + 2.0 * (pr / ((((q0 * rr + q1) * rr + q2) * rr + q3) - pr))
            return e * _pow2_f64(n)
        return exp64
    return lambda x: math.exp(x)


@_inline()
def _unsigned(i):
    """i (>= 0) as an unsigned index: Numba then adds no test for negative indices, so the
    loops it indexes stay free of that branch (docs/performance.md has the gain)."""
    return np.uint64(i)


@_inline(fastmath=_FAST)
def _tanh(x, one):
    """tanh x = sign(x) (1 − 2/(e^{2|x|} + 1)), through :func:`_exp`: loops over it vectorise
    in float32, and even float64's math.exp is 3× faster than math.tanh, a library call of
    30 ns here (docs/performance.md). Absolute error a few ulps of 1; NaN stays NaN."""
    t = one - (one + one) / (_exp(abs(x) + abs(x)) + one)
    return t if x >= 0 else -t


@_inline(fastmath=_FAST)
def _f(x, kind, one):
    """f(x) for activation ``kind``; ``one`` is 1 in the working dtype."""
    if kind == SIGMOID:
        return one / (one + _exp(-x))
    if kind == TANH:
        return _tanh(x, one)
    if kind == RELU:
        return x if x > 0 else x * 0     # 0 for x <= 0, NaN stays NaN
    return x


@_inline(fastmath=_FAST)
def _fprime(a, kind, one):
    """f'(z) for activation ``kind``, from the output a = f(z)."""
    if kind == SIGMOID:
        return a * (one - a)
    if kind == TANH:
        return one - a * a
    if kind == RELU:
        return one if a > 0 else one * 0
    return one


# ------------------------------------------------------------ gather rows


@_kernel()
def gather_dense(X, rows, scale, out):
    """out[s] = X[rows[s]] · scale, in out's dtype (uint8 pixels; float X comes with scale 1)."""
    for s in range(rows.shape[0]):
        r = rows[s]
        for i in range(X.shape[1]):
            out[s, i] = X[r, i]
            out[s, i] *= scale
    return out


def _can_compress():
    """Whether :func:`_compress16` can be compiled and run here.

    It needs AVX-512 on this machine's CPU, Numba compiling for that CPU
    (not e.g. NUMBA_CPU_NAME=generic for portable caches), and LLVM 15 or
    newer: LLVM 14 (llvmlite < 0.44, numba < 0.61) aborts the interpreter
    on the compress intrinsic with a failed assertion in SelectionDAG.
    """
    try:
        if binding.llvm_version_info < (15,):
            return False
        if config.CPU_NAME not in (None, "host"):
            return False
        return bool(binding.get_host_cpu_features().get("avx512f", False))
    except Exception:                         # pragma: no cover - unusual llvmlite builds
        return False


#: gather uint8 rows 16 pixels at a time with AVX-512's compress instruction
COMPRESS = _can_compress()


@intrinsic
def _compress16(typingctx, Xf, xoff, col0, scale, cols, vals, k):
    """Append the non-zeros of Xf[xoff:xoff+16] (uint8) to cols/vals from position k.

    Returns the new k. Their columns are col0 + j and their values x · scale
    (float32, as ``vals[k] = x; vals[k] *= scale`` computes them). Four
    vector steps: widen the 16 bytes, compare with 0, compress the kept
    lanes to the front (in registers: the memory form is microcoded and
    slower on AMD), store all 16 lanes at k (the caller guarantees room for
    them) and count the kept ones. AVX-512 only (:data:`COMPRESS`).
    """
    if not (isinstance(Xf, nbtypes.Array) and Xf.dtype == nbtypes.uint8
            and isinstance(vals, nbtypes.Array) and vals.dtype == nbtypes.float32
            and isinstance(cols, nbtypes.Array) and cols.dtype == nbtypes.int32):
        return None

    def codegen(context, builder, sig, args):
        xarr, xoff_, col0_, scale_, carr, varr, k_ = args
        i8, i16, i32, i64 = (ir.IntType(b) for b in (8, 16, 32, 64))
        f32 = ir.FloatType()

        def vec(t):
            return ir.VectorType(t, 16)

        def splat(value, t):
            v = builder.insert_element(ir.Constant(vec(t), ir.Undefined), value,
                                       ir.Constant(i32, 0))
            return builder.shuffle_vector(v, v, ir.Constant(vec(i32), [0] * 16))

        def data(i):
            return context.make_array(sig.args[i])(context, builder, value=args[i]).data

        def fn(name, ret, params):
            return cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ret, params), name)
        src = builder.bitcast(builder.gep(data(0), [xoff_]), vec(i8).as_pointer())
        x = builder.zext(builder.load(src, align=1), vec(i32))
        keep = builder.icmp_unsigned("!=", x, ir.Constant(vec(i32), [0] * 16))
        values = builder.fmul(builder.uitofp(x, vec(f32)), splat(scale_, f32))
        columns = builder.add(splat(builder.trunc(col0_, i32), i32),
                              ir.Constant(vec(i32), list(range(16))))
        undef_f, undef_i = ir.Constant(vec(f32), ir.Undefined), ir.Constant(vec(i32), ir.Undefined)
        mask = ir.VectorType(ir.IntType(1), 16)
        values = builder.call(fn("llvm.x86.avx512.mask.compress.v16f32", vec(f32),
                                 [vec(f32), vec(f32), mask]), [values, undef_f, keep])
        columns = builder.call(fn("llvm.x86.avx512.mask.compress.v16i32", vec(i32),
                                  [vec(i32), vec(i32), mask]), [columns, undef_i, keep])
        builder.store(values, builder.bitcast(builder.gep(data(5), [k_]), vec(f32).as_pointer()),
                      align=4)
        builder.store(columns, builder.bitcast(builder.gep(data(4), [k_]), vec(i32).as_pointer()),
                      align=4)
        count = builder.call(fn("llvm.ctpop.i16", i16, [i16]), [builder.bitcast(keep, i16)])
        return builder.add(k_, builder.zext(count, i64))
    return nbtypes.int64(Xf, xoff, col0, scale, cols, vals, k), codegen


@_kernel()
def _compact_words(Xf, X64, base, n_in, scale, cs, vs):
    """Write the non-zeros of the uint8 pixels Xf[base:base+n_in] (times scale) to cs, vs.

    Returns their number. Eight pixels (one 64-bit word of X64) at a time:
    blank words are skipped, the others written branch-free (every pixel is
    written, the count moves past the non-zeros only). n_in and base are
    multiples of 8.
    """
    k = 0
    for w in range(n_in // 8):
        if X64[base // 8 + w] == 0:
            continue
        for i in range(8 * w, 8 * w + 8):
            cs[k] = i
            vs[k] = Xf[base + i]
            vs[k] *= scale
            k += Xf[base + i] != 0
    return k


@_kernel()
def _compact_compressed(Xf, X64, base, n_in, scale, cs, vs):
    """:func:`_compact_words` 16 pixels at a time, with :func:`_compress16`.

    AVX-512, float32 values. The same output; about twice as fast on MNIST
    rows.
    """
    k = 0
    n16 = n_in - n_in % 16
    for c in range(0, n16, 16):
        w = (base + c) // 8
        if X64[w] | X64[w + 1]:                          # skip blank blocks of 16 pixels
            k = _compress16(Xf, base + c, c, scale, cs, vs, k)
    for i in range(n16, n_in):
        cs[k] = i
        vs[k] = Xf[base + i]
        vs[k] *= scale
        k += Xf[base + i] != 0
    return k


def _compact_row(Xf, X64, base, n_in, scale, cs, vs):
    """:func:`_compact_compressed` if the machine and types allow, else :func:`_compact_words`."""


@overload(_compact_row)
def _compact_row_impl(Xf, X64, base, n_in, scale, cs, vs):
    if COMPRESS and vs.dtype == nbtypes.float32 and Xf.dtype == nbtypes.uint8:
        return lambda Xf, X64, base, n_in, scale, cs, vs: _compact_compressed(
            Xf, X64, base, n_in, scale, cs, vs)
    return lambda Xf, X64, base, n_in, scale, cs, vs: _compact_words(
        Xf, X64, base, n_in, scale, cs, vs)


@_kernel()
def _gather_sparse_rows(X, rows, scale, batch, s0, s1):
    """:func:`gather_sparse` for batch rows s0 … s1-1 (uint8 rows by :func:`_compact_row`)."""
    nnz, cols, vals = batch
    n_in = X.shape[1]
    n8 = n_in - n_in % 8
    words = X.itemsize == 1 and n_in % 8 == 0     # uint8 pixels: test 8 at a time as one word
    Xf = X.reshape(X.size)
    X64 = Xf.view(np.uint64) if words else np.zeros(1, np.uint64)
    stride = n_in // 8
    touch = np.uint64(0)
    for s in range(s0, s1):
        r = rows[s]
        if words and s + 2 < s1:      # load the row after next now: its cache misses overlap
            nxt = rows[s + 2] * stride
            for w in range(0, stride, 8):
                touch |= X64[nxt + w]
        if words:
            nnz[s] = _compact_row(Xf, X64, r * n_in, n_in, scale, cols[s], vals[s])
            continue
        k = 0                         # float X: a sum of |x| is 0 only if every x is
        for i0 in range(0, n8, 8):
            if (abs(X[r, i0]) + abs(X[r, i0 + 1]) + abs(X[r, i0 + 2]) + abs(X[r, i0 + 3])
                    + abs(X[r, i0 + 4]) + abs(X[r, i0 + 5]) + abs(X[r, i0 + 6])
                    + abs(X[r, i0 + 7])) == 0:
                continue
            for i in range(i0, i0 + 8):   # branch-free: write every entry, keep the non-zeros
                cols[s, k] = i
                vals[s, k] = X[r, i]
                vals[s, k] *= scale
                k += X[r, i] != 0
        for i in range(n8, n_in):
            if X[r, i] != 0:
                cols[s, k] = i
                vals[s, k] = X[r, i]
                vals[s, k] *= scale
                k += 1
        nnz[s] = k
    return touch


@_kernel()
def gather_sparse(X, rows, scale, batch):
    """Fill the :class:`SparseBatch` ``batch`` with the non-zeros of X[rows] · scale.

    Returns their number. Row s of the batch has ``nnz[s]`` non-zeros, at
    columns ``cols[s, :nnz[s]]`` (increasing) with values ``vals[s, :nnz[s]]``;
    cols and vals are (batch, n_in) arrays, so rows can be filled
    independently. uint8 inputs are tested eight pixels (one 64-bit word) at
    a time: most blocks of an MNIST image are blank.
    """
    _gather_sparse_rows(X, rows, scale, batch, _row0(), rows.shape[0])
    return batch.nnz[:rows.shape[0]].sum()


@_kernel()
def gather_csr(csr, rows, batch):
    """Fill the :class:`SparseBatch` ``batch`` with rows ``rows`` of the :class:`CSR` matrix.

    Returns their number of stored entries. Row s of the batch is a copy of
    CSR row rows[s]: no search for non-zeros (CSR lists them already), and
    ``batch`` needs only as many columns as the longest row has entries.
    """
    indptr, indices, values = csr
    nnz, cols, vals = batch
    total = 0
    for s in range(rows.shape[0]):
        lo, hi = indptr[rows[s]], indptr[rows[s] + 1]
        for p in range(lo, hi):
            cols[s, p - lo] = indices[p]
            vals[s, p - lo] = values[p]
        nnz[s] = hi - lo
        total += hi - lo
    return total


@_kernel()
def gather_targets(labels, T, rows, Y):
    """Y[s] = the target of sample rows[s]: one-hot of ``labels`` when given, else T[rows[s]]."""
    if labels.shape[0] > 0:
        for s in range(rows.shape[0]):
            for k in range(Y.shape[1]):
                Y[s, k] = 0
            Y[s, labels[rows[s]]] = 1
    else:
        for s in range(rows.shape[0]):
            for k in range(Y.shape[1]):
                Y[s, k] = T[rows[s], k]
    return Y


@_kernel()
def _prefetch_rows(X, rows):
    """Start fetching rows ``rows`` of X into the cache.

    Gathering them later then finds them there.
    """
    row_bytes = X.shape[1] * X.itemsize
    for s in range(rows.shape[0]):
        base = rows[s] * row_bytes
        for off in range(0, row_bytes, 64):
            _prefetch(X, base + off)


# ----------------------------------------------------------------- dropout


@_kernel()
def _drop_entries_rows(batch, dropout, pos0, s0, s1):
    """:func:`drop_entries` for batch rows s0 … s1-1."""
    nnz, cols, vals = batch
    thr, keep = dropout.thresholds[0], dropout.scales[0]
    for s in range(s0, s1):
        key = row_key(dropout.seed, dropout.epoch, pos0 + s, 0)
        k = 0
        for p in range(nnz[s]):        # branch-free: write every entry, keep the survivors
            c = cols[s, p]
            cols[s, k] = c
            vals[s, k] = vals[s, p] * keep
            k += _keep_bits(key, c) >= thr
        nnz[s] = k


@_kernel()
def drop_entries(batch, n, dropout, pos0):
    """Input dropout of a gathered :class:`SparseBatch`: the dropped non-zeros are removed.

    Row s (sample position pos0 + s of the epoch) keeps the non-zeros whose
    columns draw "kept" at layer 0, times 1/(1 − p), in their order; the
    first n rows. Nothing when layer 0 has no dropout.
    """
    if dropout.thresholds[0] != 0:
        _drop_entries_rows(batch, dropout, pos0, _row0(), n)
    return batch


@_kernel(fastmath=_FAST)
def _drop_rows(a, layer, dropout, pos0, mask, out, s0, s1):
    """mask[s] = layer's dropout mask of sample pos0 + s, out[s] = a[s] ⊙ mask[s], rows
    s0 … s1-1."""
    thr, keep = dropout.thresholds[layer], dropout.scales[layer]
    zero = a.dtype.type(0)
    for s in range(s0, s1):
        key = row_key(dropout.seed, dropout.epoch, pos0 + s, layer)
        for j in range(a.shape[1]):
            m = keep if _keep_bits(key, j) >= thr else zero
            mask[s, j] = m
            out[s, j] = a[s, j] * m


@_kernel()
def drop_rows(a, layer, dropout, pos0, mask, out):
    """Inverted dropout of layer ``layer``'s input a (row s: sample position pos0 + s).

    Writes the mask (0 where dropped, 1/(1 − p) where kept) and out = a ⊙ mask
    (out may be a itself); returns out. Nothing when that layer has no dropout.
    """
    if dropout.thresholds[layer] != 0:
        _drop_rows(a, layer, dropout, pos0, mask, out, _row0(), a.shape[0])
    return out


# ------------------------------------------------------- BLAS, in blocks


@_inline()
def _block_bounds(n, blk, n_blocks):
    """Block blk of n_blocks of range(n): equal steps rounded up to 16 (64 bytes of float32)."""
    per_block = -(-n // n_blocks)
    step = -(-per_block // 16) * 16
    return min(n, blk * step), min(n, (blk + 1) * step)


@_inline()
def _gemm_block(alpha, A, ta, B, tb, beta, C, by_rows, blk, n_blocks):
    """Block blk of :func:`_gemm_blocks`: a block of C's rows (by_rows) or of its columns."""
    if by_rows:
        lo, hi = _block_bounds(C.shape[0], blk, n_blocks)
        if lo < hi:
            _gemm(alpha, A[:, lo:hi] if ta else A[lo:hi], ta, B, tb, beta, C[lo:hi])
    else:
        lo, hi = _block_bounds(C.shape[1], blk, n_blocks)
        if lo < hi:
            _gemm(alpha, A, ta, B[lo:hi] if tb else B[:, lo:hi], tb, beta, C[:, lo:hi])


@_kernel(parallel=True)
def _gemm_par(alpha, A, ta, B, tb, beta, C, by_rows, n_blocks):
    """:func:`_gemm_blocks`' blocks shared between Numba's threads (in turn with one thread)."""
    if _iget_num_threads() > 1:
        for blk in prange(n_blocks):
            _gemm_block(alpha, A, ta, B, tb, beta, C, by_rows, blk, n_blocks)
    else:   # no parallel launch: callers on several Python threads may run this at once
        for blk in range(n_blocks):
            _gemm_block(alpha, A, ta, B, tb, beta, C, by_rows, blk, n_blocks)


@_kernel()
def _gemm_blocks(alpha, A, ta, B, tb, beta, C, by_rows):
    """C ← α·op(A)·op(B) + β·C (op(X) = Xᵀ where t) by BLAS, in blocks of C's rows or columns.

    The blocks (:data:`BLAS_BLOCK` rows or columns of C, which is a weight
    matrix or has one of its sides) depend on the shapes only, and each is one
    BLAS call, so the result is the same bits whatever Numba's thread count
    (for a given BLAS). With more than one Numba thread the blocks are shared
    out in a parallel loop: one pool of threads does the whole batch. (BLAS's
    own threads would spin beside Numba's between calls, each pool taking
    cores from the other: the backend holds BLAS to one thread while it
    trains.)
    """
    n = C.shape[0] if by_rows else C.shape[1]
    n_blocks = max(1, n // BLAS_BLOCK)
    if n_blocks > 1:
        _gemm_par(alpha, A, ta, B, tb, beta, C, by_rows, n_blocks)
    else:
        _gemm_block(alpha, A, ta, B, tb, beta, C, by_rows, _row0(), _runtime_one(n))
    return C


# ----------------------------------------------------------------- forward


@_kernel(fastmath=_FAST)
def _bias_activation_rows(z, b, kind, s0, s1):
    """z[s] ← f(z[s] + b) for rows s0 … s1-1; one loop per function, so that each vectorises."""
    one = z.dtype.type(1)
    m = z.shape[1]
    if kind == SIGMOID:
        for s in range(s0, s1):
            for j in range(m):
                z[s, j] = one / (one + _exp(-(z[s, j] + b[j])))
    elif kind == TANH:
        for s in range(s0, s1):
            for j in range(m):
                z[s, j] = _tanh(z[s, j] + b[j], one)
    elif kind == RELU:
        for s in range(s0, s1):
            for j in range(m):
                t = z[s, j] + b[j]
                z[s, j] = t if t > 0 else t * 0
    else:
        for s in range(s0, s1):
            for j in range(m):
                z[s, j] += b[j]


@_kernel()
def bias_activation(z, b, kind):
    """z ← f(z + b) in place, row by row."""
    _bias_activation_rows(z, b, kind, _row0(), z.shape[0])
    return z


@_inline()
def _line_blocks(n, itemsize):
    """(columns per 64-byte line, columns in whole lines) of rows of n columns."""
    lanes = 64 // itemsize
    return lanes, n - n % lanes


@_kernel(fastmath=_FAST)
def _sparse_forward_rows(batch, W, b, kind, out, s0, s1):
    """:func:`sparse_forward` for batch rows s0 … s1-1.

    A block of up to :data:`MAX_LINES` × 64 bytes of out[s] stays in vector
    registers while the rows of W at the row's non-zeros stream through
    (:func:`_rows_axpy`); columns past the last whole 64-byte line (none in
    train_chunk's padded W¹) are added one by one.
    """
    nnz, cols, vals = batch
    n_out = W.shape[1]
    lanes, full = _line_blocks(n_out, W.itemsize)
    for s in range(s0, s1):
        for j in range(n_out):
            out[s, j] = 0
    j0 = 0
    while j0 < full:           # a block of W's columns for every row: it stays in the cache
        lines = min(MAX_LINES, (full - j0) // lanes)
        for s in range(s0, s1):
            _rows_axpy(out, s, j0, lines, W, cols[s], vals[s], _row0(), nnz[s])
        j0 += lines * lanes
    for s in range(s0, s1):
        for p in range(nnz[s]):
            x0, i0 = vals[s, p], _unsigned(cols[s, p])
            for j in range(full, n_out):
                out[s, j] += x0 * W[i0, j]
    _bias_activation_rows(out, b, kind, s0, s1)


@_kernel()
def sparse_forward(batch, W, b, kind, out):
    """out = f(x · W + b) for the :class:`SparseBatch` x.

    Only the rows of W at non-zero inputs are read.
    """
    _sparse_forward_rows(batch, W, b, kind, out, _row0(), out.shape[0])
    return out


@_kernel(parallel=True)
def sparse_gather_forward_par(X, rows, scale, batch, layer, out, dropout, pos0, head):
    """:func:`gather_sparse`, :func:`drop_entries` and :func:`sparse_forward`, on several threads.

    ``layer`` is the first layer's (W, b, kind); with ``head.on`` (a
    :class:`Head`) each block of rows then goes on through the output layer
    (:func:`_head_rows`): the serial parts of a step between the sparse
    layer's forward pass and its update (about a quarter of the dropout
    recipe's epoch on two threads) run on the threads too, on rows that are
    still in the cache.

    Blocks of the batch's rows are split between threads, in one parallel
    region for all three: a thread gathers its rows (sample positions pos0 +
    s of the epoch for ``dropout``, a :class:`Dropout`) and computes their
    outputs while they are in its cache. An empty X (no rows: CSR data)
    means ``batch`` holds the rows gathered already (:func:`gather_csr`,
    dropout done): only the forward pass is left. Every row is computed as by the
    serial kernels, so the results are the same bits. Rows of W wider than
    :data:`OUTER_MIN_SORT_BYTES` come in fewer, longer blocks (four per
    thread), so that each block of W's columns serves more rows while it is
    in the cache (see :func:`_sparse_forward_rows`).

    (One kernel for both kinds of rows rather than a second one for CSR
    batches: a parallel kernel took 3 s and 20 MB of a cold compile, and
    every run compiled both: docs/performance.md.)
    """
    W, b, kind = layer
    n = rows.shape[0]
    wide = W.shape[1] * W.itemsize >= OUTER_MIN_SORT_BYTES
    n_blocks = min(n, 4 * _iget_num_threads() if wide else 32)
    step = -(-n // max(n_blocks, 1))
    gather = X.shape[0] > 0
    for blk in prange(n_blocks):
        lo, hi = blk * step, min(n, (blk + 1) * step)
        if gather:
            _gather_sparse_rows(X, rows, scale, batch, lo, hi)
            if dropout.thresholds[0] != 0:
                _drop_entries_rows(batch, dropout, pos0, lo, hi)
        _sparse_forward_rows(batch, W, b, kind, out, lo, hi)
        if head.on:
            _head_rows(out, head, dropout, pos0, n, lo, hi)
    return out


@_kernel()
def _head_rows(a, head, dropout, pos0, n, s0, s1):
    """Rows s0 … s1-1 (of n) of the :class:`Head` ``head``, from the hidden outputs a.

    Each step is the serial kernel's own row loop (:func:`_drop_rows`,
    :func:`_dense_rows`, :func:`_bias_activation_rows`,
    :func:`_output_delta_rows`, :func:`_backprop_rows`), so every row gets
    the same bits; the caller sums the rows' losses in row order.
    """
    for s in range(s0, s1):           # padding units: f(0) may be ½, their output is 0
        for j in range(head.h, a.shape[1]):
            a[s, j] = 0
    x = a
    if dropout.thresholds[1] != 0:
        _drop_rows(a, 1, dropout, pos0, head.mask, head.dropped, s0, s1)
        x = head.dropped
    _dense_rows(x, head.Wt, head.z, s0, s1)
    _bias_activation_rows(head.z, head.b, IDENTITY, s0, s1)
    model = Model(head.act, head.loss, head.out_kind)
    _output_delta_rows(head.z, head.Y, model, head.delta, head.w, n, s0, s1, head.terms)
    _backprop_rows(head.delta, head.Wt, a, head.act, head.d1, head.mask, s0, s1, True)


@_inline(fastmath=_FAST_SUM)
def _dense_row(a, Wt, out, s):
    """out[s, k] = a[s] · Wt[k], four outputs per pass over a[s]."""
    n_out, n_in = Wt.shape
    k = 0
    while k + 4 <= n_out:
        t0 = t1 = t2 = t3 = Wt.dtype.type(0)
        for i in range(n_in):
            x = a[s, i]
            t0 += x * Wt[k, i]
            t1 += x * Wt[k + 1, i]
            t2 += x * Wt[k + 2, i]
            t3 += x * Wt[k + 3, i]
        out[s, k], out[s, k + 1], out[s, k + 2], out[s, k + 3] = t0, t1, t2, t3
        k += 4
    while k < n_out:
        t0 = Wt.dtype.type(0)
        for i in range(n_in):
            t0 += a[s, i] * Wt[k, i]
        out[s, k] = t0
        k += 1


@_inline()
def _blas_rows(n, n_in, n_out):
    """Whether :func:`dense_forward` and :func:`backprop_delta` of n rows of a layer
    n_in → n_out call BLAS (:data:`BLAS_MIN_FLOPS`, :data:`BLAS_MIN_WIDTH`)."""
    return n * n_in * n_out >= BLAS_MIN_FLOPS and n_out >= BLAS_MIN_WIDTH


@_kernel(fastmath=_FAST_SUM)
def dense_forward(a, Wt, b, kind, out):
    """out = f(a · W + b), given ``Wt`` = Wᵀ: BLAS for large products, else dot products of rows."""
    n, n_in = a.shape
    if _blas_rows(n, n_in, Wt.shape[0]):              # out = a · Wtᵀ, blocks of out's columns
        _gemm_blocks(out.dtype.type(1), a, _runtime_false(n), Wt, _runtime_true(n),
                     out.dtype.type(0), out, _runtime_false(n))
    else:
        _dense_rows(a, Wt, out, _row0(), n)
    return bias_activation(out, b, kind)


@_kernel(fastmath=_FAST_SUM)
def _dense_rows(a, Wt, out, s0, s1):
    """out[s] = a[s] · Wᵀ for rows s0 … s1-1 (:func:`_dense_row`), without bias or activation."""
    for s in range(s0, s1):
        _dense_row(a, Wt, out, s)


# ------------------------------------------------------------------ output


@_kernel(fastmath=_FAST)
def output_delta(z, Y, model, delta, w):
    """ŷ = g(z), the batch-mean loss, and δ = ∂L/∂z, in one pass over each row.

    ``z`` is the output layer's pre-activation and is overwritten with ŷ.
    Returns the loss (float64). The pairs of :mod:`mlp.losses`: ce (softmax)
    gives δ = (ŷ·Σ_k y_k − y)/n, which is (ŷ − y)/n for one-hot rows; bce (sigmoid)
    gives δ = (ŷ − y)/n; poisson (exp) gives δ = (ŷ − y)/n; mse (any g) gives
    δ = (ŷ − y) g'(z)/n. With sample weights ``w`` (one per row; empty for
    none) row s's loss and δ are multiplied by w[s] (as the reference:
    (w[s] · (ŷ − y)) / n).
    """
    n = z.shape[0]
    terms = np.empty(n, np.float64)
    _output_delta_rows(z, Y, model, delta, w, n, _row0(), n, terms)
    return _mean_in_row_order(terms, n)


@_inline()
def _mean_in_row_order(terms, n):
    """(Σ terms[:n]) / n, summed in row order: the batch's loss, whatever computed the rows."""
    total = 0.0
    for s in range(n):
        total += terms[s]
    return total / n


@_kernel(fastmath=_FAST)
def _output_delta_rows(z, Y, model, delta, w, n, s0, s1, terms):
    """:func:`output_delta` for rows s0 … s1-1 of a batch of n rows; terms[s] = row s's
    (weighted) loss, which the caller sums in row order."""
    loss, out_kind = model.loss, model.out_kind
    n_out = z.shape[1]
    one = z.dtype.type(1)
    zero = z.dtype.type(0)
    nf = z.dtype.type(n)
    weighted = w.shape[0] > 0
    for s in range(s0, s1):
        ws = w[s] if weighted else one
        row = zero
        if loss == CE:
            # log ŷ_k = (z_k − m) − log Σ exp(z − m): finite for any finite z
            m = z[s, 0]
            for k in range(1, n_out):
                m = max(m, z[s, k])
            se = zero
            ysum = zero                  # ∂L/∂z = ŷ Σ_k y_k − y (Σ y = 1 for one-hot rows)
            for k in range(n_out):
                e = _exp(z[s, k] - m)
                delta[s, k] = e          # kept for ŷ below: one exponential per output, not two
                se += e
                ysum += Y[s, k]
            lse = math.log(se)
            for k in range(n_out):
                y = Y[s, k]
                shifted = z[s, k] - m
                row -= y * (shifted - lse)
                yhat = delta[s, k] / se
                z[s, k] = yhat
                delta[s, k] = ws * (yhat * ysum - y) / nf
        elif loss == BCE:
            # −[y log σ(z) + (1 − y) log(1 − σ(z))] = softplus(z) − y z
            for k in range(n_out):
                x = z[s, k]
                y = Y[s, k]
                row += max(x, zero) + math.log1p(math.exp(-abs(x))) - y * x
                yhat = _f(x, SIGMOID, one)
                z[s, k] = yhat
                delta[s, k] = ws * (yhat - y) / nf
        elif loss == POISSON:
            # y log(y/ŷ) − y + ŷ with log ŷ = z: ŷ − y z + (y log y − y), 0 log 0 = 0
            for k in range(n_out):
                x = z[s, k]
                y = Y[s, k]
                yhat = math.exp(x)
                row += yhat - y * x - y
                if y > zero:
                    row += y * math.log(y)
                z[s, k] = yhat
                delta[s, k] = ws * (yhat - y) / nf
        else:
            for k in range(n_out):
                yhat = _f(z[s, k], out_kind, one)
                err = yhat - Y[s, k]
                row += err * err
                z[s, k] = yhat
                delta[s, k] = ws * err * _fprime(yhat, out_kind, one) / nf
            row *= z.dtype.type(0.5)
        terms[s] = row * ws if weighted else row


@_kernel()
def output_activation(z, model):
    """z ← g(z) in place: softmax for ce, sigmoid for bce, exp for poisson, the chosen output
    function for mse."""
    loss, out_kind = model.loss, model.out_kind
    n, n_out = z.shape
    one = z.dtype.type(1)
    for s in range(n):
        if loss == CE:
            m = z[s, 0]
            for k in range(1, n_out):
                m = max(m, z[s, k])
            se = z.dtype.type(0)
            for k in range(n_out):
                z[s, k] = _exp(z[s, k] - m)
                se += z[s, k]
            for k in range(n_out):
                z[s, k] /= se
        elif loss == POISSON:
            for k in range(n_out):
                z[s, k] = math.exp(z[s, k])
        else:
            kind = SIGMOID if loss == BCE else out_kind
            for k in range(n_out):
                z[s, k] = _f(z[s, k], kind, one)
    return z


# ---------------------------------------------------------------- backward


@_kernel(fastmath=_FAST)
def times_fprime(d, a, kind):
    """d ← d ⊙ f'(a) in place, f' taken from the layer's output a; one loop per function."""
    _times_fprime_rows(d, a, kind, _row0(), d.shape[0])
    return d


@_inline(fastmath=_FAST)
def _times_fprime_rows(d, a, kind, s0, s1):
    """:func:`times_fprime` on rows s0 … s1-1."""
    one = a.dtype.type(1)
    m = d.shape[1]
    if kind == SIGMOID:
        for s in range(s0, s1):
            for i in range(m):
                d[s, i] *= a[s, i] * (one - a[s, i])
    elif kind == TANH:
        for s in range(s0, s1):
            for i in range(m):
                d[s, i] *= one - a[s, i] * a[s, i]
    elif kind == RELU:
        for s in range(s0, s1):
            for i in range(m):
                d[s, i] = d[s, i] if a[s, i] > 0 else d[s, i] * 0


@_inline(fastmath=_FAST)
def _backprop_row(d, Wt, out, s):
    """out[s] = Σ_k d[s, k] · Wt[k], four rows of Wt per pass."""
    n_out, n_in = Wt.shape
    for i in range(n_in):
        out[s, i] = 0
    k = 0
    while k + 4 <= n_out:
        d0, d1, d2, d3 = d[s, k], d[s, k + 1], d[s, k + 2], d[s, k + 3]
        for i in range(n_in):
            out[s, i] += d0 * Wt[k, i] + d1 * Wt[k + 1, i] + d2 * Wt[k + 2, i] + d3 * Wt[k + 3, i]
        k += 4
    while k < n_out:
        d0 = d[s, k]
        for i in range(n_in):
            out[s, i] += d0 * Wt[k, i]
        k += 1


@_kernel(fastmath=_FAST)
def backprop_delta(d, Wt, a, kind, out, mask):
    """out = (δ · Wᵀ) ⊙ m ⊙ f'(a), ``Wt`` = Wᵀ: the error of the layer below (before W changes).

    m is the dropout ``mask`` of a (see :func:`drop_rows`); an empty mask is none.
    """
    n = d.shape[0]
    n_out, n_in = Wt.shape
    blas = _blas_rows(n, n_in, n_out)
    if blas:                                         # out = d · Wt, blocks of out's columns
        _gemm_blocks(out.dtype.type(1), d, _runtime_false(n), Wt, _runtime_false(n),
                     out.dtype.type(0), out, _runtime_false(n))
    _backprop_rows(d, Wt, a, kind, out, mask, _row0(), n, not blas)
    return out


@_kernel(fastmath=_FAST)
def _backprop_rows(d, Wt, a, kind, out, mask, s0, s1, product):
    """:func:`backprop_delta` for rows s0 … s1-1; ``product`` False: out holds δ · Wᵀ already
    (BLAS), only ⊙ m ⊙ f'(a) is left."""
    n_in = Wt.shape[1]
    for s in range(s0, s1):          # row by row: the row is still in L1 for ⊙ m and ⊙ f'
        if product:
            _backprop_row(d, Wt, out, s)
        if mask.shape[0] > 0:
            for i in range(n_in):
                out[s, i] *= mask[s, i]
        _times_fprime_rows(out, a, kind, s, s + 1)


@_kernel(fastmath=_FAST)
def column_sums(d, gb):
    """gb = Σ_rows d: the bias gradient."""
    for k in range(d.shape[1]):
        gb[k] = 0
    for s in range(d.shape[0]):
        for k in range(d.shape[1]):
            gb[k] += d[s, k]
    return gb


@_inline(fastmath=_FAST)
def _gradient_row(a, d, Gt, k):
    """Gt[k] = Σ_s d[s, k] · a[s], four rows of a per pass."""
    n, n_in = a.shape
    for i in range(n_in):
        Gt[k, i] = 0
    s = 0
    while s + 4 <= n:
        d0, d1, d2, d3 = d[s, k], d[s + 1, k], d[s + 2, k], d[s + 3, k]
        for i in range(n_in):
            Gt[k, i] += d0 * a[s, i] + d1 * a[s + 1, i] + d2 * a[s + 2, i] + d3 * a[s + 3, i]
        s += 4
    while s < n:
        d0 = d[s, k]
        for i in range(n_in):
            Gt[k, i] += d0 * a[s, i]
        s += 1


@_kernel(fastmath=_FAST)
def dense_gradient(a, d, Gt, gb):
    """Gt = (aᵀ · δ)ᵀ = δᵀ · a and gb = Σ_rows δ: a dense layer's gradients, W's transposed."""
    n, n_in = a.shape
    n_out = d.shape[1]
    column_sums(d, gb)
    if n * n_in * n_out >= BLAS_MIN_FLOPS:           # Gt = dᵀ · a, blocks of Gt's rows
        _gemm_blocks(Gt.dtype.type(1), d, _runtime_true(n), a, _runtime_false(n),
                     Gt.dtype.type(0), Gt, _runtime_true(n))
        return Gt
    for k in range(n_out):
        _gradient_row(a, d, Gt, k)
    return Gt


@_kernel(fastmath=_FAST)
def dense_sgd_plain(a, d, Wt, lr):
    """Plain SGD of a dense layer fused with its gradient: Wt[k] ← Wt[k] − Σ_s (η δ[s, k]) a[s].

    No gradient array and no second pass (what :func:`dense_gradient` +
    :func:`sgd_update` do, up to rounding: η multiplies each term). Large
    products go to BLAS as W ← W − η (δᵀa), with β = 1 (:func:`_gemm_blocks`).
    """
    n, n_in = a.shape
    if n * n_in * Wt.shape[0] >= BLAS_MIN_FLOPS:     # BLAS: Wt ← 1·Wt + (−η)·dᵀa, in place
        _gemm_blocks(-lr, d, _runtime_true(n), a, _runtime_false(n), Wt.dtype.type(1), Wt,
                     _runtime_true(n))
        return Wt
    for k in range(Wt.shape[0]):
        s = 0
        while s + 4 <= n:
            c0, c1, c2, c3 = lr * d[s, k], lr * d[s + 1, k], lr * d[s + 2, k], lr * d[s + 3, k]
            for i in range(n_in):
                Wt[k, i] -= c0 * a[s, i] + c1 * a[s + 1, i] + c2 * a[s + 2, i] + c3 * a[s + 3, i]
            s += 4
        while s < n:
            c0 = lr * d[s, k]
            for i in range(n_in):
                Wt[k, i] -= c0 * a[s, i]
            s += 1
    return Wt


@_kernel()
def _column_counts(batch, n, counts):
    """counts[i] = the number of rows among the first n of ``batch`` with a non-zero in column i."""
    nnz, cols = batch.nnz, batch.cols
    for i in range(counts.shape[0]):
        counts[i] = 0
    for s in range(n):
        for p in range(nnz[s]):
            counts[cols[s, p]] += 1
    return counts


@_kernel()
def _first_at_least(cols, s, n, i0):
    """The first position p < n of row s with cols[s, p] >= i0 (columns increase along a row)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if cols[s, mid] < i0:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_inline()
def _entries_in(cols, s, n, i0, i1):
    """Positions (p, end) of row s's non-zeros whose columns lie in i0 … i1-1 (columns increase)."""
    return _first_at_least(cols, s, n, i0), _first_at_least(cols, s, n, i1)


#: :func:`_sparse_outer_rows` sorts the entries of this many batch rows at a time by column
#: (a block of δ's rows then stays in the cache while a row of A takes its terms; measured in
#: blocks of 16 … 256 rows: docs/performance.md)
OUTER_ROWS = 64
#: and adds fewer rows than this one row at a time (sorting would cost more than it saves)
OUTER_MIN_SORT = 32
#: rows of W¹ at least this many bytes are "wide": :func:`sparse_gather_forward_par` gives them
#: fewer, longer blocks of the batch
OUTER_MIN_SORT_BYTES = 1024


@_inline(fastmath=_FAST)
def _outer_by_row(batch, d, A, coef, i0, i1, s0, s1):
    """Rows i0 … i1-1 of A += coef · x[s0:s1]ᵀ · δ[s0:s1], one batch row at a time.

    Four non-zeros of a row of x at a time: four rows of A take their
    share of δ[s] in one pass, so δ[s] is loaded once for four rows.
    """
    nnz, cols, vals = batch
    n_out = _unsigned(d.shape[1])
    for s in range(s0, s1):
        ds = d[s]
        p, end = _entries_in(cols, s, nnz[s], i0, i1)
        while p + 4 <= end:
            a, b = _unsigned(cols[s, p]), _unsigned(cols[s, p + 1])
            c, e = _unsigned(cols[s, p + 2]), _unsigned(cols[s, p + 3])
            c0, c1 = coef * vals[s, p], coef * vals[s, p + 1]
            c2, c3 = coef * vals[s, p + 2], coef * vals[s, p + 3]
            for k in range(n_out):
                dk = ds[k]
                A[a, k] += c0 * dk
                A[b, k] += c1 * dk
                A[c, k] += c2 * dk
                A[e, k] += c3 * dk
            p += 4
        while p < end:
            a, c0 = _unsigned(cols[s, p]), coef * vals[s, p]
            for k in range(n_out):
                A[a, k] += c0 * ds[k]
            p += 1


class _ByColumn(NamedTuple):
    """Work arrays of :func:`_outer_by_column` (entries of OUTER_ROWS batch rows at most)."""
    first: np.ndarray    #: (OUTER_ROWS,) int64: each row's first entry in the column range
    last: np.ndarray     #: and the end of its entries there
    starts: np.ndarray   #: (columns + 1,) int64: column i's entries are starts[i] … starts[i+1]-1
    fill: np.ndarray     #: (columns,) int64: where the counting sort writes next
    samples: np.ndarray  #: int64: the batch row of each entry, in column order
    terms: np.ndarray    #: coef · x of each entry, in column order


@_inline(fastmath=_FAST)
def _outer_by_column(batch, d, A, coef, i0, i1, s0, s1, work):
    """:func:`_outer_by_row`'s sum, its entries sorted by column (work: a :class:`_ByColumn`).

    A counting sort keeps batch order within each column; then each row i of
    A takes its terms with a block of the row in vector registers while the
    rows δ[s] stream through (:func:`_rows_axpy`): A is read and written
    once per block of the row, not once per term. Every A[i, k] gets the same
    multiply-adds in the same order as by :func:`_outer_by_row`.
    """
    nnz, cols, vals = batch
    first, last, starts, fill, samples, terms = work
    m = i1 - i0
    for i in range(m + 1):
        starts[i] = 0
    for s in range(s0, s1):
        p, end = _entries_in(cols, s, nnz[s], i0, i1)
        first[s - s0], last[s - s0] = p, end
        for q in range(p, end):
            starts[cols[s, q] - i0 + 1] += 1
    for i in range(m):
        starts[i + 1] += starts[i]
        fill[i] = starts[i]
    for s in range(s0, s1):
        for q in range(first[s - s0], last[s - s0]):
            k = cols[s, q] - i0
            samples[fill[k]] = s
            terms[fill[k]] = coef * vals[s, q]
            fill[k] += 1
    n_out = d.shape[1]
    lanes, full = _line_blocks(n_out, A.itemsize)
    j0 = 0
    while j0 < full:           # a block of δ's columns for every row of A: it stays in the cache
        lines = min(MAX_LINES, (full - j0) // lanes)
        for i in range(i0, i1):
            lo, hi = starts[i - i0], starts[i - i0 + 1]
            if lo < hi:
                _rows_axpy(A, i, j0, lines, d, samples, terms, lo, hi)
        j0 += lines * lanes
    for i in range(i0, i1):
        lo, hi = starts[i - i0], starts[i - i0 + 1]
        for q in range(lo, hi):
            t, s = terms[q], samples[q]
            for k in range(full, n_out):
                A[i, k] += t * d[s, k]


@_kernel(fastmath=_FAST)
def _sparse_outer_rows(batch, d, A, coef, i0, i1):
    """Rows i0 … i1-1 of A += coef · xᵀ · δ.

    Each x[s, i] ≠ 0 adds (coef · x) δ[s] to row i, in batch order (one
    multiply-add each). Blocks of :data:`OUTER_ROWS` batch rows are sorted by
    column and added a row of A at a time (:func:`_outer_by_column`); blocks
    shorter than :data:`OUTER_MIN_SORT` rows are added a batch row at a time
    (:func:`_outer_by_row`). Both give the same bits. coef = 1
    accumulates the gradient; coef = −η applies plain SGD directly.
    """
    n = d.shape[0]
    if n < OUTER_MIN_SORT:
        _outer_by_row(batch, d, A, coef, i0, i1, _row0(), n)
        return
    rows = min(n, OUTER_ROWS)
    entries = min(batch.nnz[:n].sum(), rows * (i1 - i0))   # at most, in one block
    work = _ByColumn(np.empty(rows, np.int64), np.empty(rows, np.int64),
                     np.empty(i1 - i0 + 1, np.int64), np.empty(i1 - i0, np.int64),
                     np.empty(entries, np.int64), np.empty(entries, A.dtype))
    for s0 in range(0, n, OUTER_ROWS):
        s1 = min(n, s0 + OUTER_ROWS)
        if s1 - s0 < OUTER_MIN_SORT:
            _outer_by_row(batch, d, A, coef, i0, i1, s0, s1)
        else:
            _outer_by_column(batch, d, A, coef, i0, i1, s0, s1, work)


@_kernel()
def sparse_gradient(batch, d, G, gb, touched):
    """G += xᵀ · δ and gb = Σ δ for a sparse batch x, marking the touched rows.

    touched[i] = 1 where column i of x has a non-zero. G must hold zeros on
    entry (:func:`sgd_update_rows` leaves it so); it then holds the
    gradient, exactly zero on the untouched rows. A fifth of the dense work
    on MNIST.
    """
    column_sums(d, gb)
    counts = _column_counts(batch, d.shape[0], np.empty(G.shape[0], np.int64))
    for i in range(G.shape[0]):
        touched[i] = counts[i] > 0
    _sparse_outer_rows(batch, d, G, G.dtype.type(1), _row0(), G.shape[0])
    return G


#: the threads' ranges of rows of W¹ are balanced by the non-zeros of at most this many rows of
#: the batch: counting all of them was a serial pass (about 0.15 ms a step at batch 1024) for
#: a balance that a sample gives as well; the ranges do not change any result
BALANCE_ROWS = 64


@_kernel()
def _balanced_ranges(counts, n_blocks):
    """Boundaries of ``n_blocks`` consecutive row ranges with about equal numbers of non-zeros."""
    total = counts.sum()
    bounds = np.empty(n_blocks + 1, np.int64)
    bounds[0] = 0
    i, seen = 0, 0
    for blk in range(1, n_blocks):
        while i < counts.shape[0] and seen * n_blocks < blk * total:
            seen += counts[i]
            i += 1
        bounds[blk] = i
    bounds[n_blocks] = counts.shape[0]
    return bounds


@_kernel()
def sparse_sgd_plain(batch, d, W, lr):
    """Plain SGD (no momentum, no decay) of the sparse first layer, fused with its gradient.

    W ← W − η xᵀ · δ, adding −η x[s, i] δ[s] to row i for every non-zero
    x[s, i]: no gradient array, no second pass over W. The same update as
    :func:`sparse_gradient` + :func:`sgd_update_rows` up to rounding (η is
    applied to each term instead of to the sum).
    """
    _sparse_outer_rows(batch, d, W, -lr, _row0(), W.shape[0])
    return W


@_kernel()
def _column_lists_of(batch, n, i0, i1, n_in):
    """The first n rows' non-zeros in columns i0 … i1-1, column by column: (starts, samples,
    values); one thread's rows of W¹ builds its own.

    Column i's entries are samples[starts[i]:starts[i+1]] (batch rows, increasing)
    with values values[starts[i]:starts[i+1]], for i in i0 … i1-1 (the rest of
    starts is not set).

    Each row's entries in those columns are found by bisection (columns
    increase along a row), so a thread reads only its share of the batch.
    """
    nnz, cols, vals = batch
    first = np.empty(n, np.int64)
    fill = np.zeros(n_in + 1, np.int64)      # counts, then each column's next free place
    total = 0
    for s in range(n):
        p, end = _entries_in(cols, s, nnz[s], i0, i1)
        first[s] = p
        total += end - p
        for q in range(p, end):
            fill[cols[s, q]] += 1
    starts = np.empty(n_in + 1, np.int64)
    starts[i0] = 0
    for i in range(i0, i1):
        starts[i + 1] = starts[i] + fill[i]
        fill[i] = starts[i]
    samples = np.empty(total, np.int64)
    values = np.empty(total, vals.dtype)
    for s in range(n):
        p = first[s]
        while p < nnz[s] and cols[s, p] < i1:
            i = cols[s, p]
            q = fill[i]
            samples[q] = s
            values[q] = vals[s, p]
            fill[i] = q + 1
            p += 1
    return starts, samples, values


@_kernel(fastmath=_FAST)
def _column_sums_of(d, gb, k0, k1):
    """Columns k0 … k1-1 of :func:`column_sums` (the same sums, in the same order)."""
    for k in range(k0, k1):
        gb[k] = 0
    for s in range(d.shape[0]):
        for k in range(k0, k1):
            gb[k] += d[s, k]


@_kernel(fastmath=_FAST)
def _sgd_rows_fused(layer, sgd, d, lists, g, i0, i1):
    """Rows i0 … i1-1 of the sparse first layer's SGD step, each row's gradient made on the spot.

    Row i's gradient g = Σ_s x[s, i] δ[s] over column i's non-zeros (``lists``
    from :func:`_column_lists_of`; four at a time, in batch order) is summed in
    the row buffer g, which stays in L1, then row i takes the step of
    :func:`_sgd_rows`, in its arithmetic. W and V are read and written once
    per step; there is no gradient array to fill, read and clear. A row
    without non-zeros has g = 0 (momentum and decay still move it; plain SGD
    skips it).
    """
    W, V = layer.W, layer.V
    starts, samples, values = lists
    lr, mu, wd, nesterov = sgd
    m = _unsigned(W.shape[1])
    for i in range(i0, i1):
        for k in range(m):
            g[k] = 0
        p, end = starts[i], starts[i + 1]
        while p + 4 <= end:
            s0, s1 = _unsigned(samples[p]), _unsigned(samples[p + 1])
            s2, s3 = _unsigned(samples[p + 2]), _unsigned(samples[p + 3])
            x0, x1, x2, x3 = values[p], values[p + 1], values[p + 2], values[p + 3]
            for k in range(m):
                g[k] += x0 * d[s0, k] + x1 * d[s1, k] + x2 * d[s2, k] + x3 * d[s3, k]
            p += 4
        while p < end:
            s0, x0 = _unsigned(samples[p]), values[p]
            for k in range(m):
                g[k] += x0 * d[s0, k]
            p += 1
        if mu == 0 and wd == 0:
            if end > starts[i]:
                for k in range(m):
                    W[i, k] -= lr * g[k]
        elif mu == 0:
            for k in range(m):
                W[i, k] -= lr * (g[k] + wd * W[i, k])
        elif nesterov:
            for k in range(m):
                gk = g[k] + wd * W[i, k] if wd != 0 else g[k]
                V[i, k] = mu * V[i, k] - lr * gk
                W[i, k] += mu * V[i, k] - lr * gk
        else:
            for k in range(m):
                gk = g[k] + wd * W[i, k] if wd != 0 else g[k]
                V[i, k] = mu * V[i, k] - lr * gk
                W[i, k] += V[i, k]


@_kernel()
def sparse_update(batch, d, layer, sgd):
    """The sparse first layer's SGD step from its δ, in one pass over W (one thread).

    gb = Σ δ, then every row of W takes its step with its gradient made on
    the spot (:func:`_sgd_rows_fused`): what :func:`sparse_gradient` followed
    by :func:`sgd_update_rows` computes, up to the order of the gradient's
    sums, without the gradient array. ``layer`` is a :class:`FirstLayer`
    (its G and touched are not used).
    """
    W = layer.W
    column_sums(d, layer.gb)
    lists = _column_lists_of(batch, d.shape[0], _row0(), W.shape[0], W.shape[0])
    _sgd_rows_fused(layer, sgd, d, lists, np.empty(W.shape[1], W.dtype), _row0(), W.shape[0])
    return W


@_kernel(parallel=True)
def sparse_update_par(batch, d, layer, sgd, n_blocks):
    """The sparse first layer's SGD step from its δ, with the rows of W split between threads.

    ``layer`` is a :class:`FirstLayer`, ``sgd`` an :class:`SGDParams`.
    gb = Σ δ; then with μ = λ = 0 plain SGD as :func:`sparse_sgd_plain`,
    else as :func:`sparse_update` (G and touched are not used). Each thread
    owns a range of input pixels (rows of W, balanced by the non-zeros of a
    sample of the batch), makes their column lists itself
    (:func:`_column_lists_of`) and sums their share over the whole batch in
    batch order, and computes a share of gb's columns: nothing is shared,
    every number is computed exactly as by the serial kernels, whatever the
    number of threads. (Counting and listing the whole batch before the
    parallel loop was a serial 4% of the dropout recipe's epoch.)
    """
    W = layer.W
    n, m = d.shape
    plain = sgd.mu == 0 and sgd.wd == 0
    # the counts only balance the threads: a sample of the batch will do
    ns = min(n, BALANCE_ROWS)
    counts = _column_counts(batch, ns, np.empty(W.shape[0], np.int64))
    # a row's share of the work: its non-zeros, and with momentum or decay also the pass
    # over its W and V that every row takes (about two non-zeros' worth)
    bounds = _balanced_ranges(counts if plain else counts * n + 2 * ns, max(1, n_blocks))
    n_blk = bounds.shape[0] - 1
    for blk in prange(n_blk):
        lo, hi = bounds[blk], bounds[blk + 1]
        # gb = Σ δ, a share of its columns each: the serial kernel's sums, in its order
        _column_sums_of(d, layer.gb, m * blk // n_blk, m * (blk + 1) // n_blk)
        if plain:
            _sparse_outer_rows(batch, d, W, -sgd.lr, lo, hi)
        else:               # each thread makes the column lists of its own rows of W
            lists = _column_lists_of(batch, n, lo, hi, W.shape[0])
            _sgd_rows_fused(layer, sgd, d, lists, np.empty(W.shape[1], W.dtype), lo, hi)
    return W


# ------------------------------------------------------------------ update


@_inline()
def _sgd(p, g, v, sgd):
    """One SGD step on 1-D arrays: the reference's arithmetic, in its order.

    The branches sit outside the loops, so that each loop vectorises.
    """
    lr, mu, wd, nesterov = sgd
    n = p.shape[0]
    if mu == 0:
        if wd == 0:
            for j in range(n):
                p[j] -= lr * g[j]
        else:
            for j in range(n):
                p[j] -= lr * (g[j] + wd * p[j])
    elif wd == 0:
        if nesterov:
            for j in range(n):
                v[j] = mu * v[j] - lr * g[j]
                p[j] += mu * v[j] - lr * g[j]
        else:
            for j in range(n):
                v[j] = mu * v[j] - lr * g[j]
                p[j] += v[j]
    elif nesterov:
        for j in range(n):
            gj = g[j] + wd * p[j]
            v[j] = mu * v[j] - lr * gj
            p[j] += mu * v[j] - lr * gj
    else:
        for j in range(n):
            gj = g[j] + wd * p[j]
            v[j] = mu * v[j] - lr * gj
            p[j] += v[j]


@_kernel()
def sgd_update(p, g, v, sgd):
    """In place: g ← g + λp; v ← μv − ηg; p ← p + v (Nesterov: p + μv − ηg); with μ = 0, p ← p − ηg.

    p, g and v are C-contiguous arrays of one shape (v is not touched when
    μ = 0); ``sgd`` is an :class:`SGDParams`. Biases are not decayed: pass
    :func:`_without_decay` of it for them.
    """
    _sgd(p.ravel(), g.ravel(), v.ravel(), sgd)
    return p


@_kernel(parallel=True)
def sgd_update_par(p, g, v, sgd, n_blocks):
    """:func:`sgd_update` with the flat range of p cut into n_blocks blocks, which the
    threads share (in turn with one thread). Each element's arithmetic is the serial
    kernel's, so the bits are the same whatever the thread count. Each block's loop runs
    over slices from 0, so that it vectorises (a loop from a run-time start kept its
    negative-index branches and did not: docs/performance.md, session 7)."""
    pf, gf, vf = p.ravel(), g.ravel(), v.ravel()
    n = pf.shape[0]
    if _iget_num_threads() > 1:
        for blk in prange(n_blocks):
            lo, hi = _block_bounds(n, blk, n_blocks)
            if lo < hi:
                _sgd(pf[lo:hi], gf[lo:hi], vf[lo:hi], sgd)
    else:
        _sgd(pf, gf, vf, sgd)
    return p


@_inline()
def _on_threads(W, threads):
    """Whether a pass over the weights W goes to the threads (:data:`PARALLEL_MIN_WEIGHTS`)."""
    return threads > 1 and W.size >= PARALLEL_MIN_WEIGHTS


@_inline()
def _dense_sgd(W, G, V, sgd, threads):
    """A dense layer's SGD step: on the threads where the layer is large enough."""
    if _on_threads(W, threads):
        sgd_update_par(W, G, V, sgd, threads)
    else:
        sgd_update(W, G, V, sgd)


@_kernel()
def _sgd_rows(layer, sgd, i0, i1):
    """:func:`sgd_update_rows` on rows i0 … i1-1 (one flat loop per case: it vectorises)."""
    W, G, V, touched = layer.W, layer.G, layer.V, layer.touched
    lr, mu, wd, nesterov = sgd
    m = W.shape[1]
    if mu == 0 and wd == 0:             # plain SGD: only the touched rows move
        for i in range(i0, i1):
            if touched[i]:
                for j in range(m):
                    W[i, j] -= lr * G[i, j]
                    G[i, j] = 0
    elif mu == 0:
        for i in range(i0, i1):
            for j in range(m):
                W[i, j] -= lr * (G[i, j] + wd * W[i, j])
                G[i, j] = 0
    elif nesterov:
        for i in range(i0, i1):
            for j in range(m):
                gj = G[i, j] + wd * W[i, j] if wd != 0 else G[i, j]
                V[i, j] = mu * V[i, j] - lr * gj
                W[i, j] += mu * V[i, j] - lr * gj
                G[i, j] = 0
    else:
        for i in range(i0, i1):
            for j in range(m):
                gj = G[i, j] + wd * W[i, j] if wd != 0 else G[i, j]
                V[i, j] = mu * V[i, j] - lr * gj
                W[i, j] += V[i, j]
                G[i, j] = 0


@_kernel()
def sgd_update_rows(layer, sgd):
    """:func:`sgd_update` of the sparse first layer (a :class:`FirstLayer`).

    Its gradient G is zero off the touched rows. Plain SGD skips the
    untouched rows; momentum and weight decay still move them. G is left
    all zero, ready for the next :func:`sparse_gradient`. Training uses the
    fused :func:`sparse_update` instead (no gradient array); the tests check
    that against this pair.
    """
    _sgd_rows(layer, sgd, _row0(), layer.W.shape[0])
    return layer.W


@_inline()
def _adam_range(p, g, m, v, adam, j0, j1):
    """:func:`adam_update` of the flat arrays' entries j0 … j1-1, then g ← 0 there.

    The reference's arithmetic in its order, without fused multiply-adds
    (the kernels calling this are compiled without fastmath), so the same
    gradient gives the reference's bits; one loop per case, so each vectorises.
    """
    step, b1, b2, eps, wd, decay = adam
    one = p.dtype.type(1)
    c1, c2, keep = one - b1, one - b2, one - decay
    # Slices looped from 0: a loop from a run-time j0 > 0 did not vectorise (its
    # indices might be negative, so every access kept Numba's wraparound branch),
    # which made sparse_adam_par's threads compute square roots one at a time.
    p, g, m, v = p[j0:j1], g[j0:j1], m[j0:j1], v[j0:j1]
    if wd != 0:
        for j in range(_row0(), j1 - j0):
            gj = g[j] + wd * p[j]
            m[j] = b1 * m[j] + c1 * gj
            v[j] = b2 * v[j] + c2 * (gj * gj)
            p[j] -= (step * m[j]) / (math.sqrt(v[j]) + eps)
            g[j] = 0
    else:
        for j in range(_row0(), j1 - j0):
            gj = g[j]
            p[j] *= keep                  # AdamW's decay; × 1 (no change) for Adam
            m[j] = b1 * m[j] + c1 * gj
            v[j] = b2 * v[j] + c2 * (gj * gj)
            p[j] -= (step * m[j]) / (math.sqrt(v[j]) + eps)
            g[j] = 0


@_kernel()
def adam_update(p, g, m, v, adam):
    """In place: m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; p ← p − αₜ m/(√v + ε); then g ← 0.

    With Adam's L2 term g + λp first, or AdamW's p ← p(1 − ηλ) (see
    :class:`AdamParams`). p, g, m, v are C-contiguous arrays of one shape.
    g is left zero: a sparse first layer's gradient buffer must be
    (:func:`sparse_gradient`).
    """
    _adam_range(p.ravel(), g.ravel(), m.ravel(), v.ravel(), adam, _row0(), p.size)
    return p


@_kernel(parallel=True)
def sparse_adam_par(batch, d, layer, S, adam, n_blocks):
    """The sparse first layer's Adam step from its δ, with the rows of W split between threads.

    ``layer`` is a :class:`FirstLayer` whose V holds Adam's m; ``S`` holds its
    v. gb = Σ δ; then each thread takes a range of rows of W (balanced by
    their non-zeros, as :func:`sparse_update_par`), sums their gradient over
    the batch in batch order (:func:`sparse_gradient`'s rows) and updates them
    (:func:`adam_update`'s entries, leaving G zero) while they are in its
    cache. Every row is computed as by the serial pair: the same bits
    whatever the number of threads. One parallel region, not two: each
    parallel kernel is compiler memory that Numba never gives back.
    """
    W, G = layer.W, layer.G
    column_sums(d, layer.gb)
    counts = _column_counts(batch, min(d.shape[0], BALANCE_ROWS), np.empty(W.shape[0], np.int64))
    bounds = _balanced_ranges(counts, max(1, n_blocks))
    m = W.shape[1]
    Wf, Gf, Mf, Sf = W.ravel(), G.ravel(), layer.V.ravel(), S.ravel()
    for blk in prange(bounds.shape[0] - 1):
        lo, hi = bounds[blk], bounds[blk + 1]
        _sparse_outer_rows(batch, d, G, G.dtype.type(1), lo, hi)
        _adam_range(Wf, Gf, Mf, Sf, adam, lo * m, hi * m)
    return W


@_kernel()
def max_norm_rows(Wt, c):
    """Max-norm on ``Wt`` = Wᵀ: every row (a unit's incoming weights) longer than c scaled to c."""
    return _max_norm_rows_of(Wt, c, _row0(), Wt.shape[0])


@_kernel()
def _max_norm_rows_of(Wt, c, k0, k1):
    """:func:`max_norm_rows` on rows k0 … k1-1."""
    n_in = Wt.shape[1]
    for k in range(k0, k1):
        sq = Wt.dtype.type(0)
        for i in range(n_in):
            sq += Wt[k, i] * Wt[k, i]
        norm = math.sqrt(sq)
        if norm > c:
            f = c / norm
            for i in range(n_in):
                Wt[k, i] *= f
    return Wt


@_kernel()
def max_norm_cols(W, c):
    """Max-norm on W (n_in, n_out): every column longer than c scaled to c (row by row passes)."""
    return _max_norm_cols_of(W, c, _row0(), W.shape[1])


@_kernel()
def _max_norm_cols_of(W, c, j0, j1):
    """:func:`max_norm_cols` on columns j0 … j1-1 (each column's sum in row order)."""
    n_in = W.shape[0]
    m = j1 - j0
    f = np.zeros(m, W.dtype)
    for i in range(n_in):
        row = W[i, j0:j1]             # a contiguous slice from 0: the loop vectorises
        for j in range(m):
            f[j] += row[j] * row[j]
    long = False
    for j in range(m):
        norm = math.sqrt(f[j])
        long |= norm > c
        f[j] = c / norm if norm > c else f.dtype.type(1)
    if long:
        for i in range(n_in):
            row = W[i, j0:j1]
            for j in range(m):
                row[j] *= f[j]
    return W


@_kernel(parallel=True)
def max_norm_par(W, c, by_rows, n_blocks):
    """:func:`max_norm_rows` (``by_rows``) or :func:`max_norm_cols` in n_blocks blocks of
    rows or columns, which the threads share (in turn with one thread). Every row's or
    column's sum is the serial kernel's, in its order: the same bits."""
    n = W.shape[0] if by_rows else W.shape[1]
    if _iget_num_threads() > 1:
        for blk in prange(n_blocks):
            lo, hi = _block_bounds(n, blk, n_blocks)
            if lo < hi:
                _max_norm_of(W, c, by_rows, lo, hi)
    else:   # no parallel launch: callers on several Python threads may run this at once
        _max_norm_of(W, c, by_rows, _row0(), n)
    return W


@_inline()
def _max_norm_of(W, c, by_rows, lo, hi):
    """Rows (``by_rows``) or columns lo … hi-1 of :func:`max_norm_par`."""
    if by_rows:
        _max_norm_rows_of(W, c, lo, hi)
    else:
        _max_norm_cols_of(W, c, lo, hi)


# ------------------------------------------------------------ the batch loop


@_kernel()
def transpose_into(A, out):
    """out = Aᵀ (a contiguous copy), in TRANSPOSE_TILE × TRANSPOSE_TILE tiles.

    Row by row, the writes down a column of ``out`` of a 1024-wide float32
    layer are 4 KiB apart: they all fall into the same few cache sets and
    the copy took 8 ns an element (8.5 ms for 1024 × 1024, copied in and out
    of every chunk, with the velocities). An 8 × 8 tile keeps its eight
    lines of each side in L1: 1.0-1.5 ns an element at every shape measured
    (docs/performance.md, session 9).
    """
    n, m = A.shape
    for i0 in range(0, n, TRANSPOSE_TILE):
        i1 = min(n, i0 + TRANSPOSE_TILE)
        for j0 in range(0, m, TRANSPOSE_TILE):
            j1 = min(m, j0 + TRANSPOSE_TILE)
            for j in range(j0, j1):
                for i in range(i0, i1):
                    out[j, i] = A[i, j]
    return out


@_kernel()
def _copy_into(src, dst):
    """dst[:] = src for 1-D or 2-D arrays of one shape, as plain loops.

    The kernels copy with this rather than ``dst[...] = src``: Numba's
    array assignment checks shapes with an error message it formats at run
    time, and compiling that string code is memory Numba never gives back.
    """
    if src.ndim == 1:
        for i in range(src.shape[0]):
            dst[i] = src[i]
    else:
        for i in range(src.shape[0]):
            for j in range(src.shape[1]):
                dst[i, j] = src[i, j]
    return dst


@_kernel()
def _as_list(arrays):
    """A tuple of same-typed arrays as a list, so the kernels below compile once for every depth."""
    out = [arrays[0]]
    for l in range(1, len(arrays)):
        out.append(arrays[l])
    return out


@_kernel()
def _transposed(arrays, skip_first):
    """[Aᵀ for A in arrays] as contiguous copies.

    With ``skip_first``, an empty array takes the place of the first.
    """
    out = []
    for l in range(len(arrays)):
        A = arrays[l]
        if l == 0 and skip_first:
            out.append(np.empty((0, 0), A.dtype))
        else:
            out.append(transpose_into(A, np.empty((A.shape[1], A.shape[0]), A.dtype)))
    return out


@_kernel()
def _aligned_zeros(rows, cols, like):
    """A zeroed (rows, cols) array of like's dtype whose data start on a 64-byte boundary."""
    buf = np.zeros(rows * cols + 64 // like.itemsize, like.dtype)
    off = (-buf.ctypes.data % 64) // like.itemsize
    return buf[off:off + rows * cols].reshape((rows, cols))


@_kernel()
def _to_working(weights, biases, sparse, hp, copy):
    """(A0, Ats, abs): per-layer arrays shaped like the weights and biases, in the working layout.

    A0 the sparse first layer's aligned, padded copy (empty when dense), Ats
    the dense layers' transposes (Ats[0] empty when the first layer is
    sparse), abs the biases (the first one a padded copy when sparse). With
    ``copy`` false only empty arrays and zeros are made (state an optimizer
    does not keep).
    """
    W = weights[0]
    n_in, h = W.shape
    A0 = _aligned_zeros(n_in if sparse and copy else 0, hp, W)
    a0 = np.zeros(hp, W.dtype)
    if sparse and copy:
        _copy_into(W, A0[:, :h])
        _copy_into(biases[0], a0[:h])
    Ats = [np.empty((0, 0), W.dtype)]
    abs_ = [a0 if sparse else biases[0]]
    for l in range(len(weights)):
        if l == 0 and sparse:
            continue
        n_in_l, n_out_l = weights[l].shape
        width = hp if l == 1 and sparse else n_in_l
        At = np.zeros((n_out_l if copy else 0, width), W.dtype)
        if copy:
            transpose_into(weights[l], At[:, :n_in_l])
        if l == 0:
            Ats[0] = At
        else:
            Ats.append(At)
            abs_.append(biases[l])
    return A0, Ats, abs_


@_kernel()
def _from_working(A0, Ats, abs_, weights, biases, sparse):
    """Write arrays in the working layout (:func:`_to_working`) back into weights and biases."""
    for l in range(len(weights)):
        n_in_l, n_out_l = weights[l].shape
        if l == 0 and sparse:
            _copy_into(A0[:, :n_out_l], weights[0])
            _copy_into(abs_[0][:n_out_l], biases[0])
        else:
            transpose_into(Ats[l][:, :n_in_l], weights[l])
    return weights


@_inline()
def _working_copies(params, sparse, n_state):
    """The arrays the kernels train on, as a :class:`Working`.

    Dense layers are transposed (see the module docstring). A sparse first
    layer gets a copy whose rows start on 64-byte boundaries and are padded
    with zero columns to a multiple of 64 bytes (``h`` is its true width):
    row-sized vector loops then never straddle cache lines. The padded
    units are kept at exactly zero (their weights, biases and outputs), so
    they change nothing. The layer after reads the padded width.
    ``n_state``: the optimizer's state arrays per parameter (0 plain SGD,
    1 momentum, 2 Adam); those it does not keep are aliases of the weights
    or zeros, never read. :func:`_copy_back` writes the results back.
    """
    weights, biases, vw, vb, sw, sb = params
    W = weights[0]
    h = W.shape[1]
    q = 64 // W.itemsize
    hp = -(-h // q) * q if sparse and len(weights) > 1 else h   # an output layer is not padded
    yes = _runtime_true(h)
    W0, Wts, bs = _to_working(weights, biases, sparse, hp, yes)
    V0, Vts, vbs = _to_working(vw, vb, sparse, hp, n_state >= 1)
    S0, Sts, sbs = _to_working(sw, sb, sparse, hp, n_state >= 2)
    if n_state < 1:                   # plain SGD reads no velocity: any arrays will do
        V0, Vts = W0, Wts
    if n_state < 2:
        S0, Sts = W0, Wts
    return Working(W0, V0, Wts, Vts, bs, vbs, h, S0, Sts, sbs)


@_inline()
def _copy_back(params, wk, sparse, n_state):
    """Write the :class:`Working` copies ``wk`` back into the arrays of ``params``."""
    weights, biases, vw, vb, sw, sb = params
    _from_working(wk.W0, wk.Wts, wk.bs, weights, biases, sparse)
    if n_state >= 1:
        _from_working(wk.V0, wk.Vts, wk.vbs, vw, vb, sparse)
    if n_state >= 2:
        _from_working(wk.S0, wk.Sts, wk.sbs, sw, sb, sparse)


@_kernel()
def sparse_buffers(batch_size, W):
    """An empty :class:`SparseBatch` for sparse batches of up to ``batch_size`` rows into W."""
    n_in = W.shape[0]
    return SparseBatch(np.zeros(batch_size, np.int64), np.empty((batch_size, n_in), np.int32),
                       np.empty((batch_size, n_in), W.dtype))


@_inline()
def _workspace(W0, Wts, batch_size, sparse, sparse_batch, dropout):
    """A :class:`Workspace` for batches of up to ``batch_size`` rows.

    A sparse first layer's weight gradient starts at zero (:func:`sparse_gradient`
    needs it so); ``sparse_batch`` is the caller's :class:`SparseBatch`. Layers
    with dropout (a :class:`Dropout`) get a mask and a masked copy of their
    input (a sparse first layer's dropped inputs are removed from the batch instead).
    """
    dtype = W0.dtype
    nl = len(Wts)
    n_in = W0.shape[0]
    acts = [np.empty((0 if sparse else batch_size, n_in), dtype)]
    deltas = [np.empty((0, 0), dtype)]
    grads = []
    gbs = []
    for l in range(nl):
        n_out = W0.shape[1] if l == 0 else Wts[l].shape[0]
        if l == 0 and sparse:         # rows on 64-byte boundaries, as W¹'s (_rows_axpy)
            acts.append(_aligned_zeros(batch_size, n_out, W0))
            deltas.append(_aligned_zeros(batch_size, n_out, W0))
        else:
            acts.append(np.empty((batch_size, n_out), dtype))
            deltas.append(np.empty((batch_size, n_out), dtype))
        if l == 0 and sparse:
            grads.append(np.zeros(W0.shape, dtype))
        else:
            grads.append(np.empty(Wts[l].shape, dtype))
        gbs.append(np.empty(n_out, dtype))
    masks, dropped = [], []
    for l in range(nl):
        on = dropout.thresholds[l] != 0 and not (l == 0 and sparse)
        width = acts[l].shape[1]
        masks.append(np.zeros((batch_size if on else 0, width if on else 0), dtype))
        dropped.append(np.zeros((batch_size if on else 0, width if on else 0), dtype))
    Y = np.empty((batch_size, acts[nl].shape[1]), dtype)
    touched = np.zeros(n_in if sparse else 0, np.uint8)
    return Workspace(acts, masks, dropped, np.empty(batch_size, dtype), deltas, grads, gbs, Y,
                     sparse_batch, touched, np.empty(batch_size, np.float64))


@_inline()
def _layer_input(work, l, nb):
    """What layer l reads for the first nb rows: its input, or its masked input with dropout."""
    if work.masks[l].shape[0] > 0:
        return work.dropped[l][:nb]
    return work.acts[l][:nb]


@_inline()
def _gather(data, rows, work, plan, dropout, pos0):
    """Fill the workspace with batch ``rows`` of ``data``: targets, weights and inputs.

    The batch starts at position pos0 of the epoch's order (its dropout
    masks' counter). With threads, sparse inputs are gathered by
    :func:`_forward`, in one parallel region with the first layer's forward pass.
    """
    nb = rows.shape[0]
    gather_targets(data.labels, data.T, rows, work.Y[:nb])
    if data.weights.shape[0] > 0:
        for s in range(nb):
            work.weights[s] = data.weights[rows[s]]
    if data.csr.indptr.shape[0] > 0:  # CSR rows (plan.sparse is then True): a plain copy
        gather_csr(data.csr, rows, work.batch)
        drop_entries(work.batch, nb, dropout, pos0)
    elif not plan.sparse:
        gather_dense(data.X, rows, data.scale, work.acts[0][:nb])
        drop_rows(work.acts[0][:nb], _row0(), dropout, pos0, work.masks[0][:nb],
                  work.dropped[0][:nb])
    elif plan.threads <= 1:           # with threads, _forward gathers (see above)
        gather_sparse(data.X, rows, data.scale, work.batch)
        drop_entries(work.batch, nb, dropout, pos0)


@_inline()
def _forward(work, wk, data, rows, model, plan, dropout, pos0, fused):
    """The forward pass of the gathered batch ``rows``; returns its mean loss and leaves δᴸ in work.

    The output layer keeps z (identity) for :func:`output_delta`, which
    turns it into ŷ and computes the loss and δᴸ (rows weighted by the
    sample weights, if any). ``fused`` (:func:`_fused_head`): the output
    layer ran with the first, and δ¹ is known too.
    """
    nb = rows.shape[0]
    nl = len(wk.Wts)
    _forward_layers(work, wk, data, rows, model, plan, dropout, pos0, fused)
    if fused:
        return _mean_in_row_order(work.terms, nb)
    weights = work.weights[:nb] if data.weights.shape[0] > 0 else work.weights[:0]
    return output_delta(work.acts[nl][:nb], work.Y[:nb], model, work.deltas[nl][:nb], weights)


@_inline()
def _fused_head(wk, plan, nb):
    """Whether a batch of nb rows runs its output layer inside the first layer's parallel
    forward pass (:class:`Head`): a sparse first layer on threads, one hidden layer, and an
    output layer left to the row loops (BLAS computes the whole batch at once)."""
    nl = len(wk.Wts)
    return (plan.sparse and plan.threads > 1 and nl == 2
            and not _blas_rows(nb, wk.Wts[nl - 1].shape[1], wk.Wts[nl - 1].shape[0]))


@_inline()
def _forward_layers(work, wk, data, rows, model, plan, dropout, pos0, fused):
    """Every layer's forward pass of the gathered batch ``rows``; the output layer keeps z.

    Hidden layers' outputs are masked for the layer after them where it has
    dropout (samples at positions pos0, pos0 + 1, … of the epoch's order).
    ``fused``: the first layer's parallel kernel runs the output layer too
    (a :class:`Head`), through δ¹.
    """
    nb = rows.shape[0]
    nl = len(wk.Wts)
    weights = work.weights[:nb] if data.weights.shape[0] > 0 else work.weights[:0]
    last = nl - 1                     # the Head's fields (its arrays when not fused: unused)
    head = Head(fused, wk.Wts[last], wk.bs[last], work.acts[nl][:nb], work.Y[:nb],
                work.deltas[nl][:nb], weights, work.deltas[last][:nb], work.masks[last][:nb],
                work.dropped[last][:nb], work.terms[:nb], model.act, model.loss,
                model.out_kind, wk.h)
    for l in range(nl):
        if l > 0 and fused:
            break                     # the output layer ran with the first
        kind = model.act if l < nl - 1 else IDENTITY
        out = work.acts[l + 1][:nb]
        if l == 0 and plan.sparse:
            if plan.threads > 1:      # CSR rows (X empty) were gathered by _gather
                sparse_gather_forward_par(data.X, rows, data.scale, work.batch,
                                          (wk.W0, wk.bs[0], kind), out, dropout, pos0, head)
            else:
                sparse_forward(work.batch, wk.W0, wk.bs[0], kind, out)
            out[:, wk.h:] = 0             # padding units: f(0) may be ½, their output is 0
        else:
            dense_forward(_layer_input(work, l, nb), wk.Wts[l], wk.bs[l], kind, out)
        if l < nl - 1 and not fused:
            drop_rows(out, l + 1, dropout, pos0, work.masks[l + 1][:nb],
                      work.dropped[l + 1][:nb])


@_inline()
def _backward(work, wk, nb, model, sgd, plan, update, fused):
    """Backpropagate δᴸ of the first ``nb`` rows down every layer (δ¹ is known already when
    ``fused``: :func:`_fused_head`).

    With ``update`` each layer takes its SGD step (``sgd``) as soon as its
    gradient is known (after the error of the layer below, which needs the
    old W, is computed); else the gradients stay in the workspace, except a
    sparse first layer's on threads, which Adam's step computes
    (:func:`sparse_adam_par`, from δ¹ left in the workspace). A layer with
    dropout takes the gradient of its masked input, and the error below it
    is masked too.
    """
    mu, wd = sgd.mu, sgd.wd
    nl = len(wk.Wts)
    for l in range(nl - 1, -1, -1):
        d = work.deltas[l + 1][:nb]
        if l == 0 and plan.sparse:
            first = FirstLayer(wk.W0, wk.V0, work.grads[0], work.gbs[0], work.touched)
            if update and plan.threads > 1:
                sparse_update_par(work.batch, d, first, sgd, plan.threads)
            elif update and mu == 0 and wd == 0:        # plain SGD: no gradient array needed
                column_sums(d, work.gbs[0])
                sparse_sgd_plain(work.batch, d, wk.W0, sgd.lr)
            elif update:
                sparse_update(work.batch, d, first, sgd)
            elif plan.threads > 1:
                pass                 # Adam on threads: its gradient comes with its step (_adam_all)
            else:
                sparse_gradient(work.batch, d, work.grads[0], work.gbs[0], work.touched)
        else:
            a = _layer_input(work, l, nb)
            # plain SGD: fused, no gradient array (BLAS adds −η δᵀa to W for large layers)
            plain = update and mu == 0 and wd == 0
            if plain:
                column_sums(d, work.gbs[l])
            else:
                dense_gradient(a, d, work.grads[l], work.gbs[l])
            if l > 0 and not fused:
                backprop_delta(d, wk.Wts[l], work.acts[l][:nb], model.act, work.deltas[l][:nb],
                               work.masks[l][:nb])
            if plain:
                dense_sgd_plain(a, d, wk.Wts[l], sgd.lr)
            elif update:
                _dense_sgd(wk.Wts[l], work.grads[l], wk.Vts[l], sgd, plan.threads)
        if update:
            sgd_update(wk.bs[l], work.gbs[l], wk.vbs[l], _without_decay(sgd))


@_inline()
def _adam_all(work, wk, nb, adam, plan):
    """Adam's step of every layer from the gradients :func:`_backward` left in the workspace.

    On threads, the sparse first layer's gradient is computed here, with its
    step (:func:`sparse_adam_par`). Its gradient buffer is left zero, as
    :func:`sparse_gradient` needs it; every entry of W¹ moves (the moments
    decay everywhere).
    """
    for l in range(len(wk.Wts)):
        if l == 0 and plan.sparse:
            if plan.threads > 1:
                first = FirstLayer(wk.W0, wk.V0, work.grads[0], work.gbs[0], work.touched)
                sparse_adam_par(work.batch, work.deltas[1][:nb], first, wk.S0, adam,
                                plan.threads)
            else:
                adam_update(wk.W0, work.grads[0], wk.V0, wk.S0, adam)
        else:
            adam_update(wk.Wts[l], work.grads[l], wk.Vts[l], wk.Sts[l], adam)
        adam_update(wk.bs[l], work.gbs[l], wk.vbs[l], wk.sbs[l],
                    _adam_without_decay(adam, wk.bs[l]))


@_inline()
def _max_norm_all(wk, c, sparse, threads):
    """Max-norm (norm ≤ c) of every hidden unit's incoming weights; the output layer is free.

    Large layers' passes run on the threads (:func:`max_norm_par`: the same bits)."""
    for l in range(len(wk.Wts) - 1):
        first = l == 0 and sparse
        W = wk.W0 if first else wk.Wts[l]
        if _on_threads(W, threads):
            max_norm_par(W, c, not first, threads)
        elif first:
            max_norm_cols(W, c)
        else:
            max_norm_rows(W, c)


@_kernel()
def train_chunk(data, params, model, opt, plan, start, stop, losses, sparse_batch, dropout):
    """Train on batches start … stop-1 of an epoch in place with SGD; losses[k] = loss of
    batch start+k.

    ``data``: a :class:`Data` (batch b is rows ``order[b*batch_size:(b+1)*batch_size]``
    of X, uint8 pixels times ``scale`` or floats with scale 1; its targets
    are the one-hot ``labels`` of those rows, or rows of T when labels is
    empty; their sample weights, unless empty). ``params``: a :class:`Params`, updated as
    the ``step`` of :class:`mlp.optimizers.SGD` would with the :class:`OptParams`
    ``opt`` (batch k of the chunk at rate ``opt.lrs[k]``; then max-norm): each
    layer is updated inside the backward pass. :func:`train_chunk_adam` is the
    same for Adam (``opt.adam``); :func:`train_chunk_for` picks one.
    ``model``: a :class:`Model`. ``plan``: a :class:`Plan`.
    ``sparse_batch``: a :class:`SparseBatch` of ``plan.batch_size`` rows
    (:func:`sparse_buffers`), passed in so that calls can reuse it (fresh
    pages cost a fault each when first written). ``dropout``: a
    :class:`Dropout` (the sample at position p of ``order`` draws its masks
    from p).
    """
    return _train_batches(data, params, model, opt, plan, (start, stop), losses, sparse_batch,
                          dropout, True)


@_kernel()
def train_chunk_adam(data, params, model, opt, plan, start, stop, losses, sparse_batch,
                     dropout):
    """:func:`train_chunk` with Adam's step (:class:`mlp.optimizers.Adam`): all the gradients
    first, then :func:`_adam_all`."""
    return _train_batches(data, params, model, opt, plan, (start, stop), losses, sparse_batch,
                          dropout, False)


def train_chunk_for(opt):
    """:func:`train_chunk` or :func:`train_chunk_adam`, as the :class:`OptParams` ``opt`` needs.

    Two kernels rather than a run-time choice: a run compiles only its own
    optimizer's kernels (Numba never frees compiled code, and a cold compile
    of the default run, Adam, took a fifth more CPU seconds with SGD's sparse
    kernels in it: docs/performance.md).
    """
    return train_chunk_adam if opt.adam else train_chunk


@_inline()
def _train_batches(data, params, model, opt, plan, span, losses, sparse_batch, dropout, sgd):
    """The body of :func:`train_chunk` (``sgd`` literally True) and :func:`train_chunk_adam`
    (False) for batches span[0] … span[1]-1.

    ``sgd`` is a literal: Numba prunes the other optimizer's branches before
    typing them, so their kernels are never compiled here.
    """
    if opt.adam == sgd:
        raise ValueError("train_chunk takes SGD's OptParams, train_chunk_adam Adam's")
    start, stop = span
    n = data.order.shape[0]
    bsz = plan.batch_size
    n_state = (1 if opt.mu != 0 else 0) if sgd else 2
    wk = _working_copies(params, plan.sparse, n_state)
    work = _workspace(wk.W0 if plan.sparse else params.weights[0], wk.Wts, bsz, plan.sparse,
                      sparse_batch, dropout)
    for b in range(start, stop):
        lo = b * bsz
        rows = data.order[lo:min(lo + bsz, n)]
        _gather(data, rows, work, plan, dropout, lo)
        if b + 1 < stop and data.X.shape[0] > 0:   # the next batch's rows load meanwhile
            _prefetch_rows(data.X, data.order[lo + bsz:min(lo + 2 * bsz, n)])
        fused = _fused_head(wk, plan, rows.shape[0])
        losses[b - start] = _forward(work, wk, data, rows, model, plan, dropout, lo, fused)
        _backward(work, wk, rows.shape[0], model, _sgd_of(opt, b - start, wk.bs[0]), plan, sgd,
                  fused)
        if not sgd:
            _adam_all(work, wk, rows.shape[0], _adam_of(opt, b - start, wk.bs[0]), plan)
        if opt.max_norm > 0:
            _max_norm_all(wk, opt.max_norm, plan.sparse, plan.threads)
    _copy_back(params, wk, plan.sparse, n_state)
    return losses


@_kernel(nogil=True)
def block_gradient(data, weights, biases, model, dropout, plan, lo, hi, g):
    """Rows order[lo:hi] of the full-batch loss (1/n) Σᵢ wᵢ lᵢ: their Σ wᵢ lᵢ (returned) and
    their share of its gradient, written flat into g.

    ``data`` is a :class:`Data` whose order lists the n rows of the whole
    batch; its sample weights hold one wᵢ per row of X, or nothing (wᵢ = 1).
    ``dropout``: a :class:`Dropout` (the row at position p of order draws
    its masks from p; fixed masks, so the gradient is that of a fixed
    thinned network). g (the network's dtype) receives ∂/∂W¹ … ∂/∂Wᴸ, each
    row-major (as W.ravel()), then ∂/∂b¹ … ∂/∂bᴸ: scikit-learn's packing of
    the parameters for L-BFGS. No weight decay (the caller adds λW).
    Sub-batches of plan.batch_size rows each run the serial kernels: gather,
    forward, for each row its loss and δᴸ (:func:`output_delta` of the row,
    times wᵢ/n), the backward pass without update; their gradients are
    summed in row order. Blocks of rows can run on threads of their own (the
    GIL is released), each into a g of its own, to be added in block order.
    """
    n = data.order.shape[0]
    wk = _working_copies(Params(weights, biases, weights, biases, weights, biases), plan.sparse,
                         lo * 0)
    nl = len(wk.Wts)
    sparse = plan.sparse
    dtype = g.dtype
    one = dtype.type(1)
    bsz = plan.batch_size
    width = 0                        # columns of the sparse batch: the longest row's entries
    if data.csr.indptr.shape[0] > 0:
        for s in range(lo, hi):
            r = data.order[s]
            width = max(width, data.csr.indptr[r + 1] - data.csr.indptr[r])
    elif sparse:
        width = wk.W0.shape[0]
    batch = SparseBatch(np.zeros(bsz, np.int64), np.empty((bsz if sparse else 0, width), np.int32),
                        np.empty((bsz if sparse else 0, width), dtype))
    work = _workspace(wk.W0 if sparse else weights[0], wk.Wts, bsz, sparse, batch, dropout)
    acc, acc_b = [], []                  # the dense layers' summed gradients (transposed)
    for l in range(nl):                  # (a sparse first layer sums into work.grads[0] itself)
        acc.append(np.zeros((0, 0) if l == 0 and sparse else work.grads[l].shape, dtype))
        acc_b.append(np.zeros(work.gbs[l].shape[0], dtype))
    zero = dtype.type(0)
    sgd = SGDParams(zero, zero, zero, lo < 0)
    serial = Plan(sparse, _runtime_one(lo), bsz)
    weighted = data.weights.shape[0] > 0
    total = 0.0
    for s0 in range(lo, hi, bsz):
        rows = data.order[s0:min(s0 + bsz, hi)]
        nb = rows.shape[0]
        _gather(data, rows, work, serial, dropout, s0)
        _forward_layers(work, wk, data, rows, model, serial, dropout, s0, False)
        z, d = work.acts[nl], work.deltas[nl]
        for s in range(nb):          # each row as a batch of one: δ and loss unscaled
            w = data.weights[rows[s]] if weighted else one
            _output_delta_rows(z, work.Y, model, d, work.weights[:0], 1, s, s + 1, work.terms)
            total += w * work.terms[s]
            c = w / dtype.type(n)
            for k in range(d.shape[1]):
                d[s, k] *= c
        _backward(work, wk, nb, model, sgd, serial, False, False)   # literal: no update branch
        for l in range(nl):
            if l > 0 or not sparse:
                A, Gt = acc[l], work.grads[l]
                for i in range(A.shape[0]):
                    for j in range(A.shape[1]):
                        A[i, j] += Gt[i, j]
            for k in range(acc_b[l].shape[0]):
                acc_b[l][k] += work.gbs[l][k]
    off = 0
    for l in range(nl):                  # ∂/∂Wˡ row-major, as Wˡ.ravel()
        n_in_l, n_out_l = weights[l].shape
        for i in range(n_in_l):
            for j in range(n_out_l):
                g[off + i * n_out_l + j] = (work.grads[0][i, j] if l == 0 and sparse
                                            else acc[l][j, i])
        off += n_in_l * n_out_l
    for l in range(nl):                  # then ∂/∂bˡ
        n_out_l = weights[l].shape[1]
        for j in range(n_out_l):
            g[off + j] = acc_b[l][j]
        off += n_out_l
    return total


@_kernel()
def _predict_rows(acts, nb, Wts, bs, model):
    """The forward pass of the gathered rows acts[0][:nb]; returns ŷ (a view of the last buffer)."""
    nl = len(Wts)
    for l in range(nl):
        kind = model.act if l < nl - 1 else IDENTITY
        dense_forward(acts[l][:nb], Wts[l], bs[l], kind, acts[l + 1][:nb])
    return output_activation(acts[nl][:nb], model)


@_kernel(nogil=True)
def predict(X, scale, weights, biases, model, out):
    """out = ŷ for every row of X (uint8 times scale, or float), 1024 rows at a time."""
    n = X.shape[0]
    chunk = 1024
    Wts = _transposed(weights, False)
    acts = _workspace(weights[0], Wts, min(chunk, max(n, 1)), False,
                      sparse_buffers(_row0(), weights[0]), _no_dropout(weights)).acts
    bs = _as_list(biases)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        gather_dense(X, np.arange(lo, hi), scale, acts[0][:hi - lo])
        _copy_into(_predict_rows(acts, hi - lo, Wts, bs, model), out[lo:hi])
    return out
