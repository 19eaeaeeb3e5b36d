"""Where the 224-px linear probe's INT8 error comes from: weights or activations, and whether a stronger
weight-rounding algorithm (AdaRound, from AIMET-ONNX) lowers it.

Case: benchmarks/quantization_fidelity.py's teacher224 (MobileNetV2, ImageNet weights, a one-epoch
linear probe on MNIST-5k at 224 px; cached in --store), the quantize stage's 256 calibration images for
the seed, ONNX Runtime's qdq_u8s8 (MinMax, per-channel 8-bit weights), 750 validation and 750 test
images. Each row is the top-1 disagreement with FP32 in % (no labels needed: the accuracy drop of a
quantized model is at most its disagreement, and what the quantize stage's intervals widen with):
  full              the qdq_u8s8 model as ONNX Runtime runs it (fused kernels) and as written (graph
                    optimization off: the reference arithmetic);
  weights only      the float model with qdq_u8s8's dequantized weights and biases, activations in float;
  activations only  the qdq_u8s8 graph with the float weights put back (activation Q/DQ pairs kept:
                    they also do the ReLU6 clipping ONNX Runtime folded into them); reference
                    arithmetic only (fused, float-weight convolutions between Q/DQ pairs run in other
                    kernels than either model ships with);
  --adaround N      AIMET-ONNX's AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for
                    Post-Training Quantization"), N iterations a layer, on AIMET's per-channel simulation:
                    its own Q/DQ graph (to_onnx_qdq, run fused), and its rounded weights alone (which
                    AdaRound fits to the layer inputs its simulation quantizes: not meant to be used
                    with float activations; the row shows how much of its gain is that co-adaptation).

    python benchmarks/int8_error_sources.py [--seeds 0 1 2] [--store DIR] [--adaround 1000]

--adaround needs AIMET-ONNX, which edgedistill does not depend on (its metadata pulls a plotting stack);
it was run from a side folder: `pip install --target DIR --no-deps aimet-onnx==2.42.0 onnx2torch osqp
pybind11 bokeh hvplot tornado`, then PYTHONPATH=DIR. It takes about 17 min a seed at 1,000 iterations on
2 cores.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization.quant_utils import TENSOR_NAME_QUANT_SUFFIX

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from int8_arithmetic import reference_predict  # noqa: E402
from quantization_fidelity import teacher224_model  # noqa: E402

from edgedistill.core.store import Store
from edgedistill.quantization import ort_quantize
from edgedistill.quantization.placement import dequantize_constant
from edgedistill.quantization.recipes import QuantizeConfig
from edgedistill.runtime.onnx_utils import ort_predict


def initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def constant_dequantizes(quantized: onnx.ModelProto, source: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str]]:
    """Every DequantizeLinear of a constant in the QDQ model, with the float tensor of source it came from
    (ONNX Runtime names the integer tensor '<name>' + TENSOR_NAME_QUANT_SUFFIX). Raises when one has no
    such source tensor: a row would otherwise silently keep that weight in float."""
    consts, floats = {i.name for i in quantized.graph.initializer}, {i.name for i in source.graph.initializer}
    out = []
    for node in quantized.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in consts:
            base = node.input[0].removesuffix(TENSOR_NAME_QUANT_SUFFIX)
            if base == node.input[0] or base not in floats:
                raise RuntimeError(f"{node.input[0]}: no float tensor of the source model by that name")
            out.append((node, base))
    return out


def dequantized_weights(quantized: onnx.ModelProto, source: onnx.ModelProto) -> dict[str, np.ndarray]:
    """source's tensor name -> its value as the QDQ model computes it (weights and biases)."""
    init = {i.name: i for i in quantized.graph.initializer}
    return {base: dequantize_constant(node, init) for node, base in constant_dequantizes(quantized, source)}


