"""Export a saved model to ONNX: ``python -m mlp.export RUN_DIR model.onnx``.

The graph takes the raw features the model was trained on (MNIST: pixels
0–255, as floats), multiplies them by the model's saved input scale, and
runs the layers as ``MatMul → Add → activation``, ending in the output
function of the model's loss (softmax for "ce", sigmoid for "bce", exp for "poisson", the
chosen output function for "mse"). Outputs: ``output`` (one row per sample,
one column per class, as :meth:`mlp.network.Network.feedforward`) and
``label`` (the argmax, int64). Needs the ``onnx`` package (the optional
``onnx`` extra); the file is written atomically.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .errors import MLPError
from .io import atomic_write_bytes
from .predict import Predictor

#: opset 13 (ONNX 1.8, 2020) has every operator used here in its current form (Softmax over
#: one axis); IR version 7 is the one that goes with it. Both are read by every
#: onnxruntime since 1.6, so an old runtime can load the file.
OPSET, IR_VERSION = 13, 7

#: ONNX operators of mlp's activations (softmax, over axis 1, is written apart)
ONNX_ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "identity": "Identity",
                    "exp": "Exp"}

#: protobuf refuses to serialise a message of 2 GiB or more
MAX_ONNX_BYTES = 2**31 - 1


def _onnx():
    """The onnx package, or an MLPError naming the extra that installs it."""
    try:
        import onnx  # optional dependency (the "onnx" extra); only export needs it
    except ImportError:
        raise MLPError("exporting to ONNX needs the onnx package, an optional dependency of "
                       "mlp: pip install onnx onnxruntime (or install mlp with its onnx extra: "
                       "pip install -e \".[onnx]\")") from None
    return onnx


def to_onnx(net, scale=1.0, meta=None, dtype=None):
    """The ONNX ModelProto of ``net``, its input multiplied by ``scale`` inside the graph.

    ``meta`` (the model file's metadata) is recorded in the model's
    properties; ``dtype`` ("float32" or "float64"; default: the network's)
    is the type of the graph's input, weights and outputs.
    """
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper  # submodules of the optional onnx

    meta = meta or {}
    dtype = np.dtype(dtype or net.dtype)
    if dtype not in (np.float32, np.float64):
        raise MLPError(f"cannot export as {dtype}: choose float32 or float64")
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    scale = float(scale)
    nodes, inits = [], []
    x = "input"
    if scale != 1.0:
        inits.append(numpy_helper.from_array(np.array(scale, dtype), "scale"))
        nodes.append(helper.make_node("Mul", [x, "scale"], ["scaled"], name="input_scale"))
        x = "scaled"
    last = net.num_layers - 1
    for l, (w, b) in enumerate(zip(net.weights, net.biases)):
        inits += [numpy_helper.from_array(w.astype(dtype), f"W{l}"),
                  numpy_helper.from_array(b.astype(dtype), f"b{l}")]
        nodes += [helper.make_node("MatMul", [x, f"W{l}"], [f"xw{l}"], name=f"matmul{l}"),
                  helper.make_node("Add", [f"xw{l}", f"b{l}"], [f"z{l}"], name=f"add{l}")]
        fn = net.loss.output if l == last else net.activation
        out = "output" if l == last else f"a{l}"
        if fn == "softmax":
            nodes.append(helper.make_node("Softmax", [f"z{l}"], [out], axis=1, name="softmax"))
        else:
            nodes.append(helper.make_node(ONNX_ACTIVATIONS[fn], [f"z{l}"], [out],
                                          name=f"{fn}{l}"))
        x = out
    nodes.append(helper.make_node("ArgMax", ["output"], ["label"], axis=1, keepdims=0,
                                  name="argmax"))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", elem, ["n", net.sizes[0]])],
        [helper.make_tensor_value_info("output", elem, ["n", net.sizes[-1]]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["n"])],
        inits)
    model = helper.make_model(graph, producer_name="mlp", producer_version=__version__,
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    model.doc_string = (f"mlp {'-'.join(map(str, net.sizes))} {net.activation}/{net.loss.name} "
                        f"(output {net.loss.output}); input: raw features, multiplied by "
                        f"{scale:.6g} inside the graph")
    props = {"sizes": net.sizes, "activation": net.activation, "loss": net.loss.name,
             "output": net.loss.output, "scale": scale,
             **{k: meta[k] for k in ("dataset", "image_shape") if k in meta}}
    helper.set_model_props(model, {k: v if isinstance(v, str) else json.dumps(v)
                                   for k, v in props.items()})
    onnx.checker.check_model(model)
    return model


def export_onnx(model_path, out_path, dtype=None):
    """Write the model at ``model_path`` (a run folder or .npz) as ONNX to ``out_path``.

    Returns the path written. The file appears whole or not at all
    (temporary name, fsync, rename).
    """
    out_path = Path(out_path)
    if out_path.is_dir():
        raise MLPError(f"{out_path}: is a folder; give the name of the .onnx file to write")
    model = Predictor.load(model_path)          # checks the saved scale, as predictions do
    data = to_onnx(model.net, model.scale, model.meta, dtype).SerializeToString()
    if len(data) > MAX_ONNX_BYTES:      # (protobuf would have failed before; kept as a guard)
        raise MLPError(f"{model_path}: the model is too large for one ONNX file (2 GiB)")
    try:
        return atomic_write_bytes(out_path, data)
    except OSError as e:
        raise MLPError(f"{out_path}: cannot write the ONNX file ({e.strerror or e}); "
                       "choose a writable folder") from None


def main(argv=None):
    """Entry point of ``python -m mlp.export``; returns the exit status."""
    p = argparse.ArgumentParser(
        prog="python -m mlp.export",
        description="Export a saved model to ONNX. The graph takes raw features as in "
                    "training (MNIST: pixels 0-255, as floats) and applies the saved input "
                    "scale itself. Needs the onnx package.")
    p.add_argument("model", help="a run folder (holding model.npz) or a model .npz file")
    p.add_argument("out", help="the .onnx file to write (replaced atomically if it exists)")
    p.add_argument("--dtype", choices=["float32", "float64"],
                   help="type of the graph's input, weights and output (default: the model's)")
    args = p.parse_args(argv)
    try:
        path = export_onnx(args.model, args.out, args.dtype)
    except MLPError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
