"""How the scikit-learn estimators train: the backend the trainer sees and scikit-learn's policy.

:class:`TrainingPolicy` is the training half of the estimators of
:mod:`mlp.estimators` (a mixin: what it records, ``loss_curve_``,
``best_loss_`` and the other fitted attributes, belongs to the estimator).
:meth:`~TrainingPolicy._initialize` starts a model to train (network, random
streams, record). Each call to ``fit`` or ``partial_fit`` then runs a
:class:`mlp.trainer.Trainer` whose ``on_epoch`` is
:meth:`~TrainingPolicy._end_of_epoch`. That applies the rules of
scikit-learn's ``_multilayer_perceptron.py`` and its SGD optimizer, in their
order, one named method each:

* the epoch's record and verbose report: :meth:`~TrainingPolicy._record_epoch`,
  :meth:`~TrainingPolicy._report`;
* stopping: :meth:`~TrainingPolicy._update_no_improvement_count` (an epoch
  improves when the training loss falls by ``tol``, or, with early stopping,
  the validation score rises by ``tol``) and
  :meth:`~TrainingPolicy._trigger_stopping` (after more than
  ``n_iter_no_change`` epochs without improvement), then, at the end of
  ``fit``, :meth:`~TrainingPolicy._warn_if_not_converged`;
* learning-rate schedules of the "sgd" solver: :meth:`~TrainingPolicy._initial_learning_rate`
  and :meth:`~TrainingPolicy._update_learning_rate` ("constant", "invscaling"),
  and "adaptive" in :meth:`~TrainingPolicy._trigger_stopping`. As in
  scikit-learn, they do not apply to "adam", whose step size is
  ``learning_rate_init`` with Adam's bias correction (:mod:`mlp.optimizers`);
* early stopping: :meth:`~TrainingPolicy._validation_split`,
  :meth:`~TrainingPolicy._record_validation_score` (which keeps the best
  weights) and :meth:`~TrainingPolicy._restore_best_weights`.

What lasts only as long as one call (its optimizer and backend, the
validation rows, the best weights so far, whether it converged) is a
:class:`FitRun`.

Backends. Sample weights (other than all equal) and hidden-unit dropout are
computed by the NumPy reference (:meth:`Network.loss_and_gradients`): a fit
that uses them runs on NumPy whatever ``backend`` says. Input dropout alone
runs on the chosen backend (the masked inputs are handed to it). If
``mlp.numba_backend`` cannot be imported, ``backend="numba"`` falls back to
NumPy with a warning; both compute the same arithmetic.

``solver="lbfgs"`` trains by :mod:`mlp.lbfgs` instead of epochs
(:meth:`~TrainingPolicy._train_lbfgs`): no minibatches, so no learning
rates, stopping rules or early stopping, and no dropout; sample weights run
on the chosen backend.

Each epoch's sample order is drawn from ``random_state`` (as in
:func:`mlp.trainer.epoch_order`), so the same ``random_state`` (an int) gives
the same ``coefs_`` on the same backend and thread count.
"""

import functools
import numbers
import warnings

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state

from .backends import BACKENDS, NumpyBackend, get_backend
from .batches import batch_inputs, batch_rows, run_batches
from .csr import issparse
from .errors import DivergenceError
from .lbfgs import Objective, minimize
from .network import Network, l2_penalty
from .optimizers import SGD, Adam
from .trainer import Trainer

#: "adaptive" divides the learning rate by this while it is above ADAPTIVE_MIN_LR, as
#: scikit-learn's SGD optimizer does
ADAPTIVE_DIVISOR = 5.0
ADAPTIVE_MIN_LR = 1e-6
#: the values of the estimators' ``solver``: scikit-learn's
SOLVERS = ("adam", "sgd", "lbfgs")
#: what an L-BFGS fit does not record (scikit-learn's lbfgs has none of them either)
STOCHASTIC_RECORD = ("loss_curve_", "best_loss_", "validation_scores_", "best_validation_score_")


def stochastic_solver(est):
    """True for a minibatch solver, else an AttributeError: scikit-learn's rule for
    ``partial_fit`` (``hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")`` is False)."""
    if est.solver == "lbfgs":
        raise AttributeError("partial_fit is only available for stochastic optimizers; "
                             f"{est.solver!r} is not stochastic")
    return True


