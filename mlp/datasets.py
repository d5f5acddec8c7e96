"""Your own data as a :class:`mlp.data.Dataset`: a .npz, a .csv or a folder of IDX files.

:func:`load_dataset` takes a dataset's name (then :func:`mlp.data.load_dataset`
loads it) or the path of your own data; ``python -m mlp.train --dataset``
and ``python -m mlp.evaluate`` go through it. What is read from a path, and
what becomes of it:

* **.npz** (``numpy.savez``): arrays ``X`` and ``y``, optionally ``X_test``
  and ``y_test``. ``X`` has one row per sample, shape (n, features); images
  of shape (n, h, w) or (n, h, w, c) are flattened to (n, h*w*c), and the run
  says so. Arrays are loaded without pickle: an object array is refused.
* **.csv** (or .tsv): one row per sample, numbers separated by commas (or
  semicolons, or tabs: whichever the first line has most of). A first row
  that is a header is recognised (a cell that is not a number above a number,
  or a cell named like a label column). The label column is the one named
  ``label``, ``target``, ``class`` or ``y`` (any case), or the one
  ``label_column`` gives: a header name, or a 0-based index (negative from
  the end). Every other column is a feature and must be numeric. A large CSV
  is slow to parse (tens of seconds for MNIST's size); a .npz is instant.
* **a folder of IDX files**: ``train-images-idx3-ubyte`` and
  ``train-labels-idx1-ubyte``, optionally ``t10k-images-idx3-ubyte`` and
  ``t10k-labels-idx1-ubyte``, each raw or ``.gz``. These are *not*
  checksum-verified (mlp has checksums only for the datasets it knows by
  name), and the run says so.

Labels are class labels: whole numbers or strings. The sorted distinct
labels (of the training and test sets together) become classes 0..k-1; their
names are kept in ``Dataset.classes`` (and in the model's metadata), so that
predictions can be printed as the original labels. Float labels that are not
whole numbers are refused: mlp classifies, it does not regress.

Features keep mlp's pixel convention: ``uint8`` data are pixels, stored as
uint8 and scaled by 1/255 per batch, as MNIST. Integer data with values in
0..255 (and above 1, so 0/1 indicators stay as they are) and a CSV whose
cells are all whole numbers 0..255 are read as such pixels too, and the run
says so. All other data are kept as given, as floats with scale 1: scale
them beforehand (e.g. to [0, 1], or standardised), or training may stall.

Without a test split (a CSV, an .npz without ``X_test``, an IDX folder without
t10k files), a stratified 1/6 of the samples, drawn with the run's seed, is
held out as the test set, and the run says so. The training rows are always
shuffled with the seed: ``python -m mlp.train`` validates on the *last*
rows, which in a file sorted by class would be one class only.

Every problem raises :class:`mlp.errors.DataError` naming the file (and the
array, line or column) and saying what to do.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import warnings
import zipfile

import numpy as np

from mlp import data
from mlp.data import DATASETS, Dataset, _mnist_path, read_idx
from mlp.errors import DataError

#: the share of the samples held out as the test set when a file has no test split
TEST_FRACTION = 1 / 6
#: header names taken for the label column of a CSV (compared in lower case)
LABEL_NAMES = ("label", "target", "class", "y")
#: the IDX files of a folder given as the dataset: the standard names, as MNIST's
IDX_NAMES = {key: entry[0] for key, entry in data.MNIST_FILES.items()}
# rows converted to floats at a time by the careful CSV reader: a Python list
# of strings costs ~50 bytes a cell, too much to hold for a whole large file
_CSV_CHUNK = 2000


#: the end of the error for a label that is not a class
NOT_A_CLASS = ("not a class: labels must be whole numbers or names (mlp classifies; it does "
               "not fit continuous targets).")


def _first_not_whole(values):
    """The index of the first value that is not a finite whole number, or None."""
    whole = np.isfinite(values) & (values == np.floor(values))
    return None if whole.all() else int(np.argmin(whole))


def load_dataset(name, data_dir=None, label_column=None, seed=0) -> Dataset:
    """Load a dataset by name, or your own data by path.

    ``name`` is ``"mnist"``, ``"fashion-mnist"``, ``"kmnist"`` (from
    ``data_dir`` or the usual places, verified), ``"digits"``, or the path of a
    .npz, a .csv or a folder of IDX files (:func:`load_path`, which takes
    ``label_column`` and uses ``seed`` to shuffle and, without a test split,
    to hold one out). A name wins over a file or folder of that name in the
    current folder; write ``./mnist`` for the folder.
    """
    key = str(name).strip().lower()
    if key in DATASETS:
        if label_column is not None:
            raise DataError(f"label column {label_column!r} given with the {key} dataset, which "
                            f"has its own labels: a label column is for a .csv given as the "
                            f"dataset. Leave --label-column out.")
        return data.load_dataset(key, data_dir)
    path = pathlib.Path(name).expanduser()
    if not path.exists():
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}, or "
                        f"give the path of your own data (a .npz, a .csv or a folder of IDX "
                        f"files); no file or folder {path.absolute()} exists.")
    if data_dir is not None:
        raise DataError(f"data directory {data_dir} given with the dataset {path}: --data-dir "
                        f"is for mnist, fashion-mnist and kmnist; with your own data the path "
                        f"given as the dataset says where they are. Leave --data-dir out.")
    return load_path(path, label_column=label_column, seed=seed)


def dataset_argument(text):
    """argparse type of ``--dataset``: a known name, or the absolute path of a file or folder.

    The path is made absolute so that a run's saved settings (history.json,
    the model's metadata, a checkpoint) still find the data from elsewhere.
    """
    key = text.strip().lower()
    if key in DATASETS:
        return key
    path = pathlib.Path(text).expanduser()
    if path.exists():
        return str(path.absolute())
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither a dataset name ({', '.join(DATASETS)}) nor an existing file or "
        f"folder (your own data: the path of a .npz, a .csv or a folder of IDX files)")


def load_path(path, label_column=None, seed=0) -> Dataset:
    """Read the .npz, .csv/.tsv or IDX folder at ``path`` into a Dataset.

    ``label_column`` (a CSV's only) is a header name or a column index;
    ``seed`` shuffles the training rows and draws the held-out test set when
    the data have none. See the module docstring for what is accepted.
    """
    path = pathlib.Path(path).expanduser().absolute()
    seed = 0 if seed is None else int(seed)
    notes = []
    suffix = path.suffix.lower()
    if label_column is not None and not (path.is_file() and suffix in (".csv", ".tsv")):
        raise DataError(f"label column {label_column!r} given with {path}: only a .csv has "
                        f"label columns (a .npz has its array y, an IDX folder its label "
                        f"files). Leave --label-column out.")
    if path.is_dir():
        parts = _read_idx_folder(path, notes)
    elif not path.exists():
        raise DataError(f"{path}: no such file or folder. Check the path given as the dataset.")
    elif suffix == ".npz":
        parts = _read_npz(path, notes)
    elif suffix in (".csv", ".tsv"):
        parts = _read_csv(path, label_column, notes)
    else:
        raise DataError(
            f"{path}: mlp reads your data from a .npz (arrays X and y), a .csv or a folder of "
            f"IDX files, not from a {suffix or 'file without a suffix'}. Convert it, e.g. with "
            f"numpy.savez('data.npz', X=X, y=y), or rename a CSV file to end in .csv.")
    return _assemble(path, *parts, notes, seed)


# -------------------------------------------------------------------- .npz


def _read_npz(path, notes):
    """(X, y, X_test, y_test, describe_y): the arrays of an .npz, checked."""
    hint = f"Save your arrays with numpy.savez({path.name!r}, X=X, y=y)."
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}.") from None
    # np.load takes anything that is neither a zip nor a .npy for a pickle, and
    # its message then suggests allow_pickle: say what the file is not instead
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        raise DataError(f"{path}: not a .npz archive (a .npz is a zip file, and this one does "
                        f"not start like one). {hint}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot be read as a .npz archive ({e}). {hint}") from None
    if not hasattr(archive, "files"):  # np.load read a single .npy array
        raise DataError(f"{path}: holds a single array (a .npy), not an archive of X and y. "
                        f"{hint}")
    with archive:
        keys = set(archive.files)
        missing = [k for k in ("X", "y") if k not in keys]
        if missing:
            found = ", ".join(sorted(keys)) or "no arrays"
            raise DataError(f"{path}: no array named {' or '.join(missing)} (it holds {found}). "
                            f"Save the features as X and the labels as y: numpy.savez(path, "
                            f"X=X, y=y), with X_test=..., y_test=... for a test set.")
        if ("X_test" in keys) != ("y_test" in keys):
            has, lacks = ("X_test", "y_test") if "X_test" in keys else ("y_test", "X_test")
            raise DataError(f"{path}: holds {has} but no {lacks}; a test set needs both. Save "
                            f"both, or neither (a test set is then held out of X and y).")

        def get(key):
            try:
                return archive[key]
            except ValueError as e:  # an object array: loading it would mean unpickling
                raise DataError(f"{path}: array {key} cannot be loaded without pickle ({e}); "
                                f"mlp never unpickles data files. Save {key} as a numeric "
                                f"array (strings are fine for labels), e.g. "
                                f"numpy.asarray({key}, dtype=float).") from None
            except (OSError, EOFError, zipfile.BadZipFile) as e:
                raise DataError(f"{path}: array {key} is damaged ({e}). Save the file "
                                f"again.") from None

        X, y = get("X"), get("y")
        X_test, y_test = (get("X_test"), get("y_test")) if "X_test" in keys else (None, None)

    X, image_shape = _features(X, path, "array X", notes)
    y = _label_array(y, path, "y", "X", len(X), notes)
    if X_test is not None:
        X_test, test_shape = _features(X_test, path, "array X_test", notes=None)
        if test_shape != image_shape:
            raise DataError(f"{path}: X_test has samples of shape {test_shape}, X of shape "
                            f"{image_shape}; the test set must have the same features.")
        y_test = _label_array(y_test, path, "y_test", "X_test", len(X_test), notes)
    return X, y, X_test, y_test, image_shape, lambda i, test: f"{path}: " + (
        f"y_test[{i}]" if test else f"y[{i}]")


def _features(X, source, what, notes):
    """X as a 2-D numeric array (samples flattened), and the shape of one sample.

    Messages start with ``source`` (the file) and ``what`` ("array X", "the
    images"); ``notes`` gets a line when samples are flattened (None: say
    nothing, as the training set already did).
    """
    where = f"{source}: {what}"
    if X.dtype.kind not in "biuf":
        what = {"U": "text", "S": "bytes", "c": "complex numbers", "M": "dates",
                "m": "time spans", "V": "records"}.get(X.dtype.kind, f"dtype {X.dtype}")
        raise DataError(f"{where} holds {what} (dtype {X.dtype}); features must be numbers. "
                        f"Encode them as numbers (e.g. one-hot for categories) and save again.")
    if X.ndim < 2:
        shape = "a single value" if X.ndim == 0 else f"shape {X.shape}"
        raise DataError(f"{where} has {shape}; expected one row per sample, shape "
                        f"(n_samples, n_features). For a single feature save X.reshape(-1, 1).")
    if X.shape[0] == 0 or X[0].size == 0:
        raise DataError(f"{where} is empty (shape {X.shape}): it needs at least one sample and "
                        f"one feature.")
    sample = tuple(int(d) for d in X.shape[1:])
    if X.ndim > 2:
        if notes is not None:
            notes.append(f"{source}: samples of shape {sample} flattened to "
                         f"{int(np.prod(sample))} features each")
        X = X.reshape(X.shape[0], -1)
    if X.dtype.kind == "f":
        bad = ~np.isfinite(X)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            count = int(bad.sum())
            raise DataError(f"{where}: the value at row {row}, column {col} is {X[row, col]} "
                            f"({count} value{'s' if count > 1 else ''} that are not finite in "
                            f"all). Features must be finite: fill in or drop missing values "
                            f"before saving.")
    return X, sample


def _label_array(y, source, name, X_name, n, notes):
    """Array ``name`` of ``source`` as a 1-D array of class labels (numbers or
    strings), one for each of the ``n`` samples of ``X_name``."""
    where = f"{source}: array {name}"
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2 and y.shape[0] == n and y.dtype.kind in "biuf" and y.shape[1] > 1:
        one_hot = np.all((y == 0) | (y == 1), axis=1) & (np.sum(y == 1, axis=1) == 1)
        if not one_hot.all():
            i = int(np.argmin(one_hot))
            raise DataError(f"{where} has shape {y.shape}, and row {i} is not one-hot (a single "
                            f"1, the rest 0). Save y as one class label per sample, shape (n,).")
        if notes is not None:
            notes.append(f"{source}: one-hot labels {name} read as class indices "
                         f"0..{y.shape[1] - 1}")
        y = np.argmax(y, axis=1)
    if y.ndim != 1:
        raise DataError(f"{where} has shape {y.shape}; expected one class label per sample, "
                        f"shape ({n},).")
    if len(y) != n:
        raise DataError(f"{where} holds {len(y)} labels but {X_name} holds {n} samples; they "
                        f"must be as many, in the same order.")
    if y.dtype.kind not in "biufUS":
        raise DataError(f"{where} has dtype {y.dtype}; labels must be whole numbers or strings.")
    return y


# --------------------------------------------------------------- IDX folder


def _read_idx_folder(folder, notes):
    """(X, y, X_test, y_test, image_shape, describe_y) from the IDX files in folder."""
    paths = {key: _mnist_path(folder, name) for key, name in IDX_NAMES.items()}
    expected = (f"a folder given as the dataset must hold {IDX_NAMES['train_images']} and "
                f"{IDX_NAMES['train_labels']}, and may hold {IDX_NAMES['test_images']} and "
                f"{IDX_NAMES['test_labels']} (each raw or .gz)")
    lacking = [IDX_NAMES[k] for k in ("train_images", "train_labels") if paths[k] is None]
    if lacking:
        others = sorted(p.name for p in folder.iterdir())[:8]
        holds = ", ".join(others) if others else "nothing"
        raise DataError(f"{folder}: no {' and no '.join(lacking)} (raw or .gz) there; "
                        f"{expected}. It holds: {holds}.")
    if (paths["test_images"] is None) != (paths["test_labels"] is None):
        has = "test_images" if paths["test_images"] is not None else "test_labels"
        lacks = "test_labels" if has == "test_images" else "test_images"
        raise DataError(f"{folder}: holds {paths[has].name} but no {IDX_NAMES[lacks]}; a test "
                        f"set needs both files. Add it, or remove {paths[has].name} (a test set "
                        f"is then held out of the training files).")
    notes.append(f"{folder}: IDX files read without checksum verification (mlp has checksums "
                 f"only for --dataset mnist, fashion-mnist and kmnist)")

    def part(images_key, labels_key):
        image_path, label_path = paths[images_key], paths[labels_key]
        images, labels = read_idx(image_path), read_idx(label_path)
        # notes=None: images flattened to rows is what an IDX folder is expected to give
        X, shape = _features(images, image_path, "the images", notes=None)
        if labels.ndim != 1:
            raise DataError(f"{label_path}: expected one label per image (a 1-D IDX file), "
                            f"found shape {labels.shape}. Check that it is a label file.")
        if len(labels) != len(X):
            raise DataError(f"{image_path} holds {len(X)} images but {label_path} holds "
                            f"{len(labels)} labels; the two files do not belong together.")
        return X, labels, shape

    X, y, shape = part("train_images", "train_labels")
    X_test = y_test = None
    if paths["test_images"] is not None:
        X_test, y_test, test_shape = part("test_images", "test_labels")
        if test_shape != shape:
            raise DataError(f"{paths['test_images']}: images of shape {test_shape}, but those "
                            f"of {paths['train_images'].name} are {shape}; the test images must "
                            f"be the same size.")

    def describe(i, test):
        return f"{paths['test_labels' if test else 'train_labels']}: label {i}"
    return X, y, X_test, y_test, shape, describe


# -------------------------------------------------------------------- .csv


def _number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _column_list(header, limit=8):
    names = ", ".join(repr(n) for n in header[:limit])
    return names + (f", ... ({len(header)} columns)" if len(header) > limit else "")


def _csv_head(path):
    """(delimiter, header cells or None, line number of the header or 0, number of columns)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            first_line, first_no = "", 0
            for no, line in enumerate(f, 1):
                if line.strip():
                    first_line, first_no = line, no
                    break
            if not first_line:
                raise DataError(f"{path}: the file is empty. A CSV needs a row per sample: "
                                f"features and a label, separated by commas.")
            counts = {d: first_line.count(d) for d in (",", ";", "\t")}
            delimiter = max(counts, key=counts.get)
            if counts[delimiter] == 0:
                raise DataError(f"{path}: the first line has no comma, semicolon or tab, so a "
                                f"single column: a CSV needs feature columns and a label column "
                                f"separated by commas.")
            second = None
            for line in f:
                if line.strip():
                    second = next(csv.reader([line], delimiter=delimiter))
                    break
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start} of a line cannot be decoded). "
                        f"Save the CSV as UTF-8.") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}.") from None
    first = [c.strip() for c in next(csv.reader([first_line], delimiter=delimiter))]
    if len(first) < 2:
        raise DataError(f"{path}: the first line has a single column; a CSV needs feature "
                        f"columns and a label column.")
    if _is_header(first, second):
        return delimiter, first, first_no, len(first)
    return delimiter, None, 0, len(first)


