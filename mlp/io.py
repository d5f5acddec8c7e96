"""Saving and loading: models as .npz with a JSON header, files written atomically.

A model file is an ordinary NumPy ``.npz`` archive holding ``W0, b0, W1, b1,
…`` and ``header``, a UTF-8 JSON document stored as a uint8 array, so it
loads with ``allow_pickle=False``: no pickle, no code execution. The header
records the architecture (sizes, activation, loss, output, dtype), the format
version and free-form metadata (dataset, scale, ...).

Every file mlp writes goes to a temporary name in the destination folder, is
flushed to disk, then renamed over the final name: a crash never leaves a
half-written file where a good one was.
"""

import contextlib
import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from .activations import check_activation
from .errors import MLPError, ModelFileError
from .losses import get_loss
from .network import Network, check_dtype
from .optimizers import optimizer_from_record, optimizer_record

FORMAT_VERSION = 1


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` via a temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)               # mkstemp makes 0600 files: give the usual 0666 & ~umask
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def model_arrays(net, meta=None):
    """The arrays of a model file: W0, b0, … and the JSON header."""
    header = {"format": "mlp-model", "format_version": FORMAT_VERSION, **net.config(),
              "meta": meta or {}}
    arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    for i, (w, b) in enumerate(zip(net.weights, net.biases)):
        arrays[f"W{i}"] = w
        arrays[f"b{i}"] = b
    return arrays


def save_model(path, net, meta=None):
    """Save ``net`` (and optional JSON-able ``meta``) to ``path`` atomically."""
    buf = io.BytesIO()
    np.savez(buf, **model_arrays(net, meta))
    return atomic_write_bytes(path, buf.getvalue())


#: the largest JSON record (a model's header, a checkpoint's record) mlp reads. mlp writes
#: kilobytes (a checkpoint's record holds at most one loss per batch of one epoch); a larger
#: claim is a corrupt or hostile file, refused before its bytes are read
MAX_RECORD_BYTES = 64 * 2**20

_WHERE_MODELS_COME_FROM = ("mlp's model files are the model.npz (and checkpoint.npz) that "
                           "`python -m mlp.train` writes into its run folder; pass one of "
                           "those, or the run folder itself")


def _not_mlp(path, what, why):
    """The ModelFileError for a file that is no mlp model file (or checkpoint) at all."""
    noun = "model file or checkpoint" if what == "checkpoint" else "model file"
    return ModelFileError(f"{path}: not an mlp {noun} ({why}). {_WHERE_MODELS_COME_FROM}")


def _check_array(path, name, found_shape, found_dtype, shape, dtype, context=""):
    """Refuse array ``name`` of ``path`` unless it has ``shape`` and ``dtype``."""
    if tuple(found_shape) != tuple(shape):
        raise ModelFileError(f"{path}: array {name!r} has shape {tuple(found_shape)}, "
                             f"expected {tuple(shape)}{context}")
    if found_dtype != np.dtype(dtype):
        raise ModelFileError(f"{path}: array {name!r} has dtype {found_dtype}, "
                             f"expected {np.dtype(dtype)}")


class _Archive:
    """An .npz archive read member by member; each member's npy header is checked first.

    ``np.load`` allocates whatever a member's own npy header claims as soon as
    the member is asked for, and a deflated member of a few megabytes can
    claim gigabytes. Here the caller states the shape and dtype it expects
    (from the model's JSON header) and a member that claims anything else is
    refused before one byte of its data is read. Every failure is a
    ModelFileError naming the file.
    """

    def __init__(self, path, what):
        self.path, self.what = path, what
        try:
            with open(path, "rb") as f:
                magic = f.read(4)
        except OSError as e:
            raise ModelFileError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
        if not magic.startswith(b"PK"):      # every zip archive, hence every .npz, starts so
            why = ("an empty file" if not magic else
                   "a single .npy array, not an .npz archive" if magic == b"\x93NUM" else
                   "not an .npz archive")
            raise _not_mlp(path, what, why)
        with self._errors():
            self.zf = zipfile.ZipFile(path)
        # np.savez names the member of array "W0" "W0.npy"; other members are no arrays of ours
        self.members = {i.filename[:-4]: i for i in self.zf.infolist()
                        if i.filename.endswith(".npy")}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zf.close()
        return False

    @contextlib.contextmanager
    def _errors(self, name=None):
        """Turn whatever zipfile, zlib or numpy raise on a damaged archive into a ModelFileError."""
        where = f"array {name!r}" if name else "archive"
        try:
            yield
        except MLPError:
            raise
        except Exception as e:  # zip/zlib/npy internals raise many types on corrupt data
            raise ModelFileError(f"{self.path}: corrupt or truncated {self.what}: {where} "
                                 f"unreadable ({type(e).__name__}: {e})") from None

    def describe(self, name):
        """(shape, dtype) from member ``name``'s npy header, its data unread; None if absent.

        Refuses object arrays (they would need pickle) and a member whose
        stored size is not what its header claims.
        """
        info = self.members.get(name)
        if info is None:
            return None
        with self._errors(name), self.zf.open(info) as f:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = npy_format.read_array_header_2_0(f)
            else:            # 3.0 only adds UTF-8 field names, which mlp never writes
                raise ModelFileError(f"{self.path}: array {name!r} has npy format version "
                                     f"{version}, which mlp never writes")
            offset = f.tell()
        if dtype.hasobject:
            raise ModelFileError(f"{self.path}: array {name!r} holds Python objects, which "
                                 f"mlp never writes and does not load (no pickle); "
                                 f"{_WHERE_MODELS_COME_FROM}")
        nbytes = math.prod(shape) * dtype.itemsize
        if info.file_size != offset + nbytes:
            raise ModelFileError(f"{self.path}: array {name!r} claims shape {shape} "
                                 f"({nbytes} bytes of {dtype}) but the archive stores "
                                 f"{info.file_size - offset} bytes for it: corrupt or forged")
        return shape, dtype

    def check(self, name, shape, dtype, context=""):
        """Refuse member ``name`` unless its npy header says ``shape`` and ``dtype``."""
        found = self.describe(name)
        if found is None:
            raise ModelFileError(f"{self.path}: missing array {name!r}")
        _check_array(self.path, name, *found, shape, dtype, context)

    def read(self, name):
        """Member ``name``'s array (call :meth:`describe` or :meth:`check` on it first)."""
        with self._errors(name), self.zf.open(self.members[name]) as f:
            return npy_format.read_array(f, allow_pickle=False)

    def record(self, name, missing):
        """The JSON document stored as uint8 array ``name``; ``missing``: the error's words."""
        found = self.describe(name)
        if found is None:
            raise ModelFileError(f"{self.path}: missing the {name!r} array; {missing}")
        shape, dtype = found
        if dtype != np.uint8 or len(shape) != 1:
            raise ModelFileError(f"{self.path}: {name!r} must be a 1-D uint8 array of JSON "
                                 f"text, found {dtype} of shape {shape}")
        if shape[0] > MAX_RECORD_BYTES:
            raise ModelFileError(f"{self.path}: {name!r} claims {shape[0]} bytes of JSON; "
                                 f"mlp writes kilobytes (limit {MAX_RECORD_BYTES}): refused")
        return self.read(name)


def read_npz(path, what):
    """All arrays of an .npz file, refusing pickles; any failure is a ModelFileError.

    Each array's npy header is read first: object arrays are refused
    unread, and a header whose size disagrees with the archive's is refused.
    """
    with _Archive(path, what) as archive:
        for name in archive.members:
            archive.describe(name)
        return {name: archive.read(name) for name in archive.members}


def _existing_file(path, name_in_folder, missing):
    """``path``, or ``path/name_in_folder`` for a folder; ModelFileError if no such file exists."""
    path = Path(path)
    if path.is_dir():
        path = path / name_in_folder
    if not path.is_file():
        raise ModelFileError(f"{path}: {missing}")
    return path


def load_model(path, with_meta=False):
    """Load a model saved by :func:`save_model`; every problem is a ModelFileError naming the file.

    A directory is taken to hold ``model.npz``. With ``with_meta`` returns
    ``(net, meta)``. Every array's shape and dtype are checked against the
    header before any array's data are read.
    """
    path = _existing_file(path, "model.npz", "no such model file; pass a run folder or a "
                          "model.npz written by `python -m mlp.train`")
    with _Archive(path, "model file") as archive:
        header, arch, specs = _model_specs(archive)
        arrays = _read_checked(archive, specs, f" for sizes {arch[0]}")
    net = _network(arrays, arch, path)
    return (net, header.get("meta", {})) if with_meta else net


def _parse_header(raw, path):
    """The model header's JSON document, checked for format and version."""
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFileError(f"{path}: 'header' must be a 1-D uint8 array of JSON text")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != "mlp-model":
        raise ModelFileError(f"{path}: header does not describe an mlp model")
    version = header.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: format version {version} is newer than this mlp understands "
            f"({FORMAT_VERSION}); upgrade mlp to load it")
    return header


def _architecture(header, path):
    """(sizes, activation, loss, output, dtype) of a header, each checked as Network would."""
    try:
        sizes = [int(s) for s in header["sizes"]]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must list at least two positive widths, got {sizes}")
        activation = check_activation(header["activation"])
        loss = get_loss(header["loss"], header.get("output"))
        dtype = check_dtype(header["dtype"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: invalid architecture in header ({e})") from None
    return sizes, activation, loss, dtype


def _param_specs(sizes, dtype):
    """[(name, shape, dtype)] of a network's arrays W0, b0, W1, … in file order."""
    specs = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        specs += [(f"W{i}", (n_in, n_out), dtype), (f"b{i}", (n_out,), dtype)]
    return specs


def _model_specs(archive):
    """(header, architecture, param specs) from an archive's 'header' record."""
    raw = archive.record("header", "not an mlp model file (it holds "
                         f"{', '.join(sorted(archive.members)) or 'no arrays'}). "
                         + _WHERE_MODELS_COME_FROM)
    header = _parse_header(raw, archive.path)
    arch = _architecture(header, archive.path)
    return header, arch, _param_specs(arch[0], arch[3])


def _read_checked(archive, specs, context=""):
    """The arrays ``specs`` names: every npy header is checked before any data are read."""
    for name, shape, dtype in specs:
        archive.check(name, shape, dtype, context)
    return {name: archive.read(name) for name, _, _ in specs}


def _network(arrays, arch, path):
    """A Network on copies of ``arrays`` (W0, b0, …), refusing NaN and infinity."""
    sizes, activation, loss, dtype = arch
    for name, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise ModelFileError(f"{path}: array {name!r} contains NaN or infinity")
    n = len(sizes) - 1
    weights = [np.array(arrays[f"W{i}"], dtype=dtype, order="C") for i in range(n)]
    biases = [np.array(arrays[f"b{i}"], dtype=dtype, order="C") for i in range(n)]
    return Network.from_arrays(weights, biases, activation, loss.name, loss.output)


def model_from_arrays(arrays, path="<model>"):
    """Rebuild a Network from a model file's arrays (already in memory), checking every one.

    Returns ``(net, header)``.
    """
    if "header" not in arrays:
        raise ModelFileError(f"{path}: missing the 'header' array; not an mlp model file")
    header = _parse_header(arrays["header"], path)
    arch = _architecture(header, path)
    specs = _param_specs(arch[0], arch[3])
    for name, shape, dtype in specs:
        if name not in arrays:
            raise ModelFileError(f"{path}: missing array {name!r}")
        _check_array(path, name, arrays[name].shape, arrays[name].dtype, shape, dtype,
                     f" for sizes {arch[0]}")
    return _network({name: arrays[name] for name, _, _ in specs}, arch, path), header


def _json_array(obj):
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def save_checkpoint(path, net, optimizer, trainer_state, config, meta=None, sums=None):
    """Save everything a resumed run needs, atomically (temporary name, fsync, rename).

    The network (as in a model file), the optimizer's state arrays ``V0, V1, …``
    (SGD: the velocities of W0, b0, W1, …; Adam: its m of each, then its v
    of each) and a JSON document with the optimizer's name, settings and
    step count (:func:`mlp.optimizers.optimizer_record`), the trainer's state
    (epoch, batch position, losses so far, history) and the run's settings.
    The sample order of an epoch is a function of (seed, epoch) only (see
    :func:`mlp.trainer.epoch_order`), so the seed and the position are the
    whole random state. ``sums``: the float64 sums ``S0, S1, …`` of W0, b0, … of
    ``--average-epochs`` (:class:`mlp.averaging.EpochAverage`), if any have begun.
    """
    arrays = model_arrays(net, meta)
    optimizer.ensure_state(net)
    for i, v in enumerate(optimizer.state_arrays()):
        arrays[f"V{i}"] = v
    for i, s in enumerate(sums or ()):
        arrays[f"S{i}"] = s
    arrays["checkpoint"] = _json_array({
        "format": "mlp-checkpoint", "format_version": FORMAT_VERSION,
        "optimizer": optimizer_record(optimizer), "trainer": trainer_state, "config": config})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path):
    """Load a checkpoint: returns dict(net, optimizer, trainer, config, meta, sums).

    ``sums`` are the weight sums of ``--average-epochs`` (float64, the shapes of
    W0, b0, …), or None where the checkpoint has none (also every older one).

    Every problem is a ModelFileError naming the file. Checkpoints from
    before Adam (an SGD record without a name) load as SGD's; an optimizer
    this mlp does not know is refused.
    """
    path = _existing_file(path, "checkpoint.npz", "no checkpoint here; --resume takes the "
                          "--out folder of a run started with `python -m mlp.train`")
    with _Archive(path, "checkpoint") as archive:
        header, arch, specs = _model_specs(archive)
        raw = archive.record("checkpoint", "not an mlp checkpoint")
        try:
            doc = json.loads(raw.tobytes().decode("utf-8"))
            if doc.get("format") != "mlp-checkpoint":
                raise ValueError("not an mlp checkpoint")
            if doc.get("format_version", 0) > FORMAT_VERSION:
                raise ValueError(f"format version {doc['format_version']} is newer than this "
                                 f"mlp understands ({FORMAT_VERSION}); upgrade mlp")
            opt = optimizer_from_record(doc["optimizer"])
            trainer_state, config = doc["trainer"], doc["config"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelFileError(f"{path}: bad checkpoint record ({e})") from None
        # the optimizer's state V0, V1, … has the shapes of W0, b0, W1, … in that order, once
        # per state array of a parameter (SGD: its velocity; Adam: m, then v)
        per = len(opt.STATE) // 2
        v_specs = [(f"V{i}", shape, dtype)
                   for i, (_, shape, dtype) in enumerate(specs * per)]
        for name, shape, dtype in v_specs:
            found = archive.describe(name)
            if found is None or found != (shape, np.dtype(dtype)):
                raise ModelFileError(f"{path}: {opt.name} optimizer state {name} is missing or "
                                     f"has the wrong shape ({found and found[0]}, expected "
                                     f"{shape})")
        arrays = _read_checked(archive, specs, f" for sizes {arch[0]}")
        # described just above; read as fresh arrays, so only a Fortran-order one is copied
        velocities = [np.ascontiguousarray(archive.read(name)) for name, _, _ in v_specs]
        sums = _sums(archive, specs)
    net = _network(arrays, arch, path)
    opt.set_state_arrays(velocities)
    return {"net": net, "optimizer": opt, "trainer": trainer_state, "config": config,
            "meta": header.get("meta", {}), "sums": sums}


def _sums(archive, specs):
    """The float64 weight sums S0, S1, … of a checkpoint (one per parameter), or None."""
    if "S0" not in archive.members:
        return None
    s_specs = [(f"S{i}", shape, np.float64) for i, (_, shape, _) in enumerate(specs)]
    sums = _read_checked(archive, s_specs, " (the sums of --average-epochs)")
    for name, s in sums.items():
        if not np.all(np.isfinite(s)):
            raise ModelFileError(f"{archive.path}: array {name!r} contains NaN or infinity")
    return [np.ascontiguousarray(sums[name]) for name, _, _ in s_specs]