def with_weights(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """model with the initializers of those names set to those values (the others as they are)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for init in model.graph.initializer:
        if init.name in values:
            init.CopyFrom(numpy_helper.from_array(values[init.name].astype(numpy_helper.to_array(init).dtype), init.name))
    return model


def float_weights_in(quantized: onnx.ModelProto, source: onnx.ModelProto) -> onnx.ModelProto:
    """The QDQ graph with every DequantizeLinear of a weight or bias replaced by the float tensor it
    came from (source's initializer): only the activations stay quantized."""
    model = onnx.ModelProto.FromString(quantized.SerializeToString())
    floats = {i.name: i for i in source.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    for original, base in constant_dequantizes(quantized, source):
        node = by_name[original.name]
        if base not in {i.name for i in model.graph.initializer}:
            model.graph.initializer.append(floats[base])
        for other in model.graph.node:
            other.input[:] = [base if x == node.output[0] else x for x in other.input]
        model.graph.node.remove(node)
    return model


def disagreement(model: onnx.ModelProto | Path, splits: dict, reference: dict, fused: bool, tmp: Path) -> dict[str, float]:
    path = model if isinstance(model, Path) else tmp / f"m{time.monotonic_ns()}.onnx"
    if not isinstance(model, Path):
        onnx.save(model, str(path))
    pred = {s: (ort_predict(path, d).argmax(1) if fused else reference_predict(path, d)) for s, d in splits.items()}
    return {s: 100 * float((pred[s] != reference[s]).mean()) for s in splits}


def adaround(source: Path, calibration, iterations: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray], float]:
    """AIMET-ONNX's AdaRound on its per-channel simulation of source (8-bit symmetric weights, 8-bit
    activations, MinMax). Returns its Q/DQ graph, the rounded weights by name, and the seconds it took."""
    import aimet_onnx
    from aimet_onnx import QuantizationSimModel

    config = Path(aimet_onnx.__file__).parent / "common" / "quantsim_config" / "default_config_per_channel.json"
    samples = [{k: v[i:i + 1] for k, v in feeds.items()}
               for feeds in iter(calibration().get_next, None) for i in range(len(next(iter(feeds.values()))))]
    start = time.monotonic()
    sim = QuantizationSimModel(onnx.load(str(source)), param_type="int8", activation_type="int8",
                               quant_scheme="min_max", config_file=str(config))
    sim.compute_encodings(samples)
    aimet_onnx.apply_adaround(sim, samples, num_iterations=iterations)
    sim.compute_encodings(samples)
    seconds = time.monotonic() - start
    graph = sim.to_onnx_qdq()
    names = set(initializers(onnx.load(str(source))))
    weights = {k: v for k, v in initializers(graph).items() if k in names and v.ndim >= 2}
    return graph, weights, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "edgedistill_quantization_fidelity")
    ap.add_argument("--adaround", type=int, default=0, help="AdaRound iterations a layer (0: no AdaRound rows)")
    a = ap.parse_args()
    work = a.store / "work"
    work.mkdir(parents=True, exist_ok=True)
    print(f"onnxruntime {ort.__version__}; disagreement with FP32 in % (val / test, 750 images each)\n")
    print("| seed | model | fused | reference arithmetic |")
    print("|---|---|---|---|")
    for seed in a.seeds:
        fp32, ds, _ = teacher224_model(Store(a.store / "teacher224"), seed, [], work)
        train = ds.split("train", 224)
        splits = {"val": ds.split("val", 224), "test": ds.split("test", 224)}
        calibration_split = train.subset(ort_quantize.calibration_rows(len(train), 256, seed))
        names = ort_quantize.model_inputs(fp32)
        reader = lambda: ort_quantize.split_reader(calibration_split, names)
        reference = {s: ort_predict(fp32, d).argmax(1) for s, d in splits.items()}
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            tmp = Path(tmp)
            source = ort_quantize.prepare_source(fp32, QuantizeConfig(), reader, tmp, lambda m: None)
            u8s8 = tmp / "qdq_u8s8.onnx"
            ort_quantize.quantize_model(source, u8s8, QuantizeConfig(mode="fixed", reduce_range=False), reader)
            src, q = onnx.load(str(source)), onnx.load(str(u8s8))
            rows = {"qdq_u8s8 (MinMax), full": (u8s8, True),
                    "weights only (activations float)": (with_weights(src, dequantized_weights(q, src)), False),
                    "activations only (weights float)": (float_weights_in(q, src), False)}
            if a.adaround:
                graph, weights, seconds = adaround(source, reader, a.adaround)
                rows[f"AIMET AdaRound ({a.adaround} iterations, {seconds:.0f} s), its own graph"] = (graph, True)
                rows["AIMET AdaRound weights only (activations float)"] = (with_weights(src, weights), False)
            for name, (model, both) in rows.items():
                ref = disagreement(model, splits, reference, False, tmp)
                fused = disagreement(model, splits, reference, True, tmp) if both else None
                cell = lambda d: f"{d['val']:.2f} / {d['test']:.2f}" if d else "-"
                print(f"| {seed} | {name} | {cell(fused)} | {cell(ref)} |", flush=True)


if __name__ == "__main__":
    main()
