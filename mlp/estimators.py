"""scikit-learn estimators: :class:`MLPClassifier` and :class:`MLPRegressor`.

They follow scikit-learn's conventions (``__init__`` only stores its
arguments; ``fit`` returns ``self``; fitted attributes end in ``_``) and the
names of :class:`sklearn.neural_network.MLPClassifier`, so they drop into a
``Pipeline`` or ``GridSearchCV`` where that one was. Underneath they are
mlp's pieces, unchanged: :class:`mlp.network.Network` (the layers and
backpropagation), :class:`mlp.optimizers.SGD` (momentum, Nesterov, L2),
:class:`mlp.trainer.Trainer` (epochs of shuffled minibatches, divergence
checks) and a backend of :mod:`mlp.backends` (``"numba"`` by default, the
NumPy reference with ``backend="numpy"``).

What scikit-learn's MLP lacks and these have: ``sample_weight`` in ``fit``,
``class_weight``, dropout, float32 training, and the Numba backend.

Conventions, exactly
--------------------
Objective. For a batch of n rows with weights wᵢ (1 without weights) the
estimator minimises the batch mean of the loss plus an L2 penalty on the
weight matrices (biases excluded)::

    J = (1/n) Σᵢ wᵢ lᵢ  +  (alpha/2) Σ_l ‖Wˡ‖²

``alpha`` is mlp's weight decay λ per batch-averaged loss. scikit-learn's own
``alpha`` is divided by the batch size (its penalty is ``alpha/(2·n_batch)``
Σ‖W‖²), so its ``alpha=a`` with ``batch_size=b`` is mlp's ``alpha=a/b``.
Nielsen's *Neural Networks and Deep Learning* writes the penalty as
``(λ/2n) Σw²`` with n the training-set size: his λ = 5.0 on 50,000 images is
``alpha = λ/n = 1e-4`` here.

Sample weights are divided by their mean over the training rows, so a
minibatch's loss ``(1/n_b) Σ (wᵢ/w̄) lᵢ`` estimates ``Σ wᵢ lᵢ / Σ wᵢ`` over
the whole set without bias; weights that are all equal change nothing, and
with one batch per epoch (``batch_size >= n``) an integer weight k is exactly
the row repeated k times. ``class_weight`` multiplies the sample weights.

Dropout is inverted dropout (see :mod:`mlp.network`): during training each
hidden unit is zeroed with probability ``dropout`` (each input feature with
probability ``input_dropout``) and the survivors are scaled by 1/(1 − p);
prediction uses the whole network. ``loss_curve_`` then
records the loss of the thinned networks that were trained.

Backends. Sample weights (other than all equal) and hidden-unit dropout are
computed by the NumPy reference (:meth:`Network.loss_and_gradients`): a fit
that uses them runs on NumPy whatever ``backend`` says. Input dropout alone
runs on the chosen backend (the masked inputs are handed to it). If
``mlp.numba_backend`` cannot be imported, ``backend="numba"`` falls back to
NumPy with a warning; both compute the same arithmetic.

Each epoch's sample order is drawn from ``random_state`` (as in
:func:`mlp.trainer.epoch_order`), so the same ``random_state`` (an int) gives
the same ``coefs_`` on the same backend and thread count.
"""

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .backends import BACKENDS, NumpyBackend, get_backend
from .batches import batch_inputs, batch_rows, run_batches
from .errors import DivergenceError
from .network import Network, check_dtype, l2_penalty
from .optimizers import SGD
from .trainer import Trainer

#: scikit-learn's activation names → mlp's (mlp's own names are accepted too)
ACTIVATION_NAMES = {"logistic": "sigmoid", "sigmoid": "sigmoid", "tanh": "tanh",
                    "relu": "relu", "identity": "identity"}
LEARNING_RATES = ("constant", "invscaling", "adaptive")


