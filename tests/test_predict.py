"""Predictions: images and arrays in, classes out, through `python -m mlp.predict` and Predictor."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlp.backends import NumpyBackend
from mlp.data import load_digits, load_mnist
from mlp.errors import DataError, MLPError, ModelFileError
from mlp.io import save_model
from mlp.network import Network
from mlp.predict import Predictor, load_predictor, main, mnist_layout

try:
    from PIL import Image
except ImportError:        # the arrays still work without it; the image tests say why they skip
    Image = None
needs_pillow = pytest.mark.skipif(
    Image is None, reason="Pillow is not installed (the images extra: pip install -e '.[images]')")

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^(?P<name>.+): (?P<label>\d+)  \(top \d+")


def _cli(*args, timeout=120):
    """`python -m mlp.predict ARGS` with this checkout first on the path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.run([sys.executable, "-m", "mlp.predict", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _labels(stdout):
    """{name: predicted label} from the command's output lines."""
    found = {}
    for line in stdout.splitlines():
        m = LINE.match(line)
        if m:
            found[m["name"]] = int(m["label"])
    return found


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, mnist_dir):
    """A run folder trained as a user would: `mlp.train` on 10,000 MNIST images, 1 epoch."""
    from mlp.train import main as train
    out = tmp_path_factory.mktemp("mnist-run")
    status = train(["--dataset", "mnist", "--data-dir", str(mnist_dir), "--backend", "numpy",
                    "--limit", "10000", "--epochs", "1", "--hidden", "100", "--threads", "1",
                    "--checkpoint-every", "0", "--out", str(out)])
    assert status == 0
    return out


@pytest.fixture(scope="module")
def mnist_test(mnist_dir):
    data = load_mnist(mnist_dir)
    return data.X_test, data.y_test


def _draw(x, variant, rng):
    """A 28×28 MNIST digit as a Pillow image: as it is, inverted, or large on a margin."""
    img = x.reshape(28, 28)
    if variant == "white-on-black":
        return Image.fromarray(img)
    if variant == "black-on-white":
        return Image.fromarray(255 - img)
    size = 84                              # 3× larger, somewhere on a 100×100 sheet
    big = Image.fromarray(255 - img).resize((size, size), Image.Resampling.BICUBIC)
    sheet = Image.new("L", (100, 100), 255)
    sheet.paste(big, tuple(int(v) for v in rng.integers(0, 100 - size + 1, 2)))
    return sheet


@needs_pillow
@pytest.mark.slow
def test_drawn_test_digits_are_classified_back_nearly_as_well_as_the_pixels(
        mnist_run, mnist_test, tmp_path):
    X, y = mnist_test
    rng = np.random.default_rng(0)
    idx = rng.choice(len(X), 200, replace=False)
    model = load_predictor(mnist_run)
    direct = float((model.predict(X[idx]) == y[idx]).mean())
    assert direct > 0.8, f"the quick model is too weak for this test to mean anything: {direct}"

    files = {}
    for variant, suffix in (("white-on-black", ".png"), ("black-on-white", ".png"),
                            ("large", ".jpg")):
        for i in idx:
            path = tmp_path / f"{variant}-{i}{suffix}"
            _draw(X[i], variant, rng).save(path, **({"quality": 90} if suffix == ".jpg" else {}))
            files[str(path)] = (variant, y[i])
    r = _cli(mnist_run, *files)
    assert r.returncode == 0, r.stderr
    got = _labels(r.stdout)
    assert set(got) == set(files), "one output line per image"
    for variant in ("white-on-black", "black-on-white", "large"):
        hits = [got[f] == label for f, (v, label) in files.items() if v == variant]
        acc = float(np.mean(hits))
        assert acc >= direct - 0.05, f"{variant}: {acc:.3f} from images vs {direct:.3f} direct"


@needs_pillow
def test_an_mnist_digit_comes_back_as_it_was(mnist_test):
    """MNIST's own images are already in MNIST's layout: preprocessing changes next to nothing."""
    X, _ = mnist_test
    for x in X[:100]:
        img = x.reshape(28, 28) / 255.0
        out = mnist_layout(img)
        assert np.abs(out - img).mean() < 0.01
        rows, cols = np.indices(out.shape)
        com = (rows * out).sum() / out.sum(), (cols * out).sum() / out.sum()
        assert abs(com[0] - 14) <= 1 and abs(com[1] - 14) <= 1


@needs_pillow
def test_a_digit_anywhere_on_a_page_is_centred_and_sized_like_mnist(mnist_run, mnist_test,
                                                                     tmp_path):
    X, _ = mnist_test
    model = load_predictor(mnist_run)
    x = X[0].reshape(28, 28)
    page = np.full((300, 200, 3), 235, np.uint8)            # grey paper, RGB
    big = np.asarray(Image.fromarray(255 - x).resize((112, 112), Image.Resampling.BICUBIC))
    page[170:282, 10:122] = np.minimum(big, 235)[..., None]  # bottom left corner
    Image.fromarray(page).save(tmp_path / "page.png")
    row = model.load_image(tmp_path / "page.png")
    assert row.shape == (1, 784) and row.max() == pytest.approx(255)
    corr = np.corrcoef(row.ravel(), X[0].astype(float))[0, 1]
    assert corr > 0.9


@needs_pillow
def test_transparent_background_either_stroke_colour(mnist_run, mnist_test, tmp_path):
    X, _ = mnist_test
    model = load_predictor(mnist_run)
    x = X[0].reshape(28, 28)
    for name, colour in (("dark", 0), ("light", 255)):
        rgba = np.zeros((28, 28, 4), np.uint8)
        rgba[..., :3] = colour
        rgba[..., 3] = x                                    # the stroke is the opaque part
        Image.fromarray(rgba, "RGBA").save(tmp_path / f"{name}.png")
        row = model.load_image(tmp_path / f"{name}.png")
        assert np.corrcoef(row.ravel(), X[0].astype(float))[0, 1] > 0.95, name


def test_predict_and_predict_proba_take_raw_features_and_apply_the_scale(mnist_run, mnist_test):
    X, _ = mnist_test
    model = load_predictor(mnist_run)
    assert model.scale == pytest.approx(1 / 255) and model.image_shape == (28, 28)
    expected = NumpyBackend().predict_output(model.net, X[:500], model.scale)  # as evaluate
    np.testing.assert_array_equal(model.predict_proba(X[:500]), expected)
    np.testing.assert_array_equal(model.predict(X[:500]), expected.argmax(axis=1))
    # the same numbers as floats, as images (n, 28, 28), and one row alone
    np.testing.assert_array_equal(model.predict_proba(X[:500].astype(np.float64)), expected)
    np.testing.assert_array_equal(model.predict_proba(X[:500].reshape(-1, 28, 28)), expected)
    # one row goes through BLAS's matrix-vector product: the last bits may differ
    np.testing.assert_allclose(model.predict_proba(X[7]), expected[7:8], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(expected.sum(axis=1), 1, rtol=1e-5)


def test_arrays_on_the_command_line(mnist_run, mnist_test, tmp_path):
    X, _ = mnist_test
    model = load_predictor(mnist_run)
    np.save(tmp_path / "rows.npy", X[:20])
    np.save(tmp_path / "one.npy", X[3])
    np.savez(tmp_path / "batch.npz", X=X[20:25], y=np.arange(5))
    r = _cli(mnist_run, tmp_path / "rows.npy", tmp_path / "one.npy", tmp_path / "batch.npz",
             "--top", "2")
    assert r.returncode == 0, r.stderr
    got = _labels(r.stdout)
    want = model.predict(X[:25])
    assert [got[f"{tmp_path / 'rows.npy'}[{i}]"] for i in range(20)] == want[:20].tolist()
    assert got[str(tmp_path / "one.npy")] == model.predict(X[3])[0]
    assert [got[f"{tmp_path / 'batch.npz'}[{i}]"] for i in range(5)] == want[20:].tolist()
    assert all(line.count("%") == 2 for line in r.stdout.splitlines())      # --top 2


def test_scaled_inputs_get_a_note(mnist_run, mnist_test, tmp_path):
    X, _ = mnist_test
    np.save(tmp_path / "scaled.npy", X[:3] / 255.0)
    r = _cli(mnist_run, tmp_path / "scaled.npy")
    assert r.returncode == 0 and "raw values" in r.stderr


@needs_pillow
def test_a_model_of_other_images_resizes_them(tmp_path):
    data = load_digits()
    net = Network([64, 16, 10], seed=1)
    save_model(tmp_path / "model.npz", net, {"dataset": "digits", "scale": data.scale,
                                             "image_shape": list(data.image_shape)})
    model = load_predictor(tmp_path)
    digit = np.kron(data.X_test[0].reshape(8, 8), np.ones((10, 10)))      # 80×80, 0–16
    Image.fromarray((255 - digit * 15).astype(np.uint8)).save(tmp_path / "d.png")
    row = model.load_image(tmp_path / "d.png")
    # raw units of the digits set: 0–16 (Lanczos leaves the strongest pixel a little below)
    assert row.shape == (1, 64) and row.min() >= 0 and 14 < row.max() <= 16
    assert np.corrcoef(row.ravel(), data.X_test[0].astype(float))[0, 1] > 0.8
    r = _cli(tmp_path, tmp_path / "d.png")
    assert r.returncode == 0 and _labels(r.stdout)[str(tmp_path / "d.png")] == \
        model.predict(row)[0]


@needs_pillow
def test_a_model_without_an_image_shape_refuses_images_clearly(tmp_path):
    save_model(tmp_path / "model.npz", Network([4, 3, 2]))
    Image.new("L", (10, 10)).save(tmp_path / "x.png")
    r = _cli(tmp_path, tmp_path / "x.png")
    assert r.returncode == 2 and "no image shape" in r.stderr and "x.png" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("make, message", [
    (lambda p: p.with_suffix(".txt").write_text("7"), "not an input mlp reads"),
    pytest.param(lambda p: p.with_suffix(".png").write_text("not a png"),
                 "not a readable PNG or JPEG", marks=needs_pillow),
    pytest.param(lambda p: Image.new("L", (40, 40), 200).save(p.with_suffix(".png")),
                 "no digit found", marks=needs_pillow),
    pytest.param(lambda p: Image.new("1", (7000, 7000)).save(p.with_suffix(".png")),
                 "crop or shrink it", marks=needs_pillow),       # 49 Mpixels, a 10 kB file
    (lambda p: np.save(p.with_suffix(".npy"), np.zeros((3, 5))), "does not fit this model"),
    (lambda p: np.save(p.with_suffix(".npy"), np.array([[np.nan] * 784])), "NaN"),
    (lambda p: np.save(p.with_suffix(".npy"), np.array(["a"] * 784)), "takes numbers"),
    (lambda p: np.save(p.with_suffix(".npy"), np.array([{}]), allow_pickle=True), "no pickle"),
    (lambda p: np.savez(p.with_suffix(".npz"), a=np.zeros(784), b=np.zeros(784)), "--key"),
])
def test_bad_inputs_name_the_file_and_what_to_do(mnist_run, tmp_path, make, message):
    make(tmp_path / "bad")
    bad = next(tmp_path.glob("bad.*"))
    np.save(tmp_path / "good.npy", np.zeros(784, np.uint8))
    r = _cli(mnist_run, bad, tmp_path / "good.npy")
    assert r.returncode == 2
    assert str(bad) in r.stderr and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert str(tmp_path / "good.npy") in r.stdout            # the good file is still predicted


def test_not_a_model(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(784))
    for model in (ROOT / "README.md", tmp_path / "x.npy"):
        r = _cli(model, tmp_path / "x.npy")
        assert r.returncode == 2 and "not an mlp model file" in r.stderr
        assert "pickle" not in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(ModelFileError, match="not an mlp model file"):
        Predictor.load(ROOT / "README.md")


def test_missing_pillow_names_the_extra(mnist_run, tmp_path, monkeypatch, capsys):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n")    # never opened: no Pillow
    monkeypatch.setitem(sys.modules, "PIL", None)          # `import PIL` now raises ImportError
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    assert main([str(mnist_run), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "pip install pillow" in err and "[images]" in err and "x.png" in err
    with pytest.raises(MLPError, match="Pillow"):
        load_predictor(mnist_run).load_image(tmp_path / "x.png")


def test_features_reject_what_does_not_fit(tmp_path):
    save_model(tmp_path / "model.npz", Network([6, 3, 2]), {"scale": 0.5})
    model = load_predictor(tmp_path)
    with pytest.raises(DataError, match="rows of 6 features"):
        model.predict(np.zeros((2, 5)))
    np.testing.assert_array_equal(model.predict_proba(np.ones((2, 6))),
                                  model.net.feedforward(np.full((2, 6), 0.5)))
