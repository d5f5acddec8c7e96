"""Compile the Numba kernels before a training run, in child processes when Numba's cache is cold.

Numba never gives back the memory it used to compile (numba/numba#5976):
compiling mlp's kernels takes memory that stays taken until the process
ends (docs/performance.md has the figures). A process that finds them in
Numba's on-disk cache only loads their machine code. So when the cache is
cold (the first run on a machine, or after mlp, Numba or Python changed),
``python -m mlp.train`` first runs four short-lived children
(``python -m mlp.precompile``, :data:`STEPS`), each writing what it compiled
to the cache and exiting: two compile the kernels that ``train_chunk``
calls (:func:`compile_callees`), the next ``train_chunk`` itself (loading
those from the cache), the last the kernels of prediction; the training
process then loads them from there. No child holds the compiler memory of
all of training: ``train_chunk`` with its callees was the largest process
of a cold run (docs/performance.md).

This module does not import Numba, so that the training process is still
small while a child compiles: :func:`looks_compiled` checks for Numba's
index files where Numba keeps them for :mod:`mlp.kernels` (see
``numba.core.caching``). Both ways of being wrong are safe: a cache taken
for cold costs the children's start-up (they then only load); a cache
taken for warm is checked exactly by :func:`load_kernels`, which runs the
children itself should anything be missing (this process then holds Numba
already while they compile).
"""

import contextlib
import hashlib
import importlib.metadata
import io
import json
import os
import pickle
import subprocess
import sys
import time

import numpy as np

from .compile_notice import Ticker, quiet
from .network import Network
from .optimizers import OPTIMIZERS

#: the kernels of training, and those of prediction (one child each): the
#: ``parts`` of :meth:`mlp.numba_backend.NumbaBackend.prepare`
PARTS = ("train", "predict")
#: the compiled functions that a run calls from Python, one per part (SGD's training kernel;
#: Adam's is ``train_chunk_adam``: :func:`entry_points`)
ENTRY_POINTS = ("train_chunk", "predict")
#: the child that compiles the kernels train_chunk calls, but not train_chunk
CALLEES = "train-callees"
#: what the children of a cold compile do, one child each, in this order. Two children of
#: CALLEES: each stops at its :data:`CALLEES_MB`, the second goes on where the first stopped
#: (with one, the kernels past the first's budget fell to train_chunk's child, which then
#: peaked at 407 MB: docs/performance.md, session 8)
STEPS = (CALLEES, CALLEES, *PARTS)

_KERNELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels.py")


def _numba_cache_dirs(source):
    """The folders where Numba may keep the cache of functions in ``source``, in its own order.

    NUMBA_CACHE_DIR if set; else ``__pycache__`` beside the file or, where
    that is not writable, Numba's user-wide cache folder (both are listed).
    """
    folder = os.path.dirname(os.path.abspath(source))
    subpath = "_".join([os.path.basename(folder), hashlib.sha1(folder.encode()).hexdigest()])
    if os.environ.get("NUMBA_CACHE_DIR"):
        return [os.path.join(os.environ["NUMBA_CACHE_DIR"], subpath)]
    user = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                        "numba", subpath)
    return [os.path.join(folder, "__pycache__"), user]


def _first_line(source, name):
    """The line number Python gives a decorated function ``name`` of ``source``.

    That is the line of its first decorator.
    """
    with open(source, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"def {name}("):
            while i > 0 and lines[i - 1].startswith("@"):
                i -= 1
            return i + 1
    raise LookupError(f"no function {name} in {source}")


def _index_name(source, name):
    """The file name of Numba's cache index for function ``name`` of ``source``."""
    module = os.path.splitext(os.path.basename(source))[0]
    return (f"{module}.{name}-{_first_line(source, name)}"
            f".py{sys.version_info[0]}{sys.version_info[1]}{getattr(sys, 'abiflags', '')}.nbi")


class _Stub:
    """Stands for every class named in a Numba cache index read by :func:`_index_header`."""

    def __init__(self, *args, **kwargs):   # (so object.__new__ also takes any arguments)
        pass

    def __setstate__(self, state):
        pass


class _WithoutImports(pickle.Unpickler):
    """An unpickler that imports nothing: each class it meets is a :class:`_Stub`."""

    def find_class(self, module, name):
        return _Stub


