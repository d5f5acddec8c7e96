"""Compiling the kernels before a run, in child processes on a cold Numba cache (mlp.precompile)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("numba", reason="numba is not installed: there is nothing to compile")

from numba import njit  # noqa: E402

import mlp.kernels as K  # noqa: E402
from mlp import compile_notice, precompile  # noqa: E402
from mlp.data import SHAPES, load_digits  # noqa: E402
from mlp.precompile import CompileRefused, refuse_compiling  # noqa: E402

SPEC = precompile.make_spec([64, 16, 10], "sigmoid", "ce", dtype="float32", optimizer="sgd",
                            batch_size=8)


def test_refusing_to_compile_leaves_the_function_usable():
    @njit
    def plus_one(x):
        return x + 1

    with pytest.raises(CompileRefused, match="plus_one is not in Numba's cache"):
        with refuse_compiling(__name__):
            plus_one(1)
    assert plus_one.signatures == []            # nothing half-compiled was kept
    with refuse_compiling("some.other.module"):
        assert plus_one(1) == 2                 # only the named module is refused
    assert plus_one(2.5) == 3.5


@njit
def _inner(x):
    return x * 2


@njit
def _outer(x):
    return _inner(x) + 1


def test_compile_callees_compiles_what_a_kernel_calls_and_not_the_kernel():
    assert precompile.compile_callees(_outer, (3,)) == []
    assert len(_inner.signatures) == 1 and _outer.signatures == []
    assert _outer(3) == 7 and len(_outer.signatures) == 1
    # the same with a spent budget: nothing starts compiling, and the names say what is left
    @njit
    def inner(x):
        return x - 1

    @njit
    def outer(x):
        return inner(x) * 3
    assert precompile.compile_callees(outer, (2.5,), budget_mb=-1) == ["inner"]
    assert inner.signatures == [] and outer.signatures == []
    assert outer(2.5) == 4.5


def test_looks_compiled_finds_numbas_own_index_files():
    """The names and folders precompile computes are those Numba writes.

    Checked against Numba itself.
    """
    from mlp.precompile import prepare_spec
    prepare_spec(SPEC)                           # compiles or loads train_chunk and predict
    assert precompile.looks_compiled()
    for name in precompile.ENTRY_POINTS:
        folder = getattr(K, name).stats.cache_path
        assert folder in precompile._numba_cache_dirs(K.__file__)
        assert os.path.exists(os.path.join(folder, precompile._index_name(K.__file__, name)))


def _write_index(path, version, stamp):
    """A cache index as Numba writes one: its version, then (source stamp, overloads)."""
    import pickle
    with open(path, "wb") as f:
        pickle.dump(version, f, protocol=-1)
        f.write(pickle.dumps((stamp, {("sig", object): "kernels.x-1.py311.1.nbc"}), protocol=-1))


def test_looks_compiled_wants_every_index_valid_for_this_source(tmp_path, monkeypatch):
    """An index counts when Numba would use it: its Numba version, and the source's SHA-256
    (Numba ≥ 0.62) or (mtime, size) (earlier). The source rewritten unchanged with a new
    mtime (a checkout, a reinstall) keeps it valid: the file-time test took that for stale,
    and every run then started the compile children."""
    import hashlib
    from importlib.metadata import version
    source = tmp_path / "pkg" / "kernels.py"
    source.parent.mkdir()
    source.write_text("import x\n\n@decorate()\n@twice\ndef train_chunk(a):\n    pass\n\n"
                      "@decorate()\ndef predict(a):\n    pass\n")
    assert precompile._first_line(source, "train_chunk") == 3
    assert precompile._first_line(source, "predict") == 8
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    (folder,) = precompile._numba_cache_dirs(source)
    os.makedirs(folder)
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}{sys.abiflags}"
    index = {name: os.path.join(folder, f"kernels.{name}-{line}.{tag}.nbi")
             for name, line in [("train_chunk", 3), ("predict", 8)]}
    numba_version = version("numba")
    digest = hashlib.sha256(source.read_bytes()).digest()
    assert not precompile.looks_compiled(source)
    _write_index(index["train_chunk"], numba_version, digest)
    assert not precompile.looks_compiled(source)           # predict's is missing
    _write_index(index["predict"], numba_version, digest)
    assert precompile.looks_compiled(source)
    stamp = os.stat(source).st_mtime
    os.utime(source, (stamp + 100, stamp + 100))            # rewritten unchanged: still valid
    assert precompile.looks_compiled(source)
    _write_index(index["predict"], "0.1.0", digest)         # another Numba's
    assert not precompile.looks_compiled(source)
    st = os.stat(source)
    _write_index(index["predict"], numba_version, (st.st_mtime, st.st_size))  # older Numbas
    assert precompile.looks_compiled(source)
    source.write_text(source.read_text() + "# changed\n")
    assert not precompile.looks_compiled(source)           # neither stamp matches now
    _write_index(index["train_chunk"], numba_version, hashlib.sha256(source.read_bytes()).digest())
    with open(index["predict"], "wb") as f:
        f.write(b"not a pickle")
    assert not precompile.looks_compiled(source)           # unreadable: as if missing


def test_when_kernels_are_missing_children_compile_them_and_else_this_process(monkeypatch):
    """Missing kernels are compiled by children, else by this process.

    Looks cold: children first. Then Numba's exact check; a miss there:
    children again, then here.
    """
    import contextlib

    @contextlib.contextmanager
    def refuse(module):
        raise CompileRefused(f"{module}.train_chunk is not in Numba's cache")
        yield

    calls = []
    monkeypatch.setattr(precompile, "refuse_compiling", refuse)
    monkeypatch.setattr(precompile, "looks_compiled", lambda *a, **k: False)
    monkeypatch.setattr(
        precompile, "compile_in_child",
        lambda spec, part, threads=None: calls.append((spec, part, threads)) or False)
    # the children "failed": compiled (or loaded) here
    assert precompile.compile_ahead(SPEC) > 0
    assert calls == [(SPEC, "train-callees", None), (SPEC, "train-callees", None),
                     (SPEC, "train", None), (SPEC, "predict", None)] * 2


def test_a_child_runs_this_mlp_with_the_threads_asked_for(monkeypatch):
    seen = {}

    def run(argv, env, **kw):
        seen.update(argv=argv, env=env)
        return subprocess.CompletedProcess(argv, 3)
    monkeypatch.setattr(precompile.subprocess, "run", run)
    monkeypatch.setenv("PYTHONPATH", "elsewhere")
    assert precompile.compile_in_child(SPEC, "predict", threads=3) is False   # exit status 3
    assert seen["argv"][:3] == [sys.executable, "-m", "mlp.precompile"]
    assert json.loads(seen["argv"][3]) == SPEC and seen["argv"][4] == "predict"
    root = os.path.dirname(os.path.dirname(precompile.__file__))
    assert seen["env"]["PYTHONPATH"].split(os.pathsep) == [root, "elsewhere"]
    assert seen["env"]["NUMBA_NUM_THREADS"] == seen["env"]["OPENBLAS_NUM_THREADS"] == "3"


def test_the_child_entry_point_refuses_bad_arguments(capsys):
    assert precompile.main([json.dumps(SPEC), "everything"]) == 2
    usage = "usage: python -m mlp.precompile SPEC {train-callees,train,predict}"
    assert usage in capsys.readouterr().err
    assert precompile.main(['{"sizes": [4, 2], "colour": "red"}', "train"]) == 2
    err = capsys.readouterr().err
    assert "bad SPEC" in err and "colour" in err and "usage" in err
    assert precompile.main(["{not json", "predict"]) == 2
    assert "bad SPEC" in capsys.readouterr().err
    assert precompile.main(['{"sizes": [4, 2], "activation": "swish"}', "train"]) == 2
    assert "swish" in capsys.readouterr().err


def test_the_spec_names_the_optimizer_whose_kernel_is_compiled(capsys):
    """Each optimizer has its own training kernel (mlp.kernels.train_chunk_for): the spec says
    which one the children compile and the cache must hold."""
    adam = precompile.make_spec([784, 256, 10], optimizer="adam", batch_size=48)
    assert precompile.entry_points(adam) == ("train_chunk_adam", "predict")
    assert precompile.entry_points(SPEC) == ("train_chunk", "predict") == precompile.ENTRY_POINTS
    assert precompile.main(['{"sizes": [4, 2], "optimizer": "rmsprop"}', "train"]) == 2
    err = capsys.readouterr().err
    assert "bad SPEC" in err and "rmsprop" in err and "adam" in err


def test_mlp_train_asks_for_the_kernel_of_its_optimizer(monkeypatch):
    from mlp import train
    specs = []
    monkeypatch.setattr(precompile, "compile_ahead", lambda spec, threads: specs.append(spec))
    for argv in ([], ["--optimizer", "adamw"], ["--optimizer", "sgd"]):
        train.compile_ahead(train.parse_args(["--dataset", "digits", *argv]))
    assert [s["optimizer"] for s in specs] == ["adam", "adam", "sgd"]
    assert specs[0]["sizes"] == [SHAPES["digits"][0], *train.DEFAULTS["hidden"],
                                 SHAPES["digits"][1]]


def test_the_spec_of_a_dataset_matches_the_data():
    data = load_digits()
    assert SHAPES["digits"] == (data.X_train.shape[1], data.n_classes)
    assert data.X_train.dtype == np.uint8           # the type compile_ahead compiles for


def test_mnist_shape(mnist_dir):
    from mlp.data import load_mnist
    data = load_mnist(mnist_dir)
    assert SHAPES["mnist"] == (data.X_train.shape[1], data.n_classes)
    assert data.X_train.dtype == np.uint8


def test_a_cold_cache_is_compiled_in_children_only(tmp_path):
    """On an empty Numba cache nothing is compiled in the calling process; a second call loads."""
    script = textwrap.dedent("""
        import json, resource, sys
        from numba.core import event
        compiled = []
        class Record(event.Listener):
            def on_start(self, e):
                compiled.append(e.data["dispatcher"].py_func.__module__)
            def on_end(self, e):
                pass
        event.register("numba:compile", Record())
        from mlp import precompile
        spec = json.loads(sys.argv[1])
        looked = precompile.looks_compiled()
        precompile.compile_ahead(spec)
        here = compiled.count("mlp.kernels")
        import numpy as np
        from mlp.network import Network
        from mlp.numba_backend import NumbaBackend
        net = Network(spec["sizes"], dtype=spec["dtype"])
        X = (np.arange(40 * 64).reshape(40, 64) % 7 == 0).astype(np.uint8) * 200
        out = NumbaBackend().predict_output(net, X, 1 / 255)
        ref = net.feedforward(X * np.float32(1 / 255))
        print(json.dumps(dict(looked=looked, after_looks=precompile.looks_compiled(),
                              here=here, after=compiled.count("mlp.kernels"),
                              error=float(np.abs(out - ref).max()))))
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    r = subprocess.run([sys.executable, "-c", script, json.dumps(SPEC)], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.splitlines()[-1])
    assert result["looked"] is False and result["after_looks"] is True
    assert result["here"] == 0 and result["after"] == 0       # children compiled everything
    assert result["error"] < 1e-5
    assert r.stderr.count(compile_notice.MESSAGE) == 1, r.stderr     # said once, before
    again = subprocess.run([sys.executable, "-c", script, json.dumps(SPEC)], capture_output=True,
                           text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout.splitlines()[-1])
    assert second["looked"] is True and second["here"] == 0 and second["error"] < 1e-5
    assert compile_notice.MESSAGE not in again.stderr                  # nothing to compile