def _is_header(first, second):
    """Whether the first row names the columns rather than holding a sample.

    A cell that is not a number is a name when the row below has a number in
    its column, or when it names a label column; a non-number above a
    non-number is data (string labels, say), and an empty cell is a missing
    value, neither evidence of a header.
    """
    for i, cell in enumerate(first):
        if cell == "" or _number(cell):
            continue
        if cell.lower() in LABEL_NAMES:
            return True
        if second is not None and i < len(second) and _number(second[i].strip()):
            return True
    return False


def _label_index(path, header, ncols, label_column):
    """The index of the label column (see the module docstring for the rules)."""
    if label_column is None:
        if header is None:
            raise DataError(f"{path}: the first row holds data, not column names, so no column "
                            f"is named {', '.join(LABEL_NAMES)}: say which column holds the "
                            f"labels with --label-column INDEX (0 is the first column, -1 the "
                            f"last), or add a header row naming it 'label'.")
        found = [i for i, name in enumerate(header) if name.lower() in LABEL_NAMES]
        if len(found) == 1:
            return found[0]
        if not found:
            raise DataError(f"{path}: no column is named {', '.join(LABEL_NAMES)} (the columns "
                            f"are {_column_list(header)}): name the label column with "
                            f"--label-column NAME, or give its INDEX (0 is the first).")
        names = ", ".join(repr(header[i]) for i in found)
        raise DataError(f"{path}: several columns could hold the labels ({names}): choose one "
                        f"with --label-column NAME.")
    text = str(label_column).strip()
    if header is not None:
        matches = [i for i, name in enumerate(header) if name == text]
        matches = matches or [i for i, name in enumerate(header) if name.lower() == text.lower()]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise DataError(f"--label-column {text!r}: {path} has {len(matches)} columns so "
                            f"named; give the index of the one that holds the labels (0 is "
                            f"the first column).")
    try:
        index = int(text)
    except ValueError:
        if header is None:
            raise DataError(f"--label-column {text!r}: {path} has no header row, so its "
                            f"columns have no names; give the label column's index (0 is "
                            f"the first, -1 the last).") from None
        raise DataError(f"--label-column {text!r}: no column of {path} is so named (the "
                        f"columns are {_column_list(header)}); give a name from the header, "
                        f"or an index (0 is the first column).") from None
    if not -ncols <= index < ncols:
        raise DataError(f"--label-column {index}: {path} has {ncols} columns, so an index runs "
                        f"from 0 to {ncols - 1} (or from -1 to -{ncols}, counting from the end).")
    return index % ncols


