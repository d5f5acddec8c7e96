"""mlp: a multilayer perceptron written from scratch, trained by explicit backpropagation.

The pieces, one module each:

* :mod:`mlp.data` — MNIST, Fashion-MNIST, KMNIST (IDX files, checksums, downloader) and
  scikit-learn's digits; :mod:`mlp.datasets` — your own .npz, .csv or IDX folder
* :mod:`mlp.activations` — sigmoid, tanh, relu, identity and their derivatives
* :mod:`mlp.losses` — output layers with their losses (ce, mse, bce, poisson)
* :mod:`mlp.network` — the network and its forward and backward passes (the reference)
* :mod:`mlp.optimizers` — SGD with momentum, Nesterov and weight decay; Adam, AdamW; max-norm;
  :mod:`mlp.schedules` — learning-rate schedules
* :mod:`mlp.batches` — minibatches and the reference batch loop
* :mod:`mlp.backends` — the NumPy reference loop and the Numba fast path, one interface;
  :mod:`mlp.numba_backend`, :mod:`mlp.kernels` and their twins :mod:`mlp.kernels_reference`
* :mod:`mlp.precompile`, :mod:`mlp.compile_notice` — compiling the kernels on a cold cache
* :mod:`mlp.trainer` — the training loop; :mod:`mlp.train` its command line
* :mod:`mlp.io` — model files, checkpoints and atomic writes
* :mod:`mlp.evaluate`, :mod:`mlp.predict`, :mod:`mlp.export` — a saved model's test
  accuracy, predictions for your files, an ONNX file
* :mod:`mlp.gradcheck` — analytic gradients against finite differences
* :mod:`mlp.demos` — the programs of the tutorial mlp grew from
* :mod:`mlp.estimators` — scikit-learn's MLPClassifier/MLPRegressor interface
  (:mod:`mlp.estimator_params`: their parameter checks; :mod:`mlp.estimator_targets`: their
  targets; :mod:`mlp.estimator_training`: their training policy; :mod:`mlp.lbfgs`:
  solver="lbfgs"; :mod:`mlp.csr`: scipy.sparse input)
"""

from .errors import DataError, DivergenceError, MLPError, ModelFileError
from .network import Network
from .optimizers import SGD, Adam

__version__ = "0.1.0"

__all__ = ["Network", "SGD", "Adam", "MLPClassifier", "MLPRegressor",
           "MLPError", "DataError", "ModelFileError", "DivergenceError"]


def __getattr__(name):
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import estimators  # they import scikit-learn: loaded only when asked for
        return getattr(estimators, name)
    raise AttributeError(f"module 'mlp' has no attribute {name!r}")