class FitBackend:
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
            X_rows = batch_inputs(X, rows, scale, net.dtype)
            X_masked = (X_rows.multiply(mask).tocsr() if issparse(X_rows)    # (* is @ there)
                        else X_rows * mask)
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


def resolve_backend(name):
    """The backend called ``name``; NumPy, with a warning, if Numba's cannot be imported."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    try:
        return get_backend(name)
    except ImportError as e:
        warnings.warn(f"backend {name!r} is not available ({e}); training with the NumPy "
                      "reference backend instead", RuntimeWarning, stacklevel=3)
        return NumpyBackend()


def normalized_weights(sample_weight, dtype):
    """Sample weights divided by their mean, in ``dtype``; None (the plain mean) if all equal."""
    if sample_weight is None or np.all(sample_weight == sample_weight[0]):
        return None
    return (sample_weight / sample_weight.mean()).astype(dtype)


class FitRun:
    """What one call to fit or partial_fit keeps from epoch to epoch, and drops at its end."""

    def __init__(self, optimizer, backend, n_samples, validation=None):
        self.optimizer = optimizer
        self.backend = backend            # the FitBackend that trains and predicts
        self.n_samples = n_samples        # training rows, after the validation split
        self.validation = validation      # (X_val, y_val, sw_val) with early stopping
        self.best_params = None           # copies of the weights of the best validation score
        self.converged = False            # stopped by the policy rather than by max_iter


def _seed(rs):
    """A seed for mlp's NumPy Generators, drawn from a RandomState."""
    return int(rs.randint(np.iinfo(np.int32).max))