def _read_csv(path, label_column, notes):
    """(X, y, None, None, image_shape, describe_y) from a CSV file."""
    delimiter, header, header_line, ncols = _csv_head(path)
    label = _label_index(path, header, ncols, label_column)
    parsed = _csv_fast(path, delimiter, header_line, ncols, label)
    if parsed is None:  # something is off (or the labels are strings): read it line by line
        parsed = _csv_careful(path, delimiter, header, header_line, ncols, label)
    X, y, lines = parsed
    if X.shape[0] == 0:
        raise DataError(f"{path}: no data rows{' below the header' if header else ''}. A CSV "
                        f"needs a row per sample.")
    if np.all(X == np.floor(X)) and X.min() >= 0 and 1 < X.max() <= 255:
        X = X.astype(np.uint8)
        notes.append(f"{path}: every feature is a whole number 0-255, so the features are read "
                     f"as pixels, as MNIST's: stored as uint8 and scaled by 1/255 (scale them "
                     f"yourself, e.g. to [0, 1], to have them used as given)")
    name = f"column {header[label]!r}" if header else f"column {label}"

    def describe(i, test):
        return f"{path}, line {lines[i]}, {name}" if lines is not None else f"{path}, row {i}"
    return X, y, None, None, (X.shape[1],), describe


