"""Helpers shared by the benchmark scripts: data, threads, the matmul peak, timing, output.

Run the benchmarks from the project root (``python benchmarks/bench_speed.py``)
with MNIST where :func:`mlp.data.load_mnist` finds it (``MLP_DATA_DIR``).

Numba and SciPy are imported by the functions that use them, not at the top:
``bench_memory.py`` imports this module, and while it measures a training run
its own process must not hold Numba's pages, which the run's proportional set
size would then share with it.
"""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import mlp.data
from mlp.backends import set_threads as mlp_set_threads
from mlp.errors import MLPError

RESULTS = Path(__file__).resolve().parent / "results"

#: the benchmark network: MNIST 784-100-10, sigmoid hidden layer, softmax cross-entropy
SIZES = [784, 100, 10]


def n_parameters(sizes=SIZES):
    """Weights and biases of a fully connected network with these layer widths."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def epoch_flops(n_samples, sizes=SIZES):
    """Dense FLOPs of one training epoch: 6 per sample and parameter (2 forward, 4 backward)."""
    return 6 * n_samples * n_parameters(sizes)


def load_mnist():
    """MNIST through mlp.data: uint8 images, int64 labels, scale 1/255.

    Exits with a hint where the files are missing.
    """
    try:
        return mlp.data.load_mnist()
    except MLPError as e:
        sys.exit(f"error: {e}")


def set_threads(n=None):
    """Use ``n`` threads (default: Numba's default, all cores) in Numba, every BLAS and PyTorch.

    Returns the thread count. SciPy's BLAS, the one ``np.dot`` inside Numba
    calls, is loaded first so that the limit reaches it too.
    """
    import numba  # on use only: see the module docstring
    import scipy.linalg.cython_blas  # noqa: F401  (on use only, as Numba) loaded for the limit
    n = int(n or numba.config.NUMBA_NUM_THREADS)
    mlp_set_threads(n)
    try:
        import torch  # optional: the benchmarks run without PyTorch
        torch.set_num_threads(n)
    except ImportError:
        pass
    return n


def matmul_peak(n=2048, repeats=5):
    """The best float32 matrix-multiply rate NumPy's BLAS reaches here, in GFLOP/s.

    An n×n product counts 2n³ FLOPs.
    """
    rng = np.random.default_rng(0)
    A = rng.random((n, n), dtype=np.float32)
    B = rng.random((n, n), dtype=np.float32)
    C = np.empty_like(A)
    np.dot(A, B, out=C)
    best = min(timed(lambda: np.dot(A, B, out=C)) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def timed(fn):
    """Wall-clock seconds of one call of ``fn``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median(values):
    """The median of a non-empty list (None if it is empty)."""
    return statistics.median(values) if values else None


def machine():
    """What the numbers were measured on."""
    import numba  # on use only: see the module docstring
    info = {"python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "machine": platform.machine(),
            "processor": _cpu_name(), "cpus": os.cpu_count()}
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def _cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_json(result, out, prefix):
    """Write ``result`` to ``out``, or benchmarks/results/<prefix>-<time>.json; return the path."""
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = RESULTS / f"{prefix}-{stamp}.json"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


def markdown_table(header, rows):
    """A GitHub-markdown table from a header and rows of cells."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def torch_available():
    """Whether PyTorch can be imported (checked in a child process, so the caller never loads
    it: PyTorch brings its own OpenMP runtime)."""
    return subprocess.run([sys.executable, "-c", "import torch"],
                          capture_output=True).returncode == 0


def run_worker(script, args, what):
    """Run ``script --worker args…`` in a child process and return the JSON dict it prints
    last; exit naming ``what`` with the child's stderr if it fails.

    Each measurement runs in a fresh process so that no framework's thread pools or OpenMP
    runtime run beside another's.
    """
    cmd = [sys.executable, str(Path(script).resolve()), "--worker", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: {what} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])
