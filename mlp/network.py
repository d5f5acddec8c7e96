"""The network: layers of ``z = a·W + b``, ``a = f(z)``, with backpropagation written out.

This is mlp's reference path, written to be read beside the equations (and
beside Michael Nielsen's network.py). Rows are samples: a batch ``X`` of shape
``(n, n_in)`` flows through weight matrices ``W`` of shape ``(n_in, n_out)``.

Forward, layer l = 1 … L, with a⁰ = X::

    zˡ = aˡ⁻¹ · Wˡ + bˡ
    aˡ = f(zˡ)            (hidden layers; the output layer uses the loss's g)

Backward, starting from the loss's error at the output (``ŷ − y`` for the
canonical pairs, see :mod:`mlp.losses`)::

    δᴸ = ∂L/∂zᴸ
    ∂L/∂Wˡ = aˡ⁻¹ᵀ · δˡ        ∂L/∂bˡ = Σ_rows δˡ
    δˡ⁻¹ = (δˡ · Wˡᵀ) ⊙ f'(zˡ⁻¹)

Two optional extras, both off by default (the formulas above are then exact):

* ``sample_weight`` (one wᵢ ≥ 0 per row): the loss is ``(1/n) Σᵢ wᵢ lᵢ``, so
  δᴸ's row i is multiplied by wᵢ (see :mod:`mlp.losses`); the rest of the
  backward pass is unchanged.
* ``dropout_masks`` (inverted dropout): layer l's input is multiplied by a
  mask mˡ⁻¹ whose entries are 0 with probability p and 1/(1 − p) otherwise,
  so its expected value is unchanged and prediction needs no mask::

      zˡ = (aˡ⁻¹ ⊙ mˡ⁻¹) · Wˡ + bˡ
      ∂L/∂Wˡ = (aˡ⁻¹ ⊙ mˡ⁻¹)ᵀ · δˡ
      δˡ⁻¹ = (δˡ · Wˡᵀ) ⊙ mˡ⁻¹ ⊙ f'(zˡ⁻¹)

Every fast kernel (see :mod:`mlp.backends`) is tested against these methods.
"""

import numpy as np

from .activations import ACTIVATIONS, DERIVATIVES, check_activation
from .csr import issparse
from .losses import get_loss

DTYPES = {"float32": np.float32, "float64": np.float64}


def check_dtype(dtype):
    """Return the NumPy dtype for "float32"/"float64" (or a dtype), else raise ValueError."""
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: choose float32 or float64")
    return np.dtype(DTYPES[name])


