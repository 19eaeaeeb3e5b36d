"""Where INT8 accuracy goes on this CPU: the same calibration, quantized several ways, each run with ONNX
Runtime's optimized (fused integer) kernels, as deployed, and with graph optimization disabled (ONNX
Runtime then computes the Q/DQ graph as written: the reference arithmetic ARM's kernels follow).

Case: benchmarks/quantization_fidelity.py's teacher224 (the quickstart's MobileNetV2 teacher at 224 px,
a one-epoch linear probe on MNIST-5k; cached in --store), 256 calibration images (the quantize stage's
draw for the seed), validation and test accuracy (750 images each), p90 latency at batch 1, 1 thread.

    python benchmarks/int8_arithmetic.py [--seed 0] [--store DIR]

Rows: ONNX Runtime's qdq_u8s8 with 8-bit and 7-bit (reduce_range) weights, U8U8 per channel, NNCF's own
graph (nncf.quantize defaults), and NNCF's numbers carried into ONNX Runtime's layout (edgedistill's
*_nncf recipes) with 8- and 7-bit weights. Run it alone: latencies are taken on this machine.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from quantization_fidelity import teacher224_model  # noqa: E402

from edgedistill.core.store import Store
from edgedistill.quantization import nncf_ptq, ort_quantize
from edgedistill.quantization.recipes import QuantizeConfig
from edgedistill.runtime.benchmark import BenchmarkConfig, bench_in_child
from edgedistill.runtime.onnx_utils import ort_predict
from edgedistill.runtime.ortbench import cpu_info


def reference_predict(path: Path, split) -> np.ndarray:
    """Predicted classes with every graph optimization off: the Q/DQ graph computed as written."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: split.inputs(slice(i, i + 64))})[0]
                           for i in range(0, len(split), 64)]).argmax(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", type=Path, default=Path(tempfile.gettempdir()) / "edgedistill_quantization_fidelity")
    a = ap.parse_args()
    work = a.store / "work"
    work.mkdir(parents=True, exist_ok=True)
    fp32, ds, pipeline = teacher224_model(Store(a.store / "teacher224"), a.seed, [], work)
    train, val, test = ds.split("train", 224), ds.split("val", 224), ds.split("test", 224)
    calibration = train.subset(np.sort(np.random.default_rng(a.seed).permutation(len(train))[:256]))
    names = ort_quantize.model_inputs(fp32)
    reader = lambda: ort_quantize.split_reader(calibration, names)
    timing = BenchmarkConfig(threads=1, runs=300, min_duration_s=2.0, throughput_batch=0, profile_runs=0)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        tmp = Path(tmp)
        source = ort_quantize.prepare_source(fp32, QuantizeConfig(), reader, tmp, lambda m: None)
        r = reader()
        carried = nncf_ptq.carry(source, iter(r.get_next, None), tmp / "nncf_corrected.onnx")
        r = reader()
        onnx.save(nncf_ptq.run_nncf(source, iter(r.get_next, None)), str(tmp / "nncf_own.onnx"))
        u8s8 = QuantizeConfig(mode="fixed", reduce_range=False)
        rows = {"fp32": fp32}
        for name, qc, src, overrides in (
                ("onnxruntime qdq_u8s8, 8-bit weights", u8s8, source, None),
                ("onnxruntime qdq_u8s8, 7-bit weights (reduce_range)", u8s8.model_copy(update={"reduce_range": True}), source, None),
                ("onnxruntime qdq_u8u8 per channel", u8s8.model_copy(update={"weight_type": "uint8"}), source, None),
                ("NNCF numbers in ONNX Runtime's layout, 8-bit", u8s8, tmp / "nncf_corrected.onnx", carried["overrides"]),
                ("NNCF numbers in ONNX Runtime's layout, 7-bit", u8s8.model_copy(update={"reduce_range": True}),
                 tmp / "nncf_corrected.onnx", carried["overrides"])):
            rows[name] = tmp / f"{len(rows)}.onnx"
            ort_quantize.quantize_model(src, rows[name], qc, reader, overrides=overrides)
        rows["NNCF's own graph (nncf.quantize defaults)"] = tmp / "nncf_own.onnx"
        reference = {s: ort_predict(fp32, d).argmax(1) for s, d in (("val", val), ("test", test))}
        print(f"seed {a.seed}, {cpu_info()[0]} ({', '.join(cpu_info()[1]) or 'no listed flags'}), "
              f"onnxruntime {ort.__version__}, nncf {nncf_ptq.version()}\n")
        print("| model | val % fused | test % fused | agreement with FP32 % (test, fused) | val % reference | "
              "test % reference | p90 ms |")
        print("|---|---|---|---|---|---|---|")
        for name, path in rows.items():
            fused = {s: ort_predict(path, d).argmax(1) for s, d in (("val", val), ("test", test))}
            ref = {s: reference_predict(path, d) for s, d in (("val", val), ("test", test))}
            acc = lambda p, d: 100 * float((p == d.labels).mean())
            p90 = bench_in_child(path, timing)["latency_ms"]["p90"]
            print(f"| {name} | {acc(fused['val'], val):.2f} | {acc(fused['test'], test):.2f} | "
                  f"{100 * float((fused['test'] == reference['test']).mean()):.1f} | {acc(ref['val'], val):.2f} | "
                  f"{acc(ref['test'], test):.2f} | {p90:.2f} |", flush=True)


if __name__ == "__main__":
    main()
