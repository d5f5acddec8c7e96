"""Predictions from a saved model: ``python -m mlp.predict RUN_DIR FILE…``.

Each FILE is a PNG or JPEG image (read with Pillow, the optional ``images``
extra) or a ``.npy``/``.npz`` array of raw features, as the model was trained
on (e.g. MNIST pixels 0–255, one row or many). For every image or row it
prints the predicted class and the top outputs.

From Python, :func:`load_predictor` gives a :class:`Predictor` whose
``predict`` and ``predict_proba`` take raw features and apply the model's
saved input scale (MNIST: 1/255), as training did::

    model = load_predictor("runs/mnist")       # a run folder or a model .npz
    model.predict(X_raw)                       # (n,) classes
    model.predict_proba(model.load_image("seven.png"))

Images are turned into what the model saw in training. For a model of
28×28 images (MNIST) that is MNIST's own recipe: grayscale; a light
background (judged by the median of the border pixels) is inverted so that
strokes are bright on black; the digit's bounding box is scaled to fit
20×20, keeping its aspect ratio, and placed in 28×28 so that its centre of
mass is at the centre. For other image shapes (scikit-learn's 8×8 digits)
the bounding box is scaled to fill the shape, keeping its aspect ratio.
"""

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from .cli import positive_int
from .errors import DataError, MLPError, ModelFileError
from .io import load_model

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy", ".npz")

#: images larger than this are refused before they are decoded: a digit needs a few thousand
#: pixels, and a small compressed file can decode to gigabytes (Pillow's own "decompression
#: bomb" limit is about 89 million pixels)
MAX_IMAGE_PIXELS = 40_000_000

#: MNIST: the digit's bounding box is fitted into BOX×BOX, its centre of mass put at CENTRE
#: (row, column, in pixel indices) of a FIELD×FIELD image. CENTRE is MNIST's own: the mean
#: centre of mass of its test images is (13.99, 14.01).
MNIST_FIELD, MNIST_BOX, MNIST_CENTRE = 28, 20, (14.0, 14.0)

#: ink below this fraction of the strongest stroke does not count towards the bounding box
#: (JPEG ringing and paper texture would otherwise widen it)
BOX_THRESHOLD = 0.05

#: an image whose strongest stroke differs from the background by less than this (on 0–1)
#: holds no digit
MIN_CONTRAST = 0.05

#: rows fed through the network at a time (bounds the memory of a large .npy)
CHUNK = 4096


def _pillow(path):
    """Pillow's Image and ImageOps modules, or an MLPError (about ``path``) naming the extra."""
    try:
        from PIL import Image, ImageOps  # optional dependency (the "images" extra)
    except ImportError:
        raise MLPError(f"{path}: reading images needs Pillow, an optional dependency of mlp: "
                       "pip install pillow (or install mlp with its images extra: "
                       "pip install -e \".[images]\"); .npy and .npz files need no Pillow"
                       ) from None
    return Image, ImageOps


