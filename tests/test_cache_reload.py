"""A cached function whose parallel callee came from Numba's cache loads without crashing.

Numba (numba/numba#8578, #4807; fix proposed in PR #9950) records in a
function's cache entry that its code needs the threading layer
(``reload_init``: ``_launch_threads``) only when a parallel callee was
compiled in the same process: a callee loaded from the cache passes nothing
on. In a later process, loading that caller before anything launched the
layer leaves the layer's symbols (``numba_parallel_for``, ``get_num_threads``)
unresolved; MCJIT ignores the failure and leaves *every* external address of
the object at zero, so the first call jumps to address 0 (a segmentation
fault in the CPython wrapper's ``PyArg_UnpackTuple``). train_chunk hit it:
compiled by mlp.precompile's "train" child with its parallel kernels from the
cache, then loaded by the training process. :mod:`mlp.kernels` launches the
layer when imported; this test checks that this is enough.

Three small processes share one fresh cache (a tiny module of its own, not
train_chunk, whose compile takes a minute): (1) compile and cache the parallel
callee; (2) compile the caller with that callee loaded from the cache;
(3) import mlp.kernels, then load the caller from the cache and call it.
"""
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba")

MODULE = textwrap.dedent("""
    import numpy as np
    from numba import njit, prange


    @njit(cache=True, parallel=True)
    def inner(x):
        out = np.empty_like(x)
        for i in prange(x.shape[0]):
            out[i] = 2.0 * x[i]
        return out


    @njit(cache=True)
    def outer(x):
        return inner(x).sum()
""")

STEPS = (
    "import numpy as np, reload_mod; reload_mod.inner(np.ones(4))",
    "import numpy as np, reload_mod; reload_mod.outer(np.ones(4))",
    # the training process: mlp.kernels imported first, then a cached function loaded
    "import mlp.kernels, numpy as np, reload_mod; print(reload_mod.outer(np.ones(4)))",
)


def test_caller_of_a_cached_parallel_callee_loads_from_the_cache(tmp_path):
    (tmp_path / "reload_mod.py").write_text(MODULE)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(tmp_path), root]))
    for step in STEPS:
        r = subprocess.run([sys.executable, "-c", step], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (step, r.returncode, r.stderr[-2000:])
    assert r.stdout.split() == ["8.0"]
    # the crash needs (2)'s caller in the cache: the test would prove nothing without it
    # (step 3's import of mlp.kernels adds a directory of its own beside reload_mod's,
    # in no fixed listing order: look in all of them)
    cached = [name for _, _, names in os.walk(tmp_path / "cache") for name in names]
    assert any(name.startswith("reload_mod.outer") and name.endswith(".nbc")
               for name in cached), cached