def _csv_fast(path, delimiter, header_line, ncols, label):
    """(X, y, None) by numpy's C parser when every cell is a finite number and
    every label a whole number; None otherwise (the careful reader then says
    precisely what is wrong, with line numbers this one does not know)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # loadtxt warns about a file with no data
            A = np.loadtxt(path, delimiter=delimiter, skiprows=header_line, dtype=np.float64,
                           ndmin=2, encoding="utf-8-sig", quotechar='"', comments=None)
    except ValueError:  # a cell that is not a number, a ragged row, a decoding error
        return None
    if A.shape[1] != ncols or not np.isfinite(A).all():
        return None
    y = A[:, label]
    if not np.all(y == np.floor(y)):
        return None
    return np.delete(A, label, axis=1), y.astype(np.int64), None


def _csv_careful(path, delimiter, header, header_line, ncols, label):
    """(X, y, line numbers) read row by row, raising DataError at the first problem."""
    def column(i):
        return f"column {header[i]!r}" if header else f"column {i} (counting from 0)"
    shape_of = "the header" if header else "the first row"
    feature_cols = [i for i in range(ncols) if i != label]
    chunks, rows, labels, lines = [], [], [], []

    def flush():
        chunks.append(_csv_floats(path, rows, lines[len(lines) - len(rows):],
                                  [column(i) for i in feature_cols]))
        rows.clear()

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            for row in reader:
                line = reader.line_num
                if line <= header_line or not row or (len(row) == 1 and not row[0].strip()):
                    continue  # the header, or a blank line
                if len(row) != ncols:
                    raise DataError(
                        f"{path}, line {line}: {len(row)} cells, but {shape_of} has {ncols}. "
                        f"Every row needs the same columns: fix or remove that line.")
                cells = [c.strip() for c in row]
                if cells[label] == "":
                    raise DataError(f"{path}, line {line}: the label ({column(label)}) is "
                                    f"empty. Every row needs a label: fill it in or drop the row.")
                labels.append(cells[label])
                lines.append(line)
                rows.append([cells[i] for i in feature_cols])
                if len(rows) == _CSV_CHUNK:
                    flush()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start} of a line cannot be decoded). "
                        f"Save the CSV as UTF-8.") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV ({e}). Check its quoting.") from None
    if rows or not chunks:
        flush()
    X = np.concatenate(chunks) if chunks else np.empty((0, ncols - 1))
    if all(_number(v) for v in labels):
        values = np.array([float(v) for v in labels])
        i = _first_not_whole(values)
        if i is not None:
            raise DataError(f"{path}, line {lines[i]}: the label {labels[i]!r} "
                            f"({column(label)}) is {NOT_A_CLASS}")
        y = values.astype(np.int64)
    else:
        y = np.array(labels)
    return X, y, np.array(lines)


def _csv_floats(path, rows, lines, names):
    """The feature cells of ``rows`` as a float64 array, or DataError at the first bad cell."""
    if not rows:
        return np.empty((0, len(names)))
    try:
        X = np.array(rows, dtype=np.float64)
    except ValueError:
        X = None
    if X is None or not np.isfinite(X).all():
        for r, row in enumerate(rows):
            for c, cell in enumerate(row):
                try:
                    value = float(cell)
                except ValueError:
                    what = "is empty (a missing value)" if cell == "" else \
                        f"holds {cell!r}, which is not a number"
                    raise DataError(
                        f"{path}, line {lines[r]}, {names[c]} {what}. Features must be numbers: "
                        f"fill in missing values, encode categories as numbers (e.g. one-hot), "
                        f"or drop the column.") from None
                if not np.isfinite(value):
                    raise DataError(
                        f"{path}, line {lines[r]}, {names[c]} is {cell!r}. Features must be "
                        f"finite: fill in or drop missing values.")
        # numpy refused what Python's float() reads (e.g. "1_000"): convert cell by cell
        X = np.array([[float(cell) for cell in row] for row in rows], dtype=np.float64)
    return X


# --------------------------------------------------------------- assembling


def _classes(y, y_test, source, describe):
    """(y, y_test, class names): labels as indices into the sorted distinct labels."""
    parts = [y] if y_test is None else [y, y_test]
    if any(a.dtype.kind in "US" for a in parts):
        parts = [a.astype(str) for a in parts]
    else:
        for test, a in enumerate(parts):
            i = _first_not_whole(a) if a.dtype.kind == "f" else None
            if i is not None:
                raise DataError(f"{describe(i, bool(test))} is {a[i]}, {NOT_A_CLASS}")
        parts = [a.astype(np.int64) for a in parts]
    values, index = np.unique(np.concatenate(parts), return_inverse=True)
    if len(values) < 2:
        raise DataError(f"{source}: every label is {values[0].item()!r}; a classifier needs "
                        f"at least two classes. Check that the labels are the right column "
                        f"or array.")
    names = tuple(str(v) for v in values.tolist())
    index = index.reshape(-1).astype(np.int64)
    y = index[:len(parts[0])]
    y_test = index[len(parts[0]):] if y_test is not None else None
    return y, y_test, names


def _common_scale(arrays, where, notes):
    """The feature arrays in one storage type, and their ``scale`` (see the module docstring)."""
    if all(a.dtype == np.uint8 for a in arrays):
        return arrays, 1.0 / 255.0
    if all(a.dtype.kind in "biu" for a in arrays):
        low = min(int(a.min()) for a in arrays)
        high = max(int(a.max()) for a in arrays)
        if low >= 0 and 1 < high <= 255:
            notes.append(f"{where}: integer features 0-{high} read as pixels, as MNIST's: "
                         f"stored as uint8 and scaled by 1/255 (save them as floats to have "
                         f"them used as given)")
            return [a.astype(np.uint8) for a in arrays], 1.0 / 255.0
    # floats as given: float32 stays float32 (half the memory), the rest becomes float64
    dtype = np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64
    return [a.astype(dtype, copy=False) for a in arrays], 1.0


def _held_out(y, fraction, rng):
    """(train indices, test indices): about ``fraction`` of each class for the test set.

    Each class gives round(count * fraction) samples, so a class of one or
    two stays wholly in training; at least one sample is held out in all.
    """
    test = []
    for c in range(int(y.max()) + 1):
        members = np.flatnonzero(y == c)
        k = int(np.floor(len(members) * fraction + 0.5))
        test.append(rng.permutation(members)[:k])
    test = np.concatenate(test)
    if len(test) == 0:
        counts = np.bincount(y)
        if counts.max() < 2:
            return None, None
        members = np.flatnonzero(y == int(np.argmax(counts)))
        test = rng.permutation(members)[:1]
    test = np.sort(test)
    train = np.setdiff1d(np.arange(len(y)), test)
    return train, test


def _assemble(path, X, y, X_test, y_test, image_shape, describe, notes, seed):
    """The Dataset: classes mapped, one storage type, test set held out if needed, shuffled."""
    y, y_test, classes = _classes(y, y_test, path, describe)
    arrays, scale = _common_scale([X] if X_test is None else [X, X_test], str(path), notes)
    X = arrays[0]
    rng = np.random.default_rng(seed)
    if X_test is None:
        train, test = _held_out(y, TEST_FRACTION, rng)
        if train is None:
            raise DataError(f"{path}: {len(y)} samples, too few to hold out a test set (no "
                            f"class has two). Add samples, or give a test set (X_test and "
                            f"y_test in a .npz, t10k files in an IDX folder).")
        notes.append(f"{path}: no test set, so a stratified 1/6 of the samples ({len(test)} of "
                     f"{len(y)}, drawn with the seed {seed}) is held out as the test set")
        X_test, y_test = X[test], y[test]
        order = train[rng.permutation(len(train))]
    else:
        X_test = arrays[1]
        order = rng.permutation(len(y))
    return Dataset(name=str(path),
                   X_train=np.ascontiguousarray(X[order]), y_train=y[order],
                   X_test=np.ascontiguousarray(X_test), y_test=np.asarray(y_test, np.int64),
                   scale=scale, n_classes=len(classes), image_shape=tuple(image_shape),
                   source=str(path), classes=classes, notes=tuple(notes))
