"""Tests of mlp.data: the IDX reader, MNIST lookup/loading/verification,
the digits loader, the downloader (against a real local HTTP server) and the CLI."""

import collections
import contextlib
import functools
import gzip
import hashlib
import http.server
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from localhttp import http_server
from sklearn.datasets import load_digits as sk_load

import mlp.data as data
from mlp.data import (
    MNIST_FILES,
    Dataset,
    download_mnist,
    find_mnist_dir,
    load_dataset,
    load_digits,
    load_mnist,
    read_idx,
)
from mlp.errors import DataError

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
NAMES = [name for name, _, _ in MNIST_FILES.values()]
TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
              np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


# ----------------------------------------------------------------- helpers


def idx_header(type_byte, dims, ndim=None):
    ndim = len(dims) if ndim is None else ndim
    return bytes([0, 0, type_byte, ndim]) + b"".join(int(d).to_bytes(4, "big") for d in dims)


def idx_bytes(array):
    """The IDX encoding of array (big-endian data after the header)."""
    code = TYPE_CODES[array.dtype]
    return idx_header(code, array.shape) + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, content, gz=False):
    path = pathlib.Path(path)
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def make_fake_mnist(folder, n_train=5, n_test=3, train_labels=None, image_size=28):
    """Write a small, well-formed but non-canonical MNIST set (gzipped) into folder."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if train_labels is None:
        train_labels = rng.integers(0, 10, n_train)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, image_size, image_size), dtype=np.uint8),
        "train_labels": np.asarray(train_labels, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for key, (name, _, _) in MNIST_FILES.items():
        write(folder / (name + ".gz"), idx_bytes(arrays[key]), gz=True)
    return arrays


def placeholder_set(folder, gz=True):
    """Empty files with the four MNIST names: enough for find_mnist_dir."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        (folder / (name + ".gz" if gz else name)).touch()
    return folder.absolute()


@pytest.fixture
def no_defaults(monkeypatch, tmp_path):
    """Isolate the lookup: no MLP_DATA_DIR, an empty cwd, no project data folder."""
    monkeypatch.delenv("MLP_DATA_DIR", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(data, "_PROJECT_MNIST_DIR", tmp_path / "project" / "data" / "mnist")
    return tmp_path


# ---------------------------------------------------------------- read_idx

ROUND_TRIP_ARRAYS = [
    np.arange(7, dtype=np.uint8),
    np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
    np.array([-128, -1, 0, 1, 127], dtype=np.int8),
    np.array([[-32768, 1], [2, 32767]], dtype=np.int16),
    np.array([-2**31, -1, 0, 2**31 - 1], dtype=np.int32).reshape(2, 2, 1, 1),
    np.array([[1.5, -2.25, np.inf]], dtype=np.float32),
    np.array([np.pi, -1e300, 0.0], dtype=np.float64),
]


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("array", ROUND_TRIP_ARRAYS, ids=lambda a: f"{a.dtype}-{a.ndim}d")
def test_read_idx_round_trip(tmp_path, array, gz):
    path = write(tmp_path / "a.idx", idx_bytes(array), gz=gz)
    out = read_idx(path)
    assert out.dtype == array.dtype and out.dtype.isnative
    assert out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    assert out.flags.writeable and out.flags.c_contiguous
    out[...] = 0  # really writable


def test_read_idx_detects_gzip_by_magic_not_suffix(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    gz_without_suffix = write(tmp_path / "plain-name", idx_bytes(array), gz=True)
    raw_with_suffix = write(tmp_path / "looks.gz", idx_bytes(array), gz=False)
    np.testing.assert_array_equal(read_idx(gz_without_suffix), array)
    np.testing.assert_array_equal(read_idx(raw_with_suffix), array)


def test_read_idx_accepts_str_path(tmp_path):
    array = np.arange(5, dtype=np.uint8)
    path = write(tmp_path / "a.idx", idx_bytes(array))
    np.testing.assert_array_equal(read_idx(str(path)), array)


GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
BROKEN = {
    "empty file": (b"", "empty"),
    "short header": (b"\x00\x00\x08", "header"),
    "wrong magic": (b"\x01\x00" + GOOD[2:], "magic"),
    "wrong magic 2nd byte": (b"\x00\x07" + GOOD[2:], "magic"),
    "unknown type byte": (GOOD[:2] + b"\x0a" + GOOD[3:], "type"),
    "ndim 0": (idx_header(0x08, [], ndim=0) + b"\x01", "dimensions"),
    "ndim 9": (idx_header(0x08, [1] * 9) + b"\x01", "dimensions"),
    "ndim 5": (idx_header(0x08, [1] * 5) + b"\x01", "dimensions"),
    "dims cut short": (idx_header(0x08, [2, 3, 4])[:10], "header"),
    "zero dimension": (idx_header(0x08, [2, 0, 4]), "0"),
    "truncated data": (GOOD[:-1], "truncated"),
    "no data": (GOOD[:16], "truncated"),
    "trailing bytes": (GOOD + b"\x00", "trailing"),
    "int32 data truncated": (idx_header(0x0C, [3]) + b"\x00" * 11, "truncated"),
}


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("case", list(BROKEN))
def test_read_idx_broken_file(tmp_path, case, gz):
    content, word = BROKEN[case]
    path = write(tmp_path / "broken-file.idx", content, gz=gz)
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert word in message.lower()
    assert "download" in message  # says what to do


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dims", [(2**16, 2**15 + 1), (2**31 + 1,), (2**32 - 1,) * 4,
                                  (2**15, 2**15), (60000, 28, 28)])
