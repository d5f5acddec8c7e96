"""scikit-learn estimators: :class:`MLPClassifier` and :class:`MLPRegressor`.

They follow scikit-learn's conventions (``__init__`` only stores its
arguments; ``fit`` returns ``self``; fitted attributes end in ``_``) and the
names of :class:`sklearn.neural_network.MLPClassifier`, so they drop into a
``Pipeline`` or ``GridSearchCV`` where that one was. Underneath they are
mlp's pieces: :class:`mlp.network.Network`, :class:`mlp.optimizers.Adam` or ``SGD``,
:class:`mlp.trainer.Trainer` and a backend of :mod:`mlp.backends` (``"numba"``
by default, the NumPy reference with ``backend="numpy"``).

What scikit-learn's MLP lacks and these have: ``sample_weight`` in ``fit``,
``class_weight``, dropout, an explicit ``dtype``, and the Numba backend.

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

Backends, the order of the samples and the stopping rules, learning-rate
schedules and early stopping of scikit-learn: :mod:`mlp.estimator_training`.
"""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .backends import BACKENDS, NumpyBackend
from .csr import ACCEPTED_FORMATS, SparseInputTags, as_input
from .estimator_params import _hidden_sizes, _integer, _one_of, _real, _store_params
from .estimator_targets import (
    CLASSIFIER_LOSSES,
    REGRESSOR_LOSSES,
    ClassifierTargets,
    RegressorTargets,
)
from .estimator_training import SOLVERS, TrainingPolicy, stochastic_solver
from .network import check_dtype

#: scikit-learn's activation names → mlp's (mlp's own names are accepted too)
ACTIVATION_NAMES = {"logistic": "sigmoid", "sigmoid": "sigmoid", "tanh": "tanh",
                    "relu": "relu", "identity": "identity"}
LEARNING_RATES = ("constant", "invscaling", "adaptive")


class _BaseMLP(SparseInputTags, TrainingPolicy, BaseEstimator):
    """What the classifier and the regressor share: parameters, data, fit, prediction."""

    #: parameter → its check, in the order _check_params applies them (the subclasses put
    #: their loss first); dtype and the dropout rates are checked after them
    _PARAMETER_CHECKS = {
        "hidden_layer_sizes": lambda v: _hidden_sizes(v) is None and (
            "an int or a sequence of ints >= 1"),
        "activation": _one_of(ACTIVATION_NAMES),
        "solver": _one_of(SOLVERS),
        "alpha": _real(0),
        "batch_size": lambda v: v != "auto" and _integer(1)(v),
        "learning_rate": _one_of(LEARNING_RATES),
        "learning_rate_init": _real(0, low_open=True),
        "power_t": _real(0),
        "max_iter": _integer(1),
        "max_fun": _integer(1),
        "tol": _real(0),
        "momentum": _real(0, 1),
        "beta_1": _real(0, 1),
        "beta_2": _real(0, 1),
        "epsilon": _real(0, low_open=True),
        "validation_fraction": _real(0, 1, low_open=True),
        "n_iter_no_change": lambda v: v != np.inf and _integer(1)(v) and (
            "an integer >= 1 or np.inf (never stop)"),
        "backend": _one_of(BACKENDS),
    }

    # ------------------------------------------------------------ parameters
    def _check_params(self):
        """Raise a ValueError naming the first parameter that has an invalid value."""
        for name, check in self._PARAMETER_CHECKS.items():
            value = getattr(self, name)
            what = check(value)
            if what:
                raise ValueError(f"{name} must be {what}, got {value!r}")
        if self.dtype is not None:
            check_dtype(self.dtype)
        self._dropout_rates(len(_hidden_sizes(self.hidden_layer_sizes)))

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
                             accept_sparse=ACCEPTED_FORMATS, **self._y_check_params())
        y = self._target_array(y)
        n = X.shape[0]
        sample_weight = self._check_sample_weight(sample_weight, n)
        # dtype=None follows X (float32 stays float32, the rest is float64), as scikit-learn;
        # a warm start or partial_fit keeps the fitted model's
        dtype = (check_dtype(self.dtype) if self.dtype is not None
                 else X.dtype if first else self._net.dtype)
        targets, sample_weight = self._encode_targets(y, sample_weight, first, incremental,
                                                      classes, dtype)
        X = as_input(X, dtype)          # scipy.sparse X: canonical CSR (mlp.csr)
        hidden = _hidden_sizes(self.hidden_layer_sizes)
        if first:
            self._initialize([X.shape[1], *hidden, self._n_network_outputs()], dtype,
                             ACTIVATION_NAMES[self.activation])
        elif (self._net.dtype != dtype or self._net.sizes[1:-1] != hidden
              or self._net.activation != ACTIVATION_NAMES[self.activation]
              or self._net.loss.name != self._network_loss()[0]):
            raise ValueError("warm_start and partial_fit need the hidden_layer_sizes, "
                             "activation, loss and dtype of the fitted model; set "
                             "warm_start=False to start over")
        self._train(X, targets, y, sample_weight, incremental)
        return self

    # ------------------------------------------------------------ prediction
    def _output(self, X, like_X=False):
        """The network's output ŷ for X, validated against the fitted model.

        Computed in float64 from the (possibly float32) weights: each row's
        result is then the same whatever other rows come with it (float32
        matrix products round differently for 1 row and for 1000), and the
        outputs are float64 as scikit-learn expects. ``like_X``: rounded to
        float32 where both X and the model are float32, as scikit-learn's
        regressor predicts.
        """
        check_is_fitted(self, "coefs_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32),
                          accept_sparse=ACCEPTED_FORMATS)
        out = NumpyBackend().predict_output(self._net.astype(np.float64),
                                            as_input(X, np.float64))
        return out.astype(np.result_type(X.dtype, self._net.dtype)) if like_X else out


