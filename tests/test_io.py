"""Model and checkpoint files: round trips, and hostile files that must fail cleanly."""

import functools
import io
import json
import math
import os
import random
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlp.errors import ModelFileError
from mlp.io import (
    FORMAT_VERSION,
    atomic_write_bytes,
    load_checkpoint,
    load_model,
    model_arrays,
    save_checkpoint,
    save_model,
)
from mlp.network import Network
from mlp.optimizers import SGD, Adam


def _net(dtype="float32"):
    net = Network([6, 5, 4, 3], activation="tanh", loss="mse", dtype=dtype, seed=4)
    for b in net.biases:
        b[:] = np.random.default_rng(2).normal(size=b.shape)
    return net


def _write(path, arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_gives_identical_predictions(tmp_path, dtype):
    net = _net(dtype)
    save_model(tmp_path / "model.npz", net, {"dataset": "digits"})
    back, meta = load_model(tmp_path, with_meta=True)       # a folder works too
    assert meta == {"dataset": "digits"}
    assert back.config() == net.config()
    X = np.random.default_rng(0).random((20, 6))
    np.testing.assert_array_equal(back.feedforward(X), net.feedforward(X))
    assert not list(tmp_path.glob("*.tmp"))


def test_model_file_loads_without_pickle(tmp_path):
    save_model(tmp_path / "m.npz", _net())
    with np.load(tmp_path / "m.npz", allow_pickle=False) as npz:
        header = json.loads(npz["header"].tobytes())
    assert header["format_version"] == FORMAT_VERSION
    assert header["sizes"] == [6, 5, 4, 3]


def _broken(tmp_path, change):
    arrays = model_arrays(_net())
    change(arrays)
    return _write(tmp_path / "bad.npz", arrays)


def _header(arrays, **updates):
    h = json.loads(arrays["header"].tobytes())
    h.update(updates)
    arrays["header"] = np.frombuffer(json.dumps(h).encode(), np.uint8)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("W1"), "missing array 'W1'"),
    (lambda a: a.pop("header"), "header"),
    (lambda a: a.__setitem__("W0", np.zeros((5, 6), np.float32)), "shape"),
    (lambda a: a.__setitem__("b2", np.zeros(3, np.float64)), "dtype"),
    (lambda a: a.__setitem__("W0", np.full((6, 5), np.nan, np.float32)), "NaN"),
    (lambda a: _header(a, format_version=FORMAT_VERSION + 1), "newer"),
    (lambda a: _header(a, sizes="many"), "architecture"),
    (lambda a: _header(a, activation="swish"), "architecture"),
    (lambda a: a.__setitem__("header", np.frombuffer(b"{not json", np.uint8)), "JSON"),
    (lambda a: a.__setitem__("header", np.array([{"format": "mlp-model"}], dtype=object)),
     "pickle|refused|header"),
])
def test_hostile_model_files_name_the_file_and_the_problem(tmp_path, change, message):
    path = _broken(tmp_path, change)
    with pytest.raises(ModelFileError, match=message) as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_a_pickle_inside_is_never_executed(tmp_path):
    """An object array would run arbitrary code when unpickled: it must be refused."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    arrays = model_arrays(_net())
    arrays["W0"] = np.array([Evil()], dtype=object)
    path = _write(tmp_path / "evil.npz", arrays)
    with pytest.raises(ModelFileError, match=str(path)):
        load_model(path)
    assert not marker.exists()


# fixed random bytes (not os.urandom): the same tests are collected in every process,
# which pytest-xdist requires of its workers
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", random.Random(0).randbytes(300),
                                     b"\x93NUMPY"],
                         ids=["empty", "zip-garbage", "random", "npy-magic"])
def test_not_an_npz(tmp_path, content):
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="x.npz"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "nope.npz")


_VALID = io.BytesIO()
np.savez(_VALID, **model_arrays(_net()))
_VALID = _VALID.getvalue()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), max_size=6),
       truncate=st.one_of(st.none(), st.integers(0, len(_VALID))))
def test_fuzzed_model_files_load_or_fail_cleanly(tmp_path, cuts, truncate):
    data = bytearray(_VALID)
    for pos, byte in cuts:
        data[pos] = byte
    if truncate is not None:
        data = data[:truncate]
    path = tmp_path / "fuzz.npz"
    path.write_bytes(bytes(data))
    try:
        net = load_model(path)
    except ModelFileError as e:
        assert str(path) in str(e)
    else:
        assert all(np.all(np.isfinite(p)) for p in net.params())


def test_checkpoint_round_trip(tmp_path):
    net = _net()
    opt = SGD(0.1, 0.9, nesterov=True, weight_decay=1e-4)
    opt.init_state(net)
    for v in opt.state_arrays():
        v += 0.5
    state = {"epoch": 2, "position": 7, "batch_losses": [1.0, 0.5]}
    save_checkpoint(tmp_path / "checkpoint.npz", net, opt, state, {"args": {"lr": 0.1}})
    ck = load_checkpoint(tmp_path)
    assert ck["trainer"] == state and ck["config"] == {"args": {"lr": 0.1}}
    assert ck["optimizer"].config() == opt.config()
    for a, b in zip(ck["optimizer"].state_arrays() + ck["net"].params(),
                    opt.state_arrays() + net.params()):
        np.testing.assert_array_equal(a, b)


def test_adam_checkpoint_keeps_both_moments_and_the_step_count(tmp_path):
    net = _net()
    opt = Adam(0.01, 0.8, 0.99, 1e-7, 0.1, decoupled=True, max_norm=2.0,
               schedule={"name": "cosine", "total": 50})
    opt.init_state(net)
    for k, a in enumerate(opt.state_arrays()):
        a += k + 1                                   # every array its own value
    opt.t = 23
    save_checkpoint(tmp_path / "checkpoint.npz", net, opt, {}, {})
    back = load_checkpoint(tmp_path)["optimizer"]
    assert isinstance(back, Adam) and back.config() == opt.config() and back.t == 23
    assert len(back.state_arrays()) == 4 * len(net.weights)
    for a, b in zip(back.state_arrays(), opt.state_arrays()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(back.m_w + back.v_b, opt.m_w + opt.v_b):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_from_before_adam_loads_as_sgd(tmp_path):
    """Written as mlp wrote them before Adam: an optimizer record without name, step count,
    max-norm or schedule, and one velocity V0, V1, … per weight and bias."""
    net, opt = _net(), SGD(0.1, 0.9)
    save_checkpoint(tmp_path / "c.npz", net, opt, {}, {})
    with np.load(tmp_path / "c.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    record = json.loads(arrays["checkpoint"].tobytes())
    record["optimizer"] = {"lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0}
    arrays["checkpoint"] = np.frombuffer(json.dumps(record).encode(), np.uint8)
    _write(tmp_path / "old.npz", arrays)
    back = load_checkpoint(tmp_path / "old.npz")["optimizer"]
    assert isinstance(back, SGD) and back.momentum == 0.9 and back.t == 0
    assert back.max_norm == 0 and back.schedule is None


def test_an_unknown_optimizer_or_missing_moments_are_refused(tmp_path):
    net, opt = _net(), Adam()
    save_checkpoint(tmp_path / "c.npz", net, opt, {}, {})
    with np.load(tmp_path / "c.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    last = f"V{4 * len(net.weights) - 1}"          # v of the last bias
    broken = dict(arrays)
    broken.pop(last)
    _write(tmp_path / "b.npz", broken)
    with pytest.raises(ModelFileError, match=f"adam optimizer state {last} is missing"):
        load_checkpoint(tmp_path / "b.npz")
    record = json.loads(arrays["checkpoint"].tobytes())
    record["optimizer"]["name"] = "lion"
    arrays["checkpoint"] = np.frombuffer(json.dumps(record).encode(), np.uint8)
    _write(tmp_path / "u.npz", arrays)
    with pytest.raises(ModelFileError, match="unknown optimizer 'lion'.*upgrade mlp"):
        load_checkpoint(tmp_path / "u.npz")


def test_checkpoint_missing_velocity_or_record(tmp_path):
    net, opt = _net(), SGD(0.1, 0.5)
    save_checkpoint(tmp_path / "c.npz", net, opt, {}, {})
    with np.load(tmp_path / "c.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    for drop, message in (("V3", "V3"), ("checkpoint", "checkpoint")):
        broken = dict(arrays)
        broken.pop(drop)
        _write(tmp_path / "b.npz", broken)
        with pytest.raises(ModelFileError, match=message):
            load_checkpoint(tmp_path / "b.npz")


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def boom(*a):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_written_files_are_readable_like_ordinary_files(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------- forged sizes, refused unread
def _npy_header(shape, dtype):
    """The bytes np.save writes before an array's data (magic, version, dict, padding)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(shape)})
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def _deflated_zeros_member(shape, dtype):
    """(deflated bytes, crc32, size) of an .npy member: a real header, then zeros, ~1000:1.

    Deflating gigabytes takes tens of seconds, so one block of zeros is
    compressed once after a full flush (which makes the compressor forget what
    came before) and its output repeated: the same bytes zlib would write.
    """
    head = _npy_header(shape, dtype)
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    block = 1_000_000
    assert nbytes % block == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = [c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)]
    one = c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(bytes(block)) + c.flush(zlib.Z_FULL_FLUSH) == one    # it repeats
    out += [one] * (nbytes // block) + [c.flush()]
    crc, zeros = zlib.crc32(head), bytes(50_000_000)
    assert nbytes % len(zeros) == 0
    for _ in range(nbytes // len(zeros)):
        crc = zlib.crc32(zeros, crc)
    return b"".join(out), crc, len(head) + nbytes


def _zip(path, members):
    """A zip archive of ``members`` [(name, data, method, crc, size)], written by hand.

    zipfile cannot store data that is already deflated; the layout is the
    plain (non-zip64) one of APPNOTE.TXT, as np.savez writes it.
    """
    local, central = io.BytesIO(), io.BytesIO()
    for name, data, method, crc, size in members:
        offset, name = local.tell(), name.encode()
        fields = (20, 0, method, 0, 0x21, crc, len(data), size, len(name))
        local.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, 0) + name + data)
        central.write(struct.pack("<IH" + "HHHHHIIIH" + "HHHHII", 0x02014B50, 20, *fields,
                                  0, 0, 0, 0, 0o644 << 16, offset) + name)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members),
                      central.tell(), local.tell(), 0)
    path.write_bytes(local.getvalue() + central.getvalue() + end)
    return path


