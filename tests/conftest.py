"""Shared pytest fixtures."""

import os
import pathlib

import pytest

from mlp.data import _missing_files, find_mnist_dir
from mlp.errors import DataError


def pytest_xdist_auto_num_workers(config):
    """Workers for ``pytest -n auto``: one per core, at most 4.

    Each worker loads (or, on a cold cache, compiles) the Numba kernels and holds
    about 400 MB while it does, and the Numba tests already run on two threads:
    more workers than that only add memory.
    """
    return max(1, min(4, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def mnist_dir():
    """Absolute path of the folder holding the real MNIST files, or skip.

    Found like the loader finds it (MLP_DATA_DIR, data/mnist, ...), falling
    back to the shared copy at ../shared/data/mnist next to the project root.
    """
    try:
        return find_mnist_dir()
    except DataError as e:
        reason = str(e)
    shared = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    if shared.is_dir() and not _missing_files(shared):
        return shared
    message = f"MNIST files not found; set MLP_DATA_DIR to the folder holding them. {reason}"
    if os.environ.get("CI"):      # CI always has the files: their absence is a failure there
        pytest.fail(message)
    pytest.skip(message)