def _index_header(path):
    """(Numba's version, the source stamp) recorded in the cache index ``path``, or None.

    Read without importing Numba: the index is Numba's version, pickled, then
    the pickled pair (stamp, overloads), whose Numba types become stubs.
    """
    try:
        with open(path, "rb") as f:
            version = _WithoutImports(f).load()
            stamp = _WithoutImports(io.BytesIO(f.read())).load()[0]
    except Exception:           # not an index this reader understands: count it as missing
        return None
    return version, stamp


def _fresh(path, source):
    """Whether the cache index ``path`` is valid for ``source`` as Numba judges it.

    Numba keeps an index while its version and the source's stamp are those
    it recorded: the source's SHA-256 (Numba 0.62 and later) or its (mtime,
    size) (earlier). A test of the file times alone took an index for stale
    whenever the source was rewritten unchanged (a checkout, a reinstall):
    every run then started the compile children, which found everything in
    the cache, printed that they were compiling and took seconds to load.
    """
    header = _index_header(path)
    if header is None:
        return False
    version, stamp = header
    try:
        if version != importlib.metadata.version("numba"):
            return False
    except importlib.metadata.PackageNotFoundError:
        return False
    if isinstance(stamp, bytes):
        with open(source, "rb") as f:
            return stamp == hashlib.sha256(f.read()).digest()
    st = os.stat(source)
    return tuple(stamp) == (st.st_mtime, st.st_size)


def looks_compiled(source=_KERNELS, names=ENTRY_POINTS):
    """Whether Numba's cache seems to hold the functions ``names`` of ``source``.

    Checked without importing Numba: True when an index file of each exists
    in a cache folder and is valid for this source and this Numba
    (:func:`_fresh`). (Whether it holds the exact types a run needs, only
    Numba can say.)
    """
    for folder in _numba_cache_dirs(source):
        paths = [os.path.join(folder, _index_name(source, n)) for n in names]
        if all(os.path.exists(p) and _fresh(p, source) for p in paths):
            return True
    return False


def entry_points(spec):
    """:data:`ENTRY_POINTS` of the run ``spec`` (:func:`make_spec`): its optimizer's training
    kernel (:func:`mlp.kernels.train_chunk_for`) and prediction's."""
    return ("train_chunk_adam" if spec["optimizer"] == "adam" else "train_chunk", "predict")


def make_spec(sizes, activation="sigmoid", loss="ce", output=None, dtype="float32",
              optimizer="sgd", batch_size=32):
    """A training run as the kernels' types see it, in JSON-able values.

    The network (the arguments of :class:`mlp.network.Network`), the
    optimizer's name (a key of :data:`mlp.optimizers.OPTIMIZERS`: its kernels
    are compiled: :func:`mlp.kernels.train_chunk_for`) and the batch
    size; the kernels' types depend on the depth, dtype and optimizer only.
    """
    return dict(sizes=[int(s) for s in sizes], activation=str(activation), loss=str(loss),
                output=None if output is None else str(output), dtype=str(np.dtype(dtype)),
                optimizer=str(optimizer), batch_size=int(batch_size))