class TrainingPolicy:
    """The training half of the estimators (see the module docstring).

    Needs the estimator's parameters and its ``_network_loss``, ``_validation_score`` and
    ``_stratify`` (:mod:`mlp.estimator_targets`).
    """

    def _initialize(self, sizes, dtype, activation):
        """A new network, optimizer state and training record."""
        rs = check_random_state(self.random_state)
        loss, output = self._network_loss()
        self._net = Network(sizes, activation, loss, output, dtype=dtype, seed=_seed(rs))
        self._shuffle_seed = _seed(rs)
        self._dropout_rng = np.random.default_rng(_seed(rs))
        self._split_seed = _seed(rs)
        self._optimizer = None
        self._epochs = 0
        self.coefs_ = self._net.weights
        self.intercepts_ = self._net.biases
        self.n_layers_ = len(sizes)
        self._start_training_record()

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

    def _train(self, X, targets, y, sample_weight, incremental):
        """Run the epochs of one call to fit or partial_fit."""
        if self.solver == "lbfgs":
            return self._train_lbfgs(X, targets, sample_weight)
        if not hasattr(self, "loss_curve_"):      # a warm start after solver="lbfgs"
            self._start_training_record()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True; "
                             "use fit, or hold out your own validation data")
        opt = self._prepare_optimizer(incremental)
        validation = None
        if self.early_stopping:
            X, X_val, targets, y_val, y, sample_weight, sw_val = self._validation_split(
                X, targets, y, sample_weight)
            validation = (X_val, y_val, sw_val)
        self._match_early_stopping_record()
        sample_weight = normalized_weights(sample_weight, self._net.dtype)
        n = X.shape[0]
        batch_size = self._batch_size(n)
        backend = FitBackend(resolve_backend(self.backend), bool(self.shuffle),
                             sample_weight, self._dropout_rates(len(self._net.sizes) - 2),
                             self._dropout_rng)
        trainer = Trainer(self._net, opt, backend, batch_size, seed=self._shuffle_seed)
        trainer.epoch = self._epochs
        run = FitRun(opt, backend, n, validation)
        trainer.on_epoch = functools.partial(self._end_of_epoch, run)
        self.n_iter_ = 0
        try:
            trainer.fit(X, targets, self._epochs + (1 if incremental else self.max_iter))
        except DivergenceError as e:
            targets_too = " and the targets" if isinstance(self, RegressorMixin) else ""
            raise DivergenceError(
                f"{type(self).__name__} diverged in epoch {self.n_iter_ + 1}: the training "
                f"loss became infinite, NaN or exploded with learning rate {opt.lr:g}. Lower "
                f"learning_rate_init (e.g. to {self.learning_rate_init / 10:g}) or scale the "
                f"features{targets_too} (e.g. with sklearn.preprocessing.StandardScaler). "
                "The weights are those before the failing batches.") from e
        self._restore_best_weights(run)
        self._warn_if_not_converged(run, incremental)

    def _train_lbfgs(self, X, targets, sample_weight):
        """One call to fit with solver="lbfgs": L-BFGS-B from the current weights (mlp.lbfgs).

        As scikit-learn's: ``n_iter_`` (iterations, at most max_iter) and
        ``loss_`` (J at the solution) are recorded, the epoch record is not
        (:data:`STOCHASTIC_RECORD`), early stopping is not used, and a
        ConvergenceWarning says when max_iter or max_fun stopped it.
        """
        if self._dropout_rates(len(self._net.sizes) - 2) is not None:
            raise ValueError("dropout and input_dropout need solver='sgd': L-BFGS minimises "
                             "one fixed objective, which random masks would change")
        for name in STOCHASTIC_RECORD:
            self.__dict__.pop(name, None)
        objective = Objective(self._net, resolve_backend(self.backend), X, targets,
                              normalized_weights(sample_weight, self._net.dtype), self.alpha)
        result = minimize(objective, self.max_iter, self.max_fun, self.tol,
                          lambda i, loss: self._report("Iteration {}, loss = {:.8f}", i, loss))
        self.n_iter_ = min(int(result.nit), self.max_iter)
        self.loss_ = float(result.fun)
        if not all(np.all(np.isfinite(p)) for p in self._net.params()):
            raise DivergenceError(f"{type(self).__name__} with solver='lbfgs' produced "
                                  "non-finite weights: scale the features (e.g. with sklearn."
                                  "preprocessing.StandardScaler)")
        if result.status != 0:
            limit = (f" Increase max_iter (now {self.max_iter}) or max_fun (now "
                     f"{self.max_fun})." if result.status == 1 else "")
            warnings.warn(f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                          f"(status={result.status}): {result.message}.{limit} Scaling the "
                          "features may help too.", ConvergenceWarning, stacklevel=5)

    def _batch_size(self, n):
        """Rows per minibatch: "auto" is min(200, n); more than n rows is n, with a warning."""
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn(f"batch_size={self.batch_size} is larger than the {n} training "
                          f"samples; using {n}", UserWarning, stacklevel=4)
        return min(self.batch_size, n)

    def _prepare_optimizer(self, incremental):
        """This call's optimizer: a new one, unless warm_start or partial_fit continue the last.

        "adam" is scikit-learn's AdamOptimizer: its ``alpha`` an L2 term of the
        gradient (not AdamW's decoupled decay), its step count going on across
        the calls that continue it.
        """
        if (self._optimizer is None or not (self.warm_start or incremental)
                or self._optimizer.name != self.solver):
            if self.solver == "adam":
                self._optimizer = Adam(self.learning_rate_init, self.beta_1, self.beta_2,
                                       self.epsilon, weight_decay=self.alpha)
            else:
                self._optimizer = SGD(self.learning_rate_init, self.momentum,
                                      nesterov=bool(self.nesterovs_momentum)
                                      and self.momentum > 0, weight_decay=self.alpha)
        self._optimizer.weight_decay = float(self.alpha)
        self._initial_learning_rate(self._optimizer)
        return self._optimizer

    def _end_of_epoch(self, run, trainer):
        """The trainer's ``on_epoch``: the epoch's record, then scikit-learn's rules in order."""
        self._epochs = trainer.epoch
        self._record_epoch(trainer.history[-1]["train_loss"], run.n_samples)
        self._update_no_improvement_count(run)
        self._update_learning_rate(run.optimizer)
        if (self._no_improvement_count > self.n_iter_no_change
                and self._trigger_stopping(run.optimizer)):
            run.converged = True
            trainer.request_stop()

    # ------------------------------------------------------------ record and verbose reports
    def _start_training_record(self):
        """The fitted attributes of a new model: no epochs, no best loss or score yet."""
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

    def _record_epoch(self, train_loss, n_samples):
        """Count the epoch and its samples; its loss (plus the L2 penalty) joins loss_curve_."""
        self.n_iter_ += 1
        self.t_ += n_samples
        self.loss_ = train_loss + (
            l2_penalty(self._net.weights, self.alpha) if self.alpha else 0.0)
        self.loss_curve_.append(self.loss_)
        self._report("Iteration {}, loss = {:.8f}", self.n_iter_, self.loss_)

    def _report(self, template, *values):
        """With ``verbose``, print ``template.format(*values)`` (formatted only then)."""
        if self.verbose:
            print(template.format(*values))

    # ------------------------------------------------------------ stopping
    def _update_no_improvement_count(self, run):
        """Reset the count of epochs without improvement by ``tol``, or add this epoch to it.

        Improvement is a training loss at most ``best_loss_ − tol`` or, with
        early stopping, a validation score at least ``best_validation_score_ + tol``.
        """
        if self.early_stopping:
            improved = self._record_validation_score(run)
        else:
            improved = self.loss_ <= self.best_loss_ - self.tol
            self.best_loss_ = min(self.best_loss_, self.loss_)
        self._no_improvement_count = 0 if improved else self._no_improvement_count + 1

    def _trigger_stopping(self, opt):
        """Whether to stop, once more than ``n_iter_no_change`` epochs have not improved.

        With "adaptive" and a rate above 1e-6 it divides the rate by 5 and
        starts counting anew instead.
        """
        if self.solver == "sgd" and self.learning_rate == "adaptive" and opt.lr > ADAPTIVE_MIN_LR:
            opt.lr /= ADAPTIVE_DIVISOR
            self._no_improvement_count = 0
            self._report("Setting learning rate to {:f}", opt.lr)
            return False
        what = "Validation score" if self.early_stopping else "Training loss"
        self._report("{} did not improve more than tol={:f} for {} consecutive epochs. "
                     "Stopping.", what, self.tol, self.n_iter_no_change)
        return True

    def _warn_if_not_converged(self, run, incremental):
        """Warn (ConvergenceWarning) if fit ran max_iter epochs and the policy never stopped it."""
        if not incremental and not run.converged and self.n_iter_ == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                          "and the optimization hasn't converged yet.", ConvergenceWarning,
                          stacklevel=5)

    # ------------------------------------------------------------ learning-rate schedules
    def _initial_learning_rate(self, opt):
        """"constant" (and "adam") start every call at learning_rate_init; the others go on."""
        if self.learning_rate == "constant" or self.solver == "adam":
            opt.lr = float(self.learning_rate_init)

    def _update_learning_rate(self, opt):
        """After each epoch, "invscaling" sets lr = learning_rate_init / (t_ + 1) ** power_t."""
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            opt.lr = float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t

    # ------------------------------------------------------------ early stopping
    def _validation_split(self, X, targets, y, sample_weight):
        """Hold out ``validation_fraction`` of the rows (stratified on the estimator's
        ``_stratify(y)``: a single-label classifier's classes, as scikit-learn)."""
        stratify = self._stratify(y)
        arrays = [X, targets, y] + ([sample_weight] if sample_weight is not None else [])
        parts = train_test_split(*arrays, test_size=self.validation_fraction,
                                 random_state=self._split_seed, stratify=stratify)
        if parts[1].shape[0] < 2:
            raise ValueError("The validation set is too small: increase validation_fraction "
                             "or the size of your dataset, or set early_stopping=False")
        X_tr, X_val, t_tr, _, y_tr, y_val = parts[:6]
        sw_tr, sw_val = (parts[6], parts[7]) if sample_weight is not None else (None, None)
        return X_tr, X_val, t_tr, y_val, y_tr, sw_tr, sw_val

    def _match_early_stopping_record(self):
        """A warm start that switches early_stopping on or off starts the record it keeps."""
        if self.early_stopping:
            if self.best_validation_score_ is None:
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
        elif self.validation_scores_ is not None:
            self.validation_scores_, self.best_validation_score_ = None, None
            self.best_loss_ = np.inf

    def _record_validation_score(self, run):
        """Score the held-out rows, keep the best weights; whether the score improved by tol."""
        score = self._validation_score(run.backend, *run.validation)
        self.validation_scores_.append(score)
        self._report("Validation score: {:f}", score)
        improved = score >= self.best_validation_score_ + self.tol
        if score > self.best_validation_score_:
            self.best_validation_score_ = score
            run.best_params = [p.copy() for p in self._net.params()]
        return improved

    def _restore_best_weights(self, run):
        """Early stopping ends with the weights of the best validation score."""
        if self.early_stopping and run.best_params is not None:
            for p, best in zip(self._net.params(), run.best_params):
                p[...] = best