def _forged(path, arrays, name, shape):
    """``arrays`` as an .npz in which member ``name`` claims ``shape``: deflated zeros."""
    members = []
    for key, a in arrays.items():
        if key == name:
            data, crc, size = _deflated_zeros_member(shape, a.dtype.str)
            members.append((f"{key}.npy", data, zipfile.ZIP_DEFLATED, crc, size))
        else:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, a, allow_pickle=False)
            data = buf.getvalue()
            members.append((f"{key}.npy", data, zipfile.ZIP_STORED, zlib.crc32(data), len(data)))
    return _zip(path, members)


_LOAD_UNDER_LIMIT = textwrap.dedent("""
    import resource, sys, time, tracemalloc
    import mlp.evaluate, mlp.io
    # address space: what the interpreter has now plus 1 GiB, so the forged member's 3 GB
    # cannot be allocated even if the loader tried (the test then fails, the machine survives)
    with open("/proc/self/status") as f:
        vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, vm + 2**30))
    tracemalloc.start()
    t = time.perf_counter()
    if sys.argv[1] == "evaluate":
        status = mlp.evaluate.main([sys.argv[2]])
    else:
        try:
            mlp.io.load_checkpoint(sys.argv[2])
            status = 0
        except mlp.io.ModelFileError as e:
            print("error:", e, file=sys.stderr)
            status = 2
    print("peak", tracemalloc.get_traced_memory()[1], "seconds", time.perf_counter() - t)
    sys.exit(status)
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"),
                    reason="the memory limit of this test reads /proc (Linux)")
@pytest.mark.parametrize("kind, member", [("evaluate", "W0"), ("checkpoint", "W0"),
                                          ("checkpoint", "V0")])
def test_an_array_claiming_another_shape_than_the_header_is_refused_unread(tmp_path, kind,
                                                                           member):
    """A 3 MB file whose W0 (or V0) inflates to 3 GB of zeros under a (30000, 25000) header."""
    net = Network([784, 30, 10])
    if kind == "evaluate":
        arrays = model_arrays(net, {"dataset": "mnist"})
    else:
        save_checkpoint(tmp_path / "real.npz", net, SGD(0.1, 0.9), {}, {"args": {}})
        with np.load(tmp_path / "real.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
    path = _forged(tmp_path / f"{kind}.npz", arrays, member, (30000, 25000))
    assert path.stat().st_size < 5_000_000
    with zipfile.ZipFile(path) as zf:            # the archive really holds 3 GB for it
        assert zf.getinfo(f"{member}.npy").file_size > 3_000_000_000
    r = subprocess.run([sys.executable, "-c", _LOAD_UNDER_LIMIT, kind, str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert str(path) in r.stderr and "(30000, 25000)" in r.stderr and "(784, 30)" in r.stderr
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr
    peak, seconds = float(r.stdout.split()[1]), float(r.stdout.split()[3])
    assert peak < 20e6, f"{peak / 1e6:.0f} MB traced while refusing"
    assert seconds < 5


@pytest.mark.parametrize("load", [load_model, load_checkpoint])
@pytest.mark.parametrize("content", [b"# mlp\nA README, not a model.\n", b"",
                                     b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'"])
def test_a_file_that_is_no_archive_is_not_an_mlp_model_file(tmp_path, load, content):
    """Not the pickle advice np.load gives for anything that is not an archive."""
    path = tmp_path / "README.md"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="not an mlp model file") as err:
        load(path)
    assert str(path) in str(err.value) and "pickle" not in str(err.value)


def test_evaluate_says_a_readme_is_not_a_model(capsys):
    from mlp.evaluate import main
    readme = Path(__file__).resolve().parents[1] / "README.md"
    assert main([str(readme)]) == 2
    err = capsys.readouterr().err
    assert "README.md: not an mlp model file" in err and "pickle" not in err


def test_an_archive_of_other_arrays_is_not_an_mlp_model_file(tmp_path):
    np.savez(tmp_path / "data.npz", X=np.zeros((3, 4)), y=np.zeros(3))
    with pytest.raises(ModelFileError, match=r"not an mlp model file \(it holds X, y\)"):
        load_model(tmp_path / "data.npz")


def test_a_member_shorter_than_its_header_claims_is_refused(tmp_path):
    arrays = model_arrays(_net())
    members = []
    for key, a in arrays.items():
        buf = io.BytesIO()
        np.lib.format.write_array(buf, a)
        data = buf.getvalue()[:-8] if key == "W1" else buf.getvalue()   # W1 loses 2 floats
        members.append((f"{key}.npy", data, zipfile.ZIP_STORED, zlib.crc32(data), len(data)))
    path = _zip(tmp_path / "short.npz", members)
    with pytest.raises(ModelFileError, match="'W1' claims shape .* corrupt or forged"):
        load_model(path)


def test_a_json_record_claiming_too_many_bytes_is_refused_unread(tmp_path, monkeypatch):
    import mlp.io
    monkeypatch.setattr(mlp.io, "MAX_RECORD_BYTES", 10_000_000)   # a 100 MB claim is enough
    path = _forged(tmp_path / "m.npz", model_arrays(_net()), "header", (100_000_000,))
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="'header' claims 100000000 bytes"):
            load_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5e6
