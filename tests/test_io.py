"""Model and checkpoint files: round trips, and hostile files that must fail cleanly."""

import io
import json
import os

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
from mlp.optimizers import SGD


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


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", os.urandom(300), b"\x93NUMPY"])
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