class Network:
    """A fully connected feed-forward network trained by backpropagation.

    Parameters
    ----------
    sizes : list of int
        Units per layer, input first: ``[784, 30, 10]`` is 784-30-10.
    activation : str
        Hidden-layer function: "sigmoid" (default), "tanh", "relu", "identity".
    loss : str
        "ce" (softmax + cross-entropy, default), "mse" (sigmoid + ½ squared
        error) or "bce" (sigmoid + binary cross-entropy).
    output : str, optional
        Output function, if not the loss's default (e.g. "identity" with "mse").
    dtype : "float32" (default) or "float64"
    seed : int
        Weights are drawn from N(0, 1/fan_in) with this seed; biases start at 0.
    """

    def __init__(self, sizes, activation="sigmoid", loss="ce", output=None,
                 dtype="float32", seed=0):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must list at least two positive layer widths, got {sizes}")
        self.sizes = sizes
        self.activation = check_activation(activation)
        self.loss = get_loss(loss, output)
        self.dtype = check_dtype(dtype)
        rng = np.random.default_rng(seed)
        self.weights = [
            (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(self.dtype)
            for n_in, n_out in zip(sizes[:-1], sizes[1:])
        ]
        self.biases = [np.zeros(n_out, dtype=self.dtype) for n_out in sizes[1:]]

    @property
    def num_layers(self):
        """Number of weight layers (hidden layers + the output layer)."""
        return len(self.weights)

    @property
    def n_parameters(self):
        """Total number of weights and biases."""
        return sum(w.size + b.size for w, b in zip(self.weights, self.biases))

    def params(self):
        """The parameter arrays in order W¹, b¹, W², b², and so on.

        Updating them in place updates the network.
        """
        out = []
        for w, b in zip(self.weights, self.biases):
            out += [w, b]
        return out

    @classmethod
    def from_arrays(cls, weights, biases, activation="sigmoid", loss="ce", output=None):
        """A network that uses the given arrays (not copied) as its weights and biases.

        ``weights[l]`` has shape (sizes[l], sizes[l + 1]) and ``biases[l]``
        (sizes[l + 1],), all of one float dtype, which becomes the network's.
        """
        weights, biases = list(weights), list(biases)
        if not weights or len(weights) != len(biases):
            raise ValueError(f"need one bias vector per weight matrix, got {len(weights)} "
                             f"weight matrices and {len(biases)} bias vectors")
        sizes = [weights[0].shape[0]] + [w.shape[1] for w in weights]
        for l, (w, b) in enumerate(zip(weights, biases)):
            if w.shape != (sizes[l], sizes[l + 1]) or b.shape != (sizes[l + 1],):
                raise ValueError(f"layer {l + 1}: weights {w.shape} and biases {b.shape} do not "
                                 f"chain as a {'-'.join(map(str, sizes))} network")
        net = cls.__new__(cls)
        net.sizes = sizes
        net.activation = check_activation(activation)
        net.loss = get_loss(loss, output)
        net.dtype = check_dtype(weights[0].dtype)
        if any(a.dtype != net.dtype for a in weights + biases):
            raise ValueError("weights and biases must all have one dtype")
        net.weights, net.biases = weights, biases
        return net

    def copy(self):
        """An independent copy of this network (same architecture, copied arrays)."""
        return Network.from_arrays([w.copy() for w in self.weights],
                                   [b.copy() for b in self.biases], self.activation, self.loss)

    def astype(self, dtype):
        """An independent copy of this network whose parameters and arithmetic use ``dtype``."""
        new = self.copy()
        new.dtype = check_dtype(dtype)
        new.weights = [w.astype(new.dtype) for w in self.weights]
        new.biases = [b.astype(new.dtype) for b in self.biases]
        return new

    def config(self):
        """The architecture as plain data (what a saved model's header records)."""
        return {"sizes": self.sizes, "activation": self.activation,
                "loss": self.loss.name, "output": self.loss.output,
                "dtype": self.dtype.name}

    def dropout_masks(self, n, rates, rng):
        """Inverted-dropout masks for a batch of ``n`` rows, to pass to :meth:`forward`.

        ``rates[l]`` is the probability of dropping each unit of layer l's
        input (``rates[0]``: the input features, ``rates[l]``: hidden layer
        l's outputs), one rate per weight layer. Mask l is an ``(n,
        sizes[l])`` array of 0 (dropped, probability p) and 1/(1 − p) (kept),
        drawn from the NumPy Generator ``rng``; it is None where p = 0.
        """
        if len(rates) != self.num_layers:
            raise ValueError(f"dropout needs one rate per weight layer ({self.num_layers}), "
                             f"got {len(rates)}")
        masks = []
        for width, p in zip(self.sizes[:-1], rates):
            if not 0 <= p < 1:
                raise ValueError(f"dropout rates must be in [0, 1), got {p!r}")
            if p == 0:
                masks.append(None)
                continue
            keep = rng.random((n, width)) >= p
            masks.append(keep.astype(self.dtype) / self.dtype.type(1 - p))
        return masks

    # ----------------------------------------------------------------- forward
    def forward(self, X, dropout_masks=None):
        """Run a batch through the network, keeping what backpropagation needs.

        Returns ``(zs, activations)``: ``zs[l]`` is layer l's pre-activation and
        ``activations[l]`` its input (``activations[0]`` is X and
        ``activations[-1]`` the output ŷ). With ``dropout_masks`` (see
        :meth:`dropout_masks`) layer l computes ``(activations[l] ⊙ mask[l]) · W + b``;
        ``activations`` keeps the values before masking.
        """
        f = ACTIVATIONS[self.activation]
        # a scipy.sparse X stays sparse: SciPy's products then skip its zeros
        a = X.astype(self.dtype, copy=False) if issparse(X) else np.asarray(X, dtype=self.dtype)
        activations = [a]
        zs = []
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = _masked(a, dropout_masks, l) @ w + b
            a = self.loss.activate(z) if l == self.num_layers - 1 else f(z)
            zs.append(z)
            activations.append(a)
        return zs, activations

    def feedforward(self, X):
        """The output ŷ for a batch X (no intermediate values kept)."""
        return self.forward(X)[1][-1]

    # ---------------------------------------------------------------- backward
    def backward(self, zs, activations, Y, sample_weight=None, dropout_masks=None):
        """Backpropagate from the output error to every layer's gradient.

        Returns ``(nabla_w, nabla_b)``, the gradients of the batch-averaged
        loss with respect to each weight matrix and bias vector. Pass the
        same ``dropout_masks`` as to :meth:`forward`; ``sample_weight``
        weights the rows of the loss (see :mod:`mlp.losses`).
        """
        fprime = DERIVATIVES[self.activation]
        nabla_w = [None] * self.num_layers
        nabla_b = [None] * self.num_layers
        delta = self.loss.delta(zs[-1], activations[-1], Y, sample_weight)   # δᴸ
        for l in range(self.num_layers - 1, -1, -1):
            a_in = _masked(activations[l], dropout_masks, l)       # aˡ⁻¹ (⊙ mˡ⁻¹)
            nabla_w[l] = a_in.T @ delta                            # aˡ⁻¹ᵀ · δˡ
            nabla_b[l] = delta.sum(axis=0)                         # Σ δˡ
            if l > 0:
                upstream = delta @ self.weights[l].T               # δˡ · Wˡᵀ
                upstream = _masked(upstream, dropout_masks, l)     # (⊙ mˡ⁻¹)
                delta = upstream * fprime(zs[l - 1], activations[l])  # ⊙ f'(zˡ⁻¹)
        return nabla_w, nabla_b

    def loss_and_gradients(self, X, Y, weight_decay=0.0, sample_weight=None,
                           dropout_masks=None):
        """Loss and gradients of ``mean-loss + (λ/2) Σ‖W‖²`` on the batch (X, Y).

        ``Y`` holds the targets as a 2-D array (one-hot rows for
        classification, see :func:`mlp.losses.one_hot`). Biases are not decayed.
        Optional: ``sample_weight`` (one weight per row: the mean loss becomes
        (1/n) Σ wᵢ lᵢ) and ``dropout_masks`` (from :meth:`dropout_masks`).
        """
        zs, activations = self.forward(X, dropout_masks)
        Y = np.asarray(Y, dtype=self.dtype)
        loss = self.loss.value(zs[-1], activations[-1], Y, sample_weight)
        nabla_w, nabla_b = self.backward(zs, activations, Y, sample_weight, dropout_masks)
        loss, nabla_w = with_weight_decay(self.weights, loss, nabla_w, weight_decay)
        return loss, nabla_w, nabla_b

    def cost(self, X, Y, weight_decay=0.0, sample_weight=None, dropout_masks=None):
        """The batch-averaged loss, plus the L2 penalty when ``weight_decay`` > 0.

        ``sample_weight`` and ``dropout_masks`` as in :meth:`loss_and_gradients`.
        """
        zs, activations = self.forward(X, dropout_masks)
        loss = self.loss.value(zs[-1], activations[-1], np.asarray(Y, dtype=self.dtype),
                               sample_weight)
        return loss + (l2_penalty(self.weights, weight_decay) if weight_decay else 0.0)

    def predict(self, X):
        """The most probable class of each row of X."""
        return self.feedforward(X).argmax(axis=1)


def _masked(a, dropout_masks, l):
    """``a ⊙ dropout_masks[l]``, or ``a`` itself when there is no mask for layer l."""
    if dropout_masks is None or dropout_masks[l] is None:
        return a
    if issparse(a):                  # (for a scipy.sparse matrix, * is the matrix product)
        return a.multiply(dropout_masks[l]).tocsr()
    return a * dropout_masks[l]


def l2_penalty(weights, weight_decay):
    """(λ/2) Σ ‖W‖² over the weight matrices (biases excluded)."""
    return 0.5 * weight_decay * sum(float((w.astype(np.float64) ** 2).sum()) for w in weights)


def with_weight_decay(weights, loss, nabla_w, weight_decay):
    """(loss + (λ/2) Σ‖W‖², [∇W + λW]): the L2 penalty added to a loss and its weight gradients.

    Returns the inputs unchanged when λ = 0.
    """
    if not weight_decay:
        return loss, nabla_w
    lam = weights[0].dtype.type(weight_decay)
    return (loss + l2_penalty(weights, weight_decay),
            [g + lam * w for g, w in zip(nabla_w, weights)])