def compile_in_child(spec, part, threads=None):
    """Compile (or load) the kernels of ``part`` (one of :data:`STEPS`) for ``spec`` in a child
    Python; True on success.

    The child is this interpreter running this ``mlp`` (its folder goes first
    on PYTHONPATH), with this environment (so the same NUMBA_CACHE_DIR), on
    at most ``threads`` threads if given. Its output is discarded: should it
    fail, the training process compiles the kernels itself, and any error
    shows up there.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    if threads:
        for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(int(threads))
    done = subprocess.run([sys.executable, "-m", "mlp.precompile", json.dumps(spec), part],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return done.returncode == 0


def compile_in_children(spec, threads=None):
    """:func:`compile_in_child` for each of :data:`STEPS` in turn; True if all succeeded.

    One child per step: none holds another's compiler memory.
    """
    return all([compile_in_child(spec, step, threads) for step in STEPS])


def compile_ahead(spec, threads=None):
    """Have the kernels for ``spec`` in Numba's cache and loaded in this process; returns seconds.

    ``spec``: from :func:`make_spec`; ``threads``: as ``--threads`` (None:
    all cores). On a cache that looks cold, the children compile first,
    before this process imports Numba.
    """
    t0 = time.perf_counter()
    if not looks_compiled(names=entry_points(spec)):
        with Ticker():
            compile_in_children(spec, threads)
    from .backends import set_threads  # imports Numba: only now that the children are done
    set_threads(threads)
    load_kernels(spec, threads)
    return time.perf_counter() - t0


def load_kernels(spec, threads=None):
    """Load the kernels of a training run of ``spec`` (:func:`make_spec`); return seconds.

    From Numba's cache when it holds them for these types. When it does not,
    child processes compile them into it first (``threads`` theirs, None
    for all cores): Numba never gives back the memory it compiles with
    (numba/numba#5976), and this process would keep it for the whole run.
    Should the children fail, the kernels are compiled here as usual, and
    any error shows up here.
    """
    from . import kernels  # imports Numba: only once the children have had their turn
    t0 = time.perf_counter()
    try:
        with quiet(), refuse_compiling(kernels.__name__):    # quiet: nothing compiles here
            prepare_spec(spec)
    except CompileRefused:
        with Ticker():
            compile_in_children(spec, threads)
        prepare_spec(spec)
    return time.perf_counter() - t0


class CompileRefused(RuntimeError):
    """A function was about to be compiled inside :func:`refuse_compiling`."""


def refuse_compiling(module, when=None, refused=None):
    """A context in which compiling any Numba function of ``module`` raises :class:`CompileRefused`.

    Only while ``when()`` is true, if given; each refused function's name is
    appended to the list ``refused``, if given. Loading from Numba's cache
    goes on as usual: Numba announces a compilation (the "numba:compile"
    event) only on a cache miss, before it starts, so nothing is left half
    done and a later call compiles normally.
    """
    from numba.core import event  # Numba's internals, imported only where they are used

    class Refuse(event.Listener):
        def on_start(self, e):
            fn = e.data["dispatcher"].py_func
            if fn.__module__ == module and (when is None or when()):
                if refused is not None:
                    refused.append(fn.__name__)
                raise CompileRefused(f"{module}.{fn.__name__} is not in Numba's cache")

        def on_end(self, e):
            pass
    return event.install_listener("numba:compile", Refuse())


_TYPE_ONLY = []     # the compiler class of compile_callees, made once (Numba registers its pass)


def _type_only_compiler():
    """A Numba compiler class that runs a function's untyped and typed passes, then stops.

    Typing a call to another kernel compiles that kernel (and caches it); the
    function itself is never lowered, so nothing of it is compiled or cached.
    """
    from numba.core import compiler, compiler_machinery  # Numba's internals: only in a child
    if not _TYPE_ONLY:
        @compiler_machinery.register_pass(mutates_CFG=False, analysis_only=True)
        class MlpStopBeforeLowering(compiler_machinery.FunctionPass):
            _name = "mlp_stop_before_lowering"

            def __init__(self):
                compiler_machinery.FunctionPass.__init__(self)

            def run_pass(self, state):
                raise compiler._EarlyPipelineCompletion(True)

        class TypeOnly(compiler.CompilerBase):
            def define_pipelines(self):
                build = compiler.DefaultPassBuilder
                pm = build.define_untyped_pipeline(self.state, "mlp type only")
                pm.passes.extend(build.define_typed_pipeline(self.state).passes)
                pm.add_pass(MlpStopBeforeLowering, "stop before lowering")
                pm.finalize()
                return [pm]
        _TYPE_ONLY.append(TypeOnly)
    return _TYPE_ONLY[0]


def _peak_mb():
    """This process's peak resident memory so far, in MB."""
    import resource  # not on Windows: only where compile_callees runs, in a child

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10     # bytes there, else kB


def compile_callees(kernel, args, budget_mb=None):
    """Compile kernels that Numba dispatcher ``kernel`` calls for ``args``, but not ``kernel``.

    Each goes to Numba's cache (they are ``cache=True``) with the exact types
    that compiling ``kernel`` for these ``args`` gives it, so ``kernel``'s own
    compile, in another process, loads them and compiles only what is left.
    Numba never frees what it compiled (numba/numba#5976): with ``budget_mb``,
    no further kernel starts compiling once this process's peak memory has
    grown by that much, and the rest is left to ``kernel``'s process, so that
    the two share the compiler memory. Returns the names of the kernels left.
    """
    from numba.core import compiler  # Numba's internals: only in a child
    from numba.core.compiler_lock import global_compiler_lock  # the same
    flags = compiler.Flags()
    kernel.targetdescr.options.parse_as_flags(flags, kernel.targetoptions)
    types = tuple(kernel.typeof_pyval(a) for a in args)
    start, refused = _peak_mb(), []
    def spent():
        return budget_mb is not None and _peak_mb() - start > budget_mb
    with global_compiler_lock, refuse_compiling(kernel.py_func.__module__, spent, refused):
        kernel.targetdescr.typing_context.refresh()
        kernel.targetdescr.target_context.refresh()
        try:
            compiler.compile_extra(kernel.targetdescr.typing_context,
                                   kernel.targetdescr.target_context, kernel.py_func,
                                   args=types, return_type=None, flags=flags, locals={},
                                   pipeline_class=_type_only_compiler())
        except Exception:
            if not refused:      # a real error: kernel's own compile will show it
                raise
    return refused


#: the child of :data:`CALLEES` starts no kernel once it has grown by this many MB; the child of
#: "train" compiles the rest with train_chunk (measured: docs/performance.md)
CALLEES_MB = 170


@contextlib.contextmanager
def callees_only(module, name, budget_mb=None):
    """A context in which calling kernel ``module.name`` only compiles what it calls.

    The call computes nothing (:func:`compile_callees` with ``budget_mb``).
    """
    kernel = getattr(module, name)
    setattr(module, name, lambda *args: compile_callees(kernel, args, budget_mb))
    try:
        yield
    finally:
        setattr(module, name, kernel)


def prepare_step(spec, step):
    """What the child of ``step`` (one of :data:`STEPS`) does for the training run ``spec``."""
    if step != CALLEES:
        return prepare_spec(spec, (step,))
    from . import kernels  # imports Numba: only in a child or after the children
    with callees_only(kernels, entry_points(spec)[0], CALLEES_MB):
        return prepare_spec(spec, ("train",))


def prepare_spec(spec, parts=PARTS):
    """:meth:`NumbaBackend.prepare` (of ``parts``) for the training run ``spec`` describes.

    That is, for a network, an optimizer and uint8 data as ``spec``
    describes them. ``spec``: from :func:`make_spec`.
    """
    from .numba_backend import NumbaBackend  # imports Numba: only in a child or after the children
    net = Network(spec["sizes"], spec["activation"], spec["loss"], spec["output"],
                  dtype=spec["dtype"])
    if spec["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {spec['optimizer']!r} (known: "
                         f"{', '.join(OPTIMIZERS)})")
    opt = OPTIMIZERS[spec["optimizer"]]()
    n = 2 * spec["batch_size"]
    rng = np.random.default_rng(0)
    X = ((rng.random((n, net.sizes[0])) < 0.2) * 255).astype(np.uint8)   # MNIST-like: sparse
    y = np.arange(n, dtype=np.int64) % net.sizes[-1]
    return NumbaBackend().prepare(net, opt, X, y, spec["batch_size"], 1 / 255, parts)


def main(argv=None):
    """``python -m mlp.precompile SPEC STEP``: compile (or load) STEP's kernels for a JSON SPEC."""
    argv = sys.argv[1:] if argv is None else argv
    usage = (f"usage: python -m mlp.precompile SPEC {{{','.join(dict.fromkeys(STEPS))}}}\n"
             f"SPEC: a JSON object with the keys of mlp.precompile.make_spec, e.g.\n"
             f"{json.dumps(make_spec([784, 256, 10]))}")
    try:
        spec = make_spec(**json.loads(argv[0])) if len(argv) == 2 and argv[1] in STEPS else None
    except (ValueError, TypeError) as e:
        print(f"error: bad SPEC ({e})", file=sys.stderr)
        spec = None
    if spec is None:
        print(usage, file=sys.stderr)
        return 2
    try:
        prepare_step(spec, argv[1])
    except ValueError as e:              # a setting the network or optimizer refuses
        print(f"error: bad SPEC: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
