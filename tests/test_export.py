"""ONNX export: the file, run in onnxruntime, computes what mlp computes from raw features."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlp.export import main
from mlp.io import save_model
from mlp.network import Network

ROOT = Path(__file__).resolve().parents[1]


def _runtime():
    """onnxruntime (the 'onnx' extra), or skip saying how to install it."""
    pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[onnx]')")
    return pytest.importorskip("onnxruntime",
                               reason="onnxruntime is not installed (pip install -e '.[onnx]')")


def _model(tmp_path, sizes, activation, loss, output=None, dtype="float32", scale=1 / 255):
    """A saved model with random (not trained) weights and biases, like mlp.train's meta."""
    net = Network(sizes, activation, loss, output, dtype, seed=3)
    rng = np.random.default_rng(5)
    for b in net.biases:
        b[:] = rng.normal(0, 0.5, b.shape)
    save_model(tmp_path / "model.npz", net, {"dataset": "mnist", "scale": scale,
                                             "image_shape": [28, 28]})
    return net


def _raw(n_in, n=64):
    """Raw features as training sees them: MNIST-like pixels 0–255, as float32."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (n, n_in)).astype(np.float32)
    X[rng.random(X.shape) < 0.6] = 0               # mostly background, as in MNIST
    return X


@pytest.mark.parametrize("sizes, activation, loss, output", [
    ([784, 30, 10], "sigmoid", "ce", None),
    ([784, 64, 32, 10], "relu", "ce", None),          # 2 hidden layers
    ([784, 20, 10], "tanh", "mse", "identity"),
    ([784, 16, 16, 10], "sigmoid", "mse", None),      # sigmoid output
    ([784, 12, 10], "identity", "bce", None),
    ([784, 24, 10], "relu", "mse", "tanh"),
    ([784, 8, 3], "tanh", "poisson", None),          # exp output
])
def test_onnxruntime_matches_feedforward_on_scaled_input(tmp_path, sizes, activation, loss,
                                                         output):
    ort = _runtime()
    net = _model(tmp_path, sizes, activation, loss, output)
    assert main([str(tmp_path), str(tmp_path / "model.onnx")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "model.onnx"]  # no temp
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    X = _raw(sizes[0])
    out, label = sess.run(None, {"input": X})
    expected = net.feedforward(X * np.float32(1 / 255))
    assert out.dtype == np.float32 and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(label, out.argmax(axis=1))
    assert np.ptp(expected) > 0.1, "outputs too flat for the comparison to mean anything"


def test_float64_model_and_dtype_option(tmp_path):
    ort = _runtime()
    net = _model(tmp_path, [784, 10, 10], "tanh", "ce", dtype="float64")
    X = _raw(784)
    expected = net.feedforward(X.astype(np.float64) / 255)
    for dtype, tol in ((None, 1e-12), ("float32", 1e-5)):
        args = [] if dtype is None else ["--dtype", dtype]
        assert main([str(tmp_path / "model.npz"), str(tmp_path / "m.onnx"), *args]) == 0
        sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
        feed = X.astype(np.float64 if dtype is None else np.float32)
        np.testing.assert_allclose(sess.run(["output"], {"input": feed})[0], expected,
                                   rtol=tol, atol=tol)


def test_the_scale_is_in_the_graph_and_the_metadata(tmp_path):
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[onnx]')")
    _model(tmp_path, [784, 8, 10], "sigmoid", "ce", scale=1 / 16)
    assert main([str(tmp_path), str(tmp_path / "m.onnx")]) == 0
    model = onnx.load(str(tmp_path / "m.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert float(props["scale"]) == pytest.approx(1 / 16) and props["dataset"] == "mnist"
    assert model.graph.node[0].op_type == "Mul"
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Mul", "MatMul", "Add", "Sigmoid", "MatMul", "Add", "Softmax", "ArgMax"]


def test_python_m_mlp_export_and_an_existing_file_is_replaced_whole(tmp_path):
    _runtime()
    _model(tmp_path, [784, 8, 10], "sigmoid", "ce")
    (tmp_path / "m.onnx").write_bytes(b"old")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    r = subprocess.run([sys.executable, "-m", "mlp.export", tmp_path, tmp_path / "m.onnx"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.onnx").read_bytes()[:4] != b"old"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "model.npz").write_text("# not a model"), "not an mlp model file"),
    (lambda d: None, "no such model file"),
])
def test_bad_models_are_named(tmp_path, capsys, make, message):
    make(tmp_path)
    assert main([str(tmp_path), str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(tmp_path) in err and "pickle" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_output_folder_is_refused(tmp_path, capsys):
    _model(tmp_path, [784, 8, 10], "sigmoid", "ce")
    assert main([str(tmp_path), str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_missing_onnx_names_the_extra(tmp_path, monkeypatch, capsys):
    _model(tmp_path, [784, 8, 10], "sigmoid", "ce")
    monkeypatch.setitem(sys.modules, "onnx", None)          # `import onnx` now raises ImportError
    assert main([str(tmp_path), str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "pip install onnx" in err and "[onnx]" in err
    assert not (tmp_path / "m.onnx").exists()