# --------------------------------------------------------------------------- training
class _FitBackend:
    """The backend the trainer sees during one fit.

    It forwards to the chosen backend, except that

    * with ``shuffle=False`` it replaces the trainer's shuffled order by
      0, 1, …, n−1 (every epoch visits the rows in the order given);
    * with sample weights or hidden-unit dropout it runs the batches itself
      on the NumPy reference, :meth:`Network.loss_and_gradients` with
      ``sample_weight`` and ``dropout_masks`` (the fast backends implement
      neither);
    * with input dropout alone it masks the chunk's rows (X ⊙ m, the same
      masks :meth:`Network.dropout_masks` draws) and hands them to the chosen
      backend: dropping inputs changes the data, not the arithmetic.
    """

    def __init__(self, backend, shuffle=True, sample_weight=None, dropout_rates=None,
                 rng=None):
        self.backend = backend
        self.shuffle = shuffle
        self.sample_weight = sample_weight
        self.dropout_rates = dropout_rates
        self.rng = rng
        hidden_dropout = dropout_rates is not None and any(dropout_rates[1:])
        self.reference = sample_weight is not None or hidden_dropout
        self.input_dropout = dropout_rates is not None and not hidden_dropout
        self.name = "numpy" if self.reference else backend.name

    def train_batches(self, net, opt, X, targets, order, start, stop, batch_size, scale=1.0):
        """Batches start … stop−1 of the epoch; returns their losses (see :mod:`mlp.backends`)."""
        if not self.shuffle:
            order = np.arange(len(order))
        if self.input_dropout:
            rows = order[start * batch_size:stop * batch_size]
            mask = net.dropout_masks(len(rows), self.dropout_rates, self.rng)[0]
            X_masked = batch_inputs(X, rows, scale, net.dtype) * mask
            return self.backend.train_batches(net, opt, X_masked, targets[rows],
                                              np.arange(len(rows)), 0, stop - start,
                                              batch_size)
        if not self.reference:
            return self.backend.train_batches(net, opt, X, targets, order, start, stop,
                                              batch_size, scale)
        dropout = None if self.dropout_rates is None else (self.dropout_rates, self.rng)
        return run_batches(net, opt, X, targets, batch_rows(order, start, stop, batch_size),
                           scale, self.sample_weight, dropout)

    def predict_output(self, net, X, scale=1.0):
        """ŷ for every row of X."""
        return self.backend.predict_output(net, X, scale)

    def prepare(self, net, opt, X, targets, batch_size, scale=1.0):
        """Compile the fast backend's kernels if it is the one that will run."""
        if self.reference:
            return 0.0
        return self.backend.prepare(net, opt, X, targets, batch_size, scale)