def test_read_idx_absurd_header_fails_fast_without_allocating(tmp_path, dims, gz):
    # A few data bytes behind a header that promises far more: (2**15, 2**15)
    # is under the 2**31-element limit but more than the file can hold.
    path = write(tmp_path / "huge.idx", idx_header(0x08, dims) + b"\x07" * 100, gz=gz)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(DataError) as info:
            read_idx(path)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    if np.prod(dims, dtype=object) > 2**31:
        assert "2**31" in str(info.value)
    assert elapsed < 0.5
    assert peak < 10 * 2**20, f"allocated {peak} bytes"


def test_read_idx_truncated_gzip(tmp_path):
    compressed = gzip.compress(idx_bytes(np.arange(5000, dtype=np.uint8) % 251))
    for cut in (len(compressed) // 2, len(compressed) - 4, 12):
        path = write(tmp_path / f"cut{cut}.gz", compressed[:cut])
        with pytest.raises(DataError, match="gzip") as info:
            read_idx(path)
        assert str(path) in str(info.value)


def test_read_idx_bad_gzip_crc(tmp_path):
    compressed = bytearray(gzip.compress(GOOD))
    compressed[-8] ^= 0xFF  # first byte of the CRC-32 in the gzip trailer
    path = write(tmp_path / "badcrc.gz", bytes(compressed))
    with pytest.raises(DataError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_gzip_magic_then_garbage(tmp_path):
    path = write(tmp_path / "garbage.gz", b"\x1f\x8b" + bytes(range(200)))
    with pytest.raises(DataError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing_file_and_directory(tmp_path):
    missing = tmp_path / "nope.idx"
    with pytest.raises(DataError, match="no such file") as info:
        read_idx(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(DataError) as info:
        read_idx(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "fuzzed.idx"


def _read_or_data_error(path, content):
    path.write_bytes(content)
    try:
        out = read_idx(path)
    except DataError as e:
        assert str(path) in str(e)
        return None
    assert isinstance(out, np.ndarray) and 1 <= out.ndim <= 4
    return out


FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(fuzz_file, content):
    _read_or_data_error(fuzz_file, content)


@FUZZ
@given(type_byte=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A, 0xFF]),
       dims=st.lists(st.integers(0, 6) | st.integers(0, 2**32 - 1), min_size=0, max_size=5),
       payload=st.binary(max_size=200), gz=st.booleans())
def test_fuzz_plausible_headers(fuzz_file, type_byte, dims, payload, gz):
    content = idx_header(type_byte, dims) + payload
    out = _read_or_data_error(fuzz_file, gzip.compress(content) if gz else content)
    if out is not None:  # accepted: then it must be exactly what the bytes say
        assert out.shape == tuple(dims)
        assert out.nbytes == len(payload)


@FUZZ
@given(payload=st.binary(min_size=1, max_size=200),
       cut=st.integers(0, 400), flip=st.integers(0, 400))
def test_fuzz_damaged_gzip(fuzz_file, payload, cut, flip):
    compressed = bytearray(gzip.compress(idx_header(0x08, [len(payload)]) + payload))
    compressed[flip % len(compressed)] ^= 0x55
    _read_or_data_error(fuzz_file, bytes(compressed[:max(cut, 2)]))


# ------------------------------------------------------------ real MNIST


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return load_mnist(mnist_dir)


def test_load_mnist_shapes_and_types(mnist, mnist_dir):
    assert isinstance(mnist, Dataset)
    assert mnist.name == "mnist" and mnist.n_classes == 10 and mnist.image_shape == (28, 28)
    assert mnist.scale == pytest.approx(1 / 255)
    assert mnist.source == str(mnist_dir)
    assert mnist.X_train.shape == (60000, 784) and mnist.X_test.shape == (10000, 784)
    assert mnist.y_train.shape == (60000,) and mnist.y_test.shape == (10000,)
    for X in (mnist.X_train, mnist.X_test):
        assert X.dtype == np.uint8 and X.flags.c_contiguous
    for y in (mnist.y_train, mnist.y_test):
        assert y.dtype == np.int64 and y.min() == 0 and y.max() == 9
    assert np.bincount(mnist.y_train, minlength=10).min() > 5000
    assert mnist.X_train.max() * mnist.scale == 1.0


def test_load_mnist_matches_raw_bytes(mnist, mnist_dir):
    # Independent of read_idx: labels start at byte 8, images at byte 16.
    def raw(name):
        with gzip.open(mnist_dir / (name + ".gz")) as f:
            return f.read()

    np.testing.assert_array_equal(
        mnist.y_train, np.frombuffer(raw("train-labels-idx1-ubyte"), np.uint8, offset=8))
    np.testing.assert_array_equal(
        mnist.y_test, np.frombuffer(raw("t10k-labels-idx1-ubyte"), np.uint8, offset=8))
    np.testing.assert_array_equal(
        mnist.X_test.ravel(), np.frombuffer(raw("t10k-images-idx3-ubyte"), np.uint8, offset=16))
    assert list(mnist.y_train[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert list(mnist.y_test[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_load_dataset_mnist(mnist_dir):
    ds = load_dataset("MNIST", data_dir=mnist_dir)
    assert ds.name == "mnist" and ds.X_test.shape == (10000, 784)


def _link_real_files(src, dest, except_name=None):
    dest.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        if name != except_name:
            os.symlink(src / (name + ".gz"), dest / (name + ".gz"))
    return dest


def _corrupt_copy(src_gz, dest_gz, offset=100):
    """Regzipped copy of src_gz with one label byte changed (still a valid label)."""
    content = bytearray(gzip.decompress(src_gz.read_bytes()))
    content[offset] = (content[offset] + 1) % 10
    dest_gz.write_bytes(gzip.compress(bytes(content)))


def test_load_mnist_checksum_mismatch(mnist_dir, tmp_path):
    folder = _link_real_files(mnist_dir, tmp_path / "m", except_name="t10k-labels-idx1-ubyte")
    bad = folder / "t10k-labels-idx1-ubyte.gz"
    _corrupt_copy(mnist_dir / bad.name, bad)
    with pytest.raises(DataError, match="checksum") as info:
        load_mnist(folder)
    message = str(info.value)
    assert str(bad) in message
    assert MNIST_FILES["test_labels"][1] in message  # expected hash
    assert "download" in message
    # verify=False loads the modified copy on purpose
    assert load_mnist(folder, verify=False).y_test.shape == (10000,)


# ------------------------------------------------------- small fake sets


def test_fake_set_loads_without_verify(tmp_path):
    arrays = make_fake_mnist(tmp_path)
    ds = load_mnist(tmp_path, verify=False)
    assert ds.X_train.shape == (5, 784) and ds.X_test.shape == (3, 784)
    np.testing.assert_array_equal(ds.X_train, arrays["train_images"].reshape(5, 784))
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"])
    assert ds.y_train.dtype == np.int64


def test_fake_set_fails_verification(tmp_path):
    make_fake_mnist(tmp_path)
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_mnist(tmp_path)
    assert "train-images-idx3-ubyte" in str(info.value)


def test_label_out_of_range(tmp_path):
    make_fake_mnist(tmp_path, train_labels=[0, 1, 10, 3, 4])
    with pytest.raises(DataError, match="label 10 at index 2") as info:
        load_mnist(tmp_path, verify=False)
    assert "train-labels-idx1-ubyte" in str(info.value)


def test_count_mismatch(tmp_path):
    make_fake_mnist(tmp_path, n_train=5, train_labels=[1, 2, 3, 4])
    with pytest.raises(DataError, match="5 images") as info:
        load_mnist(tmp_path, verify=False)
    assert "4 labels" in str(info.value)
    assert "train-images-idx3-ubyte" in str(info.value)


def test_wrong_image_size(tmp_path):
    make_fake_mnist(tmp_path, image_size=27)
    with pytest.raises(DataError, match="28, 28") as info:
        load_mnist(tmp_path, verify=False)
    assert "train-images-idx3-ubyte" in str(info.value)


def test_damaged_file_in_set_names_it(tmp_path):
    make_fake_mnist(tmp_path)
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-20])
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path, verify=False)
    assert str(bad) in str(info.value)


def test_raw_files_preferred_gz_when_both(tmp_path):
    arrays = make_fake_mnist(tmp_path)
    # an uncompressed copy of a label file alongside: the .gz is the one used
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"junk")
    ds = load_mnist(tmp_path, verify=False)
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"])


# ----------------------------------------------------------------- lookup


def test_lookup_order(no_defaults, monkeypatch):
    root = no_defaults
    arg = placeholder_set(root / "arg")
    env = placeholder_set(root / "env", gz=False)  # raw names are accepted too
    cwd_data = placeholder_set(root / "cwd" / "data" / "mnist")
    project = placeholder_set(data._PROJECT_MNIST_DIR)
    monkeypatch.setenv("MLP_DATA_DIR", str(env))

    assert find_mnist_dir(arg) == arg
    assert find_mnist_dir(str(arg)) == arg
    assert find_mnist_dir() == env
    monkeypatch.delenv("MLP_DATA_DIR")
    assert find_mnist_dir() == cwd_data
    for name in NAMES:
        (cwd_data / (name + ".gz")).unlink()
    assert find_mnist_dir() == project


def test_relative_env_var_is_relative_to_cwd(no_defaults, monkeypatch):
    folder = placeholder_set(no_defaults / "cwd" / "somewhere")
    monkeypatch.setenv("MLP_DATA_DIR", "somewhere")
    assert find_mnist_dir() == folder


@pytest.mark.parametrize("via", ["argument", "env"])
def test_explicit_folder_missing_files_is_an_error(no_defaults, monkeypatch, via):
    placeholder_set(no_defaults / "cwd" / "data" / "mnist")  # would be found otherwise
    partial = placeholder_set(no_defaults / "partial")
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    if via == "env":
        monkeypatch.setenv("MLP_DATA_DIR", str(partial))
        call = find_mnist_dir
    else:
        call = functools.partial(find_mnist_dir, partial)
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert str(partial) in message
    assert "t10k-labels-idx1-ubyte" in message
    assert "train-images-idx3-ubyte" not in message
    assert "download" in message


def test_explicit_folder_that_does_not_exist(no_defaults):
    folder = no_defaults / "no-such-folder"
    with pytest.raises(DataError, match="does not exist") as info:
        find_mnist_dir(folder)
    assert str(folder) in str(info.value)


def test_nothing_found(no_defaults):
    partial = no_defaults / "cwd" / "data" / "mnist"
    placeholder_set(partial)
    (partial / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        find_mnist_dir()
    message = str(info.value)
    assert "python -m mlp.data download" in message
    assert "--dataset digits" in message
    assert str(partial) in message and str(data._PROJECT_MNIST_DIR) in message
    for name in NAMES:
        assert name in message
    with pytest.raises(DataError, match="digits"):
        load_mnist()


# ----------------------------------------------------------------- digits


def test_load_digits():
    ds = load_digits()
    assert ds.name == "digits" and ds.n_classes == 10 and ds.image_shape == (8, 8)
    assert ds.scale == 1 / 16
    assert ds.X_train.shape == (1437, 64) and ds.X_test.shape == (360, 64)
    assert ds.X_train.dtype == np.uint8 and ds.X_train.flags.c_contiguous
    assert ds.X_test.flags.c_contiguous
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert ds.X_train.max() == 16 and (ds.X_test.astype(float) * ds.scale).max() == 1.0
    assert set(ds.y_test) == set(range(10))
    assert np.bincount(ds.y_test).min() >= 35 and np.bincount(ds.y_test).max() <= 37  # stratified
    # a partition of the whole set
    everything = np.sort(np.concatenate([ds.X_train, ds.X_test]).view("V64").ravel())
    full = np.sort(sk_load().data.astype(np.uint8).view("V64").ravel())
    np.testing.assert_array_equal(everything, full)


def test_load_digits_is_deterministic():
    a, b = load_digits(), load_digits()
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    c = load_digits(test_size=0.2)
    assert len(c.y_test) == 360


@pytest.mark.parametrize("bad", [0, 5, 1797, 0.0, 1.0, -0.1])
def test_load_digits_bad_test_size(bad):
    with pytest.raises(DataError, match="test_size"):
        load_digits(test_size=bad)


def test_load_dataset_names():
    assert load_dataset("digits").name == "digits"
    with pytest.raises(DataError) as info:
        load_dataset("cifar")
    assert "cifar" in str(info.value)
    assert "mnist" in str(info.value) and "digits" in str(info.value)


# --------------------------------------------------------------- download


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory):
    """Serve directory over HTTP on 127.0.0.1; yield (base URL, list of requested paths)."""
    requests = []

    class Counting(QuietHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    with http_server(functools.partial(Counting, directory=str(directory))) as url:
        yield url, requests


def dead_url():
    """A base URL on a loopback port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def listing(folder):
    return sorted(p.name for p in pathlib.Path(folder).iterdir())


ALL_GZ = sorted(name + ".gz" for name in NAMES)


@pytest.fixture(scope="module")
def mnist_server(mnist_dir):
    with serve(mnist_dir) as (url, requests):
        yield url, requests


@pytest.fixture(scope="module")
def downloaded(mnist_server, tmp_path_factory):
    """The four files downloaded once from the local server."""
    url, _ = mnist_server
    dest = tmp_path_factory.mktemp("downloaded") / "mnist"  # created by download_mnist
    assert download_mnist(dest, mirrors=[url], quiet=True) == dest
    return dest


def test_download_all_four(downloaded, mnist_dir):
    assert listing(downloaded) == ALL_GZ  # right names, no temporary files left
    ds = load_mnist(downloaded)  # verifies the checksums
    assert ds.X_train.shape == (60000, 784)
    assert (downloaded / "t10k-labels-idx1-ubyte.gz").read_bytes() == \
        (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()


def test_present_files_are_not_fetched_again(downloaded, mnist_server, tmp_path, capsys):
    url, requests = mnist_server
    before = len(requests)
    download_mnist(downloaded, mirrors=[url])
    assert len(requests) == before
    assert "already present" in capsys.readouterr().err

    dest = _link_real_files(downloaded, tmp_path / "d", except_name="train-labels-idx1-ubyte")
    download_mnist(dest, mirrors=[url], quiet=True)
    assert requests[before:] == ["/train-labels-idx1-ubyte.gz"]
    assert listing(dest) == ALL_GZ


def test_damaged_present_file_is_replaced(mnist_dir, mnist_server, tmp_path):
    url, requests = mnist_server
    dest = _link_real_files(mnist_dir, tmp_path / "d", except_name="t10k-labels-idx1-ubyte")
    (dest / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    download_mnist(dest, mirrors=[url], quiet=True)
    assert requests[-1] == "/t10k-labels-idx1-ubyte.gz"
    assert read_idx(dest / "t10k-labels-idx1-ubyte.gz").shape == (10000,)


def test_dead_mirror_then_working_one(mnist_dir, mnist_server, tmp_path, capsys):
    url, _ = mnist_server
    dest = _link_real_files(mnist_dir, tmp_path / "d", except_name="t10k-labels-idx1-ubyte")
    start = time.perf_counter()
    download_mnist(dest, mirrors=[dead_url(), url], retries=2, timeout=5)
    assert time.perf_counter() - start < 3
    assert listing(dest) == ALL_GZ
    err = capsys.readouterr().err
    assert "failed" in err and "ok" in err
    assert read_idx(dest / "t10k-labels-idx1-ubyte.gz").shape == (10000,)


def test_missing_on_first_mirror_moves_on_without_retrying(mnist_dir, mnist_server, tmp_path):
    url, _ = mnist_server
    empty = tmp_path / "empty"
    empty.mkdir()
    dest = _link_real_files(mnist_dir, tmp_path / "d", except_name="t10k-labels-idx1-ubyte")
    with serve(empty) as (empty_url, empty_requests):
        download_mnist(dest, mirrors=[empty_url, url], retries=3, quiet=True)
    assert empty_requests == ["/t10k-labels-idx1-ubyte.gz"]  # a 404 is not retried
    assert listing(dest) == ALL_GZ


def test_corrupted_file_on_server(mnist_dir, tmp_path):
    served = _link_real_files(mnist_dir, tmp_path / "served", except_name="t10k-labels-idx1-ubyte")
    _corrupt_copy(mnist_dir / "t10k-labels-idx1-ubyte.gz", served / "t10k-labels-idx1-ubyte.gz")
    dest = _link_real_files(mnist_dir, tmp_path / "d", except_name="t10k-labels-idx1-ubyte")
    with serve(served) as (url, requests):
        with pytest.raises(DataError, match="checksum") as info:
            download_mnist(dest, mirrors=[url], retries=3, quiet=True)
    assert requests == ["/t10k-labels-idx1-ubyte.gz"]  # a wrong checksum is not retried
    assert "t10k-labels-idx1-ubyte" in str(info.value)
    assert not (dest / "t10k-labels-idx1-ubyte.gz").exists()
    assert listing(dest) == sorted(set(ALL_GZ) - {"t10k-labels-idx1-ubyte.gz"})  # no temp files


def test_truncated_file_on_server(mnist_dir, tmp_path):
    served = _link_real_files(mnist_dir, tmp_path / "served", except_name="t10k-labels-idx1-ubyte")
    whole = (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(whole[: len(whole) // 2])
    dest = tmp_path / "d"
    _link_real_files(mnist_dir, dest, except_name="t10k-labels-idx1-ubyte")
    with serve(served) as (url, requests):
        with pytest.raises(DataError, match="ended early"):
            download_mnist(dest, mirrors=[url], retries=1, quiet=True)
    assert len(requests) == 2  # retried once
    assert "t10k-labels-idx1-ubyte.gz" not in listing(dest)
    assert not any(name.endswith(".part") for name in listing(dest))


def test_all_mirrors_dead(tmp_path):
    dest = tmp_path / "mnist"
    dead = [dead_url(), dead_url()]
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        download_mnist(dest, mirrors=dead, retries=1, timeout=2, quiet=True)
    assert time.perf_counter() - start < 3
    message = str(info.value)
    assert str(dest) in message
    assert "digits" in message and "by hand" in message
    assert dead[0] in message and dead[1] in message
    assert "(2 attempts)" in message  # the same error on each retry is said once
    assert not dest.exists()  # created by the call, and removed again as nothing was put in it


# ------------------------------------------- download failure modes (fake files)
#
# Each test runs a real HTTP server on 127.0.0.1 whose answers a script
# chooses per request (an error status, a stall, wrong bytes), and patches
# the table of expected files to four small fake ones, so no MNIST is needed.


@pytest.fixture
def fake_files(monkeypatch):
    """Point the downloader at four small fake IDX files; return {name + ".gz": gzip bytes}."""
    table, files = {}, {}
    for i, key in enumerate(MNIST_FILES):
        name = f"fake-{i}-idx1-ubyte"
        content = idx_bytes(np.arange(10 + i, dtype=np.uint8))
        table[key] = (name, hashlib.sha256(content).hexdigest(), "sha256 of the .gz: unused")
        files[name + ".gz"] = gzip.compress(content)
    monkeypatch.setattr(data, "MNIST_FILES", table)
    return files


STALL_LIMIT = 5.0  # seconds a stalling handler waits at most, whatever the client does


@contextlib.contextmanager
def scripted_server(files, script=lambda name, n: "ok"):
    """Serve files ({name: bytes}) at /name from a threaded HTTP server on 127.0.0.1.

    ``script(name, n)`` says how to answer the n-th request (from 1) for name:
    "ok" (the file, or 404 if unknown), an int (that error status), bytes (a
    200 with that body), "stall" (accept, then send nothing) or "headers" (a
    200 with its headers, then nothing). A stall ends after STALL_LIMIT
    seconds or when the block exits, whichever is first, so no thread
    outlives the test for long. Yields (base URL, Counter of requests per name).
    """
    counts = collections.Counter()
    lock = threading.Lock()
    done = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = STALL_LIMIT  # a client that never sends its request cannot hold a thread

        def log_message(self, *args):
            pass

        def do_GET(self):
            name = self.path.lstrip("/")
            with lock:
                counts[name] += 1
                n = counts[name]
            action = script(name, n)
            if action == "stall":
                done.wait(STALL_LIMIT)
                return
            if isinstance(action, int):
                self.send_error(action)
                return
            body = files.get(name) if action in ("ok", "headers") else action
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if action == "headers":
                self.wfile.flush()
                done.wait(STALL_LIMIT)
                return
            self.wfile.write(body)

    with http_server(Handler, on_stop=done.set, join_timeout=STALL_LIMIT) as url:
        yield url, counts


def assert_all_fake_files(dest, files):
    assert listing(dest) == sorted(files)  # right names, no temporary files
    for name, content in files.items():
        assert (dest / name).read_bytes() == content


def test_download_retries_after_503(fake_files, tmp_path, capsys):
    flaky = sorted(fake_files)[1]

    def script(name, n):
        return 503 if name == flaky and n == 1 else "ok"

    with scripted_server(fake_files, script) as (url, counts):
        download_mnist(tmp_path / "d", mirrors=[url], retries=1, timeout=5)
    assert counts[flaky] == 2  # the 503, then the retry that got the file
    assert all(counts[name] == 1 for name in fake_files if name != flaky)
    assert_all_fake_files(tmp_path / "d", fake_files)
    err = capsys.readouterr().err
    assert f"{url}{flaky}, checksum verified" in err
    assert "after 1 failed attempt (last: HTTP 503 Service Unavailable)" in err


@pytest.mark.parametrize("stall", ["stall", "headers"],
                         ids=["no-answer", "headers-then-nothing"])
def test_download_stalled_server_times_out(fake_files, tmp_path, stall):
    dest = tmp_path / "data" / "mnist"
    first = next(iter(fake_files))
    timeout, attempts = 0.5, 2
    with scripted_server(fake_files, lambda name, n: stall) as (url, counts):
        start = time.perf_counter()
        with pytest.raises(DataError) as info:
            download_mnist(dest, mirrors=[url], retries=attempts - 1, timeout=timeout,
                           quiet=True)
        elapsed = time.perf_counter() - start
    # each attempt waits `timeout`, plus the 0.2 s pause before the retry
    assert timeout * attempts <= elapsed < timeout * attempts + 1.5
    assert counts == {first: attempts}
    message = str(info.value)
    assert f"{url}{first}: timed out: no data from the server for 0.5 s" in message
    assert "--timeout" in message and f"({attempts} attempts)" in message
    assert message.count(url) == 1  # one compact line, not one per attempt
    assert not (tmp_path / "data").exists()  # both folders the call made are gone again


# case -> (the body served instead of a file's gzip bytes, what the error says)
BAD_BODIES = {
    "not gzip": (lambda gz: b"<html><body>This mirror has moved</body></html>",
                 "not a valid gzip stream"),
    "gzip then junk": (lambda gz: gz + b"junk\n", "extra bytes after the end of the gzip stream"),
    "two gzip members": (lambda gz: gz + gzip.compress(b"more"),
                         "extra bytes after the end of the gzip stream"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_download_rejects_bad_body(fake_files, tmp_path, case):
    spoil, words = BAD_BODIES[case]
    bad = next(iter(fake_files))

    def script(name, n):
        return spoil(fake_files[name])

    dest = tmp_path / "d"
    dest.mkdir()
    with scripted_server(fake_files, script) as (url, counts):
        with pytest.raises(DataError) as info:
            download_mnist(dest, mirrors=[url], retries=2, quiet=True)
        assert counts == {bad: 1}  # wrong bytes are not asked for again
    message = str(info.value)
    assert f"{url}{bad}: {words}" in message
    assert "is the network reachable" not in message  # the network is fine
    assert listing(dest) == []  # no partial or .part file; the folder was there before

    # the same bytes on a first mirror: the download moves on to the second one
    with scripted_server(fake_files, script) as (bad_url, bad_counts), \
            scripted_server(fake_files) as (good_url, _):
        download_mnist(dest, mirrors=[bad_url, good_url], retries=2, quiet=True)
    assert bad_counts == {name: 1 for name in fake_files}
    assert_all_fake_files(dest, fake_files)


def test_download_accepts_zero_padding_after_gzip(fake_files, tmp_path):
    # By design: zero bytes after the stream are gzip padding (gzip -d accepts
    # them, Python's gzip module skips them), not garbage; the saved file loads.
    def script(name, n):
        return fake_files[name] + b"\0" * 100

    with scripted_server(fake_files, script) as (url, _):
        download_mnist(tmp_path, mirrors=[url], quiet=True)
    first = next(iter(fake_files))
    np.testing.assert_array_equal(read_idx(tmp_path / first), np.arange(10, dtype=np.uint8))


@pytest.mark.parametrize("where", ["under a file", "is a file"])
def test_download_into_a_file_path(fake_files, tmp_path, where, capsys):
    blocker = tmp_path / "afile"
    blocker.write_bytes(b"precious")
    dest = blocker / "mnist" if where == "under a file" else blocker
    with scripted_server(fake_files) as (url, counts):
        with pytest.raises(DataError) as info:
            download_mnist(dest, mirrors=[url], quiet=True)
        assert data.main(["download", "--dest", str(dest), "--mirror", url]) == 2
    assert counts == {}  # refused before any download
    message = str(info.value)
    assert f"cannot download into {dest}: {blocker} is a file, not a folder" in message
    assert "--dest" in message
    assert info.value.__context__ is None and info.value.__cause__ is None
    err = capsys.readouterr().err
    assert err.startswith("error: cannot download into") and "Traceback" not in err
    assert listing(tmp_path) == ["afile"] and blocker.read_bytes() == b"precious"


def test_download_disk_full_is_not_retried(tmp_path):
    # A real write failure, also for root: the child process may write files of
    # at most 64 KiB (RLIMIT_FSIZE; Python ignores SIGXFSZ, so write() fails
    # with EFBIG), and the file served is bigger.
    resource = pytest.importorskip("resource")
    big = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8)  # incompressible
    content = idx_bytes(big)
    files = {"big-idx1-ubyte.gz": gzip.compress(content)}
    child = (
        "import sys, mlp.data as d\n"
        f"d.MNIST_FILES = {{'only': ('big-idx1-ubyte', {hashlib.sha256(content).hexdigest()!r},"
        " '')}\n"
        "sys.exit(d.main(sys.argv[1:]))\n")
    env = {k: v for k, v in os.environ.items() if k != "MLP_DATA_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    dest = tmp_path / "out"

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))

    with scripted_server(files) as (url, counts):
        result = subprocess.run(
            [sys.executable, "-c", child, "download", "--dest", str(dest), "--mirror", url],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
            preexec_fn=limit_file_size)
    assert result.returncode == 2, result.stderr
    assert counts == {"big-idx1-ubyte.gz": 1}  # a local disk problem: no retry
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot write {dest / 'big-idx1-ubyte.gz'} "
                           f"(downloading {url}big-idx1-ubyte.gz): File too large")
    assert "Traceback" not in result.stderr
    assert listing(tmp_path) == []  # no partial file, and no empty "out"


@pytest.mark.parametrize("retries, attempts", [(0, 1), (1, 2), (None, 3)],
                         ids=["0", "1", "default"])
def test_retries_counts_the_attempts_after_the_first(fake_files, tmp_path, retries, attempts,
                                                     capsys):
    first = next(iter(fake_files))
    kwargs = {} if retries is None else {"retries": retries}
    cli = [] if retries is None else ["--retries", str(retries)]
    with scripted_server(fake_files, lambda name, n: 503) as (url, counts):
        with pytest.raises(DataError) as info:
            download_mnist(tmp_path / "api", mirrors=[url], timeout=5, quiet=True, **kwargs)
        assert counts == {first: attempts}
        counts.clear()
        status = data.main(["download", "--dest", str(tmp_path / "cli"), "--mirror", url,
                            "--quiet", *cli])
        assert counts == {first: attempts}
    assert status == 2
    tail = f" ({attempts} attempts)" if attempts > 1 else ""
    assert f"{url}{first}: HTTP 503 Service Unavailable{tail}\n" in str(info.value)
    err = capsys.readouterr().err
    assert err.startswith("error: could not download") and err.count("error:") == 1
    assert "Traceback" not in err


def test_retries_help_and_bad_values(capsys):
    with pytest.raises(SystemExit) as info:
        data.main(["download", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "0 tries each mirror once (default: 2, so up to 3 attempts per mirror)" in text
    for flag, value in (("--retries", "-1"), ("--retries", "1.5"), ("--timeout", "0")):
        with pytest.raises(SystemExit) as info:
            data.main(["download", flag, value])
        assert info.value.code == 2  # argparse's usage error: one line, no traceback
        err = capsys.readouterr().err
        assert f"argument {flag}:" in err and "Traceback" not in err
    with pytest.raises(DataError, match=r"retries=-1: must be a whole number >= 0"):
        download_mnist("unused", mirrors=["http://127.0.0.1:9/"], retries=-1)
    with pytest.raises(DataError, match=r"timeout=0: must be a number of seconds > 0"):
        download_mnist("unused", mirrors=["http://127.0.0.1:9/"], timeout=0)
    assert not pathlib.Path("unused").exists()


def test_offline_is_one_compact_error(tmp_path, capsys):
    dead = [dead_url(), dead_url()]
    dest = tmp_path / "data" / "mnist"
    status = data.main(["download", "--dest", str(dest), "--mirror", dead[0],
                        "--mirror", dead[1], "--retries", "1", "--quiet"])
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not download train-images-idx3-ubyte.gz into "
                          f"{dest}: every mirror failed (is the network reachable?).")
    assert err.count("error:") == 1 and "Traceback" not in err
    for url in dead:  # one line per mirror, whatever the number of attempts
        assert err.count(url) == 1
        assert f"{url}train-images-idx3-ubyte.gz: URLError: " in err
    assert err.count("(2 attempts)") == 2
    assert listing(tmp_path) == []  # neither data/ nor data/mnist left behind


# -------------------------------------------------------------------- CLI


def _run_cli(args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "MLP_DATA_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "mlp.data", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_verify_bad_folder(tmp_path):
    make_fake_mnist(tmp_path / "fake")
    result = _run_cli(["verify", "--data-dir", str(tmp_path / "fake")], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "checksum" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_download_unreachable(tmp_path):
    result = _run_cli(["download", "--dest", "here", "--mirror", dead_url(), "--retries", "1"],
                      cwd=tmp_path)
    assert result.returncode == 2
    assert "error: " in result.stderr and "digits" in result.stderr
    assert "Traceback" not in result.stderr
    assert listing(tmp_path) == []  # no empty "here" left behind


def test_cli_verify_good_folder(mnist_dir, capsys):
    assert data.main(["verify", "--data-dir", str(mnist_dir)]) == 0
    assert "checksums match" in capsys.readouterr().out


def test_cli_verify_nothing_found(no_defaults, capsys):
    assert data.main(["verify"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MNIST not found") and "digits" in err
