"""Tests of the datasets beyond MNIST: Fashion-MNIST and KMNIST (their tables, lookup,
and verified download against a real HTTP server on 127.0.0.1 serving small fake files
with patched checksums), and your own data (mlp.datasets: .npz, .csv, IDX folders),
through the API and through ``python -m mlp.train`` / ``python -m mlp.evaluate``."""

import collections
import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from localhttp import http_server
from sklearn.datasets import load_digits as sk_digits

import mlp.data as data
import mlp.datasets as datasets
from mlp.data import (
    DATASETS,
    IDX_SETS,
    MNIST_FILES,
    SHAPES,
    download_dataset,
    find_idx_dir,
    load_idx,
)
from mlp.datasets import load_dataset
from mlp.errors import DataError, MLPError
from mlp.evaluate import evaluate_model
from mlp.io import load_model
from mlp.train import compile_ahead, default_out_dir, main, parse_args, run

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
NEW = ["fashion-mnist", "kmnist"]
NAMES = [entry[0] for entry in MNIST_FILES.values()]


# ----------------------------------------------------------------- helpers


def idx_bytes(array):
    """The IDX encoding of array (big-endian data after the header)."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B,
            np.dtype(np.float32): 0x0D}[array.dtype]
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return bytes([0, 0, code, array.ndim]) + dims + array.astype(
        array.dtype.newbyteorder(">")).tobytes()


def fake_arrays(n_train=12, n_test=6, seed=0):
    """{file name: array} of a small, well-formed 28x28 set with labels 0-9."""
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }


def listing(folder):
    return sorted(p.name for p in pathlib.Path(folder).iterdir())


@pytest.fixture(params=NEW)
def fake_set(request, monkeypatch):
    """Point a new dataset's table at four small fake .gz files, verified like the real
    ones (by the SHA-256 of the .gz); return (name, {file.gz: bytes}, {file: array})."""
    key = request.param
    arrays = fake_arrays()
    files, table = {}, {}
    for part, entry in data._files(key).items():  # the real table's keys and file names
        name = entry[0]
        gz = gzip.compress(idx_bytes(arrays[name]), mtime=0)
        files[name + ".gz"] = gz
        table[part] = (name, None, hashlib.sha256(gz).hexdigest())
    monkeypatch.setattr(data, IDX_SETS[key].files, table)
    return key, files, arrays


@contextlib.contextmanager
def serve(files):
    """Serve files ({name: bytes}) at /name on 127.0.0.1; yield (base URL, requests per name)."""
    counts = collections.Counter()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            name = self.path.lstrip("/")
            counts[name] += 1
            body = files.get(name)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with http_server(Handler) as url:
        yield url, counts


def write_folder(folder, files):
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def recompressed(gz):
    """The same content in other gzip bytes (another mtime): what a mirror that
    re-compresses serves, which a check of the .gz cannot tell from damage."""
    return gzip.compress(gzip.decompress(gz), mtime=1)


# ------------------------------------------------- Fashion-MNIST and KMNIST


@pytest.mark.parametrize("key", NEW)
def test_named_tables(key):
    assert key in DATASETS and SHAPES[key] == (784, 10)
    spec = IDX_SETS[key]
    table = getattr(data, spec.files)
    assert list(table) == list(MNIST_FILES)
    assert [entry[0] for entry in table.values()] == NAMES  # MNIST's four file names
    for name, content_sha, gz_sha in table.values():
        assert content_sha is None  # only the .gz checksums are known: see mlp/data.py
        assert re.fullmatch(r"[0-9a-f]{64}", gz_sha), name
    mirrors = getattr(data, spec.mirrors)
    assert mirrors and all(re.fullmatch(r"https?://[^ ]+/", url) for url in mirrors)
    assert len(spec.classes) == 10 == len(set(spec.classes))


def test_checksums_are_all_different():
    # a value pasted twice (or MNIST's reused) would let a wrong file through
    values = [entry[2] for key in IDX_SETS for entry in data._files(key).values()]
    assert len(values) == len(set(values)) == 12


def test_download_then_load_verified(fake_set, tmp_path, monkeypatch, capsys):
    key, files, arrays = fake_set
    dest = tmp_path / "data" / key
    with serve(files) as (url, counts):
        # no mirrors argument: the dataset's own list, patched to the local server
        monkeypatch.setattr(data, IDX_SETS[key].mirrors, [url])
        assert download_dataset(key, dest, quiet=True) == dest
        assert counts == {name: 1 for name in files}
        assert listing(dest) == sorted(files)  # the right names, no temporary files
        for name, content in files.items():
            assert (dest / name).read_bytes() == content
        download_dataset(key, dest)  # present and verified: nothing fetched again
        assert counts == {name: 1 for name in files}
    assert "already present and verified" in capsys.readouterr().err

    ds = load_idx(key, dest)
    assert ds.name == key and ds.classes == IDX_SETS[key].classes and ds.notes == ()
    assert ds.scale == pytest.approx(1 / 255) and ds.X_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.X_train,
                                  arrays["train-images-idx3-ubyte"].reshape(-1, 784))
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert load_dataset(key.upper(), data_dir=dest).name == key


def test_download_refuses_other_gz_bytes_and_moves_on(fake_set, tmp_path):
    key, files, _ = fake_set
    first = next(iter(files))
    bad = dict(files, **{first: recompressed(files[first])})
    with serve(bad) as (bad_url, bad_counts):
        with pytest.raises(DataError) as info:
            download_dataset(key, tmp_path / "d", mirrors=[bad_url], retries=2, quiet=True)
        assert bad_counts == {first: 1}  # wrong bytes are not asked for again
        message = str(info.value)
        assert f"{bad_url}{first}: checksum mismatch: the SHA-256 of the .gz file is" in message
        assert data._files(key)["train_images"][2] in message
        assert not (tmp_path / "d").exists()  # the folder it made is gone again

        with serve(files) as (good_url, good_counts):
            download_dataset(key, tmp_path / "d", mirrors=[bad_url, good_url], quiet=True)
        assert good_counts == {first: 1}
    assert (tmp_path / "d" / first).read_bytes() == files[first]


def test_loader_verifies_the_gz_files(fake_set, tmp_path):
    key, files, _ = fake_set
    folder = write_folder(tmp_path / key, files)
    assert load_idx(key, folder).X_train.shape == (12, 784)

    victim = folder / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(recompressed(files[victim.name]))
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_idx(key, folder)
    message = str(info.value)
    assert str(victim) in message and data._files(key)["test_labels"][2] in message
    assert f"--dataset {key}" in message and f"--dataset {folder}" in message  # what to do
    assert load_idx(key, folder, verify=False).y_test.shape == (6,)

    # an uncompressed copy cannot be checked against the .gz's checksum: refused, with the way out
    victim.unlink()
    (folder / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(files[victim.name]))
    with pytest.raises(DataError, match="uncompressed") as info:
        load_idx(key, folder)
    assert f"--dataset {folder}" in str(info.value)
    own = load_dataset(str(folder))  # the folder as your own data: read, unverified, and said so
    assert any("without checksum verification" in note for note in own.notes)
    assert own.X_test.shape == (6, 784)


def test_lookup_of_the_new_datasets(tmp_path, monkeypatch):
    names = [name + ".gz" for name in NAMES]
    monkeypatch.chdir(write_folder(tmp_path / "cwd", {}))
    monkeypatch.setattr(data, "_PROJECT_DATA_DIR", tmp_path / "project")
    # MLP_DATA_DIR names MNIST's folder, not Fashion-MNIST's
    mnist_like = write_folder(tmp_path / "env", dict.fromkeys(names, b""))
    monkeypatch.setenv("MLP_DATA_DIR", str(mnist_like))
    with pytest.raises(DataError) as info:
        find_idx_dir("fashion-mnist")
    message = str(info.value)
    assert message.startswith("Fashion-MNIST not found")
    assert "MLP_DATA_DIR is MNIST's only" in message
    assert "download --dataset fashion-mnist --dest data/fashion-mnist" in message
    assert "--dataset digits" in message

    project = write_folder(tmp_path / "project" / "kmnist", dict.fromkeys(names, b""))
    assert find_idx_dir("kmnist") == project
    here = write_folder(tmp_path / "cwd" / "data" / "kmnist", dict.fromkeys(names, b""))
    assert find_idx_dir("kmnist") == here
    partial = write_folder(tmp_path / "partial", dict.fromkeys(names[:3], b""))
    with pytest.raises(DataError) as info:
        find_idx_dir("kmnist", partial)  # a folder named explicitly must hold all four
    assert f"KMNIST folder {partial}" in str(info.value) and NAMES[3] in str(info.value)
    assert f"--dataset kmnist --dest {partial}" in str(info.value)


def test_cli_download_and_verify(fake_set, tmp_path, monkeypatch, capsys):
    key, files, _ = fake_set
    monkeypatch.chdir(tmp_path)
    title = IDX_SETS[key].title
    with serve(files) as (url, _):
        assert data.main(["download", "--dataset", key, "--mirror", url, "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"{title} is in {tmp_path / 'data' / key}"
    assert listing(tmp_path / "data" / key) == sorted(files)  # the default --dest
    assert data.main(["verify", "--dataset", key, "--data-dir", f"data/{key}"]) == 0
    assert "checksums (of the .gz files as published) match" in capsys.readouterr().out
    (tmp_path / "data" / key / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8bjunk")
    assert data.main(["verify", "--dataset", key, "--data-dir", f"data/{key}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "train-labels-idx1-ubyte.gz" in err
    assert "Traceback" not in err


def test_train_downloads_a_missing_named_dataset(fake_set, tmp_path, monkeypatch):
    key, files, _ = fake_set
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "_PROJECT_DATA_DIR", tmp_path / "nowhere")
    argv = ["--dataset", key, "--backend", "numpy", "--epochs", "1", "--hidden", "8",
            "--batch-size", "4", "--out", str(tmp_path / "run")]
    assert main([*argv, "--no-download"]) == 2  # refused: nothing fetched, nothing trained
    assert not (tmp_path / "data").exists()
    with serve(files) as (url, counts):
        monkeypatch.setattr(data, IDX_SETS[key].mirrors, [url])
        out = io.StringIO()
        history, status = run(parse_args(argv), stdout=out)
    assert status == 0 and counts == {name: 1 for name in files}
    assert f"{IDX_SETS[key].title} not found: downloading it into data/{key}" in out.getvalue()
    assert listing(tmp_path / "data" / key) == sorted(files)
    assert history["config"]["dataset"] == key
    _, meta = load_model(tmp_path / "run", with_meta=True)
    assert meta["dataset"] == key and meta["classes"] == list(IDX_SETS[key].classes)


# --------------------------------------------------------------- your data: .npz


def rows_to_labels(X, y, classes):
    """{row as bytes: class name}: samples and their labels, whatever their order."""
    return {np.asarray(x).tobytes(): classes[int(t)] for x, t in zip(X, y)}


def everything(ds):
    return {**rows_to_labels(ds.X_train, ds.y_train, ds.classes),
            **rows_to_labels(ds.X_test, ds.y_test, ds.classes)}


def test_npz_without_test_set_holds_out_a_stratified_sixth(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.random((60, 5))
    names = np.array(["cat"] * 30 + ["dog"] * 18 + ["eel"] * 12)[rng.permutation(60)]
    np.savez(tmp_path / "a.npz", X=X, y=names)
    ds = load_dataset(tmp_path / "a.npz", seed=5)
    assert ds.classes == ("cat", "dog", "eel") and ds.n_classes == 3
    assert ds.X_train.dtype == np.float64 and ds.scale == 1.0
    assert ds.X_train.flags.c_contiguous and ds.X_test.flags.c_contiguous
    assert np.bincount(ds.y_test).tolist() == [5, 3, 2]  # a sixth of each class
    assert len(ds.y_train) == 50 and ds.image_shape == (5,)
    assert everything(ds) == rows_to_labels(X, np.unique(names, return_inverse=True)[1],
                                            ds.classes)  # every sample once, with its label
    assert ds.name == ds.source == str((tmp_path / "a.npz").absolute())
    assert ds.notes == (f"{tmp_path / 'a.npz'}: no test set, so a stratified 1/6 of the samples "
                        f"(10 of 60, drawn with the seed 5) is held out as the test set",)

    again = load_dataset(tmp_path / "a.npz", seed=5)
    np.testing.assert_array_equal(again.X_test, ds.X_test)
    np.testing.assert_array_equal(again.X_train, ds.X_train)
    other = load_dataset(tmp_path / "a.npz", seed=6)
    assert not np.array_equal(other.X_test, ds.X_test)


def test_npz_test_set_is_kept_and_training_rows_shuffled(tmp_path):
    X = np.arange(40, dtype=np.float64).reshape(20, 2)
    y = np.repeat([3, 7], 10)  # sorted by class, as files often are
    X_test, y_test = X[:4] + 0.5, np.array([7, 3, 9, 3])
    np.savez(tmp_path / "b.npz", X=X, y=y, X_test=X_test, y_test=y_test)
    ds = load_dataset(tmp_path / "b.npz")
    assert ds.classes == ("3", "7", "9") and ds.notes == ()
    np.testing.assert_array_equal(ds.X_test, X_test)  # as given, in order
    assert [ds.classes[i] for i in ds.y_test] == ["7", "3", "9", "3"]
    assert not np.array_equal(ds.X_train, X)  # shuffled: the last rows are not one class
    assert set(ds.y_train[-4:]) == {0, 1}
    assert everything(ds) == {**rows_to_labels(X, y, list(map(str, range(10)))),
                              **rows_to_labels(X_test, y_test, list(map(str, range(10))))}


@pytest.mark.parametrize("X, dtype, scale, pixel_note", [
    (np.arange(24, dtype=np.uint8).reshape(6, 4), np.uint8, 1 / 255, False),
    (np.arange(24, dtype=np.int64).reshape(6, 4) * 10, np.uint8, 1 / 255, True),
    (np.arange(24, dtype=np.int64).reshape(6, 4) % 2, np.float64, 1.0, False),  # 0/1 indicators
    (np.arange(24, dtype=np.int64).reshape(6, 4) - 3, np.float64, 1.0, False),
    (np.linspace(0, 300, 24).reshape(6, 4), np.float64, 1.0, False),
    (np.linspace(0, 1, 24, dtype=np.float32).reshape(6, 4), np.float32, 1.0, False),
], ids=["uint8", "int-0-230", "int-0-1", "int-negative", "float64", "float32"])
def test_npz_storage_and_scale(tmp_path, X, dtype, scale, pixel_note):
    np.savez(tmp_path / "s.npz", X=X, y=np.arange(6) % 2, X_test=X[:2], y_test=[0, 1])
    ds = load_dataset(tmp_path / "s.npz")
    assert ds.X_train.dtype == dtype and ds.X_test.dtype == dtype
    assert ds.scale == pytest.approx(scale)
    assert any("read as pixels" in note for note in ds.notes) == pixel_note
    np.testing.assert_array_equal(ds.X_test, X[:2].astype(dtype))  # values kept


def test_npz_images_are_flattened_and_one_hot_labels_read(tmp_path):
    X = np.random.default_rng(0).integers(0, 256, (12, 4, 3), dtype=np.uint8)
    y = np.eye(3)[np.arange(12) % 3]
    np.savez(tmp_path / "img.npz", X=X, y=y)
    ds = load_dataset(tmp_path / "img.npz")
    assert ds.image_shape == (4, 3) and ds.X_train.shape[1] == 12
    assert ds.classes == ("0", "1", "2")
    assert everything(ds) == rows_to_labels(X.reshape(12, 12), np.arange(12) % 3, ds.classes)
    assert any("flattened to 12 features" in note for note in ds.notes)
    assert any("one-hot labels y" in note for note in ds.notes)


GOOD_X = np.random.default_rng(2).random((12, 3))
GOOD_Y = np.arange(12) % 3


def _with_nan(X, value):
    X = X.copy()
    X[4, 1] = value
    return X


# case -> (arrays saved with numpy.savez, or raw bytes; words the error must contain)
BAD_NPZ = {
    "no X": (dict(features=GOOD_X, y=GOOD_Y), "no array named X (it holds features, y)"),
    "no y": (dict(X=GOOD_X), "no array named y"),
    "X_test alone": (dict(X=GOOD_X, y=GOOD_Y, X_test=GOOD_X), "holds X_test but no y_test"),
    "lengths differ": (dict(X=GOOD_X, y=GOOD_Y[:-1]), "array y holds 11 labels but X holds 12"),
    "test lengths differ": (dict(X=GOOD_X, y=GOOD_Y, X_test=GOOD_X, y_test=GOOD_Y[:3]),
                            "array y_test holds 3 labels but X_test holds 12"),
    "NaN": (dict(X=_with_nan(GOOD_X, np.nan), y=GOOD_Y), "row 4, column 1 is nan"),
    "inf": (dict(X=_with_nan(GOOD_X, -np.inf), y=GOOD_Y), "row 4, column 1 is -inf"),
    "1-D X": (dict(X=GOOD_X[:, 0], y=GOOD_Y), "X.reshape(-1, 1)"),
    "empty X": (dict(X=np.empty((0, 3)), y=np.empty(0)), "is empty"),
    "text X": (dict(X=GOOD_X.astype(str), y=GOOD_Y), "holds text"),
    "complex X": (dict(X=GOOD_X + 1j, y=GOOD_Y), "holds complex numbers"),
    "object X": (dict(X=np.array([[1, "a"]] * 12, dtype=object), y=GOOD_Y), "without pickle"),
    "2-D labels": (dict(X=GOOD_X, y=np.stack([GOOD_Y, GOOD_Y], 1)), "is not one-hot"),
    "fractional labels": (dict(X=GOOD_X, y=GOOD_Y + 0.5), "y[0] is 0.5, not a class"),
    "NaN label": (dict(X=GOOD_X, y=np.where(GOOD_Y == 1, np.nan, GOOD_Y)),
                  "y[1] is nan, not a class"),
    "one class": (dict(X=GOOD_X, y=np.zeros(12)), "at least two classes"),
    "test features differ": (dict(X=GOOD_X, y=GOOD_Y, X_test=GOOD_X[:, :2], y_test=GOOD_Y),
                             "X_test has samples of shape (2,), X of shape (3,)"),
    "too few to hold out": (dict(X=GOOD_X[:2], y=[0, 1]), "too few to hold out a test set"),
    "not a zip": (b"X,y\n1,2\n", "not a .npz archive"),
    "a .npy": (None, "holds a single array"),
    "a pickle": (b"\x80\x04\x95", "not a .npz archive"),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_bad_npz_is_a_clear_error(tmp_path, case):
    content, words = BAD_NPZ[case]
    path = tmp_path / "bad.npz"
    if content is None:
        with open(path, "wb") as f:
            np.save(f, GOOD_X)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.savez(path, **content)
    with pytest.raises(DataError) as info:
        load_dataset(path)
    message = str(info.value)
    assert message.startswith(str(path)) and words in message
    # no chained exception: the traceback, were one printed, would show no numpy internals
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None


# --------------------------------------------------------------- your data: .csv


def write_csv(path, header, rows, delimiter=","):
    lines = ([delimiter.join(header)] if header else []) + [
        delimiter.join(str(c) for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def table():
    """(features, labels) of a small table with distinct float rows and three classes."""
    rng = np.random.default_rng(3)
    return np.round(rng.random((36, 3)), 3) + 0.001, np.arange(36) % 3


@pytest.mark.parametrize("name", ["label", "Target", "CLASS", "y"])
@pytest.mark.parametrize("delimiter", [",", ";", "\t"], ids=["comma", "semicolon", "tab"])
def test_csv_label_column_found_by_name(tmp_path, table, name, delimiter):
    X, y = table
    rows = [[a, t, b, c] for (a, b, c), t in zip(X.tolist(), y)]  # the label in column 1
    path = write_csv(tmp_path / "t.csv", ["a", name, "b", "c"], rows, delimiter)
    ds = load_dataset(path)
    assert ds.classes == ("0", "1", "2") and ds.X_train.dtype == np.float64 and ds.scale == 1
    assert everything(ds) == rows_to_labels(X, y, ds.classes)
    assert len(ds.y_test) == 6 and ds.image_shape == (3,)


def test_csv_label_column_option(tmp_path, table):
    X, y = table
    rows = [[*x, t] for x, t in zip(X.tolist(), y)]
    with_header = write_csv(tmp_path / "h.csv", ["f1", "f2", "f3", "kind"], rows)
    bare = write_csv(tmp_path / "n.csv", None, rows)
    for path, column in ((with_header, "kind"), (with_header, "KIND"), (with_header, "3"),
                         (with_header, -1), (bare, "3"), (bare, "-1")):
        ds = load_dataset(path, label_column=column)
        assert everything(ds) == rows_to_labels(X, y, ds.classes), (path, column)
    with pytest.raises(DataError, match="line 1: the label .* is not a class"):
        load_dataset(bare, label_column=0)  # the option is obeyed: a feature as the labels


def test_csv_string_labels_without_header(tmp_path, table):
    X, y = table
    species = np.array(["setosa", "versicolor", "virginica"])[y]
    rows = [[*x, s] for x, s in zip(X.tolist(), species)]
    path = write_csv(tmp_path / "iris.csv", None, rows)
    ds = load_dataset(path, label_column=-1)  # "setosa" over "setosa" is data, not a header
    assert ds.classes == ("setosa", "versicolor", "virginica")
    assert everything(ds) == rows_to_labels(X, y, ds.classes)
    assert len(ds.y_train) + len(ds.y_test) == 36


def test_csv_fast_and_careful_readers_agree(tmp_path, table, monkeypatch):
    X, y = table
    path = write_csv(tmp_path / "t.csv", ["a", "b", "c", "label"],
                     [[*x, t] for x, t in zip(X.tolist(), y)])
    fast = load_dataset(path)
    monkeypatch.setattr(datasets, "_csv_fast", lambda *args: None)
    monkeypatch.setattr(datasets, "_CSV_CHUNK", 5)  # several chunks, one of them partial
    careful = load_dataset(path)
    for field in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(careful, field))
    assert fast.classes == careful.classes


def test_csv_whole_numbers_0_255_are_pixels(tmp_path):
    rows = [[i % 256, (7 * i) % 256, i % 2] for i in range(24)]
    ds = load_dataset(write_csv(tmp_path / "p.csv", ["p0", "p1", "label"], rows))
    assert ds.X_train.dtype == np.uint8 and ds.scale == pytest.approx(1 / 255)
    assert any("read as pixels" in note and "uint8" in note for note in ds.notes)
    binary = [[i % 2, (i // 2) % 2, i % 3] for i in range(24)]  # 0/1 features stay as they are
    ds = load_dataset(write_csv(tmp_path / "b.csv", ["p0", "p1", "label"], binary))
    assert ds.X_train.dtype == np.float64 and ds.scale == 1.0


# case -> (file content, label_column, words the error must contain)
BAD_CSV = {
    "ragged row": ("a,b,label\n1,2,0\n3,4\n5,6,1\n", None,
                   "line 3: 2 cells, but the header has 3"),
    "not a number": ("a,b,label\n1,2,0\n3,abc,1\n", None, "line 3, column 'b' holds 'abc'"),
    "empty cell": ("a,b,label\n1,,0\n3,4,1\n", None, "line 2, column 'b' is empty"),
    "NaN": ("a,b,label\n1,2,0\n3,nan,1\n", None, "line 3, column 'b' is 'nan'"),
    "inf": ("a,b,label\n1,2,0\n-inf,4,1\n", None, "line 3, column 'a' is '-inf'"),
    "missing label": ("a,b,label\n1,2,0\n3,4,\n", None,
                      "line 3: the label (column 'label') is empty"),
    "fractional label": ("a,b,label\n1,2,0\n3,4,0.5\n", None, "the label '0.5'"),
    "no label column": ("a,b,c\n1,2,0\n3,4,1\n", None, "no column is named label"),
    "two label columns": ("label,y,b\n1,2,0\n3,4,1\n", None, "several columns could hold"),
    "no header": ("1,2,0\n3,4,1\n", None, "--label-column INDEX"),
    "unknown column": ("a,b,label\n1,2,0\n3,4,1\n", "kind", "no column of"),
    "index out of range": ("a,b,label\n1,2,0\n3,4,1\n", "3", "an index runs from 0 to 2"),
    "name without header": ("1,2,0\n3,4,1\n", "kind", "has no header row"),
    "empty file": ("", None, "the file is empty"),
    "header only": ("a,b,label\n", None, "no data rows below the header"),
    "one column": ("label\n1\n2\n", None, "single column"),
    "one class": ("a,b,label\n1,2,7\n3,4,7\n", None, "at least two classes"),
    "not UTF-8": (b"a,b,label\n1,2,\xff\n", None, "not UTF-8"),
}


@pytest.mark.parametrize("case", list(BAD_CSV))
def test_bad_csv_is_a_clear_error(tmp_path, case):
    content, column, words = BAD_CSV[case]
    path = tmp_path / "bad.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(DataError) as info:
        load_dataset(path, label_column=column)
    message = str(info.value)
    assert str(path) in message and words in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None


# ---------------------------------------------------------- your data: IDX folder


def test_idx_folder_unverified_with_and_without_test_files(tmp_path):
    arrays = fake_arrays(n_train=30, n_test=5)
    folder = tmp_path / "mine"
    write_folder(folder, {"train-images-idx3-ubyte.gz": gzip.compress(
        idx_bytes(arrays["train-images-idx3-ubyte"])),
        "train-labels-idx1-ubyte": idx_bytes(arrays["train-labels-idx1-ubyte"])})
    ds = load_dataset(folder)
    assert ds.notes[0] == (f"{folder}: IDX files read without checksum verification (mlp has "
                           "checksums only for --dataset mnist, fashion-mnist and kmnist)")
    assert "held out as the test set" in ds.notes[1]
    assert len(ds.y_test) == 10  # 3 of each digit: round(3 / 6) = 1 each
    assert ds.image_shape == (28, 28) and ds.scale == pytest.approx(1 / 255)
    assert everything(ds) == rows_to_labels(arrays["train-images-idx3-ubyte"].reshape(30, 784),
                                            arrays["train-labels-idx1-ubyte"], ds.classes)

    write_folder(folder, {name: idx_bytes(arrays[name])
                          for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")})
    ds = load_dataset(folder)
    assert len(ds.notes) == 1 and len(ds.y_train) == 30
    np.testing.assert_array_equal(ds.X_test, arrays["t10k-images-idx3-ubyte"].reshape(5, 784))


def _idx_case(folder, case):
    arrays = fake_arrays(n_train=6, n_test=3)
    files = {name: idx_bytes(array) for name, array in arrays.items()}
    if case == "no labels":
        del files["train-labels-idx1-ubyte"]
    elif case == "test images alone":
        del files["t10k-labels-idx1-ubyte"]
    elif case == "counts differ":
        files["train-labels-idx1-ubyte"] = idx_bytes(np.arange(5, dtype=np.uint8))
    elif case == "2-D labels":
        files["train-labels-idx1-ubyte"] = idx_bytes(np.zeros((6, 2), np.uint8))
    elif case == "test size differs":
        files["t10k-images-idx3-ubyte"] = idx_bytes(np.zeros((3, 27, 28), np.uint8))
    elif case == "truncated":
        files["t10k-images-idx3-ubyte"] = files["t10k-images-idx3-ubyte"][:-9]
    elif case == "NaN pixels":
        images = np.ones((6, 2, 2), np.float32)
        images[3, 1, 0] = np.nan
        files["train-images-idx3-ubyte"] = idx_bytes(images)
        files["t10k-images-idx3-ubyte"] = idx_bytes(np.ones((3, 2, 2), np.float32))
    write_folder(folder, files)


BAD_IDX = {
    "no labels": ("no train-labels-idx1-ubyte (raw or .gz) there", "folder"),
    "test images alone": ("holds t10k-images-idx3-ubyte but no t10k-labels-idx1-ubyte",
                          "folder"),
    "counts differ": ("holds 6 images but", "train-images-idx3-ubyte"),
    "2-D labels": ("expected one label per image", "train-labels-idx1-ubyte"),
    "test size differs": ("images of shape (27, 28), but those of", "t10k-images-idx3-ubyte"),
    "truncated": ("truncated", "t10k-images-idx3-ubyte"),
    "NaN pixels": ("row 3, column 2 is nan", "train-images-idx3-ubyte"),
}


@pytest.mark.parametrize("case", list(BAD_IDX))
def test_bad_idx_folder_is_a_clear_error(tmp_path, case):
    folder = tmp_path / "f"
    _idx_case(folder, case)
    words, culprit = BAD_IDX[case]
    with pytest.raises(DataError) as info:
        load_dataset(folder)
    message = str(info.value)
    named = folder if culprit == "folder" else folder / culprit
    assert message.startswith(str(named)) and words in message


def test_unknown_paths_and_misplaced_options(tmp_path):
    with pytest.raises(DataError, match="no file or folder") as info:
        load_dataset(tmp_path / "nothing.npz")
    assert "mnist, digits, fashion-mnist, kmnist" in str(info.value)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match=r"not from a \.json"):
        load_dataset(tmp_path / "x.json")
    np.savez(tmp_path / "a.npz", X=GOOD_X, y=GOOD_Y)
    with pytest.raises(DataError, match="only a .csv has label columns"):
        load_dataset(tmp_path / "a.npz", label_column="y")
    with pytest.raises(DataError, match="Leave --data-dir out"):
        load_dataset(tmp_path / "a.npz", data_dir=tmp_path)
    with pytest.raises(DataError, match="has its own labels"):
        load_dataset("digits", label_column="y")


# ------------------------------------------------------- training and evaluating


def _digits_files(folder):
    """The digits as an .npz (uint8 8x8 images, string labels) and as a .csv (floats
    in [0, 1], the label column first): files a user could have written."""
    d = sk_digits()
    words = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])
    npz = folder / "digits.npz"
    np.savez(npz, X=(d.images * 15).astype(np.uint8), y=words[d.target])
    csv_path = folder / "my digits.csv"
    lines = ["label," + ",".join(f"px{i}" for i in range(64))]
    lines += [f"{t}," + ",".join(f"{v / 16:.4g}" for v in x) for x, t in zip(d.data, d.target)]
    csv_path.write_text("\n".join(lines) + "\n")
    return npz, csv_path


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    return _digits_files(tmp_path_factory.mktemp("own"))


#: SGD with momentum (the default recipe's Adam at 0.1 would overshoot on these 1,500 digits)
TRAIN = ["--backend", "numpy", "--epochs", "3", "--hidden", "32", "--optimizer", "sgd",
         "--lr", "0.1", "--lr-schedule", "constant", "--batch-size", "10"]


@pytest.mark.parametrize("kind", ["npz", "csv"])
def test_train_on_your_own_file_then_evaluate(digits_files, tmp_path, kind):
    path = digits_files[0] if kind == "npz" else digits_files[1]
    out = io.StringIO()
    history, status = run(parse_args(["--dataset", str(path), *TRAIN, "--out",
                                      str(tmp_path / "run")]), stdout=out)
    text = out.getvalue()
    assert status == 0
    assert history["test_accuracy"] > 0.8  # 300 held-out digits; about 0.9 seen
    assert "is held out as the test set" in text
    assert ("flattened to 64 features" in text) == (kind == "npz")
    assert history["config"]["dataset"] == str(path.absolute())
    _, meta = load_model(tmp_path / "run", with_meta=True)
    assert meta["dataset"] == str(path.absolute()) and meta["split_seed"] == 0
    assert meta["classes"] == (sorted(["zero", "one", "two", "three", "four", "five", "six",
                                       "seven", "eight", "nine"]) if kind == "npz"
                               else [str(i) for i in range(10)])
    # the model's metadata lead back to the same test set
    acc, counts, data_ = evaluate_model(tmp_path / "run")
    assert acc == pytest.approx(history["test_accuracy"], abs=1e-12)
    assert counts.sum() == len(data_.y_test) == 300


def test_the_command_line_on_a_csv(digits_files, tmp_path):
    """``python -m mlp.train --dataset FILE.csv``, then ``python -m mlp.evaluate RUN``
    from another folder, and a bad file's one-line error."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT),
                                                       os.environ.get("PYTHONPATH", "")]))
    csv_path = digits_files[1]
    r = subprocess.run([sys.executable, "-m", "mlp.train", "--dataset", csv_path.name, *TRAIN,
                        "--seed", "4", "--out", str(tmp_path / "run")],
                       cwd=csv_path.parent, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    acc = float(r.stdout.splitlines()[-1].removeprefix("test accuracy: "))
    assert acc > 0.8
    assert "drawn with the seed 4" in r.stdout
    e = subprocess.run([sys.executable, "-m", "mlp.evaluate", str(tmp_path / "run")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert e.returncode == 0, e.stderr
    assert e.stdout.splitlines()[-1] == f"test accuracy: {acc:.4f}"

    bad = write_csv(tmp_path / "bad.csv", ["a", "label"], [[1, 0], ["x", 1]])
    b = subprocess.run([sys.executable, "-m", "mlp.train", "--dataset", str(bad),
                        "--backend", "numpy", "--out", str(tmp_path / "b")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert b.returncode == 2 and "Traceback" not in b.stderr
    assert b.stderr.startswith(f"error: {bad}, line 3, column 'a' holds 'x'")


def test_evaluate_refuses_a_file_whose_classes_changed(digits_files, tmp_path):
    npz = digits_files[0]
    run(parse_args(["--dataset", str(npz), *TRAIN, "--epochs", "1", "--out",
                    str(tmp_path / "run")]), stdout=io.StringIO())
    with np.load(npz) as f:
        X, y = f["X"], f["y"]
    changed = tmp_path / "changed.npz"
    np.savez(changed, X=X, y=np.char.upper(y))
    with pytest.raises(MLPError, match="trained on the classes"):
        evaluate_model(tmp_path / "run", dataset=str(changed))


def test_dataset_option(tmp_path, capsys):
    np.savez(tmp_path / "a.npz", X=GOOD_X, y=GOOD_Y)
    args = parse_args(["--dataset", str(tmp_path / "a.npz")])
    assert args.dataset == str((tmp_path / "a.npz").absolute())
    assert parse_args(["--dataset", "Fashion-MNIST"]).dataset == "fashion-mnist"
    with pytest.raises(SystemExit):
        parse_args(["--dataset", str(tmp_path / "missing.csv")])
    err = capsys.readouterr().err
    assert "argument --dataset" in err and "neither a dataset name" in err
    assert main(["--dataset", "digits", "--label-column", "y", "--backend", "numpy"]) == 2
    assert "--label-column is for a .csv" in capsys.readouterr().err
    assert main(["--dataset", str(tmp_path / "a.npz"), "--data-dir", str(tmp_path),
                 "--backend", "numpy", "--out", str(tmp_path / "r")]) == 2
    assert "Leave --data-dir out" in capsys.readouterr().err


def test_own_data_skips_compiling_ahead_and_names_its_run_folder():
    args = parse_args(["--dataset", __file__])  # any existing file will do here
    assert args.backend == "numba"
    assert compile_ahead(args) == 0.0  # the shape is unknown before the data are read
    folder = default_out_dir("/some/where/my data (v2).csv")
    assert folder.parent == pathlib.Path("runs") and not folder.exists()
    assert folder.name.endswith("-my-data-v2")
    assert default_out_dir("kmnist").name.endswith("-kmnist")


def test_history_json_records_the_path(digits_files, tmp_path):
    run(parse_args(["--dataset", str(digits_files[1]), "--label-column", "label", *TRAIN,
                    "--epochs", "1", "--out", str(tmp_path / "run")]), stdout=io.StringIO())
    config = json.loads((tmp_path / "run" / "history.json").read_text())["config"]
    assert config["dataset"] == str(digits_files[1].absolute())
    assert config["label_column"] == "label"
    _, meta = load_model(tmp_path / "run", with_meta=True)
    assert meta["label_column"] == "label"