def _resolve_backend(name):
    """The backend called ``name``; NumPy, with a warning, if Numba's cannot be imported."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    try:
        return get_backend(name)
    except ImportError as e:
        warnings.warn(f"backend {name!r} is not available ({e}); training with the NumPy "
                      "reference backend instead", RuntimeWarning, stacklevel=3)
        return NumpyBackend()


def _writeable(a):
    """``a``, or a copy of it if it is read-only (a memmap, say): Numba compiles its
    kernels anew for read-only arrays, which is slower than the copy."""
    return a if a.flags.writeable else a.copy()


def _seed(rs):
    """A seed for mlp's NumPy Generators, drawn from a RandomState."""
    return int(rs.randint(np.iinfo(np.int32).max))


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, validation, the training loop."""

    def __init__(self, hidden_layer_sizes=(100,), activation="logistic", *, loss,
                 solver="sgd", alpha=1e-4, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.1, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, dropout=0.0, input_dropout=0.0, backend="numba",
                 dtype="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.loss = loss
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.input_dropout = input_dropout
        self.backend = backend
        self.dtype = dtype

    # ------------------------------------------------------------ parameters
    def _hidden_sizes(self):
        """The hidden widths as a list of ints (an int means one hidden layer)."""
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral):
            sizes = (sizes,)
        try:
            sizes = list(sizes)
        except TypeError:
            sizes = None
        if sizes is None or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                                    and s >= 1 for s in sizes):
            raise ValueError("hidden_layer_sizes must be an int or a sequence of ints >= 1, "
                             f"got {self.hidden_layer_sizes!r}")
        return [int(s) for s in sizes]

    def _dropout_rates(self, n_hidden):
        """One rate per weight layer for :meth:`Network.dropout_masks`, or None for no dropout.

        ``input_dropout`` is the input features' rate; ``dropout`` gives the
        hidden layers' rate, one number for all or one per hidden layer.
        """
        rates = self.dropout
        if isinstance(rates, numbers.Real):
            rates = [float(rates)] * n_hidden
        else:
            rates = [float(r) for r in rates]
            if len(rates) != n_hidden:
                raise ValueError(f"dropout must be a number or one rate per hidden layer "
                                 f"({n_hidden}), got {self.dropout!r}")
        if not all(0 <= r < 1 for r in rates):
            raise ValueError(f"dropout rates must be in [0, 1), got {self.dropout!r}")
        first = self.input_dropout
        if not isinstance(first, numbers.Real) or not 0 <= first < 1:
            raise ValueError(f"input_dropout must be a number in [0, 1), got {first!r}")
        rates = [float(first)] + rates
        return rates if any(rates) else None

    def _check_params(self):
        """Raise a ValueError naming the first parameter that has an invalid value."""
        def fail(name, what):
            raise ValueError(f"{name} must be {what}, got {getattr(self, name)!r}")

        def real(name, low, high=np.inf, low_open=False):
            v = getattr(self, name)
            if (not isinstance(v, numbers.Real) or isinstance(v, bool) or not np.isfinite(v)
                    or v < low or (low_open and v == low) or v >= high):
                bounds = f"{'>' if low_open else '>='} {low}" + (
                    f" and < {high}" if np.isfinite(high) else "")
                fail(name, f"a number {bounds}")

        def integer(name, low):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < low:
                fail(name, f"an integer >= {low}")

        self._hidden_sizes()
        if self.activation not in ACTIVATION_NAMES:
            fail("activation", f"one of {', '.join(ACTIVATION_NAMES)}")
        if self.solver != "sgd":
            fail("solver", "'sgd' (mlp trains by minibatch SGD with momentum)")
        real("alpha", 0)
        if self.batch_size != "auto":
            integer("batch_size", 1)
        if self.learning_rate not in LEARNING_RATES:
            fail("learning_rate", f"one of {', '.join(LEARNING_RATES)}")
        real("learning_rate_init", 0, low_open=True)
        real("power_t", 0)
        integer("max_iter", 1)
        real("tol", 0)
        real("momentum", 0, 1)
        real("validation_fraction", 0, 1, low_open=True)
        integer("n_iter_no_change", 1)
        if self.backend not in BACKENDS:
            fail("backend", f"one of {', '.join(BACKENDS)}")
        check_dtype(self.dtype)
        self._dropout_rates(len(self._hidden_sizes()))

    # ------------------------------------------------------------ data
    def _check_sample_weight(self, sample_weight, n):
        """Sample weights as float64 of shape (n,), checked; None stays None."""
        if sample_weight is None:
            return None
        sw = check_array(sample_weight, ensure_2d=False, dtype=np.float64,
                         input_name="sample_weight")
        if sw.shape != (n,):
            raise ValueError(f"sample_weight must have shape ({n},), one weight per sample; "
                             f"got {sw.shape}")
        if (sw < 0).any():
            raise ValueError("sample_weight must be >= 0; found negative weights")
        if not sw.any():
            raise ValueError("sample_weight must contain at least one non-zero weight; "
                             "all weights are zero")
        return sw

    def _batch_size(self, n):
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn(f"batch_size={self.batch_size} is larger than the {n} training "
                          f"samples; using {n}", UserWarning, stacklevel=4)
        return min(self.batch_size, n)

    # ------------------------------------------------------------ fitting
    def fit(self, X, y, sample_weight=None):
        """Train the network on (X, y) for up to ``max_iter`` epochs.

        Stops earlier when the training loss (or, with ``early_stopping``, the
        validation score) has not improved by ``tol`` for ``n_iter_no_change``
        epochs. With ``warm_start`` a fitted model continues from its weights
        and optimizer state. ``sample_weight``: one weight >= 0 per sample
        (see the module docstring for the exact objective). Returns self.
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental, classes=None):
        self._check_params()
        first = not hasattr(self, "_net") or not (self.warm_start or incremental)
        X, y = validate_data(self, X, y, reset=first, dtype=(np.float64, np.float32),
                             **self._y_check_params())
        n = X.shape[0]
        sample_weight = self._check_sample_weight(sample_weight, n)
        targets, sample_weight = self._encode_targets(y, sample_weight, first, incremental,
                                                      classes)
        dtype = check_dtype(self.dtype)
        X = _writeable(np.ascontiguousarray(X, dtype=dtype))
        hidden = self._hidden_sizes()
        if first:
            self._initialize([X.shape[1], *hidden, self._n_network_outputs()], dtype)
        elif (self._net.dtype != dtype or self._net.sizes[1:-1] != hidden
              or self._net.activation != ACTIVATION_NAMES[self.activation]
              or self._net.loss.name != self._network_loss()[0]):
            raise ValueError("warm_start and partial_fit need the hidden_layer_sizes, "
                             "activation, loss and dtype of the fitted model; set "
                             "warm_start=False to start over")
        self._train(X, targets, y, sample_weight, incremental)
        return self

    def _initialize(self, sizes, dtype):
        """A new network, optimizer state and training record."""
        rs = check_random_state(self.random_state)
        loss, output = self._network_loss()
        self._net = Network(sizes, ACTIVATION_NAMES[self.activation], loss, output,
                            dtype=dtype, seed=_seed(rs))
        self._shuffle_seed = _seed(rs)
        self._dropout_rng = np.random.default_rng(_seed(rs))
        self._split_seed = _seed(rs)
        self._optimizer = None
        self._epochs = 0
        self.coefs_ = self._net.weights
        self.intercepts_ = self._net.biases
        self.n_layers_ = len(sizes)
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_ = None
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.best_loss_ = None
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _make_optimizer(self):
        return SGD(self.learning_rate_init, self.momentum,
                   nesterov=bool(self.nesterovs_momentum) and self.momentum > 0,
                   weight_decay=self.alpha)

    def _train(self, X, targets, y, sample_weight, incremental):
        """Run the epochs of one call to fit or partial_fit."""
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True; "
                             "use fit, or hold out your own validation data")
        if self._optimizer is None or not (self.warm_start or incremental):
            self._optimizer = self._make_optimizer()
        opt = self._optimizer
        opt.weight_decay = float(self.alpha)
        if self.learning_rate == "constant":
            opt.lr = float(self.learning_rate_init)
        X_val = y_val = sw_val = None
        if self.early_stopping:
            X, X_val, targets, y_val, y, sw, sw_val = self._validation_split(
                X, targets, y, sample_weight)
            sample_weight = sw
            if self.best_validation_score_ is None:    # warm start after a fit without it
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
        elif self.validation_scores_ is not None:      # warm start after a fit with it
            self.validation_scores_, self.best_validation_score_ = None, None
            self.best_loss_ = np.inf
        if sample_weight is not None:
            if np.all(sample_weight == sample_weight[0]):
                sample_weight = None                    # equal weights: the plain mean
            else:
                sample_weight = (sample_weight / sample_weight.mean()).astype(self._net.dtype)
        n = X.shape[0]
        batch_size = self._batch_size(n)
        backend = _FitBackend(_resolve_backend(self.backend), bool(self.shuffle),
                              sample_weight, self._dropout_rates(len(self._net.sizes) - 2),
                              self._dropout_rng)
        trainer = Trainer(self._net, opt, backend, batch_size, seed=self._shuffle_seed)
        trainer.epoch = self._epochs
        start = self._epochs
        self.n_iter_ = 0
        best_params = None
        state = {"converged": False}

        def end_of_epoch(trainer):
            nonlocal best_params
            self._epochs = trainer.epoch
            self.n_iter_ += 1
            self.t_ += n
            self.loss_ = trainer.history[-1]["train_loss"] + (
                l2_penalty(self._net.weights, self.alpha) if self.alpha else 0.0)
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            if self.early_stopping:
                score = self._validation_score(backend, X_val, y_val, sw_val)
                self.validation_scores_.append(score)
                if self.verbose:
                    print(f"Validation score: {score:f}")
                improved = score >= self.best_validation_score_ + self.tol
                if score > self.best_validation_score_:
                    self.best_validation_score_ = score
                    best_params = [p.copy() for p in self._net.params()]
            else:
                improved = self.loss_ <= self.best_loss_ - self.tol
                self.best_loss_ = min(self.best_loss_, self.loss_)
            self._no_improvement_count = 0 if improved else self._no_improvement_count + 1
            if self.learning_rate == "invscaling":
                opt.lr = float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t
            if self._no_improvement_count > self.n_iter_no_change:
                if self.learning_rate == "adaptive" and opt.lr > 1e-6:
                    opt.lr /= 5.0
                    self._no_improvement_count = 0
                    if self.verbose:
                        print(f"Setting learning rate to {opt.lr:f}")
                else:
                    state["converged"] = True
                    if self.verbose:
                        what = "Validation score" if self.early_stopping else "Training loss"
                        print(f"{what} did not improve more than tol={self.tol:f} for "
                              f"{self.n_iter_no_change} consecutive epochs. Stopping.")
                    trainer.request_stop()

        trainer.on_epoch = end_of_epoch
        epochs = 1 if incremental else self.max_iter
        try:
            trainer.fit(X, targets, start + epochs)
        except DivergenceError as e:
            targets_too = " and the targets" if isinstance(self, RegressorMixin) else ""
            raise DivergenceError(
                f"{type(self).__name__} diverged in epoch {self.n_iter_ + 1}: the training "
                f"loss became infinite, NaN or exploded with learning rate {opt.lr:g}. Lower "
                f"learning_rate_init (e.g. to {self.learning_rate_init / 10:g}) or scale the "
                f"features{targets_too} (e.g. with sklearn.preprocessing.StandardScaler). "
                "The weights are those before the failing batches.") from e
        if self.early_stopping and best_params is not None:
            for p, best in zip(self._net.params(), best_params):
                p[...] = best
        if not incremental and not state["converged"] and self.n_iter_ == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                          "and the optimization hasn't converged yet.", ConvergenceWarning)

    def _validation_split(self, X, targets, y, sample_weight):
        """Hold out ``validation_fraction`` of the rows (stratified for classifiers)."""
        stratify = y if isinstance(self, ClassifierMixin) else None
        arrays = [X, targets, y] + ([sample_weight] if sample_weight is not None else [])
        parts = train_test_split(*arrays, test_size=self.validation_fraction,
                                 random_state=self._split_seed, stratify=stratify)
        if parts[1].shape[0] < 2:
            raise ValueError("The validation set is too small: increase validation_fraction "
                             "or the size of your dataset, or set early_stopping=False")
        X_tr, X_val, t_tr, _, y_tr, y_val = parts[:6]
        sw_tr, sw_val = (parts[6], parts[7]) if sample_weight is not None else (None, None)
        return X_tr, X_val, t_tr, y_val, y_tr, sw_tr, sw_val

    # ------------------------------------------------------------ prediction
    def _output(self, X):
        """The network's output ŷ for X, validated against the fitted model.

        Computed in float64 from the (possibly float32) weights: each row's
        result is then the same whatever other rows come with it (float32
        matrix products round differently for 1 row and for 1000), and the
        outputs are float64 as scikit-learn expects.
        """
        check_is_fitted(self, "coefs_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        net = self._net.astype(np.float64)
        return NumpyBackend().predict_output(net, np.ascontiguousarray(X, dtype=np.float64))


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multilayer perceptron classifier trained by backpropagation and minibatch SGD.

    A drop-in for :class:`sklearn.neural_network.MLPClassifier` (the SGD
    solver), with sample weights, class weights, dropout and the Numba
    backend. Labels may be strings, integers or any sortable values; two or
    more classes.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(100,)
        Units of each hidden layer.
    activation : {"logistic", "tanh", "relu", "identity"}, default="logistic"
        Hidden-layer function; "logistic" is the sigmoid.
    loss : {"ce", "mse", "bce"}, default="ce"
        "ce" (alias "log_loss"): softmax output and cross-entropy. "mse":
        sigmoid outputs and ½Σ(ŷ − y)² against one-hot targets (Nielsen's
        chapter 1). "bce": sigmoid output(s) and binary cross-entropy; a
        two-class problem then has a single output, like scikit-learn's.
        With "mse" and multi-class "bce", ``predict_proba`` divides the
        sigmoid outputs by their sum (they are scores, not calibrated
        probabilities).
    solver : "sgd"
        The only solver: minibatch SGD (accepted so scikit-learn code runs).
    alpha : float, default=1e-4
        L2 penalty: the objective is the batch-mean loss + (alpha/2) Σ‖W‖².
        scikit-learn's ``alpha=a`` with batch size b is ``alpha=a/b`` here;
        Nielsen's λ with n training samples is ``alpha=λ/n``.
    batch_size : int or "auto", default="auto"
        Rows per minibatch; "auto" is min(200, n_samples).
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        Schedule, as scikit-learn's: "invscaling" sets the rate to
        ``learning_rate_init / (t + 1) ** power_t`` after every epoch, t being
        the samples seen; "adaptive" divides it by 5 each time the loss (or
        validation score) stalls for ``n_iter_no_change`` epochs, and stops
        once it is below 1e-6.
    learning_rate_init : float, default=0.1
        η, the step size of SGD.
    power_t : float, default=0.5
        Exponent of "invscaling".
    max_iter : int, default=200
        Maximum epochs per call to ``fit``.
    shuffle : bool, default=True
        Shuffle the samples every epoch (else they are visited in order).
    random_state : int, RandomState or None
        Seeds the initial weights, the sample order, dropout and the
        validation split. An int makes fits reproducible.
    tol : float, default=1e-4
        Improvement of the loss (or validation score) that counts.
    verbose : bool, default=False
        Print the loss after every epoch.
    warm_start : bool, default=False
        ``fit`` continues from the fitted weights and optimizer state.
    momentum : float, default=0.9
        μ in ``v ← μv − η(g + αw)``.
    nesterovs_momentum : bool, default=True
        Use Nesterov's momentum (when momentum > 0).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified),
        stop when its accuracy stalls, and keep the best weights.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
        Epochs without improvement before stopping (or, with "adaptive",
        lowering the learning rate).
    class_weight : dict, "balanced" or None, default=None
        Weight of each class, multiplied into the sample weights;
        "balanced" uses n_samples / (n_classes · count(class)).
    dropout : float or tuple of float, default=0.0
        Probability of dropping each hidden unit during training (one value,
        or one per hidden layer). Trains on the NumPy path.
    input_dropout : float, default=0.0
        Probability of dropping each input feature during training (on the
        chosen backend, unless ``dropout`` or sample weights are used too).
    backend : {"numba", "numpy"}, default="numba"
        Who runs the batches (see :mod:`mlp.backends`).
    dtype : {"float32", "float64"}, default="float32"
        Precision of the weights and of the arithmetic.

    Attributes
    ----------
    classes_ : ndarray of the class labels, sorted.
    n_features_in_ : int
    coefs_, intercepts_ : lists of the weight matrices (n_in, n_out) and bias vectors.
    loss_, loss_curve_ : training loss (with the L2 penalty) of the last epoch / every epoch.
    best_loss_ : lowest training loss (None with early stopping).
    validation_scores_, best_validation_score_ : validation accuracies (None without
        early stopping).
    n_iter_ : epochs run by the last call to fit (1 for partial_fit).
    t_ : samples seen during training.
    n_layers_, n_outputs_, out_activation_ : the network's shape.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="logistic", *, loss="ce",
                 solver="sgd", alpha=1e-4, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.1, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, class_weight=None, dropout=0.0, input_dropout=0.0,
                 backend="numba", dtype="float32"):
        super().__init__(
            hidden_layer_sizes, activation, loss=loss, solver=solver, alpha=alpha,
            batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change, dropout=dropout, input_dropout=input_dropout,
            backend=backend, dtype=dtype)
        self.class_weight = class_weight

    _LOSSES = {"ce": "ce", "log_loss": "ce", "mse": "mse", "bce": "bce"}

    def _check_params(self):
        if self.loss not in self._LOSSES:
            raise ValueError(f"loss must be one of {', '.join(self._LOSSES)}, got {self.loss!r}")
        if not (self.class_weight is None or self.class_weight == "balanced"
                or isinstance(self.class_weight, dict)):
            raise ValueError("class_weight must be None, 'balanced' or a dict "
                             f"{{label: weight}}, got {self.class_weight!r}")
        super()._check_params()

    def _y_check_params(self):
        return {}

    def _network_loss(self):
        return self._LOSSES[self.loss], None

    def _single_output(self):
        """A two-class problem with bce has one sigmoid output, P(classes_[1])."""
        return self._LOSSES[self.loss] == "bce" and len(self.classes_) == 2

    def _n_network_outputs(self):
        return 1 if self._single_output() else len(self.classes_)

    def _encode_targets(self, y, sample_weight, first, incremental, classes):
        """Class indices (or a 0/1 column for a single output), and the combined weights."""
        check_classification_targets(y)
        if first:
            if incremental:
                if classes is None:
                    raise ValueError("classes must be passed on the first call to "
                                     "partial_fit (all the labels the model will see)")
                self.classes_ = np.unique(np.asarray(classes))
            else:
                self.classes_ = np.unique(y)
            if len(self.classes_) < 2:
                raise ValueError(f"y has only one class ({self.classes_[0]!r}): a classifier "
                                 "needs samples of at least two classes")
            self.n_outputs_ = self._n_network_outputs()
            self.out_activation_ = {"ce": "softmax"}.get(self._LOSSES[self.loss], "logistic")
        elif incremental and classes is not None and not np.array_equal(
                np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes {np.unique(classes).tolist()} differ from those of the "
                             f"first call to partial_fit, {self.classes_.tolist()}")
        elif self.warm_start and not incremental and not np.array_equal(
                np.unique(y), self.classes_):
            raise ValueError("warm_start can only be used where y has the same classes as in "
                             f"the previous call to fit: {self.classes_.tolist()}, got "
                             f"{np.unique(y).tolist()}")
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            raise ValueError(f"y contains labels not in classes_ {self.classes_.tolist()}: "
                             f"{np.unique(y[unknown]).tolist()}")
        idx = np.searchsorted(self.classes_, y)
        if self.class_weight is not None:
            if incremental and self.class_weight == "balanced":
                raise ValueError("class_weight='balanced' is not supported by partial_fit: "
                                 "compute it once on all labels with sklearn.utils."
                                 "class_weight.compute_class_weight and pass a dict")
            if self.class_weight == "balanced":
                present = np.unique(idx)
                weights = np.ones(len(self.classes_))
                weights[present] = compute_class_weight("balanced", classes=present, y=idx)
            else:
                weights = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
            base = np.ones(len(y)) if sample_weight is None else sample_weight
            sample_weight = base * weights[idx]
        if sample_weight is not None:
            weighted = np.unique(idx[sample_weight > 0])
            if len(weighted) < 2:
                raise ValueError("only one class has non-zero sample weight "
                                 f"({self.classes_[weighted].tolist()}): a classifier needs "
                                 "samples of at least two classes")
        if self._single_output():
            return (idx == 1).astype(check_dtype(self.dtype))[:, None], sample_weight
        return idx.astype(np.int64), sample_weight

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights.

        ``classes`` (all the labels the model will ever see) is required on
        the first call. Returns self.
        """
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _validation_score(self, backend, X_val, y_val, sw_val):
        return accuracy_score(y_val, self._labels(backend.predict_output(self._net, X_val)),
                              sample_weight=sw_val)

    def _probabilities(self, out):
        if out.shape[1] == 1:
            p = out[:, 0]
            return np.column_stack([1 - p, p])
        if self.out_activation_ == "softmax":
            return out
        out = np.maximum(out, np.finfo(out.dtype).tiny)    # sigmoid scores → proportions
        return out / out.sum(axis=1, keepdims=True)

    def _labels(self, out):
        if out.shape[1] == 1:
            return self.classes_[(out[:, 0] > 0.5).astype(int)]
        return self.classes_[out.argmax(axis=1)]

    def predict(self, X):
        """The most probable class of each row of X."""
        return self._labels(self._output(X))

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in the order of classes_."""
        return self._probabilities(self._output(X))

    def predict_log_proba(self, X):
        """The log of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multilayer perceptron regressor: identity output, squared error ½Σ(ŷ − y)², SGD.

    A drop-in for :class:`sklearn.neural_network.MLPRegressor` (the SGD
    solver), with sample weights, dropout and the Numba backend. ``y`` may
    have one column or several (one output unit each). The parameters are
    the classifier's (see :class:`MLPClassifier`) except that ``loss`` is
    "mse" (alias "squared_error"), there is no ``class_weight``, the
    validation score of ``early_stopping`` is R², and the default
    ``learning_rate_init`` is 0.01: the identity output is unbounded, so
    scale the targets (e.g. ``sklearn.compose.TransformedTargetRegressor``
    with a ``StandardScaler``) if they are far from unit size.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="logistic", *, loss="mse",
                 solver="sgd", alpha=1e-4, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.01, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, dropout=0.0, input_dropout=0.0, backend="numba",
                 dtype="float32"):
        super().__init__(
            hidden_layer_sizes, activation, loss=loss, solver=solver, alpha=alpha,
            batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change, dropout=dropout, input_dropout=input_dropout,
            backend=backend, dtype=dtype)

    def _check_params(self):
        if self.loss not in ("mse", "squared_error"):
            raise ValueError(f"loss must be 'mse' (alias 'squared_error'), got {self.loss!r}")
        super()._check_params()

    def _y_check_params(self):
        return {"multi_output": True, "y_numeric": True}

    def _network_loss(self):
        return "mse", "identity"

    def _n_network_outputs(self):
        return self.n_outputs_

    def _encode_targets(self, y, sample_weight, first, incremental, classes):
        """Targets as a 2-D float array, one column per output."""
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if first:
            self._y_1d = y.ndim == 1
            self.n_outputs_ = Y.shape[1]
            self.out_activation_ = "identity"
        elif Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} columns but the fitted model has "
                             f"{self.n_outputs_} outputs; set warm_start=False to start over")
        return _writeable(np.ascontiguousarray(Y, dtype=check_dtype(self.dtype))), sample_weight

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights. Returns self."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _validation_score(self, backend, X_val, y_val, sw_val):
        pred = backend.predict_output(self._net, X_val)
        return r2_score(y_val, pred.ravel() if y_val.ndim == 1 else pred, sample_weight=sw_val)

    def predict(self, X):
        """The predicted targets: shape (n_samples,) if y was 1-D in fit, else (n_samples, n_outputs)."""
        out = self._output(X)
        return out.ravel() if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
