"""Optional dependencies of the tests: Numba, which the NumPy reference runs without; PyTorch.

A test parametrized over the backends takes :func:`backend_params`: where
Numba is not installed its "numba" instances are still collected and
reported as skipped, with the reason, instead of vanishing from the run.
"""

import importlib.util

import pytest

from mlp.backends import BACKENDS

try:        # imported, not just found: an installed Numba that fails to import is missing too
    import numba  # noqa: F401
    HAVE_NUMBA = True
except ImportError:
    HAVE_NUMBA = False

#: mark for a test (or a parameter) that needs Numba
needs_numba = pytest.mark.skipif(not HAVE_NUMBA,
                                 reason="numba is not installed: the numba backend cannot run")


def backend_params(names=BACKENDS):
    """The backend names as pytest parameters, "numba" marked :data:`needs_numba`."""
    return [pytest.param(name, marks=needs_numba) if name == "numba" else name
            for name in names]


# PyTorch: an independent implementation of Adam to compare with, where installed. Found, not
# imported: importing it takes seconds, which only the tests that use it should pay
HAVE_TORCH = importlib.util.find_spec("torch") is not None

#: mark for a test that compares with PyTorch
needs_torch = pytest.mark.skipif(not HAVE_TORCH,
                                 reason="torch is not installed: no PyTorch to compare with")
