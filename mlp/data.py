"""Datasets for the MLP: MNIST, Fashion-MNIST and KMNIST from IDX files,
scikit-learn's 8x8 digits. Your own data (a .npz, a .csv, a folder of IDX
files) are read by :mod:`mlp.datasets`, which builds on this module.

Every loader returns a :class:`Dataset`. Pixel arrays stay ``uint8`` in
memory (47 MB for the MNIST training images instead of 376 MB as float64);
callers turn a batch into floats in [0, 1] with ``X[idx] * dataset.scale``.

MNIST, Fashion-MNIST and KMNIST are read from their four standard IDX files,
gzip-compressed or raw, found by :func:`find_idx_dir` (``--data-dir``, then,
for MNIST only, ``$MLP_DATA_DIR``, then ``data/<name>`` under the current
folder, then ``data/<name>`` in the project). Every load verifies the files:

* MNIST by the SHA-256 of each file's uncompressed content (:data:`MNIST_FILES`),
  so a re-compressed or gunzipped copy passes too;
* Fashion-MNIST and KMNIST by the SHA-256 of each ``.gz`` file as published
  (:data:`FASHION_MNIST_FILES`, :data:`KMNIST_FILES`): no canonical checksum of
  their uncompressed content is known to mlp, so only the published ``.gz``
  files can be checked, and an uncompressed copy is refused (pass its folder
  as ``--dataset DIR`` to use it unverified).

Nothing is downloaded implicitly here (``python -m mlp.train`` does, when the
files are nowhere to be found); to fetch or check the files::

    python -m mlp.data download --dest data/mnist   # fetch and verify
    python -m mlp.data verify --data-dir data/mnist  # check a folder
    python -m mlp.data download --dataset fashion-mnist   # into data/fashion-mnist

The digits set (1,797 images, bundled with scikit-learn) needs no download.

Every problem with a file or folder raises :class:`mlp.errors.DataError` with a
message naming the file and saying what to do.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import math
import numbers
import os
import pathlib
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass

import numpy as np

from mlp.cli import nonnegative_int, positive_float
from mlp.errors import DataError, MLPError

# The four files of each IDX dataset mlp knows by name:
# key -> (file name without ".gz",
#         SHA-256 of the uncompressed content, or None where no canonical value is known,
#         SHA-256 of the .gz file as published, or None)
# A file is verified by its uncompressed content when that value is known,
# else by the bytes of the published .gz (see _checksum_problem).
MNIST_FILES: dict = {
    "train_images": (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "train_labels": (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "test_images": (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "test_labels": (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}

# MNIST's base URLs; a file is fetched from base + name + ".gz".
MIRRORS: list = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]

# Fashion-MNIST (Zalando Research). Only SHA-256 values of the published .gz
# files are known: those listed in tensorflow/datasets
# (url_checksums/fashion_mnist.txt) and, identically, in pytorch/vision's
# prototype datasets (_builtin/mnist.py). For the two label files they were
# also recomputed from the .gz files in the git history of
# zalandoresearch/fashion-mnist (commit 658ec8c), whose MD5s are the ones its
# README publishes. Copies made before that commit removed duplicate images
# (2017-08-31) have other checksums and are refused.
FASHION_MNIST_FILES: dict = {
    "train_images": (
        "train-images-idx3-ubyte", None,
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    ),
    "train_labels": (
        "train-labels-idx1-ubyte", None,
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    ),
    "test_images": (
        "t10k-images-idx3-ubyte", None,
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    ),
    "test_labels": (
        "t10k-labels-idx1-ubyte", None,
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    ),
}

# The GitHub copy first for HTTPS (the S3 website endpoint serves plain HTTP
# only); both serve the same files, and the checksum is what protects them.
FASHION_MNIST_MIRRORS: list = [
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
]

# Kuzushiji-MNIST (ROIS-CODH). As for Fashion-MNIST, only the SHA-256 values
# of the published .gz files are known: tensorflow/datasets
# (url_checksums/kmnist.txt) and pytorch/vision's prototype datasets list the
# same ones.
KMNIST_FILES: dict = {
    "train_images": (
        "train-images-idx3-ubyte", None,
        "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
    ),
    "train_labels": (
        "train-labels-idx1-ubyte", None,
        "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
    ),
    "test_images": (
        "t10k-images-idx3-ubyte", None,
        "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
    ),
    "test_labels": (
        "t10k-labels-idx1-ubyte", None,
        "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
    ),
}

KMNIST_MIRRORS: list = ["https://codh.rois.ac.jp/kmnist/dataset/kmnist/"]

#: seconds a download waits for a server to connect or send more data
DOWNLOAD_TIMEOUT = 30.0


@dataclass(frozen=True)
class IdxSet:
    """An IDX dataset mlp knows by name. ``files`` and ``mirrors`` name the
    module globals holding its tables: they are looked up when used, so that a
    test (or a user) can replace a table, as the tests do with MNIST_FILES."""

    title: str
    files: str
    mirrors: str
    classes: tuple = None


IDX_SETS = {
    "mnist": IdxSet("MNIST", "MNIST_FILES", "MIRRORS"),
    "fashion-mnist": IdxSet("Fashion-MNIST", "FASHION_MNIST_FILES", "FASHION_MNIST_MIRRORS",
                            ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                             "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "kmnist": IdxSet("KMNIST", "KMNIST_FILES", "KMNIST_MIRRORS",
                     ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
}

#: the datasets known by name; anything else given as a dataset is a path (see mlp.datasets)
DATASETS = ("mnist", "digits", "fashion-mnist", "kmnist")
#: (inputs, classes) of each named dataset, known before it is loaded
SHAPES = {"mnist": (784, 10), "digits": (64, 10), "fashion-mnist": (784, 10),
          "kmnist": (784, 10)}

# Where find_idx_dir looks last: data/<name> in the folder above the package
# (MNIST's has a name of its own so that the tests can move it).
_PROJECT_DATA_DIR = pathlib.Path(__file__).resolve().parent.parent / "data"
_PROJECT_MNIST_DIR = _PROJECT_DATA_DIR / "mnist"

# IDX type byte -> dtype of the (big-endian) data.
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_MAX_ELEMENTS = 2**31
# Deflate cannot expand data by more than about 1032:1, so a gzip file of n
# bytes holds at most ~1032 n bytes: a header claiming more is corrupt.
_MAX_GZIP_RATIO = 1100
_CHUNK = 1 << 20


@dataclass
class Dataset:
    """A train/test split of samples with integer labels.

    ``X_*`` are C-contiguous arrays of shape (n, n_features): ``uint8`` pixels,
    to be multiplied by ``scale`` to get floats in [0, 1], or floats used as
    they are (``scale`` 1). ``y_*`` are int64 labels in ``0 .. n_classes - 1``.
    ``classes`` names the classes, in label order, where they have names
    other than their numbers (or came from a file's own labels); ``notes``
    are one-line remarks a run prints about how the data were read.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    scale: float
    n_classes: int
    image_shape: tuple
    source: str
    classes: tuple = None
    notes: tuple = ()


# --------------------------------------------------------------------- IDX


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a new numpy array.

    Gzip is recognised by its magic bytes, whatever the file is called.
    Supported types: uint8 (0x08), int8 (0x09) and big-endian int16 (0x0B),
    int32 (0x0C), float32 (0x0D), float64 (0x0E); the result is in native
    byte order, writable and owned. The header and the data length are
    validated before anything large is allocated; any problem raises
    DataError naming the file.
    """
    return _read_idx(path)[0]


class _HashingFile:
    """A binary file whose every byte read through it goes into a SHA-256."""

    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()

    def read(self, n=-1):
        data = self.f.read(n)
        self.sha.update(data)
        return data

    def readinto(self, buffer):
        n = self.f.readinto(buffer)
        self.sha.update(memoryview(buffer)[:n])
        return n


def _read_idx(path, sha256=None):
    """Return ``(array, hex SHA-256 or None)``: with ``sha256="content"`` that of the
    uncompressed bytes, with ``sha256="file"`` that of the file as it is on disk
    (hashed in the same single read that parses it)."""
    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file. Check the path, or download MNIST "
                        f"with `python -m mlp.data download --dest DIR`.") from None
    except OSError as e:
        raise DataError(f"cannot open {path}: {e.strerror or e}.") from None
    with f:
        is_gzip = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        source = _HashingFile(f) if sha256 == "file" else f
        content = sha256 == "content"
        try:
            if is_gzip:
                with gzip.GzipFile(fileobj=source, mode="rb") as stream:
                    array, digest = _parse_idx(stream, path, size, True, content)
            else:
                array, digest = _parse_idx(source, path, size, False, content)
            if sha256 == "file":
                while source.read(_CHUNK):  # the parser stops at the data's end: hash it all
                    pass
                digest = source.sha.hexdigest()
            return array, digest
        except (OSError, EOFError, zlib.error) as e:
            what = "corrupt or truncated gzip data" if is_gzip else "read error"
            raise _idx_error(path, f"{what} ({e})") from None


def _idx_error(path, problem):
    return DataError(
        f"{path}: {problem}. The file is damaged or not an IDX file; replace it "
        f"(for MNIST, re-download it with `python -m mlp.data download --dest "
        f"{path.parent}`).")


def _read_exact(stream, n):
    """Read up to n bytes, looping over short reads."""
    parts, got = [], 0
    while got < n:
        part = stream.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _parse_idx(stream, path, file_size, is_gzip, sha256):
    content = "decompressed content" if is_gzip else "file"
    head = _read_exact(stream, 4)
    if not head:
        raise _idx_error(path, f"the {content} is empty")
    if len(head) < 4:
        raise _idx_error(path, f"the {content} ends inside the 4-byte IDX header")
    if head[0] != 0 or head[1] != 0:
        raise _idx_error(path, f"bad magic number: the {content} starts with bytes "
                               f"{head[0]:02x} {head[1]:02x}, an IDX file starts with 00 00")
    dtype = _IDX_TYPES.get(head[2])
    if dtype is None:
        known = ", ".join(f"0x{t:02X}" for t in _IDX_TYPES)
        raise _idx_error(path, f"unknown IDX data type byte 0x{head[2]:02X} (known: {known})")
    ndim = head[3]
    if not 1 <= ndim <= 4:
        raise _idx_error(path, f"the header gives {ndim} dimensions; this reader accepts 1 to 4")
    dims_bytes = _read_exact(stream, 4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise _idx_error(path, f"the {content} ends inside the IDX header "
                               f"({ndim} dimension sizes expected)")
    dims = tuple(int.from_bytes(dims_bytes[4 * i:4 * i + 4], "big") for i in range(ndim))
    if 0 in dims:
        raise _idx_error(path, f"dimension {dims.index(0)} of {dims} is 0: the file holds no data")
    count = math.prod(dims)
    if count > _MAX_ELEMENTS:
        raise _idx_error(path, f"the header claims dimensions {dims}, {count} elements, more "
                               f"than the 2**31 this reader accepts")
    nbytes = count * dtype.itemsize
    header_len = 4 + 4 * ndim
    if not is_gzip and nbytes > file_size - header_len:
        raise _idx_error(path, f"truncated: dimensions {dims} need {nbytes} data bytes but "
                               f"only {file_size - header_len} follow the header")
    if is_gzip and nbytes > file_size * _MAX_GZIP_RATIO:
        raise _idx_error(path, f"the header claims dimensions {dims}, {nbytes} data bytes, "
                               f"more than a {file_size}-byte gzip file can hold")

    buf = np.empty(nbytes, dtype=np.uint8)
    view = memoryview(buf)
    got = 0
    while got < nbytes:
        n = stream.readinto(view[got:got + _CHUNK])
        if not n:
            break
        got += n
    if got < nbytes:
        raise _idx_error(path, f"truncated: dimensions {dims} need {nbytes} data bytes "
                               f"but the {content} holds only {got}")
    if stream.read(1):  # for gzip this also checks the CRC at the end of the stream
        raise _idx_error(path, f"trailing bytes: the {content} is longer than the "
                               f"{header_len}-byte header plus {nbytes} data bytes")

    digest = None
    if sha256:
        h = hashlib.sha256(head)
        h.update(dims_bytes)
        h.update(view)
        digest = h.hexdigest()
    array = buf.view(dtype).reshape(dims)
    if dtype.itemsize > 1:
        array = array.astype(dtype.newbyteorder("="))
    return array, digest


# ------------------------------------------------ MNIST, Fashion-MNIST, KMNIST


def _idx_set(dataset):
    try:
        return IDX_SETS[dataset]
    except KeyError:
        raise DataError(f"unknown IDX dataset {dataset!r}: choose one of "
                        f"{', '.join(IDX_SETS)}.") from None


def _files(dataset="mnist"):
    return globals()[_idx_set(dataset).files]


def _mirrors(dataset="mnist"):
    return globals()[_idx_set(dataset).mirrors]


def _file_names(dataset="mnist"):
    return [entry[0] for entry in _files(dataset).values()]


def _mnist_path(folder, name):
    """The file the loader uses for ``name`` in folder: ``name.gz``, else ``name``, else None."""
    for candidate in (folder / (name + ".gz"), folder / name):
        if candidate.is_file():
            return candidate
    return None


def _missing_files(folder, dataset="mnist"):
    return [name for name in _file_names(dataset) if _mnist_path(folder, name) is None]


def _download_command(dataset, dest):
    option = "" if dataset == "mnist" else f" --dataset {dataset}"
    return f"python -m mlp.data download{option} --dest {dest}"


def _default_dirs(dataset):
    """data/<dataset> under the current folder, then in the project."""
    project = _PROJECT_MNIST_DIR if dataset == "mnist" else _PROJECT_DATA_DIR / dataset
    return [pathlib.Path.cwd() / "data" / dataset, project]


def find_mnist_dir(data_dir=None) -> pathlib.Path:
    """The folder holding the four MNIST files: :func:`find_idx_dir` for ``"mnist"``."""
    return find_idx_dir("mnist", data_dir)


def find_idx_dir(dataset, data_dir=None) -> pathlib.Path:
    """Return the folder holding the four files of ``dataset`` (each ``name`` or ``name.gz``).

    ``dataset`` is ``"mnist"``, ``"fashion-mnist"`` or ``"kmnist"``. Lookup
    order: ``data_dir``, then (for MNIST only) the ``MLP_DATA_DIR``
    environment variable, then ``data/<dataset>`` under the current folder,
    then ``data/<dataset>`` under the project root. A folder named by the
    argument or the variable must hold all four files (no falling through to
    other places); otherwise the first of the default folders that does is
    used. Raises DataError saying where it looked and how to get the files.
    """
    title = _idx_set(dataset).title
    explicit = [(data_dir, "--data-dir / the data_dir argument")]
    if dataset == "mnist":  # MLP_DATA_DIR predates the other datasets and names MNIST's folder
        explicit.append((os.environ.get("MLP_DATA_DIR") or None, "MLP_DATA_DIR"))
    for value, origin in explicit:
        if value is None:
            continue
        folder = pathlib.Path(value).expanduser().absolute()
        if not folder.is_dir():
            raise DataError(f"{title} folder {folder} (from {origin}) does not exist. "
                            f"Fix the path, or fetch the files there with "
                            f"`{_download_command(dataset, folder)}`.")
        missing = _missing_files(folder, dataset)
        if missing:
            raise DataError(f"{title} folder {folder} (from {origin}) lacks "
                            f"{', '.join(missing)} (raw or .gz). Put the files there, or fetch "
                            f"them with `{_download_command(dataset, folder)}`.")
        return folder

    looked = []
    for folder in _default_dirs(dataset):
        folder = folder.absolute()
        if any(folder == seen for seen, _ in looked):
            continue
        if not folder.is_dir():
            looked.append((folder, "does not exist"))
            continue
        missing = _missing_files(folder, dataset)
        if not missing:
            return folder
        looked.append((folder, "lacks " + ", ".join(missing)))
    places = "\n".join(f"  {folder} ({why})" for folder, why in looked)
    unset = ("No --data-dir was given, MLP_DATA_DIR is not set, and these " if dataset == "mnist"
             else "No --data-dir was given (MLP_DATA_DIR is MNIST's only), and these ")
    point = ("(or point MLP_DATA_DIR/--data-dir at them)" if dataset == "mnist"
             else "(or point --data-dir at them)")
    raise DataError(
        f"{title} not found. {unset}folders do not hold the files:\n{places}\n"
        f"The four files are {', '.join(_file_names(dataset))} (each raw or .gz). Either put "
        f"them in one of those folders {point}, or run "
        f"`{_download_command(dataset, 'data/' + dataset)}`. "
        "To work offline without it, use `--dataset digits`.")


def _read_checked(path, entry, verify):
    """Read the IDX file ``path`` of the table ``entry``; return (array, problem).

    ``problem`` is None when the file passed (or ``verify`` is false), else
    why it did not, in words: a checksum that differs, or an uncompressed
    file where only the published .gz can be checked.
    """
    _, content_sha, gz_sha = entry[:3]
    if content_sha or not verify:
        array, digest = _read_idx(path, sha256="content" if verify and content_sha else None)
        if verify and digest != content_sha:
            return array, (f"checksum mismatch: the SHA-256 of its uncompressed content is "
                           f"{digest}, expected {content_sha}")
        return array, None
    # parsed before the checksum is compared: a damaged file gets the reader's precise message
    array, digest = _read_idx(path, sha256="file")
    if digest == gz_sha:
        return array, None
    with open(path, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
    if not compressed:
        return array, ("the file is uncompressed, and mlp knows only the SHA-256 of the .gz "
                       "file as published, not of its content, so it cannot verify it")
    return array, (f"checksum mismatch: the SHA-256 of the .gz file is {digest}, expected "
                   f"{gz_sha} (that of the published .gz; a re-compressed copy differs too)")


def load_mnist(data_dir=None, verify=True) -> Dataset:
    """Load MNIST from the folder :func:`find_mnist_dir` finds: :func:`load_idx` for ``"mnist"``.

    Images come back as (n, 784) uint8 with ``scale`` 1/255, labels as int64.
    With ``verify`` the SHA-256 of each file's uncompressed content must equal
    the canonical value in :data:`MNIST_FILES`.
    """
    return load_idx("mnist", data_dir, verify)


def load_idx(dataset, data_dir=None, verify=True) -> Dataset:
    """Load ``"mnist"``, ``"fashion-mnist"`` or ``"kmnist"`` from the folder
    :func:`find_idx_dir` finds.

    Images come back as (n, 784) uint8 with ``scale`` 1/255, labels as int64.
    With ``verify`` each file must match its canonical SHA-256 (see the module
    docstring for what is checked for which dataset). Whether verified or not,
    the images must be 28x28 uint8, labels 0-9, and each image file must have
    as many entries as its label file. Raises DataError otherwise.
    """
    spec = _idx_set(dataset)
    title = spec.title
    folder = find_idx_dir(dataset, data_dir)
    redownload = _download_command(dataset, folder)
    arrays = {}
    for key, entry in _files(dataset).items():
        path = _mnist_path(folder, entry[0])
        array, problem = _read_checked(path, entry, verify)
        if problem and problem.startswith("checksum mismatch"):
            raise DataError(
                f"{path}: {problem}. The file is damaged or not the canonical {title}; delete "
                f"it and re-download with `{redownload}` (or, to train on a modified copy on "
                f"purpose, pass the folder itself, `--dataset {folder}`, which reads IDX files "
                f"without checksums; in Python, verify=False).")
        if problem:
            raise DataError(
                f"{path}: {problem}. Put the published {entry[0]}.gz there instead "
                f"(`{redownload}`), or, to use these files unverified, pass the folder "
                f"itself: `--dataset {folder}`.")
        arrays[key] = (path, array)

    original = f"Replace the file with the {title} original (`{redownload}`)."
    for part in ("train", "test"):
        image_path, images = arrays[part + "_images"]
        label_path, labels = arrays[part + "_labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{image_path}: expected uint8 images of shape (n, 28, 28), "
                            f"found {images.dtype} with shape {images.shape}. {original}")
        if labels.ndim != 1:
            raise DataError(f"{label_path}: expected a 1-D label array, found shape "
                            f"{labels.shape}. {original}")
        if len(images) != len(labels):
            raise DataError(f"{image_path} holds {len(images)} images but {label_path} holds "
                            f"{len(labels)} labels; the two files do not belong together. "
                            f"Replace them with the {title} originals.")
        bad = (labels < 0) | (labels > 9) | (labels != np.round(labels))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{label_path}: label {labels[i].item()} at index {i} is not an "
                            f"integer 0-9. {original}")

    def images(key):
        return arrays[key][1].reshape(len(arrays[key][1]), 28 * 28)

    def labels(key):
        return arrays[key][1].astype(np.int64)

    return Dataset(name=dataset,
                   X_train=images("train_images"), y_train=labels("train_labels"),
                   X_test=images("test_images"), y_test=labels("test_labels"),
                   scale=1.0 / 255.0, n_classes=10, image_shape=(28, 28),
                   source=str(folder), classes=spec.classes)


# ------------------------------------------------------------------ digits


def load_digits(test_size=360) -> Dataset:
    """Load scikit-learn's bundled 8x8 digits (1,797 images; no download needed).

    Pixels are 0-16, stored as uint8 with ``scale`` 1/16. The split is
    deterministic and stratified by class: ``sklearn.model_selection.
    train_test_split(..., test_size=test_size, stratify=y, random_state=0)``.
    ``test_size`` is a count (default 360, about 20%) or a fraction in (0, 1).
    """
    # scikit-learn for the digits only: an MNIST run never imports it (see docs/performance.md)
    from sklearn import datasets, model_selection

    bunch = datasets.load_digits()
    X = bunch.data.astype(np.uint8)
    y = bunch.target.astype(np.int64)
    if isinstance(test_size, float) and not 0.0 < test_size < 1.0:
        raise DataError(f"test_size={test_size!r}: a fraction must lie strictly between 0 and 1.")
    if isinstance(test_size, (int, np.integer)) and not 10 <= test_size <= len(y) - 10:
        raise DataError(f"test_size={test_size!r}: a count must lie between 10 and "
                        f"{len(y) - 10} (the digits set has {len(y)} images, 10 classes).")
    X_train, X_test, y_train, y_test = model_selection.train_test_split(
        X, y, test_size=test_size, stratify=y, random_state=0)
    return Dataset(name="digits",
                   X_train=np.ascontiguousarray(X_train), y_train=y_train,
                   X_test=np.ascontiguousarray(X_test), y_test=y_test,
                   scale=1.0 / 16.0, n_classes=10, image_shape=(8, 8),
                   source="scikit-learn's bundled digits (sklearn.datasets.load_digits)")


def load_dataset(name, data_dir=None) -> Dataset:
    """Load a dataset known by name: ``"mnist"``, ``"fashion-mnist"``, ``"kmnist"``
    (from ``data_dir`` or the usual places, verified) or ``"digits"``.

    Your own data (a path) are read by :func:`mlp.datasets.load_dataset`, which
    takes names too.
    """
    key = str(name).strip().lower()
    if key == "digits":
        return load_digits()
    if key in IDX_SETS:
        return load_idx(key, data_dir)
    raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)} (for your "
                    f"own data, a path, use mlp.datasets.load_dataset or `--dataset PATH`).")


# ---------------------------------------------------------------- download


class _BadContent(Exception):
    """The server answered, but with the wrong bytes: no point asking it again."""


class _WriteError(Exception):
    """Writing the download to the local disk failed (disk full, file size limit,
    I/O error). Another attempt or another mirror cannot fix that, so it ends
    the download at once instead of being retried like a network error."""

    def __init__(self, error):
        super().__init__(error.strerror or str(error))


def _fetch(url, out, entry, timeout):
    """Stream ``url`` (a .gz file) into the open file ``out`` while checking it
    against the table ``entry``: the SHA-256 of its decompressed content where
    that is known, else the SHA-256 of the .gz bytes. Either way the gzip
    stream is decompressed to the end, so a broken one is refused. Returns the
    compressed size."""
    _, content_sha, gz_sha = entry[:3]
    request = urllib.request.Request(url, headers={"User-Agent": "mlp-data-downloader"})
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip wrapper
    sha = hashlib.sha256()  # of the content where that is known, else of the .gz bytes
    size = 0
    with urllib.request.urlopen(request, timeout=timeout) as response:
        while chunk := response.read(1 << 16):
            try:
                out.write(chunk)
            except OSError as e:
                raise _WriteError(e) from None
            size += len(chunk)
            try:
                content = inflater.decompress(chunk)
            except zlib.error as e:
                raise _BadContent(f"not a valid gzip stream ({e})") from None
            sha.update(content if content_sha else chunk)
    try:
        # the file is buffered: a full disk may only show when the rest is written out
        out.flush()
    except OSError as e:
        raise _WriteError(e) from None
    if not inflater.eof:
        raise ConnectionError(f"the download ended early, after {size} bytes, "
                              f"inside the gzip stream")
    # Bytes after the gzip stream are refused: they would be saved with the
    # file, where the loader would read them as a broken second gzip member.
    # Zero bytes alone are the exception, as padding is allowed by gzip(1) and
    # skipped by Python's gzip module, which the loader uses.
    if inflater.unused_data.strip(b"\0"):
        raise _BadContent("extra bytes after the end of the gzip stream")
    if content_sha:
        if sha.hexdigest() != content_sha:
            raise _BadContent(f"checksum mismatch: the SHA-256 of the uncompressed content is "
                              f"{sha.hexdigest()}, expected {content_sha}")
    elif sha.hexdigest() != gz_sha:
        raise _BadContent(f"checksum mismatch: the SHA-256 of the .gz file is "
                          f"{sha.hexdigest()}, expected {gz_sha}")
    return size


def _network_problem(error, timeout):
    """What went wrong, in words, for an OSError or HTTPException from _fetch."""
    reason = getattr(error, "reason", None) or error  # URLError wraps the socket's error
    if isinstance(reason, TimeoutError):
        # urllib's timeout applies to each wait for the server (connecting, and
        # each read), so "no data for that long" is what it measures
        return (f"timed out: no data from the server for {timeout:g} s "
                f"(on a slow connection, allow longer with --timeout)")
    return f"{type(error).__name__}: {reason}"


def _make_folder(dest):
    """Create ``dest`` and its missing parents; return those created, deepest first.

    Raises DataError naming the path when that is impossible, e.g. because
    ``dest`` or one of its parents is a file.
    """
    missing = []
    folder = dest
    try:
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
    except OSError as e:  # e.g. a parent the user may not look into
        raise DataError(f"cannot create the folder {dest}: {e.strerror or e} ({folder}). "
                        f"Choose a writable folder with --dest (or the dest argument).") from None
    if not folder.is_dir():  # as root no permission stops mkdir, but a file in the way does
        raise DataError(f"cannot download into {dest}: {folder} is a file, not a folder. "
                        f"Choose another destination with --dest (or the dest argument), "
                        f"or move that file away.")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the folder {dest}: {e.strerror or e}. "
                        f"Choose a writable folder with --dest (or the dest argument).") from None
    return missing


def _compact(failures):
    """Failure lines for an error message, one per URL and problem: the same
    problem on each retry is said once, with its count."""
    lines = []
    for url, problem in failures:
        if lines and lines[-1][:2] == [url, problem]:
            lines[-1][2] += 1
        else:
            lines.append([url, problem, 1])
    return [f"  {url}: {problem}" + (f" ({n} attempts)" if n > 1 else "")
            for url, problem, n in lines]


def download_mnist(dest, mirrors=None, retries=2, timeout=DOWNLOAD_TIMEOUT,
                   quiet=False) -> pathlib.Path:
    """Download the four MNIST files into ``dest``: :func:`download_dataset` for ``"mnist"``."""
    return download_dataset("mnist", dest, mirrors, retries, timeout, quiet)


def download_dataset(dataset, dest, mirrors=None, retries=2, timeout=DOWNLOAD_TIMEOUT,
                     quiet=False) -> pathlib.Path:
    """Download the four files of ``dataset`` (``"mnist"``, ``"fashion-mnist"`` or
    ``"kmnist"``) into ``dest`` as ``name.gz``; return ``dest``.

    ``mirrors`` defaults to the dataset's own list of base URLs.

    Each file is tried from each mirror in turn (``base + name + ".gz"``). A
    network error, a timeout or a 5xx answer is retried up to ``retries`` more
    times on the same mirror (so ``retries + 1`` attempts per mirror; 0 means
    a single attempt); a wrong checksum, a body that is not the expected gzip
    stream or a 4xx answer moves straight on to the next mirror. ``timeout``
    is how many seconds to wait for the server to connect or send more data.

    The file is streamed to a temporary file in ``dest``, its SHA-256 is
    checked while it arrives (of the uncompressed content for MNIST, of the
    .gz for the others: see the module docstring), and only then is it renamed
    to its final name, so a partial or wrong file never sits there. Files already
    present and verified are skipped. Progress goes to stderr unless
    ``quiet``. Folders that the call created and that are still empty when it
    fails are removed again. If every mirror fails, or the files cannot be
    written, raises DataError with the URLs tried and what to do instead.
    """
    files = _files(dataset)
    dest = pathlib.Path(dest).expanduser().absolute()
    mirrors = list(_mirrors(dataset) if mirrors is None else mirrors)
    if not mirrors:
        raise DataError("no mirrors given: pass at least one base URL.")
    if isinstance(retries, bool) or not isinstance(retries, numbers.Integral) or retries < 0:
        raise DataError(f"retries={retries!r}: must be a whole number >= 0 (the attempts "
                        f"per mirror after the first; 0 means one attempt).")
    if not (isinstance(timeout, numbers.Real) and 0 < timeout < math.inf):
        # 0 would make the socket non-blocking, and every read would fail at once
        raise DataError(f"timeout={timeout!r}: must be a number of seconds > 0.")
    created = _make_folder(dest)
    try:
        for entry in files.values():
            _download_file(entry, dest, mirrors, retries, timeout, quiet, files)
    except BaseException:
        # Leave no empty folder behind (a later lookup would find it and report
        # missing files instead of "not found"); rmdir removes only empty ones,
        # so files verified before the failure stay, and a rerun skips them.
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return dest


def _download_file(entry, dest, mirrors, retries, timeout, quiet, files):
    """Put the verified ``name.gz`` of the table ``entry`` into ``dest``, from the
    first mirror that has it (``files``, the whole table, for the error message)."""
    def say(message):
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    name = entry[0]
    present = _mnist_path(dest, name)
    if present is not None:
        try:
            problem = _read_checked(present, entry, verify=True)[1]
        except DataError:
            problem = "damaged"
        if problem is None:
            say(f"{present.name}: already present and verified, skipping")
            return
        why = "uncompressed, so it cannot be verified" if "uncompressed" in problem else \
            "damaged or not canonical"
        say(f"{present.name}: present but {why}; downloading {name}.gz")

    final = dest / (name + ".gz")
    failures = []  # (url, problem) for each failed attempt
    network_only = True  # every failure a network error: then the network is the suspect
    attempts = retries + 1
    # one line per file: failed attempts are not printed one by one (offline, that was two
    # dozen lines before the error), the error lists them, and a success says how many failed
    say(f"downloading {name}.gz")
    for base in mirrors:
        url = base.rstrip("/") + "/" + name + ".gz"
        for attempt in range(1, attempts + 1):
            try:
                tmp = tempfile.NamedTemporaryFile(dir=dest, prefix=f".{name}.gz.",
                                                  suffix=".part", delete=False)
            except OSError as e:
                raise DataError(f"cannot write into {dest}: {e.strerror or e}. "
                                f"Choose a writable folder with --dest.") from None
            retry = False
            try:
                with tmp:
                    size = _fetch(url, tmp, entry, timeout)
                try:
                    os.chmod(tmp.name, 0o644)
                    os.replace(tmp.name, final)
                except OSError as e:
                    raise _WriteError(e) from None
                after = (f" after {len(failures)} failed attempt"
                         f"{'s' if len(failures) > 1 else ''} (last: {failures[-1][1]})"
                         if failures else "")
                say(f"  ok, {size / 1e6:.1f} MB from {url}, checksum verified -> {final}{after}")
                return
            except _WriteError as e:
                raise DataError(
                    f"cannot write {final} (downloading {url}): {e}. Free some disk "
                    f"space, or choose another folder with --dest.") from None
            except _BadContent as e:
                failures.append((url, str(e)))
                network_only = False
            except urllib.error.HTTPError as e:
                e.close()
                failures.append((url, f"HTTP {e.code} {e.reason}"))
                # a 5xx is the server's trouble, often passing; a 4xx will not change
                retry = e.code >= 500
                network_only = False
            except ValueError as e:  # e.g. a malformed URL
                failures.append((url, str(e)))
                network_only = False
            except (OSError, http.client.HTTPException) as e:
                failures.append((url, _network_problem(e, timeout)))
                retry = True
            finally:
                if os.path.exists(tmp.name):
                    os.unlink(tmp.name)
            if not retry:
                break
            if attempt < attempts:
                time.sleep(0.2 * attempt)

    tried = "\n".join(_compact(failures))
    names = ", ".join(entry[0] + ".gz" for entry in files.values())
    hint = " (is the network reachable?)" if network_only else ""
    raise DataError(
        f"could not download {name}.gz into {dest}: every mirror failed{hint}.\n"
        f"Tried:\n{tried}\n"
        f"Download the four files ({names}) by hand into {dest}, "
        f"or train on the bundled digits data, which needs no download: "
        f"`--dataset digits`.")


# --------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    """Command line: ``python -m mlp.data download|verify``. Returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m mlp.data",
        description="Fetch or check the files of MNIST, Fashion-MNIST or KMNIST.")
    commands = parser.add_subparsers(dest="command", required=True)
    dataset_help = "which dataset (default: mnist)"
    p = commands.add_parser("download", help="download and verify a dataset's four files")
    p.add_argument("--dataset", choices=list(IDX_SETS), default="mnist", help=dataset_help)
    p.add_argument("--dest", default=None,
                   help="folder to put them in (default: data/<dataset>, e.g. data/mnist)")
    p.add_argument("--mirror", action="append", metavar="URL",
                   help="base URL to fetch from (repeatable; default: the built-in mirrors)")
    p.add_argument("--retries", type=nonnegative_int, default=2,
                   help="how many times to try a mirror again after a network error, a "
                        "timeout or a 5xx answer: 0 tries each mirror once (default: 2, "
                        "so up to 3 attempts per mirror)")
    p.add_argument("--timeout", type=positive_float, default=DOWNLOAD_TIMEOUT,
                   help="seconds to wait for a server to connect or send more data before "
                        "giving up on that attempt (default: 30)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p = commands.add_parser("verify", help="check a dataset's files: format and checksums")
    p.add_argument("--dataset", choices=list(IDX_SETS), default="mnist", help=dataset_help)
    p.add_argument("--data-dir", default=None,
                   help="folder to check (default: the usual lookup, see find_idx_dir)")
    args = parser.parse_args(argv)

    title = IDX_SETS[args.dataset].title
    try:
        if args.command == "download":
            dest = args.dest if args.dest is not None else f"data/{args.dataset}"
            folder = download_dataset(args.dataset, dest, mirrors=args.mirror,
                                      retries=args.retries, timeout=args.timeout,
                                      quiet=args.quiet)
            print(f"{title} is in {folder}")
        else:
            data = load_idx(args.dataset, args.data_dir, verify=True)
            what = "" if args.dataset == "mnist" else " (of the .gz files as published)"
            print(f"ok: {data.source}: {len(data.y_train)} training and {len(data.y_test)} "
                  f"test images, checksums{what} match")
    except MLPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