class Predictor:
    """A saved model that predicts from raw features, applying the model's input scale.

    ``scale`` (from the model file's metadata; 1 if it records none) is what
    training multiplied the raw features by: 1/255 for MNIST's 0–255 pixels,
    1/16 for the 0–16 pixels of scikit-learn's digits. ``image_shape`` is the
    (height, width) of the images the model was trained on, or None.
    """

    def __init__(self, net, meta=None, path="<model>"):
        meta = {} if meta is None else meta
        if not isinstance(meta, dict):
            raise ModelFileError(f"{path}: the model's metadata is not a JSON object; the file "
                                 "is damaged")
        self.net, self.meta, self.path = net, meta, path
        self.n_features, self.n_classes = net.sizes[0], net.sizes[-1]
        scale = meta.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
                or not math.isfinite(scale) or scale <= 0:
            raise ModelFileError(f"{path}: the model's input scale {scale!r} is not a positive "
                                 "number; the file is damaged")
        self.scale = float(scale)
        shape = meta.get("image_shape")
        if shape is not None:
            try:
                shape = tuple(int(s) for s in shape)
            except (TypeError, ValueError):
                shape = ()
            if len(shape) != 2 or min(shape) < 1 or math.prod(shape) != self.n_features:
                raise ModelFileError(f"{path}: the model's image_shape {meta['image_shape']!r} "
                                     f"does not hold its {self.n_features} input features")
        self.image_shape = shape

    @classmethod
    def load(cls, path):
        """The model at ``path`` (a run folder or a model .npz); a ModelFileError if it's bad."""
        net, meta = load_model(path, with_meta=True)
        return cls(net, meta, path)

    @property
    def outputs_are_probabilities(self):
        """True for softmax outputs (loss "ce"), whose rows sum to 1."""
        return self.net.loss.output == "softmax"

    def features(self, X, name="X"):
        """X as a 2-D array of rows of raw features; a DataError naming ``name`` if it can't be.

        Accepts one row ``(n_features,)``, one image ``image_shape``, rows
        ``(n, n_features)`` or images ``(n, height, width)``.
        """
        X = np.asarray(X)
        if X.dtype.kind not in "biuf":
            raise DataError(f"{name}: holds {X.dtype} values; the model takes numbers")
        n_in = self.n_features
        if X.ndim == 1 and X.size == n_in or self.image_shape and X.shape == self.image_shape:
            X = X.reshape(1, n_in)
        elif X.ndim >= 2 and math.prod(X.shape[1:]) == n_in:
            X = X.reshape(X.shape[0], n_in)
        else:
            images = (f", or images of {self.image_shape[0]}×{self.image_shape[1]}"
                      if self.image_shape else "")
            raise DataError(f"{name}: an array of shape {X.shape} does not fit this model, "
                            f"which takes rows of {n_in} features{images}")
        if X.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
            if bad.size:
                raise DataError(f"{name}: rows {bad[:10].tolist()} hold NaN or infinity")
        return X

    def predict_proba(self, X):
        """The network's outputs for raw features X: one row per sample, one column per class.

        With the "ce" loss these are softmax probabilities; with "mse" or
        "bce", each output's own value (sigmoid: in (0, 1), not summing to 1).
        """
        return self._outputs(self.features(X))

    def _outputs(self, X):
        """:meth:`predict_proba` of X already checked by :meth:`features`."""
        dtype = self.net.dtype
        out = np.empty((X.shape[0], self.n_classes), dtype=dtype)
        scale = dtype.type(self.scale)
        for s in range(0, X.shape[0], CHUNK):
            # as training did (mlp.batches.batch_inputs): raw values in the network's dtype,
            # times the scale in that dtype, so uint8 pixels give the same bits as in training
            out[s:s + CHUNK] = self.net.feedforward(X[s:s + CHUNK].astype(dtype) * scale)
        return out

    def predict(self, X):
        """The predicted class of each row of raw features X."""
        return self.classes_of(self.predict_proba(X))

    def classes_of(self, out):
        """The classes that outputs ``out`` predict: the argmax (one output: ŷ > 0.5)."""
        if self.n_classes == 1:          # as mlp.trainer.evaluate scores one-output models
            return (out[:, 0] > 0.5).astype(np.int64)
        return out.argmax(axis=1)

    def load_image(self, path):
        """The raw features of the image file at ``path``, preprocessed as the model needs.

        Returns a ``(1, n_features)`` float array in the model's raw units
        (MNIST: 0–255), ready for :meth:`predict`. Needs Pillow.
        """
        if not self.image_shape:
            raise MLPError(f"{self.path}: the model records no image shape (it was not trained "
                           f"on images by `python -m mlp.train`), so {path} cannot be fed to it; "
                           "pass .npy or .npz arrays of its raw features instead")
        ink = ink_image(read_grayscale(path), path)
        if self.image_shape == (MNIST_FIELD, MNIST_FIELD):
            img = mnist_layout(ink)
        else:
            img = fit_into(ink, self.image_shape)
        return (img / self.scale).reshape(1, -1)


def load_predictor(path):
    """A :class:`Predictor` for the model at ``path`` (a run folder or a model .npz)."""
    return Predictor.load(path)


