"""The estimators' targets: what ``y`` becomes for the network, and outputs back into answers.

Two mixins of :mod:`mlp.estimators`, as scikit-learn's MLP treats ``y``:

* :class:`ClassifierTargets`. Single-label ``y`` (any sortable labels):
  ``classes_`` is ``np.unique(y)``, the network's targets are class indices
  (one output per class; one sigmoid output, P(classes_[1]), for two classes
  with ``loss="bce"``). Multilabel ``y`` (a 2-D 0/1 indicator matrix, one
  column per label, as :class:`sklearn.preprocessing.MultiLabelBinarizer`
  gives): one sigmoid output per column, trained with binary cross-entropy
  (``loss="ce"`` means "bce" there; "mse" keeps its sigmoid outputs),
  ``classes_`` is 0 … n_labels − 1, ``predict`` returns the indicator matrix
  (output > 0.5) and ``predict_proba`` the sigmoid outputs, which need not sum
  to 1. The validation split of early stopping is stratified on scikit-learn's
  :class:`~sklearn.preprocessing.LabelBinarizer` rows (so its error for a class
  with a single member is scikit-learn's), and not stratified for multilabel ``y``.
* :class:`RegressorTargets`. ``y`` as a 2-D float column per output; with
  ``loss="poisson"`` (log link, ŷ = exp(z)) ``y`` must be >= 0.
"""

import numpy as np
from scipy.sparse import issparse
from sklearn.preprocessing import label_binarize
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import column_or_1d

#: MLPClassifier's loss names → the network's loss, for single-label and multilabel y
CLASSIFIER_LOSSES = {"ce": "ce", "log_loss": "ce", "mse": "mse", "bce": "bce"}
MULTILABEL_LOSSES = {"ce": "bce", "log_loss": "bce", "mse": "mse", "bce": "bce"}
#: MLPRegressor's loss names → (the network's loss, its output function)
REGRESSOR_LOSSES = {"mse": ("mse", "identity"), "squared_error": ("mse", "identity"),
                    "poisson": ("poisson", "exp")}


def writeable(a):
    """``a``, or a copy of it if it is read-only (a memmap, say): Numba compiles its
    kernels anew for read-only arrays, which is slower than the copy."""
    return a if a.flags.writeable else a.copy()


def is_multilabel(y):
    """Whether y is a multilabel indicator matrix (2-D, 0/1, more than one column)."""
    return type_of_target(y) == "multilabel-indicator"


