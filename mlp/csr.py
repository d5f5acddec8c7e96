"""Sparse input: scipy.sparse matrices as mlp takes them.

Any scipy.sparse matrix or array X becomes CSR (compressed sparse rows) in
the network's float dtype, in canonical form: each row's column indices
increasing and unique. That is the order in which the Numba kernels read a
row's non-zeros (:func:`mlp.kernels.gather_csr`), and the NumPy reference
multiplies it with SciPy's sparse products (:meth:`mlp.network.Network.forward`).

SciPy is not imported here: a sparse X means scipy.sparse is loaded already,
and ``python -m mlp.train`` (which reads this module through the Numba
backend) does not pay for loading it (docs/performance.md, "What the
deferred imports cost").
"""

import sys

import numpy as np

#: scikit-learn's ``accept_sparse``: the formats the estimators take (others are converted)
ACCEPTED_FORMATS = ("csr", "csc", "coo")


class SparseInputTags:
    """Mixin of the estimators: scikit-learn's tag that they take sparse X (its
    ``check_estimator`` then fits them on sparse matrices too)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def issparse(X):
    """Whether X is a scipy.sparse matrix or array (never, while scipy.sparse is not loaded)."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(X)


def as_csr(X, dtype):
    """X as a canonical CSR matrix of ``dtype`` (a copy only where X is not one already)."""
    X = X.tocsr() if X.format != "csr" else X
    if X.dtype != dtype:
        X = X.astype(dtype)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()           # sorts each row's indices too
    if X.indices.dtype != np.int32 and max(X.nnz, *X.shape) < 2**31:
        # one index type for the kernels: each other one would compile them again
        arrays = (X.data, X.indices.astype(np.int32), X.indptr.astype(np.int32))
        X = sys.modules["scipy.sparse"].csr_matrix(arrays, shape=X.shape)
    return X


def as_input(X, dtype):
    """Training or prediction input in ``dtype``: canonical CSR if X is sparse, else a
    C-contiguous, writeable array (Numba compiles its kernels anew for read-only arrays,
    e.g. a memmap, which is slower than the copy)."""
    if issparse(X):
        return as_csr(X, dtype)
    X = np.ascontiguousarray(X, dtype=dtype)
    return X if X.flags.writeable else X.copy()


def max_row_nnz(X):
    """The most stored entries of any row of the CSR matrix X (0 for no rows)."""
    return int(np.diff(X.indptr).max(initial=0))