# ----------------------------------------------------------------------------- images
def read_grayscale(path):
    """The image file at ``path`` as a 2-D float array in [0, 1] (0 black, 1 white).

    Transparent pixels are laid on a background that contrasts with the
    opaque ones, so dark strokes on a transparent canvas and light ones both
    survive. JPEG rotation (EXIF) is applied.
    """
    Image, ImageOps = _pillow(path)
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise DataError(f"{path}: the image is {im.width}×{im.height} pixels; mlp reads "
                                f"images of at most {MAX_IMAGE_PIXELS:,} pixels: crop or "
                                "shrink it to the digit")
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I") or im.mode == "F":     # 16/32-bit grayscale
                a = np.asarray(im, dtype=np.float64)
                top = 255.0 if a.max() <= 255 else 65535.0
                return np.clip(a / top, 0.0, 1.0)
            has_alpha = "A" in im.mode or "transparency" in im.info
            if not has_alpha:
                return np.asarray(im.convert("L"), dtype=np.float64) / 255.0
            la = np.asarray(im.convert("LA"), dtype=np.float64) / 255.0
    except MLPError:
        raise
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ...) on bad files
        raise DataError(f"{path}: not a readable PNG or JPEG image ({type(e).__name__}: {e})"
                        ) from None
    gray, alpha = la[..., 0], la[..., 1]
    if alpha.sum() == 0:
        raise DataError(f"{path}: the image is fully transparent; there is no digit in it")
    opaque_mean = float((gray * alpha).sum() / alpha.sum())
    background = 1.0 if opaque_mean < 0.5 else 0.0
    return gray * alpha + background * (1.0 - alpha)


def ink_image(gray, path="<image>"):
    """Ink in [0, 1] (1: the strongest stroke, 0: background) of a grayscale image in [0, 1].

    The background's level is the median of the border pixels: a light one
    means dark strokes on paper, which are inverted. That level is then
    subtracted, so grey paper in a photo becomes 0, and the strongest stroke
    is stretched to 1 (as MNIST's strokes reach 255).
    """
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    level = float(np.median(border))
    ink, background = (1.0 - gray, 1.0 - level) if level > 0.5 else (gray, level)
    ink = np.clip(ink - background, 0.0, None)
    top = float(ink.max())
    if top < MIN_CONTRAST:
        raise DataError(f"{path}: no digit found: the image is uniform (no stroke differs from "
                        "the background); draw the digit dark on light or light on dark")
    return ink / top


def _crop_to_ink(ink):
    """``ink`` cut to the bounding box of its pixels above BOX_THRESHOLD."""
    rows = np.flatnonzero((ink > BOX_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > BOX_THRESHOLD).any(axis=0))
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _resize(a, height, width):
    """``a`` (floats) resized to height×width with Pillow's Lanczos filter (antialiased)."""
    Image, _ = _pillow("<resizing an image>")
    img = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F")
    out = np.asarray(img.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float64)
    return np.clip(out, 0.0, 1.0)   # Lanczos over- and undershoots at edges


def _fit_box(shape, box_h, box_w):
    """(height, width) of a ``shape`` scaled to fit box_h×box_w, keeping its aspect ratio."""
    h, w = shape
    f = min(box_h / h, box_w / w)
    return max(1, min(box_h, round(h * f))), max(1, min(box_w, round(w * f)))


def mnist_layout(ink):
    """MNIST's recipe: the ink's bounding box fitted into 20×20, centre of mass at the centre.

    Returns a 28×28 float array in [0, 1].
    """
    digit = _crop_to_ink(ink)
    digit = _resize(digit, *_fit_box(digit.shape, MNIST_BOX, MNIST_BOX))
    h, w = digit.shape
    rows, cols = np.indices(digit.shape)
    mass = digit.sum()
    cy, cx = (rows * digit).sum() / mass, (cols * digit).sum() / mass
    # shift so the centre of mass lands on MNIST's, keeping the whole box inside the field
    top = int(np.clip(round(MNIST_CENTRE[0] - cy), 0, MNIST_FIELD - h))
    left = int(np.clip(round(MNIST_CENTRE[1] - cx), 0, MNIST_FIELD - w))
    out = np.zeros((MNIST_FIELD, MNIST_FIELD))
    out[top:top + h, left:left + w] = digit
    return out


def fit_into(ink, shape):
    """The ink's bounding box scaled to fill ``shape`` (keeping its aspect ratio), centred."""
    digit = _crop_to_ink(ink)
    digit = _resize(digit, *_fit_box(digit.shape, *shape))
    h, w = digit.shape
    top, left = (shape[0] - h) // 2, (shape[1] - w) // 2
    out = np.zeros(shape)
    out[top:top + h, left:left + w] = digit
    return out