class ClassifierTargets:
    """Targets of :class:`mlp.estimators.MLPClassifier` (see the module docstring)."""

    #: set by fit; the class default keeps models pickled before multilabel existed working
    _multilabel = False

    def _network_loss(self):
        table = MULTILABEL_LOSSES if self._multilabel else CLASSIFIER_LOSSES
        return table[self.loss], None

    def _single_output(self):
        """A two-class problem with bce has one sigmoid output, P(classes_[1])."""
        return (not self._multilabel and CLASSIFIER_LOSSES[self.loss] == "bce"
                and len(self.classes_) == 2)

    def _n_network_outputs(self):
        return self.n_outputs_ if self._multilabel else (
            1 if self._single_output() else len(self.classes_))

    def _target_array(self, y):
        """y as fit receives it: a column vector becomes 1-D (with scikit-learn's warning);
        a sparse indicator matrix becomes dense."""
        if issparse(y):
            y = y.toarray()
        return column_or_1d(y, warn=True) if y.ndim == 2 and y.shape[1] == 1 else y

    def _encode_targets(self, y, sample_weight, first, incremental, classes, dtype):
        """The network's targets in ``dtype`` (or class indices), and the combined weights."""
        multilabel = is_multilabel(y)
        if not first and multilabel != self._multilabel:
            raise ValueError(f"y is {'multilabel' if multilabel else 'single-label'} but the "
                             "fitted model is not; set warm_start=False to start over")
        if multilabel:
            return self._encode_multilabel(y, first, incremental, classes, dtype), sample_weight
        check_classification_targets(y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D class labels or a 2-D 0/1 indicator matrix "
                             f"(multilabel); got a 2-D y of type {type_of_target(y)!r}, "
                             "which scikit-learn's MLPClassifier does not take either")
        if first:
            self._multilabel = False
            self._set_classes(y, incremental, classes)
            self.n_outputs_ = self._n_network_outputs()
            self.out_activation_ = {"ce": "softmax"}.get(CLASSIFIER_LOSSES[self.loss],
                                                         "logistic")
        elif incremental and classes is not None and not np.array_equal(
                np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes {np.unique(classes).tolist()} differ from those of the "
                             f"first call to partial_fit, {self.classes_.tolist()}")
        elif self.warm_start and not incremental and not np.array_equal(
                np.unique(y), self.classes_):
            # scikit-learn's words, which code written for it may match
            raise ValueError("warm_start can only be used where `y` has the same classes as in "
                             f"the previous call to fit. Previously got {self.classes_}, `y` "
                             f"has {np.unique(y)}; set warm_start=False to start over")
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            raise ValueError(f"y contains labels not in classes_ {self.classes_.tolist()}: "
                             f"{np.unique(y[unknown]).tolist()}")
        idx = np.searchsorted(self.classes_, y)
        sample_weight = self._class_weighted(idx, y, sample_weight, incremental)
        if sample_weight is not None:
            weighted = np.unique(idx[sample_weight > 0])
            if len(weighted) < 2:
                raise ValueError("only one class has non-zero sample weight "
                                 f"({self.classes_[weighted].tolist()}): a classifier needs "
                                 "samples of at least two classes")
        if self._single_output():
            return (idx == 1).astype(dtype)[:, None], sample_weight
        return idx.astype(np.int64), sample_weight

    def _set_classes(self, y, incremental, classes):
        """classes_ of a single-label model: all of partial_fit's ``classes``, or y's."""
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

    def _encode_multilabel(self, Y, first, incremental, classes, dtype):
        """A 0/1 indicator matrix as float targets, one sigmoid output per column."""
        if self.class_weight is not None:
            raise ValueError("class_weight is not supported for multilabel y (a 2-D indicator "
                             "matrix); pass sample_weight instead")
        if first:
            self._multilabel = True
            self.n_outputs_ = Y.shape[1]
            self.out_activation_ = "logistic"
            self.classes_ = (np.unique(np.asarray(classes)) if incremental and classes is not None
                             else np.arange(Y.shape[1]))
            if len(self.classes_) != Y.shape[1]:
                raise ValueError(f"classes has {len(self.classes_)} labels but the indicator "
                                 f"matrix y has {Y.shape[1]} columns: pass one label per column")
        elif Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} label columns but the fitted model has "
                             f"{self.n_outputs_}; set warm_start=False to start over")
        return writeable(np.ascontiguousarray(Y, dtype=dtype))

    def _class_weighted(self, idx, y, sample_weight, incremental):
        """The sample weights times each row's class weight (``class_weight``), or unchanged."""
        if self.class_weight is None:
            return sample_weight
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
        return base * weights[idx]

    def _stratify(self, y):
        """Labels to stratify the validation split on: LabelBinarizer's rows, as scikit-learn."""
        if self._multilabel:
            return None
        return label_binarize(y, classes=self.classes_).astype(bool)

    def _probabilities(self, out):
        if self._multilabel:
            return out
        if out.shape[1] == 1:
            p = out[:, 0]
            return np.column_stack([1 - p, p])
        if self.out_activation_ == "softmax":
            return out
        out = np.maximum(out, np.finfo(out.dtype).tiny)    # sigmoid scores → proportions
        return out / out.sum(axis=1, keepdims=True)

    def _labels(self, out):
        if self._multilabel:
            return (out > 0.5).astype(np.int64)
        if out.shape[1] == 1:
            return self.classes_[(out[:, 0] > 0.5).astype(int)]
        return self.classes_[out.argmax(axis=1)]


class RegressorTargets:
    """Targets of :class:`mlp.estimators.MLPRegressor`: one float column per output."""

    def _network_loss(self):
        return REGRESSOR_LOSSES[self.loss]

    def _n_network_outputs(self):
        return self.n_outputs_

    def _target_array(self, y):
        return y

    def _encode_targets(self, y, sample_weight, first, incremental, classes, dtype):
        """Targets as a 2-D float array in ``dtype``, one column per output."""
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if self.loss == "poisson" and Y.size and not (Y >= 0).all():
            raise ValueError("loss='poisson' needs targets y >= 0 (counts or rates: the model "
                             f"predicts exp(z) > 0); found min(y) = {np.nanmin(Y):g}. Use "
                             "loss='squared_error' for targets of any sign")
        if first:
            self._y_1d = y.ndim == 1
            self.n_outputs_ = Y.shape[1]
            self.out_activation_ = REGRESSOR_LOSSES[self.loss][1]
        elif Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} columns but the fitted model has "
                             f"{self.n_outputs_} outputs; set warm_start=False to start over")
        return writeable(np.ascontiguousarray(Y, dtype=dtype)), sample_weight

    def _stratify(self, y):
        return None
