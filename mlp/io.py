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

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import ModelFileError
from .network import Network
from .optimizers import SGD

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


def read_npz(path, what):
    """All arrays of an .npz file, refusing pickles; any failure is a ModelFileError."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as e:   # object arrays need pickle, which is refused
        raise ModelFileError(f"{path}: refused to load: {e}") from None
    except (OSError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise ModelFileError(f"{path}: not a readable .npz {what} ({e})") from None
    except Exception as e:  # zip/zlib internals raise many types on corrupt data
        raise ModelFileError(f"{path}: corrupt {what} ({type(e).__name__}: {e})") from None


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
    ``(net, meta)``.
    """
    path = _existing_file(path, "model.npz", "no such model file; pass a run folder or a "
                          "model.npz written by `python -m mlp.train`")
    net, header = model_from_arrays(read_npz(path, "model file"), path)
    return (net, header.get("meta", {})) if with_meta else net


def model_from_arrays(arrays, path="<model>"):
    """Rebuild a Network from a model file's arrays, checking every one."""
    if "header" not in arrays:
        raise ModelFileError(f"{path}: missing the 'header' array; not an mlp model file")
    raw = arrays["header"]
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
    try:
        sizes = [int(s) for s in header["sizes"]]
        net = Network(sizes, header["activation"], header["loss"], header.get("output"),
                      header["dtype"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: invalid architecture in header ({e})") from None
    for i in range(net.num_layers):
        for name, like in ((f"W{i}", net.weights[i]), (f"b{i}", net.biases[i])):
            if name not in arrays:
                raise ModelFileError(f"{path}: missing array {name!r}")
            a = arrays[name]
            if a.shape != like.shape:
                raise ModelFileError(f"{path}: array {name!r} has shape {a.shape}, "
                                     f"expected {like.shape} for sizes {sizes}")
            if a.dtype != like.dtype:
                raise ModelFileError(f"{path}: array {name!r} has dtype {a.dtype}, "
                                     f"expected {like.dtype}")
            if not np.all(np.isfinite(a)):
                raise ModelFileError(f"{path}: array {name!r} contains NaN or infinity")
            like[...] = a
    return net, header


def _json_array(obj):
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def save_checkpoint(path, net, optimizer, trainer_state, config, meta=None):
    """Save everything a resumed run needs, atomically (temporary name, fsync, rename).

    The network (as in a model file), the optimizer's velocities ``V0, V1, …``
    and a JSON document with the optimizer's settings, the trainer's state
    (epoch, batch position, losses so far, history) and the run's settings.
    The sample order of an epoch is a function of (seed, epoch) only (see
    :func:`mlp.trainer.epoch_order`), so the seed and the position are the
    whole random state.
    """
    arrays = model_arrays(net, meta)
    optimizer.ensure_state(net)
    for i, v in enumerate(optimizer.state_arrays()):
        arrays[f"V{i}"] = v
    arrays["checkpoint"] = _json_array({
        "format": "mlp-checkpoint", "format_version": FORMAT_VERSION,
        "optimizer": optimizer.config(), "trainer": trainer_state, "config": config})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path):
    """Load a checkpoint: returns dict(net, optimizer, trainer, config, meta).

    Every problem is a ModelFileError naming the file.
    """
    path = _existing_file(path, "checkpoint.npz", "no checkpoint here; --resume takes the "
                          "--out folder of a run started with `python -m mlp.train`")
    arrays = read_npz(path, "checkpoint")
    net, header = model_from_arrays(arrays, path)
    raw = arrays.get("checkpoint")
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFileError(f"{path}: missing the 'checkpoint' record; not an mlp checkpoint")
    try:
        doc = json.loads(raw.tobytes().decode("utf-8"))
        if doc.get("format") != "mlp-checkpoint":
            raise ValueError("not an mlp checkpoint")
        if doc.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"format version {doc['format_version']} is newer than this "
                             f"mlp understands ({FORMAT_VERSION}); upgrade mlp")
        opt = SGD(**doc["optimizer"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelFileError(f"{path}: bad checkpoint record ({e})") from None
    velocities = []
    for i, p in enumerate(net.params()):
        v = arrays.get(f"V{i}")
        if v is None or v.shape != p.shape or v.dtype != p.dtype:
            raise ModelFileError(f"{path}: optimizer state V{i} is missing or has the wrong shape")
        velocities.append(v.copy())
    opt.set_state_arrays(velocities)
    return {"net": net, "optimizer": opt, "trainer": doc["trainer"], "config": doc["config"],
            "meta": header.get("meta", {})}