# ----------------------------------------------------------------------------- arrays
def read_array(path, key=None):
    """The array stored in a .npy, or in a .npz (its only array, or ``key``, or "X")."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise DataError(f"{path}: holds Python objects, which mlp does not load (no "
                            "pickle); save a plain numeric array with numpy.save") from None
        raise DataError(f"{path}: not a readable .npy/.npz file ({e})") from None
    except Exception as e:  # zip/zlib/npy internals raise many types on corrupt data
        raise DataError(f"{path}: not a readable .npy/.npz file ({type(e).__name__}: {e})"
                        ) from None
    if isinstance(loaded, np.ndarray):
        return loaded
    try:
        with loaded:
            names = loaded.files
            if key is None:
                key = names[0] if len(names) == 1 else "X" if "X" in names else None
            if key is None or key not in names:
                raise DataError(f"{path}: holds the arrays {', '.join(names) or '(none)'}; "
                                "name the one with the inputs with --key NAME")
            return loaded[key]
    except MLPError:
        raise
    except ValueError as e:
        raise DataError(f"{path}: array {key!r} holds Python objects or is unreadable ({e}); "
                        "save a plain numeric array with numpy.savez") from None
    except Exception as e:  # as above: a damaged archive fails in many ways
        raise DataError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------- command line
def _top_text(model, row, k):
    """'7 98.1%, 1 1.2%, …' (probabilities) or '7 0.981, …' (other outputs), best first."""
    order = np.argsort(-row, kind="stable")[:k]
    if model.outputs_are_probabilities:
        return f"top {len(order)}: " + ", ".join(f"{c} {100 * row[c]:.1f}%" for c in order)
    return f"top {len(order)} outputs: " + ", ".join(f"{c} {row[c]:.3f}" for c in order)


def ascii_art(img):
    """A 2-D array in [0, 1] drawn with characters, darkest first."""
    ramp = " .:-=+*#%@"
    idx = np.clip((np.asarray(img) * len(ramp)).astype(int), 0, len(ramp) - 1)
    return "\n".join("".join(ramp[i] for i in row) for row in idx)


def inputs_of(model, path, key=None, show=False, warn=None):
    """(names, rows of raw features, checked as Predictor.features does) of one input file.

    A DataError/MLPError if it is bad.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if suffix in IMAGE_SUFFIXES:
        row = model.load_image(path)
        if show:
            print(f"{path}, as the model sees it:")
            print(ascii_art(row.reshape(model.image_shape) * model.scale))
        return [str(path)], row
    if suffix in ARRAY_SUFFIXES:
        raw = read_array(path, key)
        X = model.features(raw, str(path))
        if warn and X.dtype.kind == "f" and model.scale < 1 and X.size and X.max() <= 1:
            warn(f"note: {path}: every value is within [0, 1], but this model multiplies its "
                 f"inputs by {model.scale:.4g} itself; pass raw values as in training "
                 f"(e.g. 0–{1 / model.scale:.0f}), not scaled ones")
        if raw.ndim == 1 or raw.shape == model.image_shape:      # one sample, not a batch
            return [str(path)], X
        return [f"{path}[{i}]" for i in range(X.shape[0])], X
    raise DataError(f"{path}: not an input mlp reads; pass PNG or JPEG images "
                    f"({', '.join(IMAGE_SUFFIXES)}) or arrays of raw features (.npy, .npz)")


def main(argv=None):
    """Entry point of ``python -m mlp.predict``; returns the exit status."""
    p = argparse.ArgumentParser(
        prog="python -m mlp.predict",
        description="Predict the class of images (PNG, JPEG) or arrays of raw features "
                    "(.npy, .npz) with a saved model.")
    p.add_argument("model", help="a run folder (holding model.npz) or a model .npz file")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="PNG/JPEG images, or .npy/.npz arrays of raw features (one row per "
                        "sample, as in training, e.g. MNIST pixels 0-255)")
    p.add_argument("--top", type=positive_int, default=3, metavar="K",
                   help="how many of the best classes to print per input")
    p.add_argument("--key", metavar="NAME",
                   help="the array of an .npz holding several (default: its only one, or X)")
    p.add_argument("--show", action="store_true",
                   help="draw each image as the model sees it (after preprocessing)")
    args = p.parse_args(argv)

    def warn(line):
        print(line, file=sys.stderr)

    try:
        model = load_predictor(args.model)
    except MLPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = 0
    for f in args.files:
        try:
            names, X = inputs_of(model, f, args.key, args.show, warn)
        except MLPError as e:      # one bad file does not stop the others
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        out = model._outputs(X)    # inputs_of gives checked 2-D rows: no second features()
        for name, label, row in zip(names, model.classes_of(out), out):
            print(f"{name}: {label}  ({_top_text(model, row, args.top)})")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