class MLPClassifier(ClassifierMixin, ClassifierTargets, _BaseMLP):
    """Multilayer perceptron classifier trained by backpropagation and Adam or minibatch SGD.

    A drop-in for :class:`sklearn.neural_network.MLPClassifier` (its adam and
    sgd solvers), with sample weights, class weights, dropout and the Numba
    backend. Labels may be strings, integers or any sortable values; two or
    more classes. A 2-D 0/1 indicator ``y`` is multilabel: one sigmoid output
    per column, binary cross-entropy, ``predict`` returns the indicator matrix
    (see :mod:`mlp.estimator_targets`).

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
    solver : {"adam", "sgd", "lbfgs"}, default="adam"
        "adam": Adam with scikit-learn's bias correction (``beta_1``, ``beta_2``,
        ``epsilon``; ``learning_rate`` and ``momentum`` do not apply); "sgd":
        minibatch SGD with ``momentum``; "lbfgs": L-BFGS-B on the whole set
        (:mod:`mlp.lbfgs`; no partial_fit).
    alpha : float, default=1e-4
        L2 penalty: the objective is the batch-mean loss + (alpha/2) Σ‖W‖².
        scikit-learn's ``alpha=a`` with batch size b is ``alpha=a/b`` here;
        Nielsen's λ with n training samples is ``alpha=λ/n``.
    batch_size : int or "auto", default="auto"
        Rows per minibatch; "auto" is min(200, n_samples).
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        Schedule of "sgd", as scikit-learn's: "invscaling" sets the rate to
        ``learning_rate_init / (t + 1) ** power_t`` after every epoch, t being
        the samples seen; "adaptive" divides it by 5 each time the loss (or
        validation score) stalls for ``n_iter_no_change`` epochs, and stops
        once it is below 1e-6.
    learning_rate_init : float, default=0.001
        η, the step size.
    power_t : float, default=0.5
        Exponent of "invscaling".
    max_iter : int, default=200
        Maximum epochs (L-BFGS: iterations) per call to ``fit``.
    max_fun : int, default=15000
        "lbfgs" only: maximum evaluations of the objective per call to ``fit``.
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
        μ in ``v ← μv − η(g + αw)`` ("sgd").
    nesterovs_momentum : bool, default=True
        Use Nesterov's momentum ("sgd", when momentum > 0).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified
        unless multilabel),
        stop when its accuracy stalls, and keep the best weights.
    validation_fraction : float, default=0.1
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's β₁, β₂ and ε ("adam"; see :mod:`mlp.optimizers`).
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
    dtype : {"float32", "float64"} or None, default=None
        Precision of the weights and of the arithmetic. None follows X, as
        scikit-learn does: float32 X trains in float32, any other X in float64
        (a warm start or ``partial_fit`` keeps the fitted model's dtype).

    Attributes
    ----------
    classes_ : ndarray of the class labels, sorted (multilabel: 0 … n_labels − 1).
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
                 solver="adam", alpha=1e-4, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 class_weight=None, dropout=0.0, input_dropout=0.0, backend="numba",
                 dtype=None, max_fun=15000):
        _store_params(self, locals())

    _PARAMETER_CHECKS = {
        "loss": _one_of(CLASSIFIER_LOSSES),
        "class_weight": lambda v: not (v is None or v == "balanced" or isinstance(v, dict)) and (
            "None, 'balanced' or a dict {label: weight}"),
        **_BaseMLP._PARAMETER_CHECKS}

    def _y_check_params(self):
        return {"multi_output": True}

    @available_if(stochastic_solver)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights.

        ``classes`` (all the labels the model will ever see) is required on
        the first call. Returns self.
        """
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _validation_score(self, backend, X_val, y_val, sw_val):
        return accuracy_score(y_val, self._labels(backend.predict_output(self._net, X_val)),
                              sample_weight=sw_val)

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
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, RegressorTargets, _BaseMLP):
    """Multilayer perceptron regressor: identity output and squared error ½Σ(ŷ − y)², or Poisson.

    A drop-in for :class:`sklearn.neural_network.MLPRegressor` (its adam and
    sgd solvers), with sample weights, dropout and the Numba backend. ``y`` may
    have one column or several (one output unit each). The parameters are
    the classifier's (see :class:`MLPClassifier`) except that ``loss`` is
    "mse" (alias "squared_error") or "poisson" (exp output, half the Poisson
    deviance Σ y log(y/ŷ) − y + ŷ, for targets y >= 0), there is no ``class_weight``, the
    validation score of ``early_stopping`` is R². The identity output is unbounded:
    scale the targets (e.g. ``sklearn.compose.TransformedTargetRegressor``
    with a ``StandardScaler``) if they are far from unit size.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="logistic", *, loss="mse",
                 solver="adam", alpha=1e-4, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, dropout=0.0,
                 input_dropout=0.0, backend="numba", dtype=None, max_fun=15000):
        _store_params(self, locals())

    _PARAMETER_CHECKS = {"loss": _one_of(REGRESSOR_LOSSES,
                                         "'mse' (alias 'squared_error') or 'poisson'"),
                         **_BaseMLP._PARAMETER_CHECKS}

    def _y_check_params(self):
        return {"multi_output": True, "y_numeric": True}

    @available_if(stochastic_solver)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights. Returns self."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _validation_score(self, backend, X_val, y_val, sw_val):
        pred = backend.predict_output(self._net, X_val)
        return r2_score(y_val, pred.ravel() if y_val.ndim == 1 else pred, sample_weight=sw_val)

    def predict(self, X):
        """The predicted targets.

        Shape (n_samples,) if y was 1-D in fit, else (n_samples, n_outputs).
        """
        out = self._output(X, like_X=True)
        return out.ravel() if self._y_1d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
